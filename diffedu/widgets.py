"""Interactive widgets for the lessons (ipywidgets).

Every picture a slider can show is rendered to PNG before the widget appears,
so moving a slider only swaps bytes: nothing is recomputed, and it stays
instant on a CPU.
"""
from __future__ import annotations

import io

import ipywidgets as W
import torch
from PIL import Image

from .samplers import Trajectory
from .schedules import Schedule
from .viz import grid


def png(images: torch.Tensor, nrow: int = 8, zoom: int = 3) -> bytes:
    """A batch as one PNG grid, enlarged `zoom` times with sharp pixels."""
    array = grid(images, nrow)
    picture = Image.fromarray(array)
    picture = picture.resize((picture.width * zoom, picture.height * zoom), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _slider_view(frames: list[bytes], captions: list[str], description: str, values: list[int]) -> W.VBox:
    """A slider over precomputed PNG frames, with a caption for each."""
    image = W.Image(value=frames[0], format="png")
    caption = W.HTML(captions[0])
    slider = W.SelectionSlider(options=values, value=values[0], description=description, continuous_update=True,
                               layout=W.Layout(width="500px"))
    index = {v: i for i, v in enumerate(values)}

    def show(change):
        i = index[change["new"]]
        image.value, caption.value = frames[i], captions[i]

    slider.observe(show, names="value")
    return W.VBox([slider, caption, image])


def noising_widget(images: torch.Tensor, schedule: Schedule, frames: int = 51, seed: int = 0) -> W.VBox:
    """A slider over t that shows q(x_t | x_0) of the given images: one fixed
    noise draw, so moving t shows the signal fading, not the noise changing."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    ts = torch.linspace(0, schedule.T - 1, frames).round().long().tolist()
    pngs, captions = [], []
    for t in ts:
        pngs.append(png(schedule.q_sample(images, torch.tensor(t), noise)))
        ab = schedule.alpha_bar[t].item()
        captions.append(f"t = {t}: signal sqrt(alpha_bar) = {ab ** 0.5:.3f}, noise sqrt(1 - alpha_bar) = {(1 - ab) ** 0.5:.3f}, "
                        f"SNR = {schedule.snr[t].item():.3g}")
    return _slider_view(pngs, captions, "t", ts)


def trajectory_widget(trajectory: Trajectory, n: int = 8) -> W.VBox:
    """A slider over the recorded steps of a sampling run: top row x_t, bottom
    row the model's prediction of x_0 at that step, for the first n images."""
    if not trajectory.timesteps:
        raise ValueError("the trajectory recorded no frames: sample with sample_trajectory(..., frames=20)")
    n = min(n, trajectory.x_t.shape[1])
    pngs = [png(torch.cat([x_t[:n], x0[:n]]), nrow=n) for x_t, x0 in zip(trajectory.x_t, trajectory.x0)]
    captions = [f"t = {t} (snapshot {i + 1} of {len(pngs)}). Top: x_t. Bottom: the model's prediction of x_0."
                for i, t in enumerate(trajectory.timesteps)]
    return _slider_view(pngs, captions, "t", trajectory.timesteps)
