"""The VAE and the latent pipeline (issue 4's building blocks)."""

import pytest
import torch

from diffedu.data import to_float
from diffedu.errors import DiffeduError
from diffedu.latent import cached_latents, calibrate, encode_latents, encode_means, measure_scale_factor
from diffedu.nets import UNet, UNetConfig
from diffedu.pipelines import LatentDiffusion
from diffedu.schedules import Schedule
from diffedu.vae import VAE, VAEConfig, kl_divergence, reparameterize, vae_loss

SMALL = VAEConfig(channels=16, channel_mult=(1, 2, 2), num_res_blocks=1)


def test_shapes_through_encoder_and_decoder():
    vae = VAE(SMALL)
    mean, logvar = vae.encode(torch.randn(2, 3, 32, 32))
    assert mean.shape == logvar.shape == (2, 4, 8, 8) and SMALL.latent_size == 8
    assert vae.decode(mean).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\(batch, 4, 8, 8\)"):
        vae.decode(torch.randn(2, 4, 16, 16))


def test_kl_matches_the_closed_form():
    """KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2)/2 - 1/2, for known m and s."""
    m, s = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 0.5, 2.0])
    expected = (torch.log(1 / s) + (s**2 + m**2) / 2 - 0.5).mean()
    assert kl_divergence(m, (s**2).log()).item() == pytest.approx(expected.item(), rel=1e-6)
    assert kl_divergence(torch.zeros(5), torch.zeros(5)).item() == 0


def test_reparameterized_samples_have_the_given_mean_and_variance():
    torch.manual_seed(0)
    mean, logvar = torch.full((200_000,), 1.5), torch.full((200_000,), (0.3**2) ** 1).log()
    z = reparameterize(mean, logvar)
    assert z.mean().item() == pytest.approx(1.5, abs=0.005) and z.std().item() == pytest.approx(0.3, rel=0.01)


def test_vae_overfits_a_small_batch():
    torch.manual_seed(0)
    vae = VAE(SMALL)
    # Smooth images, like photos, are compressible; white noise at 12x fewer values would not be.
    x = torch.nn.functional.interpolate(torch.rand(8, 3, 4, 4) * 2 - 1, size=32, mode="bilinear")

    def error():
        return torch.nn.functional.mse_loss(vae.decode(vae.encode(x)[0]), x).item()

    before = error()
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    for _ in range(60):
        loss = vae_loss(vae, x, reconstruction="mse")
        opt.zero_grad(), loss.backward(), opt.step()
    assert error() < before / 10


def test_cached_latents_are_the_scaled_encoding_computed_once(tmp_path):
    vae = VAE(VAEConfig(**{**SMALL.to_dict(), "scale_factor": 0.5}))
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    means = encode_means(vae, images, flips=True, batch_size=4, progress=False)
    assert means.shape == (20, 4, 8, 8)  # the images, then their mirror images
    assert torch.allclose(means[:10], vae.encode(to_float(images))[0], atol=1e-5)
    first = cached_latents(vae, images, tmp_path, batch_size=4, progress=False)
    again = cached_latents(vae, images, tmp_path, batch_size=4, progress=False)  # from the file
    assert len(list(tmp_path.glob("latents-*.safetensors"))) == 1
    assert torch.allclose(first, 0.5 * means, atol=1e-6) and torch.equal(first, again)  # scaled, like encode_latents
    assert torch.allclose(first[:10], encode_latents(vae, to_float(images)), atol=1e-5)
    assert len(cached_latents(vae, images, tmp_path, flips=False, progress=False)) == 10  # its own cache entry


def test_the_scale_factor_gives_unit_variance_latents():
    vae = VAE(SMALL)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    means = encode_means(vae, images, progress=False)
    assert measure_scale_factor(means * 3) == pytest.approx(measure_scale_factor(means) / 3, rel=1e-5)
    scale = calibrate(vae, images, progress=False)
    assert vae.config.scale_factor == scale == pytest.approx(1 / means.std().item(), rel=1e-5)
    assert encode_latents(vae, to_float(images)).std().item() == pytest.approx(1, rel=1e-4)


def test_latent_pipeline_uses_the_scale_factor_both_ways():
    vae = VAE(VAEConfig(**{**SMALL.to_dict(), "scale_factor": 0.25}))
    unet = UNet(
        UNetConfig(in_channels=4, image_size=8, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=())
    )
    pipe = LatentDiffusion(vae, unet, Schedule.linear())
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    z = pipe.encode(x)
    assert torch.allclose(z, vae.encode(x)[0] * 0.25)
    assert torch.allclose(pipe.decode(z), vae.decode(z / 0.25).clamp(-1, 1))
    images = pipe.sample(2, steps=3, progress=False)
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1
    with pytest.raises(DiffeduError, match="latents are 4x8x8"):
        LatentDiffusion(
            vae, UNet(UNetConfig(in_channels=3, image_size=32, channels=8, channel_mult=(1, 2))), Schedule.linear()
        )
