"""Do FID's and KID's standard errors (diffedu.metrics) mean what they say at the course's counts?

    .venv/bin/python benchmarks/standard_errors.py   # 200 sets, ~5 min on 2 cores (+10 min once for the features)

The reference is the Inception features of all the training images (the quality table's). A "model" is a
Gaussian with the reference's covariance, shrunk by 0.8 and shifted: its scores land where the course's models'
do. Draw `--sets` independent sets of `--samples` from it: the spread (standard deviation) of their scores is the
true sampling error. Beside it, the standard error each set estimates of itself (the mean over the first 40 sets):
the influence SE that diffedu reports, and a bootstrap over the samples (30 resamples, first 10 sets).
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import data, metrics  # noqa: E402


def bootstrap_se(features: torch.Tensor, reference: metrics.Reference, draws: int, generator) -> tuple[float, float]:
    """FID's and KID's spread over resamples of the samples with replacement."""
    rows = [
        metrics.scores_of(features[torch.randint(len(features), (len(features),), generator=generator)], reference)
        for _ in range(draws)
    ]
    return tuple(float(torch.tensor([row[name] for row in rows]).std()) for name in ("fid", "kid"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--sets", type=int, default=200)
    args = p.parse_args()
    features = metrics.cached_features(data.load_cifar10(args.data).images).double()
    reference = metrics.Reference(features)
    generator = torch.Generator().manual_seed(0)
    shift = 3 * (features[:500].mean(0) - features[500:1000].mean(0))
    model_root = 0.8 * reference.cov_root

    def draw() -> torch.Tensor:
        noise = torch.randn(args.samples, features.shape[1], generator=generator, dtype=torch.float64)
        return reference.mean + shift + noise @ model_root

    rows, boot = [], []
    for i in range(args.sets):
        x = draw()
        rows.append(metrics.scores_of(x, reference))
        if i < 10:
            boot.append(bootstrap_se(x, reference, 30, generator))
    print(f"{args.sets} independent sets of {args.samples} samples, against {len(features)} reference features")
    print("| score | mean | true spread | influence SE (diffedu) | bootstrap SE |\n|---|---|---|---|---|")
    for k, (name, scale) in enumerate((("fid", 1), ("kid", 1000))):
        values = torch.tensor([row[name] for row in rows])
        se = torch.tensor([row[f"{name}_se"] for row in rows[:40]])
        print(
            f"| {name.upper()}{' x 1000' if scale > 1 else ''} | {scale * values.mean():.2f} | "
            f"{scale * values.std():.3f} | "
            f"{scale * se.mean():.3f} ({se.mean() / values.std():.2f}x) | "
            f"{scale * torch.tensor([b[k] for b in boot]).mean():.3f} "
            f"({torch.tensor([b[k] for b in boot]).mean() / values.std():.2f}x) |"
        )


if __name__ == "__main__":
    main()
