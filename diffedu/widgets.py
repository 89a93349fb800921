"""Interactive widgets for the lessons (ipywidgets).

Every picture a slider can show is rendered to PNG before the widget appears,
so moving a slider only swaps bytes: nothing is recomputed, and it stays
instant on a CPU.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import ipywidgets as W
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import DiffeduError
from .latent import decode_latents, encode_latents
from .samplers import SAMPLERS, Trajectory
from .schedules import Schedule
from .viz import grid


def png(images: torch.Tensor, nrow: int = 8, zoom: int = 3) -> bytes:
    """A batch as one PNG grid, enlarged `zoom` times with sharp pixels."""
    return _encode(grid(images, nrow), zoom)


def _encode(array, zoom: int) -> bytes:
    picture = Image.fromarray(array)
    picture = picture.resize((picture.width * zoom, picture.height * zoom), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _slider_view(frames: list[bytes], captions: list[str], description: str, values: list[int]) -> W.VBox:
    """A slider over precomputed PNG frames, with a caption for each."""
    image = W.Image(value=frames[0], format="png")
    caption = W.HTML(captions[0])
    slider = W.SelectionSlider(
        options=values, value=values[0], description=description, continuous_update=True, layout=W.Layout(width="500px")
    )
    index = {v: i for i, v in enumerate(values)}

    def show(change) -> None:
        i = index[change["new"]]
        image.value, caption.value = frames[i], captions[i]

    slider.observe(show, names="value")
    return W.VBox([slider, caption, image])


def noising_widget(images: torch.Tensor, schedule: Schedule, frames: int = 51, seed: int = 0) -> W.VBox:
    """A slider over t that shows q(x_t | x_0) of the given images: one fixed
    noise draw, so moving t shows the signal fading, not the noise changing."""
    if frames < 2 or len(images) == 0:
        raise DiffeduError(
            f"the noising widget needs at least 1 image and 2 frames, got {len(images)} images and {frames} frames"
        )
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    ts = torch.linspace(0, schedule.T - 1, frames).round().long().tolist()
    pngs, captions = [], []
    for t in ts:
        pngs.append(png(schedule.q_sample(images, torch.tensor(t), noise)))
        ab = schedule.alpha_bar[t].item()
        captions.append(
            f"t = {t}: signal sqrt(alpha_bar) = {ab**0.5:.3f}, noise sqrt(1 - alpha_bar) = {(1 - ab) ** 0.5:.3f}, "
            f"SNR = {schedule.snr[t].item():.3g}"
        )
    return _slider_view(pngs, captions, "t", ts)


def trajectory_widget(trajectory: Trajectory, n: int = 8, decode: Callable | None = None) -> W.VBox:
    """A slider over the recorded steps of a sampling run: top row x_t, bottom
    row the model's prediction of x_0 at that step, for the first n images.
    For a latent run, pass `decode` (latents -> images): the rows then show the
    latents' first 3 channels as colours, and the decoded prediction beneath."""
    if not trajectory.timesteps:
        raise DiffeduError("the trajectory recorded no frames: sample with sample_trajectory(..., frames=20)")
    if n < 1:
        raise DiffeduError(f"n, the number of samples to show, must be at least 1, got {n}")
    n = min(n, trajectory.x_t.shape[1])

    def show(z: torch.Tensor) -> torch.Tensor:  # latents' channels 0-2, of unit variance: +-3 std
        return F.interpolate(z[:n, :3] / 3, size=32, mode="nearest")

    pngs = []
    for x_t, x0 in zip(trajectory.x_t, trajectory.x0):
        if decode is None:
            pngs.append(png(torch.cat([x_t[:n], x0[:n]]), nrow=n))
        else:  # latents are 8x8: enlarge them to the decoded images' size to stack the rows
            pngs.append(png(torch.cat([show(x_t), show(x0), decode(x0[:n]).cpu()]), nrow=n))
    rows = (
        "Top: x_t. Bottom: the model's prediction of x_0."
        if decode is None
        else "Rows: x_t and the predicted x_0 (latent channels 0-2 shown as colours), then that prediction decoded."
    )
    captions = [f"t = {t} (snapshot {i + 1} of {len(pngs)}). {rows}" for i, t in enumerate(trajectory.timesteps)]
    return _slider_view(pngs, captions, "t", trajectory.timesteps)


