"""Text for Stable Diffusion in miniature (lesson 11): a word tokenizer, a small CLIP, and its contrastive loss.

Stable Diffusion reads a prompt with CLIP's text encoder (Radford et al. 2021), trained with an image encoder so
that a caption and its image land on nearby vectors, then frozen. Here both encoders are small and trained on the
captions of diffedu.captions:

    clip = CLIP(CLIPConfig(words=captions.vocabulary()))
    ids, mask = clip.tokenizer(["a photo of a red car"])   # (1, 16) token ids, and which of them are real
    states, mask = clip.encode_prompts(["a red car"])       # the token states a UNet's cross-attention reads
    loss = contrastive_loss(image_emb, text_emb, scale, same)
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import captions, env
from .data import to_float
from .errors import DiffeduError
from .nets import ResBlock, check_positive, norm

PAD, END = "<pad>", "<end>"


class Tokenizer:
    """Words to token ids: one id per known word, then the end token, then padding up to `context` tokens.
    A word it does not know is an error naming the nearest ones it does: never silently dropped."""

    def __init__(self, words: list[str], context: int = 16) -> None:
        self.words, self.context = [PAD, END, *words], context
        self.index = {word: i for i, word in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def split(self, text: str) -> list[str]:
        """The prompt's words: lower case, split at spaces, a trailing full stop or comma taken off."""
        if not isinstance(text, str):
            raise DiffeduError(f"a prompt is a string of words, e.g. 'a photo of a red car', got {text!r}")
        words = [word.strip(".,;:!?") for word in text.lower().split()]
        unknown = [word for word in words if word not in self.index or word in (PAD, END)]
        if unknown:
            near = difflib.get_close_matches(unknown[0], self.words[2:], n=3, cutoff=0.6)
            raise DiffeduError(
                f"the word {unknown[0]!r} is not in this model's vocabulary of {len(self.words) - 2} words; "
                + (f"the nearest it knows: {', '.join(near)}" if near else f"it knows: {' '.join(self.words[2:])}")
            )
        if len(words) > self.context - 1:  # one place is the end token's
            raise DiffeduError(
                f"the prompt has {len(words)} words; this model reads at most {self.context - 1}: shorten it"
            )
        return words

    def encode(self, text: str) -> torch.Tensor:
        ids = [self.index[word] for word in self.split(text)] + [self.index[END]]
        return torch.tensor(ids + [self.index[PAD]] * (self.context - len(ids)))

    def decode(self, ids: torch.Tensor) -> str:
        words = [self.words[i] for i in ids.tolist()]
        return " ".join(words[: words.index(END)] if END in words else words)

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, context) token ids, and the (n, context) mask of the tokens up to and including each end token."""
        ids = torch.stack([self.encode(text) for text in texts])
        return ids, ids != self.index[PAD]


@dataclass
class CLIPConfig:
    """A small CLIP: its vocabulary (stored with it, so a checkpoint rebuilds its tokenizer) and its sizes."""

    words: list[str] = field(default_factory=captions.vocabulary)
    context: int = 16  # tokens, the end token included
    width: int = 128  # the text transformer's width: the token states a UNet attends to have this many numbers
    layers: int = 3
    heads: int = 4
    image_channels: int = 32  # the image encoder's first width (doubled twice)
    embed: int = 128  # the shared space where images and captions are compared

    def __post_init__(self) -> None:
        check_positive(self, "context", "width", "layers", "heads", "image_channels", "embed")
        if not isinstance(self.words, list) or not self.words or not all(isinstance(w, str) for w in self.words):
            raise DiffeduError(f"CLIPConfig.words must be a non-empty list of words, got {self.words!r}")
        if self.width % self.heads:
            raise DiffeduError(f"heads ({self.heads}) must divide the width ({self.width})")

    def to_dict(self) -> dict:
        return asdict(self)


class TextEncoder(nn.Module):
    """CLIP's text tower, small: token and position embeddings, a causal transformer (each token sees the words
    before it), a final LayerNorm. Its states at every token are what Stable Diffusion's UNet attends to."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(len(cfg.words) + 2, cfg.width)
        self.position = nn.Parameter(0.01 * torch.randn(cfg.context, cfg.width))
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        causal = torch.triu(torch.full((cfg.context, cfg.context), float("-inf")), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(n, context) token ids -> (n, context, width) token states."""
        return self.norm(self.blocks(self.token(ids) + self.position, mask=self.causal, is_causal=True))


class ImageEncoder(nn.Module):
    """CLIP's image tower, small: residual blocks at 32, 16, 8 and 4 pixels, averaged over the picture."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        c = cfg.image_channels
        widths = (c, c, 2 * c, 4 * c)
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [ResBlock(c_in, c_out), nn.Conv2d(c_out, c_out, 3, stride=2, padding=1)]
        self.blocks = nn.Sequential(*layers, ResBlock(widths[-1], widths[-1]), norm(widths[-1]), nn.SiLU())
        self.proj = nn.Linear(widths[-1], cfg.embed)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.blocks(images).mean((2, 3)))


