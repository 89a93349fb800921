"""Training throughput on 1 and on N processes (torchrun), in images per second, on this machine:

    .venv/bin/python benchmarks/distributed_speed.py --data <cifar folder>                 # the CPU: gloo
    .venv/bin/python benchmarks/distributed_speed.py --data <folder> --device cuda --processes 1 2 4 \
        --recipe ldm-cifar10

Each run trains the recipe for --steps steps of its global batch (split over the processes) by the course's own
command, `python -m diffedu train` (1 process) or `torchrun --standalone --nproc_per_node=N -m diffedu train`, and
reads images/s from the checkpoint's training seconds (start-up and data loading excluded). On a CPU the
processes share its cores: torchrun gives each one thread, where one process alone uses them all.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import checkpoint  # noqa: E402
from diffedu.env import hardware  # noqa: E402
from diffedu.recipes import get_recipe  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("DIFFEDU_DATA"), help="CIFAR-10's folder (default: $DIFFEDU_DATA)")
    p.add_argument("--recipe", default="cpu-ddpm")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    batch = get_recipe(args.recipe).batch_size
    print(f"{args.recipe}, global batch {batch}, {args.steps} steps, on {hardware()}")
    print("| processes | batch per process | images/s | vs 1 process |\n| ---: | ---: | ---: | ---: |")
    first = None
    with tempfile.TemporaryDirectory() as runs:
        for n in args.processes:
            out = Path(runs) / f"n{n}"
            launch = (
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
                if n > 1
                else [sys.executable]
            )
            subprocess.run(
                [
                    *launch,
                    "-m",
                    "diffedu",
                    "train",
                    "--recipe",
                    args.recipe,
                    "--steps",
                    str(args.steps),
                    "--data",
                    args.data,
                    "--out",
                    str(out),
                    "--device",
                    args.device,
                    "--save-every",
                    "0",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            meta = checkpoint.read_meta(out)
            speed = meta["step"] * batch / meta["seconds"]
            first = first or speed
            print(f"| {n} | {batch // n} | {speed:.0f} | {speed / first:.2f}x |")


if __name__ == "__main__":
    main()
