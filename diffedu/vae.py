"""A convolutional VAE: 32x32x3 images in [-1, 1] <-> 8x8x4 latents.

The encoder gives a Gaussian per latent value (a mean and a log-variance);
training samples from it with the reparameterisation trick and pays a small KL
price for straying from N(0, I), which keeps the latent space smooth enough to
interpolate in and to diffuse in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .errors import DiffeduError
from .nets import ResBlock, check_positive, norm


@dataclass
class VAEConfig:
    in_channels: int = 3
    image_size: int = 32
    latent_channels: int = 4
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one downsampling by 2 between levels: 32 -> 16 -> 8
    num_res_blocks: int = 1
    scale_factor: float = 1.0  # latents are multiplied by this before diffusion (measured on the data)

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        check_positive(
            self, "in_channels", "image_size", "latent_channels", "channels", "channel_mult", "num_res_blocks"
        )
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise DiffeduError(f"image_size {self.image_size} cannot be halved {len(self.channel_mult) - 1} times")
        if (
            isinstance(self.scale_factor, bool)
            or not isinstance(self.scale_factor, (int, float))
            or not 0 < self.scale_factor < float("inf")
        ):
            raise DiffeduError(f"scale_factor must be a positive number, got {self.scale_factor!r}")

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


class VAE(nn.Module):
    def __init__(self, config: VAEConfig | None = None, **overrides) -> None:
        super().__init__()
        self.config = cfg = config or VAEConfig(**overrides)
        widths = [cfg.channels * m for m in cfg.channel_mult]

        enc: list[nn.Module] = [nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)]
        c = widths[0]
        for level, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                enc.append(ResBlock(c, w))
                c = w
            if level < len(widths) - 1:
                enc.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        enc += [norm(c), nn.SiLU(), nn.Conv2d(c, 2 * cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, widths[-1], 3, padding=1)]
        c = widths[-1]
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(cfg.num_res_blocks):
                dec.append(ResBlock(c, w))
                c = w
            if level > 0:
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        dec += [norm(c), nn.SiLU(), nn.Conv2d(c, cfg.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and log-variance of q(z | x), each (B, latent_channels, 8, 8)."""
        cfg = self.config
        if x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise DiffeduError(
                f"this VAE encodes (batch, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}) images, "
                f"got {tuple(x.shape)}"
            )
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)  # keeps exp(logvar) finite

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if z.shape[1:] != (cfg.latent_channels, cfg.latent_size, cfg.latent_size):
            raise DiffeduError(
                f"this VAE decodes (batch, {cfg.latent_channels}, {cfg.latent_size}, {cfg.latent_size}) latents, "
                f"got {tuple(z.shape)}"
            )
        return self.decoder(z)

    @torch.inference_mode()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] through the encoder's mean and back: what the decoder can redraw."""
        return self.decode(self.encode(x)[0]).clamp(-1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, logvar = self.encode(x)
        return self.decode(reparameterize(mean, logvar)), mean, logvar


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """z = mean + std * eps: a sample of N(mean, exp(logvar)) that gradients can flow through
    (eps: `noise`, default a fresh N(0, I) draw)."""
    return mean + (0.5 * logvar).exp() * (distributed.randn_like(mean) if noise is None else noise)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent value, in closed form, averaged."""
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean()


def vae_loss(vae: VAE, x: torch.Tensor, kl_weight: float = 1e-4, reconstruction: str = "l1") -> torch.Tensor:
    """Reconstruction error per pixel (L1 keeps edges sharper than MSE) + kl_weight * KL per latent value."""
    recon, mean, logvar = vae(x)
    error = F.l1_loss(recon, x) if reconstruction == "l1" else F.mse_loss(recon, x)
    return error + kl_weight * kl_divergence(mean, logvar)
