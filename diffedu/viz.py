"""Pictures: image grids, and a loss curve that redraws while training runs."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch

from .data import to_uint8


def grid(images: torch.Tensor, nrow: int = 8, pad: int = 1) -> np.ndarray:
    """(N, 3, H, W) images, float in [-1, 1] or uint8, as one (rows*H, nrow*W, 3) uint8 array."""
    x = images.detach().cpu()
    x = x if x.dtype == torch.uint8 else to_uint8(x.float())
    n, c, h, w = x.shape
    nrow = min(nrow, n)
    rows = -(-n // nrow)
    canvas = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 255, dtype=torch.uint8)
    for i, img in enumerate(x):
        r, col = divmod(i, nrow)
        canvas[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = (
            img
        )
    out = canvas.permute(1, 2, 0).numpy()
    return out if c == 3 else out[..., 0]


# The widest figure a notebook shows unshrunk, in inches (at the inline backend's 100 dpi, beside JupyterLab's
# file browser on a laptop screen): wider ones are scaled down, and their labels with them.
FIGURE_WIDTH = 9.5


def show_images(images: torch.Tensor, nrow: int = 8, title: str | None = None, ax=None, scale: float = 0.6) -> plt.Axes:
    """Show a batch as a grid (each 32x32 image drawn about `scale` inches wide)."""
    g = grid(images, nrow)
    if ax is None:
        rows = -(-len(images) // min(nrow, len(images)))
        scale = min(scale, (FIGURE_WIDTH - 0.2) / min(nrow, len(images)))  # wide grids shrink to fit
        _, ax = plt.subplots(figsize=(scale * min(nrow, len(images)) + 0.2, scale * rows + (0.4 if title else 0.2)))
    ax.imshow(g, cmap="gray" if g.ndim == 2 else None, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def smooth(values, window: int = 20) -> np.ndarray:
    """Moving average, so the trend shows through the noise of single batches."""
    values = np.asarray(values, dtype=float)
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_loss(history, ax=None, title: str = "training loss", watched: list[dict] | None = None) -> plt.Axes:
    """The loss of every batch and its moving average; with `watched` (Trainer.watched), the EMA model's loss on
    fixed batches, training and held-out, as training went: where they part, the model fits its data."""
    ax = ax or plt.subplots(figsize=(6, 3))[1]
    ax.plot(history, alpha=0.3, label="per batch")
    window = max(1, len(history) // 20)
    ax.plot(np.arange(len(smooth(history, window))) + window - 1, smooth(history, window), label=f"mean of {window}")
    watched = watched or []  # the fixed batches' losses (Trainer.watch)
    for name in [key for key in (watched[0] if watched else {}) if key != "step"]:
        ax.plot([w["step"] for w in watched], [w[name] for w in watched], "o-", ms=3, label=f"{name}, fixed batch")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title=title)
    ax.legend()
    return ax


class LiveLoss:
    """A Trainer callback that redraws the loss curve in place in a notebook."""

    def __init__(self, title: str = "training loss") -> None:
        self.title, self.handle = title, None

    def __call__(self, trainer) -> None:
        from IPython.display import display

        fig, ax = plt.subplots(figsize=(6, 3))
        plot_loss(trainer.history, ax, f"{self.title} (step {trainer.step})", trainer.watched)
        fig.tight_layout()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


def _pixel(sampler: str, spacing: str) -> Callable[[dict], bool]:
    """Which rows of the quality table are the pixel model's with this sampler and spacing."""
    return lambda r: (r.get("space"), r.get("sampler"), r.get("spacing")) == ("pixel", sampler, spacing)


_FAMILIES = (  # (label, line style, colour, which rows of the quality table)
    ("pixel DDIM, uniform steps", "o-", "C0", _pixel("ddim", "uniform")),
    ("pixel DDIM, quadratic steps", "^--", "C1", _pixel("ddim", "quadratic")),
    ("pixel DDIM, log-SNR steps", "o:", "C0", _pixel("ddim", "logsnr")),
    ("pixel DPM-Solver++(2M)", "v-", "C4", _pixel("dpmpp2m", "uniform")),
    ("pixel DPM-Solver++(2M), log-SNR steps", "v:", "C4", _pixel("dpmpp2m", "logsnr")),
    ("pixel Heun", "P-", "C5", _pixel("heun", "uniform")),
    ("pixel Heun, log-SNR steps", "P:", "C5", _pixel("heun", "logsnr")),
    (r"pixel DDPM 1000, variance $\tilde\beta_t$", "s", "C3", _pixel("ddpm", "uniform")),
    (r"pixel DDPM 1000, variance $\beta_t$", "d", "C3", _pixel("ddpm_large", "uniform")),
    ("latent DDIM", "D-", "C2", lambda r: r.get("space") == "latent" and not r.get("vae")),
    (
        "latent DDIM, L1 decoder",
        "x",
        "C7",
        lambda r: r.get("space") == "latent" and r.get("vae"),
    ),  # before the decoder stage
    ("flow matching, Euler", "*-", "C8", lambda r: r.get("space") == "flow" and r["sampler"] == "euler"),
    ("flow matching, Heun", "X-", "C9", lambda r: r.get("space") == "flow" and r["sampler"] == "heun"),
    ("consistency model (ECT)", "h-", "C6", lambda r: r.get("space") == "consistency"),
)
# The quality table's models, by the space its rows name (a row's "space"): what evaluation samples, and what the
# plots and tables here pick rows by. Defined here, the lowest module to use it.
MODELS = {"pixel": "ddpm-cifar10", "latent": "ldm-cifar10", "flow": "fm-cifar10", "consistency": "ect-cifar10"}
SPACES = tuple(MODELS)


