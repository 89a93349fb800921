"""How sure are the quality table's comparisons? The difference between two of its rows, with its standard error.

    .venv/bin/python benchmarks/paired_differences.py                  # the shipped table: a second
    .venv/bin/python benchmarks/paired_differences.py --table data/bench/quality.json

Rows of one model sampled from the same noise (DDIM 20 and DDIM 100 start from the same x_T, by the table's seeded
protocol) are paired: the standard error of their difference comes from the paired images' influences on the
scores, which every row of the table keeps (diffedu.report.paired), and is far smaller than either row's. Rows
from different noise (pixel against latent) pair arbitrarily, which comes to sqrt(se_1^2 + se_2^2).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import pretrained, report  # noqa: E402

PAIRS = [
    ("DDIM 20", "DDIM 100"),
    ("DDIM 20", "DDIM 50"),
    ("DDIM 10", "DDIM 20"),
    ("DDPM 1000", "DDIM 20"),
    ("DDIM 10 quadratic", "DDIM 10"),
    ("DDIM 20 quadratic", "DDIM 20"),
    ("DDIM 50 quadratic", "DDIM 50"),
    ("DDIM 100 quadratic", "DDIM 100"),
    ("latent DDIM 10", "latent DDIM 50"),
    ("latent DDIM 50", "latent DDIM 50, L1 decoder"),
    ("latent DDIM 50", "DDIM 50"),
    ("latent DDIM 50", "VAE reconstructions of them"),
    # lesson 08's samplers against DDIM at about the same model calls, or twice them
    ("DPM-Solver++(2M) 5", "DDIM 10"),
    ("DPM-Solver++(2M) 10", "DDIM 10"),
    ("DPM-Solver++(2M) 10", "DDIM 20"),
    ("DPM-Solver++(2M) 20", "DDIM 20"),
    ("DPM-Solver++(2M) 50", "DDIM 50"),
    ("Heun 5", "DDIM 10"),
    ("Heun 10", "DDIM 20"),
    ("Heun 25", "DDIM 50"),
    ("Heun 3", "DDIM 5"),
    ("DPM-Solver++(2M) 5", "DDIM 5"),
    # the same samplers on timesteps spaced evenly in log-SNR
    ("DDIM 10 log-SNR", "DDIM 10"),
    ("DDIM 20 log-SNR", "DDIM 20"),
    ("DPM-Solver++(2M) 10 log-SNR", "DPM-Solver++(2M) 10"),
    ("DPM-Solver++(2M) 5 log-SNR", "DDIM 10"),
    ("DPM-Solver++(2M) 10 log-SNR", "DDIM 20"),
    ("DPM-Solver++(2M) 10 log-SNR", "DDIM 50"),
    ("DPM-Solver++(2M) 20 log-SNR", "DDIM 20"),
    ("DPM-Solver++(2M) 20 log-SNR", "DDIM 50"),
    ("Heun 5 log-SNR", "DDIM 10"),
    ("Heun 10 log-SNR", "DDIM 20"),
    # closer to the ODE's own solution
    ("DDIM 250", "DDIM 50"),
    ("DDIM 250", "DDIM 20"),
    ("DPM-Solver++(2M) 50", "DDIM 250"),
    ("DPM-Solver++(2M) 20 log-SNR", "DDIM 250"),
    ("DPM-Solver++(2M) 10 log-SNR", "DDIM 250"),
    # flow matching (fm-cifar10, the same UNet and training compute as ddpm-cifar10) against it at equal model calls
    ("flow Euler 5", "DDIM 5"),
    ("flow Euler 10", "DDIM 10"),
    ("flow Euler 20", "DDIM 20"),
    ("flow Euler 50", "DDIM 50"),
    ("flow Euler 5", "DPM-Solver++(2M) 5"),
    ("flow Euler 10", "DPM-Solver++(2M) 10"),
    ("flow Euler 20", "DPM-Solver++(2M) 20"),
    ("flow Heun 5", "DPM-Solver++(2M) 10"),
    ("flow Heun 3", "DDIM 5"),
    ("flow Heun 3", "DPM-Solver++(2M) 5"),
    ("flow Heun 3", "flow Euler 5"),
    ("flow Heun 10", "DPM-Solver++(2M) 20"),
    ("flow Heun 25", "DDIM 50"),
    ("flow Heun 10", "flow Euler 20"),
    ("flow Euler 10", "flow Euler 50"),
    ("flow Euler 20", "flow Euler 50"),
    # the consistency model (ect-cifar10, fm-cifar10 tuned) against the others' samplers at the same few calls
    ("consistency 1", "flow Euler 1"),
    ("consistency 1", "DDIM 1"),
    ("consistency 2", "flow Euler 2"),
    ("consistency 2", "DDIM 2"),
    ("consistency 2", "DPM-Solver++(2M) 2"),
    ("consistency 4", "DPM-Solver++(2M) 3"),
    ("consistency 2", "flow Heun 3"),
    ("consistency 1", "DDIM 5"),
    ("consistency 4", "DDIM 10"),
    ("consistency 2", "consistency 1"),
    ("consistency 4", "consistency 2"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", type=Path, help="a quality table's JSON (default: the shipped one)")
    args = p.parse_args()
    table = json.loads(args.table.read_text()) if args.table else pretrained.quality_table()
    print(report.compare(table, *PAIRS))


if __name__ == "__main__":
    main()
