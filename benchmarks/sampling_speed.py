"""Time to sample a batch of images with DDPM (1000 steps) and DDIM (fewer), on this machine,
and with latent DDIM (the shipped ldm-cifar10, decoding included).

    python benchmarks/sampling_speed.py --n 64                 # the shipped ddpm-cifar10 model
    python benchmarks/sampling_speed.py --ckpt runs/ddpm/model --device cuda

Each sampler runs after a warm-up; DDIM runs are repeated and the median is
reported (DDPM once unless --repeats says otherwise: it is the slow one).
"""
import argparse
import platform
import statistics
import time

import torch

from diffedu import checkpoint, pretrained
from diffedu.nets import count_parameters
from diffedu.samplers import DDIMScheduler, DDPMScheduler, sample


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", help="checkpoint path (default: the shipped ddpm-cifar10)")
    p.add_argument("--n", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--steps", type=int, nargs="+", default=[100, 50, 20, 10], help="DDIM step counts")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each DDIM setting (median reported)")
    p.add_argument("--ddpm-repeats", type=int, default=1)
    p.add_argument("--latent-steps", type=int, nargs="*", default=[50], help="latent DDIM step counts (none: skip)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    path = args.ckpt or pretrained.path("ddpm-cifar10")
    model, schedule = checkpoint.load_model(path, args.device), checkpoint.schedule_of(path)
    cfg = model.config
    x_T = torch.randn(args.n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0)).to(args.device)

    def median_seconds(run, repeats):
        times = []
        for _ in range(repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def seconds(scheduler, repeats):
        sample(model, DDIMScheduler(schedule).set_timesteps(2), x_T, progress=False)  # warm-up
        return median_seconds(lambda: sample(model, scheduler, x_T, progress=False), repeats)

    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"model: {path} ({count_parameters(model) / 1e6:.2f}M parameters), {args.n} images, {args.device} ({where}), torch {torch.__version__}\n")
    ddpm = seconds(DDPMScheduler(schedule), args.ddpm_repeats)
    print("| sampler | steps | seconds | ms per step | speed-up vs DDPM |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| DDPM | 1000 | {ddpm:.2f} | {ddpm:.1f} | 1.0x |", flush=True)
    for steps in args.steps:
        t = seconds(DDIMScheduler(schedule).set_timesteps(steps), args.repeats)
        print(f"| DDIM | {steps} | {t:.2f} | {1000 * t / steps:.1f} | {ddpm / t:.1f}x |", flush=True)
    if args.latent_steps:
        pipe = pretrained.pipeline("ldm-cifar10", args.device)
        pipe.sample(args.n, steps=2, progress=False)  # warm-up
        for steps in args.latent_steps:
            t = median_seconds(lambda: pipe.sample(args.n, steps=steps, progress=False), args.repeats)
            print(f"| latent DDIM, decoded (ldm-cifar10, {count_parameters(pipe.unet) / 1e6:.2f}M + VAE decoder) | {steps} | "
                  f"{t:.2f} | {1000 * t / steps:.1f} | {ddpm / t:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
