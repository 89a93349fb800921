"""The README's picture: the shipped models' samples side by side, each row from the same seeded noise.

    .venv/bin/python tools/readme_picture.py     # writes docs/samples.png (a few seconds on a CPU)

Run it again after retraining a shipped model, so that the picture shows what ships.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu.pipelines import load_pipeline  # noqa: E402
from diffedu.viz import show_images  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "samples.png"
ROWS = [  # (title, model, sampling options)
    ("ddpm-cifar10, pixel DDIM in 50 steps", "ddpm-cifar10", dict(steps=50)),
    ("fm-cifar10, flow matching, Euler in 50 steps", "fm-cifar10", dict(steps=50)),
    ("ect-cifar10, fm-cifar10 tuned into a consistency model, 2 model calls", "ect-cifar10", dict(steps=2)),
    ("ldm-cifar10, latent DDIM in 50 steps", "ldm-cifar10", dict(steps=50)),
    (
        "ldm-cifar10-cond, the ten classes in turn, guidance w = 3",
        "ldm-cifar10-cond",
        dict(steps=50, classes=torch.arange(10), guidance=3.0),
    ),
]


def main() -> None:
    fig, axes = plt.subplots(len(ROWS), 1, figsize=(7.5, 1.05 * len(ROWS)))
    for ax, (title, name, options) in zip(axes, ROWS):
        with torch.inference_mode():
            generator = torch.Generator().manual_seed(0)
            images = load_pipeline(name).sample(10, generator=generator, progress=False, **options)
        show_images(images, nrow=10, ax=ax)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT.relative_to(OUT.parents[1])}")


if __name__ == "__main__":
    main()
