"""Pictures: image grids, and a loss curve that redraws while training runs."""
from __future__ import annotations

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
        canvas[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    out = canvas.permute(1, 2, 0).numpy()
    return out if c == 3 else out[..., 0]


def show_images(images: torch.Tensor, nrow: int = 8, title: str | None = None, ax=None, scale: float = 0.6):
    """Show a batch as a grid (each 32x32 image drawn about `scale` inches wide)."""
    g = grid(images, nrow)
    if ax is None:
        rows = -(-len(images) // min(nrow, len(images)))
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


def plot_loss(history, ax=None, title: str = "training loss"):
    ax = ax or plt.subplots(figsize=(6, 3))[1]
    ax.plot(history, alpha=0.3, label="per batch")
    window = max(1, len(history) // 20)
    ax.plot(np.arange(len(smooth(history, window))) + window - 1, smooth(history, window), label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title=title)
    ax.legend()
    return ax


class LiveLoss:
    """A Trainer callback that redraws the loss curve in place in a notebook."""

    def __init__(self, title: str = "training loss"):
        self.title, self.handle = title, None

    def __call__(self, trainer) -> None:
        from IPython.display import display

        fig, ax = plt.subplots(figsize=(6, 3))
        plot_loss(trainer.history, ax, f"{self.title} (step {trainer.step})")
        fig.tight_layout()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)