def _model_calls(row: dict) -> int:
    """A row's model calls (NFE); rows measured before they were recorded are DDPM's and DDIM's: one per step."""
    return row.get("model_calls", row["steps"])


def quality_rows(
    table: dict,
    samplers: tuple[str, ...] | None = None,
    spacings: tuple[str, ...] | None = None,
    spaces: tuple[str, ...] = SPACES,
) -> dict:
    """The rows of a quality table to show: only those samplers' and spacings' (None: all), of the models of
    `spaces` (MODELS: "pixel" is ddpm-cifar10, ...); the yardsticks always (the reconstructions by the latent
    model's VAEs only with its rows)."""

    def kept(label: str, row: dict) -> bool:
        if "sampler" not in row:  # a yardstick
            return "latent" in spaces or label == "real test images"
        return (
            row["space"] in spaces
            and (samplers is None or row["sampler"] in samplers)
            and (spacings is None or row["spacing"] in spacings)
        )

    return {label: row for label, row in table["rows"].items() if kept(label, row)}


def quality_plot(
    table: dict,
    against: str = "calls",
    samplers: tuple[str, ...] | None = None,
    spacings: tuple[str, ...] | None = None,
    spaces: tuple[str, ...] = SPACES,
) -> plt.Figure:
    """The shipped quality table (diffedu.pretrained.quality_table()) as FID and KID against the model calls
    (`against="calls"`, NFE: for DDPM and DDIM the steps) or the seconds per image: one line per kind of sampler,
    each point with its standard error, the yardsticks as horizontal lines. Which rows: as `quality_rows`."""
    x_of = {"calls": _model_calls, "seconds": lambda r: r["seconds_per_image"]}[against]
    rows = quality_rows(table, samplers, spacings, spaces)
    fig, axes = plt.subplots(1, 2, figsize=(FIGURE_WIDTH, 3.4))
    for ax, key, name, scale in ((axes[0], "fid", "FID", 1), (axes[1], "kid", "KID x 1000", 1000)):
        for label, style, colour, picks in _FAMILIES:
            points = sorted((x_of(r), scale * r[key], scale * r[f"{key}_se"]) for r in rows.values() if picks(r))
            if points:
                x, y, error = zip(*points)
                ax.errorbar(x, y, yerr=error, fmt=style, color=colour, capsize=2, label=label)
        yardsticks = [
            ("real test images", "--", "k"),
            ("VAE reconstructions of them", ":", "C2"),
            ("L1-decoder reconstructions", ":", "C7"),
        ]
        for label, style, colour in yardsticks:
            if label in rows:
                ax.axhline(scale * rows[label][key], color=colour, ls=style, lw=1, label=label)
        ax.set(
            xscale="log",
            xlabel="model calls (NFE; DDPM's and DDIM's: the steps)"
            if against == "calls"
            else "seconds per image (log scale)",
            ylabel=f"{name} (lower is better)",
            title=f"{name}, {table['samples']} images each",
        )
    axes[1].legend(fontsize=8)
    fig.suptitle(f"scored against {table['reference']}", fontsize=9)
    fig.tight_layout()
    return fig


def references_plot(training: dict, held_out: dict) -> plt.Figure:
    """Each row of a quality table scored against the training images (across) and against held-out images (up),
    FID and KID, with standard errors; the yardsticks named. Where the points keep their order along both axes, the
    two references rank the rows alike. Pass diffedu.pretrained.quality_table() and quality_table("held-out")."""
    fig, axes = plt.subplots(1, 2, figsize=(FIGURE_WIDTH, 3.4))
    for ax, key, name, scale in ((axes[0], "fid", "FID", 1), (axes[1], "kid", "KID x 1000", 1000)):
        for label, row in training["rows"].items():
            other, yardstick = held_out["rows"][label], "sampler" not in row
            ax.errorbar(
                scale * row[key],
                scale * other[key],
                xerr=scale * row[f"{key}_se"],
                yerr=scale * other[f"{key}_se"],
                fmt="s" if yardstick else "o",
                color="k" if yardstick else "C0",
                ms=3,
                lw=0.8,
            )
            if yardstick:
                ax.annotate(
                    label,
                    (scale * row[key], scale * other[key]),
                    fontsize=7,
                    xytext=(4, -8),
                    textcoords="offset points",
                )
        ax.set(
            xlabel=f"{name} against the training images",
            ylabel=f"{name} against held-out images",
            title=f"{name}: the two references, {training['samples']} images per row",
        )
    fig.tight_layout()
    return fig
