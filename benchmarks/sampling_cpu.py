"""What makes sampling faster on a learner's CPU: milliseconds per denoising step of the shipped models at
the lessons' batch (16 images), plain, in channels-last memory order (what the pipelines use), torch.compile'd,
and with 1 thread:

    .venv/bin/python benchmarks/sampling_cpu.py            # about 3 minutes on 2 cores (compiling is most of it)

Run it on a quiet machine: another busy process on the same cores makes every number meaningless.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import measure  # noqa: E402
from diffedu.env import hardware  # noqa: E402
from diffedu.pipelines import load_pipeline  # noqa: E402


def ms_per_step(unet, x, repeats: int) -> float:
    t = torch.full((len(x),), 500, dtype=torch.long)
    with torch.inference_mode():
        return 1000 * measure.median_seconds(lambda: unet(x, t), repeats=repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16, help="images per step (the cpu profile's lessons: 16)")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    threads = torch.get_num_threads()
    print(f"{hardware()}; ms per UNet call on {args.batch} images (median of {args.repeats}, lower is better)")
    columns = [
        "plain (NCHW)",
        "channels-last weights (the pipelines')",
        "channels-last weights and input",
        "compile",
        "compile + channels-last",
        "channels-last weights, 1 thread",
    ]
    print(f"| model | {' | '.join(columns)} |\n| --- |" + " ---: |" * len(columns))
    nchw, nhwc = torch.contiguous_format, torch.channels_last
    for name in ("ddpm-cifar10", "ldm-cifar10"):
        pipe = load_pipeline(name, "cpu")
        x = pipe.noise(args.batch, torch.Generator().manual_seed(0))
        unet = pipe.unet
        row = [
            ms_per_step(unet.to(memory_format=nchw), x, args.repeats),
            ms_per_step(unet.to(memory_format=nhwc), x, args.repeats),
            ms_per_step(unet, x.contiguous(memory_format=nhwc), args.repeats),
            ms_per_step(torch.compile(unet.to(memory_format=nchw)), x, args.repeats),
        ]
        torch._dynamo.reset()
        row.append(
            ms_per_step(torch.compile(unet.to(memory_format=nhwc)), x.contiguous(memory_format=nhwc), args.repeats)
        )
        torch._dynamo.reset()
        torch.set_num_threads(1)
        row.append(ms_per_step(unet, x, args.repeats))
        torch.set_num_threads(threads)
        print(f"| {name} | {' | '.join(f'{ms:.1f}' for ms in row)} |", flush=True)


if __name__ == "__main__":
    main()
