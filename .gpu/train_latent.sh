set -e
export PYTHONUNBUFFERED=1 PYTHONPATH=.
python3 -m diffedu train vae --recipe vae-cifar10 --data .cifar --out /tmp/run/vae --device cuda --save-every 100000 2>&1 | tr '\r' '\n' | grep -v "^training\|^encoding" | tail -3
python3 -m diffedu train latent --recipe ldm-cifar10 --vae /tmp/run/vae --data .cifar --out /tmp/run/ldm --device cuda --save-every 100000 2>&1 | tr '\r' '\n' | grep -v "^training\|^encoding" | tail -3
python3 - <<'PY'
import json, os, torch
from diffedu import checkpoint
from diffedu.data import load_cifar10, to_float
from diffedu.metrics import psnr
hw = torch.cuda.get_device_name() + ", torch " + torch.__version__
for run, name, extra in (("vae", "vae-cifar10", {}), ("ldm", "ldm-cifar10", {"vae": "vae-cifar10"})):
    m = checkpoint.load_model(f"/tmp/run/{run}")
    meta = checkpoint.read_meta(f"/tmp/run/{run}")
    keep = {k: meta[k] for k in ("profile", "step", "seconds") } | {k: meta[k] for k in ("schedule", "T") if k in meta}
    keep |= {"hardware": hw, "final_loss": sum(meta["history"][-50:]) / 50, **extra}
    checkpoint.save_model(os.environ["OUT"] + "/" + name, m, dtype=torch.float16, **keep)
    print(name, json.dumps(keep))
vae = checkpoint.load_model(os.environ["OUT"] + "/vae-cifar10", "cuda")
x = to_float(load_cifar10(".cifar", train=False).images).cuda()
with torch.inference_mode():
    r = vae.decode(vae.encode(x)[0]).clamp(-1, 1)
print(f"fp16 VAE PSNR on {len(x)} test images: {psnr(r, x).mean():.2f} dB; scale {vae.config.scale_factor:.4f}")
PY
python3 -m diffedu sample --ckpt $OUT/ldm-cifar10 --vae $OUT/vae-cifar10 --steps 50 --n 64 --out $OUT/ldm50.png --device cuda 2>&1 | tail -1
ls -la $OUT
