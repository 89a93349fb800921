"""The noise-predicting UNet.

The UNet follows DDPM's (Ho et al. 2020, appendix B) at any size: a
sinusoidal embedding of t, residual blocks with GroupNorm that add the time
embedding, self-attention at chosen resolutions, and skip connections from
each down-sampling level to its up-sampling twin. The same class works on
32x32x3 pixels and on 8x8x4 latents.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .errors import DiffeduError


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of t (as in the Transformer): sin and cos at `dim / 2`
    geometrically spaced frequencies, so nearby steps get nearby vectors."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (DDPM's choice), at least 4 channels in each, dividing evenly."""
    groups = next(g for g in range(min(32, max(1, channels // 4)), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class Dropout(nn.Dropout):
    """nn.Dropout with its masks drawn per image as one process draws them for the whole batch (diffedu.distributed):
    on several processes, each image gets its own mask, the one it would get on one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (distributed.rand_like(x, dtype=torch.float32) >= self.p) / (1 - self.p)


class ResBlock(nn.Module):
    """x + f(x, t): two 3x3 convolutions, with the time embedding added in between
    (t_dim = 0 for a block that needs no time, as in the VAE)."""

    def __init__(self, c_in: int, c_out: int, t_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.t_proj = nn.Linear(t_dim, c_out) if t_dim else None
        self.norm2, self.conv2 = norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.t_proj is not None:
            h = h + self.t_proj(t_emb)[:, :, None, None]  # the same shift at every pixel: "which t is it"
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Self-attention over the pixels of a feature map, so far-apart regions can agree."""

    def __init__(self, channels: int, heads: int = 1) -> None:
        super().__init__()
        self.heads = heads
        self.norm = norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)  # (b, heads, h*w, c/heads)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class CrossAttention(nn.Module):
    """Cross-attention (Rombach et al. 2022, as in Stable Diffusion): queries from the feature map's pixels, keys
    and values from the text encoder's token states, padding masked, so that each pixel reads the words it needs.
    A residual whose output projection starts at zero: added to a trained UNet, it changes nothing until trained."""

    def __init__(self, channels: int, context_dim: int, heads: int = 1) -> None:
        super().__init__()
        self.heads = heads
        self.norm = norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.out = nn.Conv2d(channels, channels, 1)
        for p in self.out.parameters():
            nn.init.zeros_(p)
        # set to a list (TextToImage.attention_maps), it collects each call's attention weights
        self.maps: list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (b, c, h, w); context (b, L, context_dim) token states; mask (b, L), True for the real tokens."""
        b, c, h, w = x.shape
        q = self.q(self.norm(x)).reshape(b, self.heads, c // self.heads, h * w).transpose(-1, -2)
        k, v = self.kv(context).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        keep = mask[:, None, None, :]  # (b, 1, 1, L): every head and pixel ignores the padding
        if self.maps is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        else:  # the same, spelled out, to keep the weights: (b, heads, h*w, L)
            weights = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~keep, float("-inf")).softmax(-1)
            self.maps.append(weights.detach())
            y = weights @ v
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


@dataclass
class UNetConfig:
    """Everything needed to rebuild a UNet: stored as JSON beside its weights."""

    in_channels: int = 3
    image_size: int = 32
    channels: int = 64  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width of each level, as a multiple; one downsampling between levels
    num_res_blocks: int = 2  # per level
    attn_resolutions: tuple[int, ...] = (16,)  # feature-map sizes that get self-attention
    dropout: float = 0.1
    heads: int = 1
    num_classes: int = 0  # > 0: class-conditional, with one more learned class, index num_classes, for "no label"
    # the embedding sees time_scale * t: 1000 for a flow-matching model, whose t runs over [0, 1], so that its
    # features vary as much as over DDPM's timesteps 0..999, the range the embedding's frequencies were made for
    time_scale: float = 1.0
    # T, the diffusion steps of the noise schedule it learns (its t is one of 0..T-1), recorded so that a pipeline can
    # refuse a schedule of another T. 1000, every recipe's, for the checkpoints saved before it was recorded; a
    # flow-matching model, whose t is in [0, 1], has no use for it
    T: int = 1000
    # > 0: text-conditioned, with cross-attention to token states of this width after every block (lesson 11)
    context_dim: int = 0

    def __post_init__(self) -> None:
        self.channel_mult, self.attn_resolutions = tuple(self.channel_mult), tuple(self.attn_resolutions)
        check_positive(self, "in_channels", "image_size", "channels", "channel_mult", "num_res_blocks", "heads", "T")
        if (
            isinstance(self.time_scale, bool)
            or not isinstance(self.time_scale, (int, float))
            or not self.time_scale > 0
        ):
            raise DiffeduError(f"time_scale must be a positive number, got {self.time_scale!r}")
        if self.attn_resolutions:
            check_positive(self, "attn_resolutions")
        if not 0 <= self.dropout < 1:
            raise DiffeduError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise DiffeduError(f"image_size {self.image_size} cannot be halved {len(self.channel_mult) - 1} times")
        if not isinstance(self.context_dim, int) or isinstance(self.context_dim, bool) or self.context_dim < 0:
            raise DiffeduError(f"context_dim must be 0 (no text) or a positive whole number, got {self.context_dim!r}")
        if self.num_classes and self.context_dim:
            raise DiffeduError("a UNet is conditioned on classes or on text, not both")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise DiffeduError(
                f"num_classes must be 0 (unconditional) or a positive whole number, got {self.num_classes!r}"
            )
        if any(self.channels * m % self.heads for m in self.channel_mult):
            raise DiffeduError(
                f"heads ({self.heads}) must divide every level's width ({self.channels} x {self.channel_mult})"
            )

    def to_dict(self) -> dict:
        return asdict(self)


class UNet(nn.Module):
    """eps_theta(x_t, t): predicts the noise that was added to make x_t (trained by flow matching: the velocity
    v_theta(x_t, t), the same network). With `num_classes`, eps_theta(x_t, t, y):
    a learned embedding of the class y is added to the time embedding, so every block knows what to draw. With
    `context_dim`, eps_theta(x_t, t, context=..., mask=...): every block is followed by cross-attention to a
    prompt's token states, as in Stable Diffusion."""

    def __init__(self, config: UNetConfig | None = None, **overrides) -> None:
        super().__init__()
        self.config = cfg = config or UNetConfig(**overrides)
        ch, t_dim = cfg.channels, 4 * cfg.channels
        self.t_mlp = nn.Sequential(nn.Linear(ch, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        if cfg.num_classes:
            self.class_emb = nn.Embedding(cfg.num_classes + 1, t_dim)  # the last row: "no label"
        self.stem = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        def stage(c_in, c_out, res) -> nn.ModuleList:
            attn = Attention(c_out, cfg.heads) if res in cfg.attn_resolutions else nn.Identity()
            cross = [CrossAttention(c_out, cfg.context_dim, cfg.heads)] if cfg.context_dim else []
            return nn.ModuleList([ResBlock(c_in, c_out, t_dim, cfg.dropout), attn, *cross])

        # Down: each level's blocks, then a stride-2 conv (except at the last level).
        self.down, widths, c, res = nn.ModuleList(), [ch], ch, cfg.image_size
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(stage(c, ch * mult, res))
                c = ch * mult
                widths.append(c)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                widths.append(c)
                res //= 2
        self.mid = nn.ModuleList(
            [ResBlock(c, c, t_dim, cfg.dropout), Attention(c, cfg.heads), ResBlock(c, c, t_dim, cfg.dropout)]
            + ([CrossAttention(c, cfg.context_dim, cfg.heads)] if cfg.context_dim else [])
        )
        # Up: mirror of down, one more block per level, each eating one skip connection.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(stage(c + widths.pop(), ch * mult, res))
                c = ch * mult
            if level > 0:
                self.up.append(
                    nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1))
                )
                res *= 2
        out = nn.Conv2d(c, cfg.in_channels, 3, padding=1)
        for p in out.parameters():  # its weight and bias: start by predicting eps = 0, a calm first step
            nn.init.zeros_(p)
        self.head = nn.Sequential(norm(c), nn.SiLU(), out)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_t, t (one for all or one per image), and for a class-conditional UNet the classes y (None: "no label");
        for a text-conditioned one a prompt's token states `context` (batch, tokens, context_dim) and the `mask` of
        its real tokens (batch, tokens)."""
        cfg = self.config
        if x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise DiffeduError(
                f"this UNet takes inputs of shape (batch, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}), "
                f"got {tuple(x.shape)}"
            )
        t = torch.as_tensor(t, device=x.device).expand(len(x))  # one t for all, or one each
        emb = self.t_mlp(timestep_embedding(cfg.time_scale * t, cfg.channels).to(x.dtype))
        if cfg.num_classes:
            emb = emb + self.class_emb(self.labels(y, len(x), x.device))
        elif y is not None:
            raise DiffeduError("this UNet is not class-conditional: it takes no labels")
        text = self.check_context(context, mask, len(x))

        def stage(layer: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:  # a ResBlock, attention or not, the text
            h = layer[1](layer[0](h, emb))
            return layer[2](h, *text) if len(layer) == 3 else h

        h = self.stem(x)
        skips = [h]
        for layer in self.down:  # a stage, or a stride-2 conv
            h = stage(layer, h) if isinstance(layer, nn.ModuleList) else layer(h)
            skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        h = self.mid[3](h, *text) if len(self.mid) == 4 else h
        for layer in self.up:  # a stage, or an upsampling
            h = stage(layer, torch.cat([h, skips.pop()], dim=1)) if isinstance(layer, nn.ModuleList) else layer(h)
        return self.head(h)

    def check_context(self, context, mask, n: int) -> tuple[torch.Tensor, torch.Tensor] | tuple[()]:
        """(context, mask) for a text-conditioned UNet, checked; () for any other, which must be given none."""
        dim = self.config.context_dim
        if not dim:
            if context is not None or mask is not None:
                raise DiffeduError("this UNet is not text-conditioned: it takes no prompt (context)")
            return ()
        if context is None or mask is None:
            raise DiffeduError("this UNet is text-conditioned: give the prompt's token states (context) and mask")
        if context.dim() != 3 or context.shape[0] != n or context.shape[2] != dim or mask.shape != context.shape[:2]:
            raise DiffeduError(
                f"context must be ({n}, tokens, {dim}) and mask ({n}, tokens), got {tuple(context.shape)} and "
                f"{tuple(mask.shape)}"
            )
        return context, mask.bool()

    def labels(self, y, n: int, device=None) -> torch.Tensor:
        """Class indices for n images: y for all or one each; None is "no label" (index num_classes)."""
        k = self.config.num_classes
        y = torch.full((n,), k, device=device) if y is None else torch.as_tensor(y, device=device).long().expand(n)
        if y.numel() and (y.min() < 0 or y.max() > k):
            raise DiffeduError(
                f"class labels must be in 0..{k - 1} ({k} for no label), got {y.min().item()}..{y.max().item()}"
            )
        return y


def text_conditioned(base: UNet, context_dim: int) -> UNet:
    """A UNet with cross-attention to token states of width `context_dim`, made from a trained `base`: every weight
    of the base is kept, and since each cross-attention adds zero at first, the new UNet predicts exactly what the
    base predicts with no label, for any prompt. A class-conditional base's "no label" embedding is added to the
    time embedding's bias (it was added to every image's embedding), and its class embedding left behind."""
    cfg = UNetConfig(**{**base.config.to_dict(), "num_classes": 0, "context_dim": context_dim})
    unet = UNet(cfg).to(next(base.parameters()).device)
    weights = {k: v for k, v in base.state_dict().items() if not k.startswith("class_emb.")}
    if base.config.num_classes:
        weights["t_mlp.2.bias"] = weights["t_mlp.2.bias"] + base.class_emb.weight[base.config.num_classes]
    missing, unexpected = unet.load_state_dict(weights, strict=False)
    cross = {name for name, module in unet.named_modules() if isinstance(module, CrossAttention)}
    assert not unexpected and all(k.rsplit(".", 2)[0] in cross for k in missing), (missing, unexpected)
    return unet


def train_only_cross_attention(unet: UNet) -> int:
    """Freeze every weight of `unet` but its cross-attention's (a fine-tuning that cannot unlearn what the base
    knew); returns how many stay trainable."""
    new = {id(p) for module in unet.modules() if isinstance(module, CrossAttention) for p in module.parameters()}
    for p in unet.parameters():
        p.requires_grad_(id(p) in new)
    return sum(p.numel() for p in unet.parameters() if p.requires_grad)


def check_positive(config, *names: str) -> None:
    """Each named field a positive whole number, or a non-empty tuple of them. A config read from a file
    may hold anything, and a wrong size must fail here, by name, not deep inside torch."""
    for name in names:
        value = getattr(config, name)
        values = value if isinstance(value, tuple) else (value,)
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
            kind = (
                "a non-empty tuple of positive whole numbers" if isinstance(value, tuple) else "a positive whole number"
            )
            raise DiffeduError(f"{type(config).__name__}.{name} must be {kind}, got {value!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
