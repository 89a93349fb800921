"""The autoencoder's adversarial loss: why Stable Diffusion's decoder is sharp, and how ours becomes so.

A pixel loss (L1 or L2) is minimised by the average (median, mean) of every image a latent could have come
from: a blur. A discriminator that scores overlapping patches as real or decoded punishes exactly that
(a blurred patch is easy to tell from a real one), so the decoder learns to draw plausible detail instead.
This is the loss of taming-transformers' VQGAN (Esser et al. 2021) and latent diffusion's autoencoders
(Rombach et al. 2022, appendix G):

    decoder:        L1(x, D(z)) + lambda * (-mean(disc(D(z))))
    discriminator:  1/2 mean(relu(1 - disc(x))) + 1/2 mean(relu(1 + disc(D(z))))      (hinge)
    lambda = weight * ||grad L1|| / ||grad adversarial||   at the decoder's last layer

The adaptive lambda (VQGAN eq. 7) keeps the two terms' pulls on the decoder the same size, whatever their scales.

The *decoder stage* retrains only the decoder of a trained VAE with this loss, its encoder frozen: the latents,
their scale factor, and every latent diffusion model trained on them stay valid. It also decodes latents with
noise added, of the size of a latent model's errors, so that the decoder learns to forgive them.
Nothing here is downloaded: the discriminator trains from scratch with the decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .training import Trainer
from .vae import VAE


class PatchDiscriminator(nn.Module):
    """Real-or-decoded logits for overlapping 18x18 patches: (B, 3, 32, 32) -> (B, 1, 8, 8). A PatchGAN (pix2pix,
    VQGAN) sized for 32x32 images: two strided 4x4 convolutions and a 3x3 one, no fully connected layer. No
    normalisation layer: GroupNorm's statistics would let every patch's score depend on the whole image."""

    def __init__(self, in_channels: int = 3, channels: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: zero once real patches score >= 1 and decoded ones <= -1."""
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The decoder's adversarial loss: raise the discriminator's scores of decoded patches."""
    return -fake_logits.mean()


def adaptive_weight(
    reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """||d reconstruction / d last_layer|| / ||d adversarial / d last_layer||, detached (VQGAN eq. 7): the
    weight that gives the adversarial term as strong a pull on the decoder's last layer as the reconstruction."""
    (g_rec,) = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)
    (g_adv,) = torch.autograd.grad(adversarial, last_layer, retain_graph=True)
    g_rec, g_adv = distributed.mean(g_rec), distributed.mean(g_adv)  # on several processes: the global batch's
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0, max_weight).detach()


class DecoderTrainer(Trainer):
    """Retrains a VAE's decoder with L1 + an adaptively weighted adversarial term, the encoder frozen.

    Each step encodes the batch (the encoder's mean), adds Gaussian noise of a random std in [0, `latent_noise`]
    (in scaled-latent units, where the latent models work) to each latent, decodes, and takes one step for the
    decoder and one for the discriminator. The adversarial term switches on after `warmup` steps, so that the
    discriminator has learnt something before the decoder listens to it. The loss logged is the L1 term.
    `disc_loss(real_logits, fake_logits)`: the discriminator's loss (default: the hinge; a lesson passes a
    learner's)."""

    model: VAE  # what it trains is a VAE

    def __init__(
        self,
        vae: VAE,
        *,
        lr: float = 1e-4,
        disc_weight: float = 0.5,
        warmup: int = 200,
        latent_noise: float = 0.3,
        disc_loss=hinge_d_loss,
        **kwargs,
    ) -> None:
        vae.encoder.requires_grad_(False)  # the latent space stays exactly as the latent models learnt it
        vae.decoder.requires_grad_(True)  # (a VAE taken from an EMA has every weight frozen)
        super().__init__(vae, None, lr=lr, **kwargs)
        self.optimizer = torch.optim.AdamW(vae.decoder.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=0.0)
        self.discriminator = PatchDiscriminator(vae.config.in_channels).to(self.device)
        self.disc_optimizer = torch.optim.AdamW(
            self.discriminator.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=0.0
        )
        self.disc_weight, self.warmup, self.latent_noise, self.disc_loss = disc_weight, warmup, latent_noise, disc_loss
        # What the step calls: on several processes (torchrun) DDP's wrappers, which average the gradients
        self._decoder = distributed.wrap(vae.decoder, self.device)
        self._discriminator = distributed.wrap(self.discriminator, self.device)
        self.meta |= {"stage": "decoder", "disc_weight": disc_weight, "warmup": warmup, "latent_noise": latent_noise}

    def noisy_latents(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's means of x, plus noise of std up to `latent_noise` scaled-latent units."""
        vae = self.model
        with torch.no_grad():
            mean = vae.encode(x)[0]
        # torch.rand and torch.randn_like, drawn alike on any number of processes (diffedu.distributed)
        std = self.latent_noise * distributed.rand(len(x), 1, 1, 1, device=x.device) / vae.config.scale_factor
        return mean + std * distributed.randn_like(mean)

    def train_step(self, x: torch.Tensor) -> torch.Tensor:
        vae = self.model
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        vae.encoder.eval()
        decoded = self._decoder(self.noisy_latents(x))  # vae.decode
        reconstruction = F.l1_loss(decoded, x)
        loss = reconstruction
        if self.step >= self.warmup:
            adversarial = hinge_g_loss(self.discriminator(decoded))
            weight = self.disc_weight * adaptive_weight(
                reconstruction, adversarial, vae.decoder[-1].get_parameter("weight")
            )
            loss = reconstruction + weight * adversarial
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(vae.decoder.parameters(), self.grad_clip)
        self.optimizer.step()

        # real and decoded patches in one call: DDP averages the gradients of one forward and backward
        real_logits, fake_logits = self._discriminator(torch.cat([x, decoded.detach()])).chunk(2)
        d_loss = self.disc_loss(real_logits, fake_logits)
        self.disc_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.disc_optimizer.step()

        self.step += 1
        self.ema.update(vae, self.step)
        return reconstruction.detach()

    def parts(self) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer]]:
        """The discriminator and its optimizer are saved with the run: a resumed run goes on where it stopped."""
        modules, optimizers = super().parts()
        return modules | {"disc": self.discriminator}, optimizers | {"disc_optim": self.disc_optimizer}
