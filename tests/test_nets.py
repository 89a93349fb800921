from functools import partial

import pytest
import torch

from diffedu.nets import UNet, UNetConfig, count_parameters, timestep_embedding
from diffedu.oracles import GaussianDenoiser
from diffedu.schedules import Schedule
from diffedu.training import Trainer, eps_loss

SMALL = dict(channels=16, channel_mult=(1, 2), num_res_blocks=1, dropout=0.0)


@pytest.mark.parametrize(
    "config",
    [
        UNetConfig(in_channels=3, image_size=32, attn_resolutions=(16,), **SMALL),
        UNetConfig(in_channels=4, image_size=8, attn_resolutions=(4,), **SMALL),
    ],
)
def test_unet_output_has_the_input_shape(config):
    net = UNet(config)
    x = torch.randn(3, config.in_channels, config.image_size, config.image_size)
    assert net(x, torch.tensor([0, 500, 999])).shape == x.shape
    assert net(x, torch.tensor(7)).shape == x.shape  # one t for the whole batch


def test_ddpm_sized_unet_has_ddpms_parameter_count():
    net = UNet(channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,))
    assert count_parameters(net) / 1e6 == pytest.approx(35.7, abs=0.1)  # Ho et al.: 35.7M on CIFAR-10


def test_unet_says_which_shape_it_takes():
    with pytest.raises(ValueError, match=r"\(batch, 3, 32, 32\)"):
        UNet(**SMALL)(torch.randn(2, 3, 28, 28), torch.tensor(1))
    with pytest.raises(ValueError, match="cannot be halved"):
        UNetConfig(image_size=12, channel_mult=(1, 2, 2, 2))


def test_time_embedding_tells_steps_apart():
    e = timestep_embedding(torch.tensor([0, 1, 500]), 32)
    assert e.shape == (3, 32) and e.abs().max() <= 1
    assert (e[0] - e[1]).norm() < (e[0] - e[2]).norm()


def test_unet_overfits_one_batch():
    """Loss falls 10x in 80 CPU steps on one fixed batch at fixed t and noise."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), dropout=0.0))
    schedule = Schedule.linear()
    x0, t, noise = torch.rand(8, 3, 32, 32) * 2 - 1, torch.randint(0, 1000, (8,)), torch.randn(8, 3, 32, 32)
    x_t = schedule.q_sample(x0, t, noise)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss = (net(x_t, t) - noise).pow(2).mean()
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::10]


def test_eps_loss_of_the_exact_denoiser_is_the_irreducible_error():
    """With the best possible predictor, the loss left is Var(eps | x_t), in closed form
    1 - (1 - ab) / (ab s^2 + 1 - ab), averaged over the uniformly drawn t."""
    schedule, m, s = Schedule.linear(), 0.2, 0.5
    torch.manual_seed(0)
    x0 = (m + s * torch.randn(50_000, 1, 2, 2)).double()
    ab = schedule.alpha_bar
    expected = (1 - (1 - ab) / (ab * s**2 + 1 - ab)).mean().item()
    assert eps_loss(GaussianDenoiser(schedule, m, s), x0, schedule).item() == pytest.approx(expected, rel=0.03)


def test_trainer_loss_falls_on_gaussian_blobs():
    torch.manual_seed(0)
    net = UNet(
        UNetConfig(
            in_channels=1,
            image_size=8,
            channels=16,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attn_resolutions=(),
            dropout=0.0,
        )
    )
    schedule = Schedule.linear()
    data = iter(lambda: 0.5 + 0.1 * torch.randn(32, 1, 8, 8), None)
    trainer = Trainer(net, partial(eps_loss, schedule=schedule), lr=2e-3, device="cpu").fit(data, 150, progress=False)
    assert len(trainer.history) == 150 and trainer.step == 150
    assert sum(trainer.history[-20:]) / 20 < 0.5 * sum(trainer.history[:5]) / 5
