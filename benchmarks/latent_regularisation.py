"""The latent UNet regularised, at equal compute: ldm-cifar10's recipe with other dropout rates, depth or width,
each trained for the same minutes of training time on this machine, then scored as the quality table scores
"latent DDIM 50" (the same seeded noise for every model, so the differences are paired), with how near its samples
sit to the training images, where its held-out loss ended against its training loss (Trainer.watch), and its
denoising gap at t = 100 (evaluation.denoising_gap), where the shipped UNet's is widest.

    .venv/bin/python benchmarks/latent_regularisation.py --minutes 7.5 --out data/bench/latent_regularisation.json
    .venv/bin/python benchmarks/latent_regularisation.py --minutes 2 --samples 100 --variants "dropout 0.1" "dropout 0"
    .venv/bin/python benchmarks/latent_regularisation.py --device cpu --minutes 95 --variants "channels 32"

Run it on a quiet machine, one variant after another: the budget is training time, so anything else running takes
steps from the runs. The first variant is the one the others are compared with.
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import data, env, metrics, report, runs  # noqa: E402
from diffedu.evaluation import denoising_gap, sample_images  # noqa: E402
from diffedu.latent import cached_latents  # noqa: E402
from diffedu.nets import count_parameters  # noqa: E402
from diffedu.pipelines import load_pipeline  # noqa: E402
from diffedu.recipes import get_recipe  # noqa: E402

VARIANTS = {  # what each changes in ldm-cifar10's UNet
    "dropout 0.1": {},  # the shipped recipe
    "dropout 0": {"dropout": 0.0},
    "dropout 0.2": {"dropout": 0.2},
    "1 block a level": {"num_res_blocks": 1},  # half the depth, the same width
    "channels 32": {"channels": 32},  # half the width, a quarter of the parameters
}


def nearest(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each row's Euclidean distance to its nearest row of `reference`."""
    return torch.cat([torch.cdist(chunk.double(), reference.double()).min(dim=1).values for chunk in x.split(250)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--minutes", type=float, default=7.5, help="training time for each (default: 7.5, the recipe's)")
    p.add_argument("--samples", type=int, default=500, help="images per score (default: 500, the quality table's)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--runs", type=Path, default=Path("runs/latent_regularisation"))
    p.add_argument("--out", type=Path, help="write the scores (with their influences) here as JSON")
    args = p.parse_args()
    device = env.get_device(args.device)
    train, test = data.load_cifar10(), data.load_cifar10(train=False)
    reference = metrics.Reference(metrics.cached_features(train.images, device=device))
    train_pixels, real = data.to_float(train.images).flatten(1), data.to_float(test.images[: args.samples])
    real_nn = nearest(real.flatten(1), train_pixels).median().item()
    base = get_recipe("ldm-cifar10")
    table: dict = {"samples": args.samples, "minutes": args.minutes, "rows": {}}
    for name in args.variants:
        recipe = replace(base, model={**base.model, **VARIANTS[name]}, minutes=args.minutes)
        out = args.runs / name.replace(" ", "-")
        trainer = runs.train(recipe, out, data_root=train, force=True, device=device)
        pipe = load_pipeline(out, device)
        images = sample_images(pipe, args.samples, steps=50, sampler="ddim")
        scores = metrics.scores_of(metrics.inception_features(images, device=device), reference, influence=True)
        distance = nearest(images.cpu().flatten(1), train_pixels).median().item() / real_nn
        last = trainer.watched[-1] if trainer.watched else {}
        # where the shipped UNet's gap is widest (benchmarks/generalisation_gap.py): t = 100, on all the test images
        seen, unseen = (cached_latents(pipe.vae, x, flips=False) for x in (train.images[: len(test)], test.images))
        (gap_100,) = denoising_gap(pipe, seen, unseen, timesteps=(100,))
        table["rows"][name] = {
            **scores,
            "steps": trainer.step,
            "parameters": count_parameters(trainer.model),
            "nearest_training": distance,
            "watched": trainer.watched,  # the held-out and training losses as it trained
            "denoising_gap": gap_100,
        }
        gap = f", held-out loss {last['held-out'] / last['training']:.3f}x training" if last else ""
        print(
            f"{name}: {trainer.step} steps, nearest training image {distance:.2f}x real test images'{gap}, "
            f"{gap_100['ratio']:.3f} ± {gap_100['se']:.3f}x at t = 100"
        )
        if args.out:  # after each variant, so that a stopped comparison keeps what it measured
            env.write_json({**table, "machine": env.machine(device)}, args.out)
    first, *others = args.variants
    print(report.compare(table, *[(first, other) for other in others]))


if __name__ == "__main__":
    main()
