"""Consistency training against consistency distillation, at equal compute: each recipe tuned from fm-cifar10 for
the same minutes of training time on this machine, then scored at 1 and 2 model calls by the quality table's
protocol (the same seeded noise for every model, so the differences are paired).

    .venv/bin/python benchmarks/consistency_tuning.py --minutes 10                   # ect-cifar10 against cd-cifar10
    .venv/bin/python benchmarks/consistency_tuning.py --minutes 10 --samples 500 --out data/bench/ct_cd.json

Run it on a quiet machine: the budget is training time, so anything else running takes steps from the runs.
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import data, env, metrics, report, runs  # noqa: E402
from diffedu.evaluation import sample_images  # noqa: E402
from diffedu.pipelines import load_pipeline  # noqa: E402
from diffedu.recipes import get_recipe  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=["ect-cifar10", "cd-cifar10"])
    p.add_argument("--minutes", type=float, default=10.0, help="training time for each (default: 10)")
    p.add_argument("--samples", type=int, default=500, help="images per score (default: 500, the quality table's)")
    p.add_argument("--runs", type=Path, default=Path("runs/consistency_tuning"))
    p.add_argument("--out", type=Path, help="write the scores (with their influences) here as JSON")
    args = p.parse_args()
    train = data.load_cifar10()
    reference = metrics.Reference(metrics.cached_features(train.images))
    table = {"samples": args.samples, "rows": {}}
    for name in args.recipes:
        recipe = replace(get_recipe(name), minutes=args.minutes)
        out = args.runs / name
        trainer = runs.train(recipe, out, data_root=train, force=True, compile=None)
        pipe = load_pipeline(out, "cpu")
        for calls in (1, 2):
            images = sample_images(pipe, args.samples, steps=calls, sampler="consistency")
            scores = metrics.scores_of(metrics.inception_features(images), reference, influence=True)
            table["rows"][f"{name} {calls}"] = {**scores, "steps": trainer.step, "minutes": args.minutes}
        print(f"{name}: {trainer.step} steps in {args.minutes:g} minutes")
    first, *others = args.recipes
    print(report.compare(table, *[(f"{first} {calls}", f"{other} {calls}") for other in others for calls in (1, 2)]))
    if args.out:
        env.write_json({**table, "machine": env.machine(torch.device("cpu"))}, args.out)


if __name__ == "__main__":
    main()
