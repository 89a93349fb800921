import torch

from diffedu.oracles import GaussianDenoiser
from diffedu.samplers import make_scheduler, sample_trajectory
from diffedu.schedules import Schedule
from diffedu.viz import grid
from diffedu.widgets import noising_widget, png, trajectory_widget


def parts(widget):
    slider, caption, image = widget.children
    return slider, caption, image


def test_trajectory_widget_shows_each_recorded_frame():
    schedule = Schedule.linear()
    traj = sample_trajectory(
        GaussianDenoiser(schedule, 0.0, 0.5),
        make_scheduler("ddim", schedule, 10),
        torch.randn(3, 3, 32, 32),
        frames=4,
        progress=False,
    )
    slider, caption, image = parts(trajectory_widget(traj, n=2))
    assert list(slider.options) == traj.timesteps and slider.value == 999
    frames = {}
    for t in traj.timesteps:
        slider.value = t
        frames[t] = image.value
        assert f"t = {t}" in caption.value
    assert len(set(frames.values())) == 4  # a different picture per step
    i = traj.timesteps.index(0)
    assert frames[0] == png(torch.cat([traj.x_t[i, :2], traj.x0[i, :2]]), nrow=2)  # x_t above, x_0 below


def test_noising_widget_fades_the_image():
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    slider, caption, image = parts(noising_widget(images, Schedule.linear(), frames=5))
    assert list(slider.options) == [0, 250, 500, 749, 999]
    first = image.value
    slider.value = 999
    assert image.value != first and "SNR" in caption.value


def test_grid_lays_out_rows():
    g = grid(torch.zeros(10, 3, 4, 4), nrow=4, pad=1)
    assert g.shape == (3 * 5 + 1, 4 * 5 + 1, 3) and g.dtype.name == "uint8"


def test_latent_explorer_decodes_as_the_controls_move():
    from diffedu.latent import decode_latents, encode_latents
    from diffedu.vae import VAE, VAEConfig
    from diffedu.widgets import latent_explorer

    vae = VAE(VAEConfig(channels=8, scale_factor=0.5)).eval()
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1
    widget = latent_explorer(vae, a, b)
    (mix, channel), (scale, jitter) = widget.children[0].children, widget.children[1].children
    decoded, channels = widget.children[3].children
    z_a, z_b = encode_latents(vae, torch.stack([a, b]))
    assert decoded.value == png(decode_latents(vae, z_a[None]), zoom=6)  # starts at image a
    mix.value = 1.0
    assert decoded.value == png(decode_latents(vae, z_b[None]), zoom=6)  # slid all the way to b
    seen = decoded.value
    channel.value, scale.value = 2, 0.0  # switch channel 2 off
    z = z_b.clone()
    z[2] = 0
    assert decoded.value != seen and decoded.value == png(decode_latents(vae, z[None]), zoom=6)
    switched_off = decoded.value
    jitter.value = 1.0  # noise into the switched-off channel
    assert decoded.value != switched_off


def test_the_latent_explorer_frames_the_chosen_channel_in_red():
    import io

    import numpy as np
    from PIL import Image

    from diffedu.vae import VAE, VAEConfig
    from diffedu.widgets import latent_explorer

    widget = latent_explorer(VAE(VAEConfig(channels=8, scale_factor=0.5)).eval(), *torch.rand(2, 3, 32, 32))
    channel, (_, strip) = widget.children[0].children[1], widget.children[3].children

    def red_tiles() -> list[int]:  # which channels have red pixels in the gap around them (zoom 12: 9 pixels/cell)
        array = np.asarray(Image.open(io.BytesIO(strip.value)).convert("RGB"))[::12, ::12].astype(int)
        red = (array[..., 0] > 200) & (array[..., 1] < 60)
        return sorted({(col - 1) // 9 for col in np.nonzero(red[0])[0] if 0 < col < red.shape[1] - 1 and col % 9})

    assert red_tiles() == [0]
    channel.value = 3  # picking a channel changes the picture, not only the caption
    assert red_tiles() == [3]
    assert widget.children[3].layout.align_items == "flex-start"  # the 8x8 channels keep their square shape


def test_image_slider_and_guidance_widget_show_the_chosen_frame():
    from diffedu.widgets import guidance_widget, image_slider

    batches = {t: torch.rand(2, 3, 32, 32) * 2 - 1 for t in (100, 500)}
    slider, caption, image = parts(image_slider(batches, "t", lambda t: f"t = {t}", nrow=2))
    slider.value = 500
    assert image.value == png(batches[500], nrow=2) and caption.value == "t = 500"

    images = {(k, w): torch.full((2, 3, 32, 32), k / 10 + w / 100) for k in (0, 7) for w in (0.0, 1.0, 3.0)}
    widget = guidance_widget(images, ["airplane"] + ["?"] * 6 + ["horse"])
    (picker, scale), caption, image = widget.children[0].children, widget.children[1], widget.children[2]
    assert scale.value == 1.0 and "conditional" in caption.value
    picker.value, scale.value = 7, 3.0
    assert image.value == png(images[(7, 3.0)], nrow=2, zoom=3) and caption.value.startswith("horse, w = 3: guided")


def test_sampler_widget_shows_each_sampler_at_each_step_count():
    from diffedu.widgets import sampler_widget

    images = {(name, steps): torch.full((2, 3, 32, 32), steps / 100) for name in ("ddim", "heun") for steps in (5, 10)}
    calls = {("ddim", 5): 5, ("ddim", 10): 10, ("heun", 5): 9, ("heun", 10): 19}
    widget = sampler_widget(images, calls)
    (picker, steps), caption, image = widget.children[0].children, widget.children[1], widget.children[2]
    assert [label for label, _ in picker.options] == [
        "DDIM",
        "Heun",
    ] and caption.value == "DDIM, 5 steps: 5 model calls"
    picker.value, steps.value = "heun", 10
    assert (
        image.value == png(images[("heun", 10)], nrow=2, zoom=3) and caption.value == "Heun, 10 steps: 19 model calls"
    )