def latent_explorer(vae, image_a: torch.Tensor, image_b: torch.Tensor, seed: int = 0) -> W.VBox:
    """Two images' latents, decoded live: slide between them, and scale one
    latent channel or add noise to it. Only the small decoder runs on each move."""
    z_a, z_b = encode_latents(vae, torch.stack([image_a, image_b])).cpu()
    noise = torch.randn(z_a.shape[1:], generator=torch.Generator().manual_seed(seed))
    mix = W.FloatSlider(0.0, min=0, max=1, step=0.05, description="a -> b")
    channel = W.Dropdown(options=list(range(len(z_a))), value=0, description="channel")
    scale = W.FloatSlider(1.0, min=-2, max=3, step=0.1, description="scale it")
    jitter = W.FloatSlider(0.0, min=0, max=2, step=0.1, description="add noise")
    decoded, channels, caption = W.Image(format="png"), W.Image(format="png"), W.HTML()

    def update(_=None) -> None:
        z = torch.lerp(z_a, z_b, mix.value)
        z[channel.value] = z[channel.value] * scale.value + jitter.value * noise
        decoded.value = png(decode_latents(vae, z[None]).cpu(), zoom=6)
        channels.value = _channel_strip(z, channel.value)
        caption.value = (
            f"decoded image (left), and its {len(z)} latent channels (right, grey = 0); channel "
            f"{channel.value} (framed in red) x {scale.value:.1f} + {jitter.value:.1f} noise"
        )

    for control in (mix, channel, scale, jitter):
        control.observe(update, names="value")
    update()
    pictures = W.HBox([decoded, channels], layout=W.Layout(align_items="flex-start"))  # not stretched to one height
    return W.VBox([W.HBox([mix, channel]), W.HBox([scale, jitter]), caption, pictures])


def _channel_strip(z: torch.Tensor, selected: int, zoom: int = 12) -> bytes:
    """A latent's channels side by side in grey (+-3 std -> black..white), the `selected` one framed in red:
    so that picking a channel shows at once which one the sliders act on."""
    array = grid((z[:, None] / 3).clamp(-1, 1).expand(-1, 3, -1, -1), nrow=len(z))  # RGB, for the red frame
    h, w = z.shape[1:]
    left = selected * (w + 1)  # grid() leaves a 1-pixel gap around each channel: the frame goes there
    inside = array[1 : h + 1, left + 1 : left + w + 1].copy()
    array[: h + 2, left : left + w + 2] = (220, 30, 30)
    array[1 : h + 1, left + 1 : left + w + 1] = inside
    return _encode(array, zoom)


def image_slider(images: dict, description: str, caption: Callable[[object], str] = str, nrow: int = 8) -> W.VBox:
    """A slider over precomputed image batches, {value: images}: e.g. SDEdit's results at each noise level."""
    if not images:
        raise DiffeduError("the slider needs at least one batch of images")
    values = list(images)
    return _slider_view([png(images[v], nrow=nrow) for v in values], [caption(v) for v in values], description, values)


def picker_widget(
    images: dict,
    pick: tuple[str, list[tuple[str, object]]],
    slide: tuple[str, list],
    caption: Callable[[Any, Any], str],
    start: int = 0,
) -> W.VBox:
    """Pick one thing from a list and slide along another: {(picked, slid): images} precomputed (from the same
    noise, so that what changes is what the two controls choose), shown as one row. `pick`: the dropdown's
    description and its (label, value) options; `slide`: the slider's description and values, starting at the
    `start`-th; `caption(picked, slid)`: the line above the images."""
    if not images:
        raise DiffeduError("the widget needs at least one batch of images")
    frames = {key: png(batch, nrow=len(batch), zoom=3) for key, batch in images.items()}
    picker = W.Dropdown(options=pick[1], description=pick[0])
    slider = W.SelectionSlider(
        options=slide[1],
        value=slide[1][min(start, len(slide[1]) - 1)],
        description=slide[0],
        continuous_update=True,
        layout=W.Layout(width="500px"),
    )
    image, text = W.Image(format="png"), W.HTML()

    def show(_=None) -> None:
        image.value = frames[(picker.value, slider.value)]
        text.value = caption(picker.value, slider.value)

    picker.observe(show, names="value")
    slider.observe(show, names="value")
    show()
    return W.VBox([W.HBox([picker, slider]), text, image])


