"""How sure are the quality table's comparisons? The difference between two of its rows, with its standard error.

    .venv/bin/python benchmarks/paired_differences.py     # makes each row's 500 images once (~40 min on 2 cores)

Rows of one model sampled from the same noise (DDIM 20 and DDIM 100 start from the same x_T, by the table's seeded
protocol) are paired: the standard error of their difference comes from the paired images' influences
(diffedu.metrics.difference) and is far smaller than either row's. Rows from different noise (pixel against
latent) pair arbitrarily, which comes to sqrt(se_1^2 + se_2^2). Each row's Inception features are kept in
data/fid/quality-rows/ (`python -m diffedu quality` keeps them as it measures), so a second run takes seconds.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import data, evaluation, metrics  # noqa: E402

PAIRS = [("DDIM 20", "DDIM 100"), ("DDIM 20", "DDIM 50"), ("DDIM 10", "DDIM 20"), ("DDPM 1000", "DDIM 20"),
         ("DDIM 10 quadratic", "DDIM 10"), ("DDIM 20 quadratic", "DDIM 20"), ("DDIM 50 quadratic", "DDIM 50"),
         ("DDIM 100 quadratic", "DDIM 100"), ("latent DDIM 10", "latent DDIM 50"),
         ("latent DDIM 50", "latent DDIM 50, L1 decoder"), ("latent DDIM 50", "DDIM 50"),
         ("latent DDIM 50", "VAE reconstructions of them"),
         # lesson 08's samplers against DDIM at about the same model calls, or twice them
         ("DPM-Solver++(2M) 5", "DDIM 10"), ("DPM-Solver++(2M) 10", "DDIM 10"), ("DPM-Solver++(2M) 10", "DDIM 20"),
         ("DPM-Solver++(2M) 20", "DDIM 20"), ("DPM-Solver++(2M) 50", "DDIM 50"), ("Heun 5", "DDIM 10"), ("Heun 10", "DDIM 20"),
         ("Heun 25", "DDIM 50"), ("Heun 3", "DDIM 5"), ("DPM-Solver++(2M) 5", "DDIM 5"),
         # the same samplers on timesteps spaced evenly in log-SNR
         ("DDIM 10 log-SNR", "DDIM 10"), ("DDIM 20 log-SNR", "DDIM 20"), ("DPM-Solver++(2M) 10 log-SNR", "DPM-Solver++(2M) 10"),
         ("DPM-Solver++(2M) 5 log-SNR", "DDIM 10"), ("DPM-Solver++(2M) 10 log-SNR", "DDIM 20"),
         ("DPM-Solver++(2M) 10 log-SNR", "DDIM 50"), ("DPM-Solver++(2M) 20 log-SNR", "DDIM 20"),
         ("DPM-Solver++(2M) 20 log-SNR", "DDIM 50"), ("Heun 5 log-SNR", "DDIM 10"), ("Heun 10 log-SNR", "DDIM 20"),
         # closer to the ODE's own solution
         ("DDIM 250", "DDIM 50"), ("DDIM 250", "DDIM 20"), ("DPM-Solver++(2M) 50", "DDIM 250"),
         ("DPM-Solver++(2M) 20 log-SNR", "DDIM 250"), ("DPM-Solver++(2M) 10 log-SNR", "DDIM 250"),
         # flow matching (fm-cifar10, the same UNet and training compute as ddpm-cifar10) against it at equal model calls
         ("flow Euler 5", "DDIM 5"), ("flow Euler 10", "DDIM 10"), ("flow Euler 20", "DDIM 20"), ("flow Euler 50", "DDIM 50"),
         ("flow Euler 5", "DPM-Solver++(2M) 5"), ("flow Euler 10", "DPM-Solver++(2M) 10"),
         ("flow Euler 20", "DPM-Solver++(2M) 20"), ("flow Heun 5", "DPM-Solver++(2M) 10"),
         ("flow Heun 3", "DDIM 5"), ("flow Heun 3", "DPM-Solver++(2M) 5"), ("flow Heun 3", "flow Euler 5"),
         ("flow Heun 10", "DPM-Solver++(2M) 20"), ("flow Heun 25", "DDIM 50"), ("flow Heun 10", "flow Euler 20"),
         ("flow Euler 10", "flow Euler 50"), ("flow Euler 20", "flow Euler 50")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data")
    p.add_argument("--samples", type=int, default=500)
    args = p.parse_args()
    train, test = data.load_cifar10(args.data), data.load_cifar10(args.data, train=False)
    reference = metrics.Reference(metrics.cached_features(train.images))
    pipes = {}

    def features(label: str):
        return evaluation.row_features(label, test.images[:args.samples], "cpu", pipes)

    print(f"{args.samples} images per row against all {len(train)} training images; ± the standard error of the difference")
    print("| difference | FID | KID x 1000 |\n|---|---|---|")
    for a, b in PAIRS:
        d = metrics.difference(features(a), features(b), reference)
        print(f"| {a} - {b} | {d['fid']:+.2f} ± {d['fid_se']:.2f} | {1000 * d['kid']:+.2f} ± {1000 * d['kid_se']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
