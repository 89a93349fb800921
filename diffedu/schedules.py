"""Noise schedules and the forward process q(x_t | x_0).

Notation follows Ho et al. (2020), "Denoising Diffusion Probabilistic Models":
    beta_t        variance added at step t             (t = 0 .. T-1 here, 0-based)
    alpha_t       = 1 - beta_t
    alpha_bar_t   = prod_{s <= t} alpha_s              (how much signal is left)
    q(x_t | x_0)  = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
All tables are float64 so the closed forms can be checked tightly; they are
cast to the data's dtype when used.
"""

from __future__ import annotations

import math

import torch

from .errors import DiffeduError

MAX_T = 100_000  # DDPM uses 1000 steps, improved DDPM 4000; a config asking for 10^12 would exhaust the memory


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's schedule: betas rising linearly from 1e-4 to 0.02 over T = 1000 steps."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021): alpha_bar follows cos^2, which destroys signal
    more evenly than the linear schedule (less time wasted on pure noise)."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)  # the last steps would otherwise reach beta = 1


class Schedule:
    """Every table a sampler or the training loss needs, computed once from the betas."""

    def __init__(self, betas: torch.Tensor, name: str = "custom") -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or len(betas) == 0 or not ((betas > 0) & (betas < 1)).all():
            raise DiffeduError(
                f"betas must be a non-empty 1-d tensor with every value in (0, 1), got shape {tuple(betas.shape)}"
            )
        self.name, self.betas = name, betas
        self.alphas = 1 - betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        # alpha_bar_{t-1}, with alpha_bar_{-1} = 1: "one step before t = 0" is the clean image
        self.alpha_bar_prev = torch.cat([betas.new_ones(1), self.alpha_bar[:-1]])
        self.snr = self.alpha_bar / (1 - self.alpha_bar)  # signal-to-noise ratio of x_t
        # q(x_{t-1} | x_t, x_0) = N(coef_x0 * x_0 + coef_xt * x_t, variance)   (Ho et al. eq. 6-7)
        self.posterior_variance = betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        self.posterior_coef_x0 = betas * self.alpha_bar_prev.sqrt() / (1 - self.alpha_bar)
        self.posterior_coef_xt = (1 - self.alpha_bar_prev) * self.alphas.sqrt() / (1 - self.alpha_bar)

    @classmethod
    def linear(cls, T: int = 1000) -> Schedule:
        return cls(linear_betas(T), name="linear")

    @classmethod
    def cosine(cls, T: int = 1000) -> Schedule:
        return cls(cosine_betas(T), name="cosine")

    @classmethod
    def by_name(cls, name: str, T: int = 1000) -> Schedule:
        makers = {"linear": cls.linear, "cosine": cls.cosine}
        if name not in makers:
            raise DiffeduError(f"unknown schedule {name!r}; choose one of {sorted(makers)}")
        if isinstance(T, bool) or not isinstance(T, int) or not 1 <= T <= MAX_T:
            raise DiffeduError(
                f"T, the number of diffusion steps, must be a whole number from 1 to {MAX_T:,}, got {T!r}"
            )
        return makers[name](T)

    @property
    def T(self) -> int:
        return len(self.betas)

    def __repr__(self) -> str:
        return f"Schedule({self.name}, T={self.T})"

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Jump straight to step t: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise."""
        if noise is None:
            noise = torch.randn_like(x0)
        ab = at(self.alpha_bar, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
        """Invert q_sample given the noise: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t).
        With the model's eps, the model's guess of the clean image."""
        ab = at(self.alpha_bar, t, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor | int, x0: torch.Tensor) -> torch.Tensor:
        """Invert q_sample given the clean image: the noise that takes x_0 to x_t."""
        ab = at(self.alpha_bar, t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def at(table: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """table[t] shaped to broadcast over a batch like `like`: (B,) -> (B, 1, 1, 1)."""
    t = torch.as_tensor(t, device=table.device)
    if t.is_floating_point() or t.is_complex():
        raise DiffeduError(f"timesteps must be whole numbers, got {t.dtype}")
    if t.numel() and (t.min() < 0 or t.max() >= len(table)):  # a negative t would silently index from the end
        raise DiffeduError(f"timesteps must be in 0..{len(table) - 1}, got {t.min().item()}..{t.max().item()}")
    values = table[t.long()].to(device=like.device, dtype=like.dtype)
    return values.reshape(-1, *([1] * (like.dim() - 1)))
