"""Training throughput of the shipped recipes' models, in images per second, with each of the Trainer's
speed options, on this machine:

    .venv/bin/python benchmarks/training_speed.py                 # cuda if there is one, else the CPU
    .venv/bin/python benchmarks/training_speed.py --batch 32      # a CPU needs smaller batches to finish soon

"plain" is the Trainer without options (on CUDA it already has fused AdamW, the foreach EMA and no per-step
sync); "compile" captures the forward and backward (reduce-overhead, i.e. CUDA graphs, on CUDA). Throughput
does not depend on what the images show, so the batches are random, drawn on the device.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import data, env  # noqa: E402
from diffedu.env import hardware  # noqa: E402
from diffedu.recipes import get_recipe  # noqa: E402
from diffedu.runs import SHIPPED  # noqa: E402


def random_batches(recipe, batch: int, device):
    latent = recipe.kind == "latent"
    n = max(batch, 256)
    examples = (
        torch.randn(n, 4, 8, 8)
        if latent
        else torch.randint(0, 256, (n, 3 * 32 * 32), dtype=torch.uint8).view(n, 3, 32, 32)
    )
    labels = torch.randint(0, 10, (n,)) if recipe.conditional else None
    return data.batches(examples, batch, labels=labels, flip=not latent, device=device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device")
    p.add_argument("--batch", type=int, help="default: each recipe's")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (after 3 warm-up steps)")
    p.add_argument("--models", nargs="+", default=list(SHIPPED))
    p.add_argument("--variants", nargs="+", default=["plain", "channels-last", "compile", "compile+channels-last"])
    args = p.parse_args()
    device = env.get_device(args.device)
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    options = {
        "plain": {},
        "channels-last": {"channels_last": True},
        "compile": {"compile": mode},
        "compile+channels-last": {"compile": mode, "channels_last": True},
    }
    print(f"{hardware()}, {torch.get_num_threads()} threads; compile mode {mode}; images per second (higher is better)")
    print(f"| model | batch | {' | '.join(args.variants)} |\n| --- | ---: |{' ---: |' * len(args.variants)}")
    for name in args.models:
        recipe = get_recipe(name)
        batch = args.batch or recipe.batch_size
        speeds = []
        for variant in args.variants:
            torch.manual_seed(0)
            trainer = recipe.trainer(device, **options[variant])
            speeds.append(trainer.images_per_second(random_batches(recipe, batch, trainer.device), args.steps))
            torch._dynamo.reset()
        print(f"| {name} | {batch} | {' | '.join(f'{s:,.0f}' for s in speeds)} |", flush=True)


if __name__ == "__main__":
    main()
