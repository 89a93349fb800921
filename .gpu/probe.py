import sys, time, torch
sys.path.insert(0, ".")
from functools import partial
from diffedu.nets import UNet, UNetConfig, count_parameters
from diffedu.schedules import Schedule
from diffedu.training import Trainer, eps_loss
from diffedu.data import load_cifar10, batches
print(torch.__version__, torch.cuda.get_device_name())
images = load_cifar10(".cifar").images
s = Schedule.linear()
for ch, nrb, attn in [(32, 1, (8,)), (48, 1, (8,)), (64, 1, (8,)), (64, 2, (16,))]:
    for bs in (128, 256):
        cfg = UNetConfig(channels=ch, channel_mult=(1, 2, 2), num_res_blocks=nrb, attn_resolutions=attn, dropout=0.1)
        tr = Trainer(UNet(cfg), partial(eps_loss, schedule=s), device="cuda")
        b = batches(images, bs, device="cuda")
        tr.fit(b, 30, progress=False); torch.cuda.synchronize()
        t0 = time.perf_counter(); tr.fit(b, 150, progress=False); torch.cuda.synchronize()
        print(f"ch{ch} nrb{nrb} attn{attn} {count_parameters(tr.model)/1e6:.2f}M bs{bs}: {150/(time.perf_counter()-t0):.1f} it/s", flush=True)