class CLIP(nn.Module):
    """An image encoder and a text encoder trained together, so that an image and its caption get nearby
    embeddings (`contrastive_loss`). Frozen afterwards, its text encoder conditions a UNet."""

    def __init__(self, config: CLIPConfig | None = None, **overrides) -> None:
        super().__init__()
        self.config = cfg = config or CLIPConfig(**overrides)
        self.tokenizer = Tokenizer(cfg.words, cfg.context)
        self.text, self.image = TextEncoder(cfg), ImageEncoder(cfg)
        self.text_proj = nn.Linear(cfg.width, cfg.embed, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's start: temperature 0.07

    @property
    def device(self) -> torch.device:
        return self.log_scale.device

    @property
    def scale(self) -> torch.Tensor:
        """The logits' scale, 1 / temperature, learned; capped at 100 as CLIP caps it."""
        return self.log_scale.exp().clamp(max=100)

    def encode_prompts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (n, context, width) token states and the (n, context) mask of real tokens."""
        ids, mask = self.tokenizer(texts)
        return self.text(ids.to(self.device)), mask.to(self.device)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> (n, embed): the state at each end token (it has read every word), projected."""
        states, mask = self.encode_prompts(texts)
        return self.text_proj(states[torch.arange(len(texts)), mask.sum(1) - 1])

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> (n, embed)."""
        return self.image(images.to(self.device))


def text_fingerprint(clip: CLIP) -> str:
    """What identifies a text encoder's token states: a UNet that learned to read them records it."""
    return env.fingerprint(*clip.text.state_dict().values())


def contrastive_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor | float, same: torch.Tensor | None = None
) -> torch.Tensor:
    """CLIP's symmetric loss: cosine similarities of every image with every caption, times `scale` (1 /
    temperature), a cross-entropy that picks each image's caption among the batch's, and each caption's image,
    the two directions averaged. `same[i, j]`: captions i and j are the same words, so caption j is as right for
    image i as its own (several positives a row, the target shared among them); default: only the diagonal."""
    logits = scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    same = torch.eye(len(logits), dtype=torch.bool, device=logits.device) if same is None else same
    targets = same.float() / same.sum(1, keepdim=True)  # (same is symmetric: the captions' targets are targets.T)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T)) / 2


def clip_loss(model: CLIP, batch: tuple[torch.Tensor, torch.Tensor], keep: float = 0.5) -> torch.Tensor:
    """The training loss on a batch of (images, attributes (n, 3): class, colour, brightness): a fresh random
    caption for each image, identical captions counted as positives of each other. (This text encoder gives identical
    captions identical embeddings, and then the shared target changes no number of the loss, nor its gradient; it is
    the right target all the same, and stays right for an encoder whose identical captions could embed apart.)"""
    images, attrs = batch
    clip = getattr(model, "module", model)  # a CLIP, or DDP's wrapper of one (torchrun)
    labels, colours, brightness = attrs.cpu().T
    texts = captions.random_captions(labels, colours, brightness, keep=keep)
    ids = clip.tokenizer(texts)[0]
    same = (ids[:, None] == ids[None]).all(-1).to(images.device)
    return contrastive_loss(clip.embed_images(images), clip.embed_text(texts), clip.scale, same)


@torch.inference_mode()
def zero_shot(model: CLIP, images: torch.Tensor, prompts: list[str], batch_size: int = 500) -> torch.Tensor:
    """For each image, the index of the prompt whose embedding is nearest its own (by cosine): CLIP's zero-shot
    classifier when the prompts are 'a photo of a {class}'. Images uint8 or in [-1, 1]."""
    text = F.normalize(model.embed_text(prompts), dim=-1)
    picks = []
    for chunk in images.split(batch_size):
        chunk = to_float(chunk) if chunk.dtype == torch.uint8 else chunk
        picks.append((F.normalize(model.embed_images(chunk), dim=-1) @ text.T).argmax(1).cpu())
    return torch.cat(picks)


def class_prompts() -> list[str]:
    """The zero-shot prompts: 'a photo of a {class}', in the labels' order."""
    return [captions.caption(label) for label in range(len(captions.CLASS_WORDS))]


@torch.inference_mode()
def colour_retrieval(model: CLIP, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image the caption rules give a colour: the colour of the nearest of the prompts 'a {colour}
    {its class}', one per colour word. Returns (the images' indices, the colours picked); compare with the rules'."""
    colour, _ = captions.attributes(images)
    named = (colour != captions.NONE).nonzero().flatten()
    k = len(captions.COLOURS)
    prompts = [captions.caption(y, c, template=2) for y in range(len(captions.CLASS_WORDS)) for c in range(k)]
    text = F.normalize(model.embed_text(prompts), dim=-1).view(len(captions.CLASS_WORDS), k, -1)
    chunk = to_float(images[named]) if images.dtype == torch.uint8 else images[named]
    image = F.normalize(model.embed_images(chunk), dim=-1)
    similarity = (text[labels[named].to(text.device)] @ image[:, :, None]).squeeze(-1)  # (n, colours)
    return named, similarity.argmax(1).cpu()
