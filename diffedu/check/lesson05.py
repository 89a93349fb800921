"""Lesson 05, latent diffusion (lessons/05_latent_diffusion.py): sample_latents."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..nets import UNet, UNetConfig
from ..pipelines import LatentDiffusion
from ..samplers import DDIMScheduler
from ..vae import VAE, VAEConfig
from .compare import _same_run
from .core import LINEAR, exercise


@torch.inference_mode()
def _ref_sample_latents(unet, vae, scheduler, n, generator) -> torch.Tensor:
    cfg = unet.config
    x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=generator).to(
        next(unet.parameters()).device
    )
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t), t, x).prev
    return vae.decode(x / vae.config.scale_factor).clamp(-1, 1)


def _tiny_latent_models() -> tuple[UNet, VAE]:
    """A small UNet on 4x8x8 latents and a VAE with scale factor 0.5, random but fixed (no training needed)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet(
            UNetConfig(
                in_channels=4, image_size=8, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=()
            )
        )
        # a zero head would predict eps = 0 and hide mistakes
        nn.init.normal_(unet.head[-1].get_parameter("weight"), std=0.05)
        vae = VAE(VAEConfig(channels=8, scale_factor=0.5))
    return unet.eval(), vae.eval()


@exercise(_ref_sample_latents, "05_latent_diffusion")
def sample_latents(fn) -> str:
    unet, vae = _tiny_latent_models()

    def scheduler() -> DDIMScheduler:
        return DDIMScheduler(LINEAR, clip_x0=False).set_timesteps(5)

    def run(f: Callable) -> torch.Tensor:
        with torch.inference_mode():
            return f(unet, vae, scheduler(), 3, torch.Generator().manual_seed(7))

    expected = LatentDiffusion(vae, unet, LINEAR).sample(
        3, steps=5, generator=torch.Generator().manual_seed(7), progress=False
    )

    def loop(forward=True, unscale=True, clamp=True, multiply=False) -> Callable:
        def sample(unet, vae, scheduler, n, generator) -> torch.Tensor:
            cfg = unet.config
            x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=generator)
            for t in scheduler.timesteps if forward else scheduler.timesteps[::-1]:
                x = scheduler.step(unet(x, t), t, x).prev
            factor = vae.config.scale_factor
            images = vae.decode(x * factor if multiply else x / factor if unscale else x)
            return images.clamp(-1, 1) if clamp else images

        return sample

    _same_run(
        fn,
        run,
        expected,
        {
            "divide the latents by vae.config.scale_factor before decoding: "
            "the decoder was trained on unscaled latents": loop(unscale=False),
            "multiplied by the scale factor where it divides: the UNet's latents are the VAE's times scale_factor, so "
            "decoding takes x / vae.config.scale_factor": loop(multiply=True),
            "step from the largest timestep down: for t in scheduler.timesteps": loop(forward=False),
            "clamp the decoded images to [-1, 1], the range images live in": loop(clamp=False),
        },
        "LatentDiffusion.sample's images",
    )
    return (
        "noise in latent space drawn with the generator, every DDIM step from T - 1 down, then unscaled and "
        "decoded to 3x32x32 images in [-1, 1]"
    )