def guidance_widget(images: dict, classes: list[str]) -> W.VBox:
    """Pick a class, move the guidance scale w: {(class index, w): images} precomputed from the same noise
    at every w, so that what changes is the guidance alone."""

    def caption(k: int, w: float) -> str:
        return f"{classes[k]}, w = {w:g}: " + {
            0.0: "unconditional (the label is ignored)",
            1.0: "conditional, no guidance",
        }.get(w, "guided")

    picks = [(classes[k], k) for k in sorted({k for k, _ in images})]
    return picker_widget(images, ("class", picks), ("guidance w", sorted({w for _, w in images})), caption, start=1)


def sampler_widget(images: dict, model_calls: dict) -> W.VBox:
    """Pick a sampler, move its steps: {(sampler name, steps): images} precomputed from the same starting noise, and
    {(sampler name, steps): model calls}, what each run cost."""

    def caption(name: str, steps: int) -> str:
        return f"{SAMPLERS[name].title}, {steps} steps: {model_calls[name, steps]} model calls"

    picks = [(SAMPLERS[name].title, name) for name in dict.fromkeys(name for name, _ in images)]
    return picker_widget(images, ("sampler", picks), ("steps", sorted({steps for _, steps in images})), caption)


def attention_png(images: torch.Tensor, maps: torch.Tensor, words: list[str]) -> bytes:
    """Images (n, 3, H, W) in [-1, 1] in the top row, and below, a row per word: where its cross-attention looked
    (maps (n, words, h, w), each map scaled to its own maximum), labelled with the word."""
    import matplotlib.pyplot as plt

    n = len(images)
    figure, axes = plt.subplots(1 + len(words), n, figsize=(1.1 * n + 0.6, 1.1 * (1 + len(words))), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(((images[i].float().cpu().permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
        for k in range(len(words)):
            m = maps[i, k].float()
            axes[k + 1, i].imshow((m / m.max().clamp_min(1e-12)).numpy(), cmap="magma", vmin=0, vmax=1)
    for row, label in zip(axes, ["image", *words]):
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    figure.subplots_adjust(wspace=0.05, hspace=0.05, left=0.15, right=0.99, top=0.99, bottom=0.01)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()


def prompt_widget(pipe, prompt: str = "a photo of a red car", n: int = 4, steps: int = 50, guidance: float = 3.0):
    """Type a prompt (Enter draws), set the guidance scale and the seed: `n` images of a text-to-image pipeline
    (diffedu.pipelines.TextToImage) and, under them, the cross-attention map of each word of the prompt, averaged
    over the steps. A word the model does not know is said in the status line, and the last images stay."""
    text = W.Text(value=prompt, description="prompt", continuous_update=False, layout=W.Layout(width="420px"))
    scale = W.FloatSlider(value=guidance, min=0, max=7, step=0.5, description="guidance w", continuous_update=False)
    seed = W.BoundedIntText(value=0, min=0, max=2**31 - 1, description="seed", layout=W.Layout(width="180px"))
    status, picture = W.HTML(), W.Image(format="png")

    def draw(_=None) -> None:
        status.value = f"drawing {n} images ..."
        try:
            images, maps, words = pipe.attention_maps(text.value, n, scale.value, steps, generator=seed.value)
        except DiffeduError as error:
            status.value = f"<span style='color:#b00'>{error}</span>"
            return
        picture.value = attention_png(images, maps, words)
        status.value = f"{text.value!r}, w = {scale.value:g}, seed {seed.value}, DDIM {steps} steps"

    for control in (text, scale, seed):
        control.observe(draw, names="value")
    draw()
    return W.VBox([W.HBox([text, seed]), scale, status, picture])
