import torch

from diffedu.nets import GaussianDenoiser
from diffedu.samplers import make_scheduler, sample_trajectory
from diffedu.schedules import Schedule
from diffedu.viz import grid
from diffedu.widgets import noising_widget, png, trajectory_widget


def parts(widget):
    slider, caption, image = widget.children
    return slider, caption, image


def test_trajectory_widget_shows_each_recorded_frame():
    schedule = Schedule.linear()
    traj = sample_trajectory(GaussianDenoiser(schedule, 0.0, 0.5), make_scheduler("ddim", schedule, 10),
                             torch.randn(3, 3, 32, 32), frames=4, progress=False)
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
