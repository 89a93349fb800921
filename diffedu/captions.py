"""Captions for CIFAR-10, written from each image by fixed rules (lesson 11).

CIFAR-10 has labels, not captions. These rules write the words a person would also use: the class, the object's
main colour, and how dark or bright the picture is. The same rules later judge the samples of a text-to-image
model ("did 'a red car' come out red?"), so they are deterministic and live here, in one place.

    colour, brightness = attributes(images)                 # measured from the pixels, -1 where no word fits
    caption(1, colour=0, brightness=0)                      # 'a dark photo of a red car'
    random_captions(labels, colour, brightness, generator)  # one per image, attributes left out at random
"""

from __future__ import annotations

import torch

from .errors import DiffeduError

# CIFAR-10's classes as a person names them ("automobile" is a car), in the data's label order
CLASS_WORDS = ("airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
COLOURS = ("red", "orange", "yellow", "green", "blue", "brown", "white")
BRIGHTNESS = ("dark", "bright")
NONE = -1  # no colour or brightness word: the rule is not confident
# Which hue (in degrees) a colour word covers: each range's upper end. Purples and pinks get no word: CIFAR-10's
# objects are almost never purple (1 image in 500), and a word seen so rarely would be learned from almost nothing.
_HUES = ((15, "red"), (40, "orange"), (70, "yellow"), (165, "green"), (260, "blue"), (330, None), (360, "red"))
CENTRE = slice(8, 24)  # the central 16x16 pixels of a 32x32 image, where CIFAR's object sits
CONFIDENT = 0.35  # a colour word only when at least this share of the centre's pixels votes for it
DARK, BRIGHT = 0.3, 0.6  # the picture's mean luma (0-1) below which it is dark, above which bright
TEMPLATES = ("a photo of {}", "a picture of {}", "{}")
# Class-colour pairs never named together in training: does the model compose "blue" and "car" all the same?
HELD_OUT = (("car", "blue"), ("dog", "white"), ("frog", "yellow"))


def _unit_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 images, or floats in [-1, 1], as floats in [0, 1]."""
    x = images.float() / 255 if images.dtype == torch.uint8 else (images.float() + 1) / 2
    return x.clamp(0, 1)


def hsv(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in degrees [0, 360), saturation and value in [0, 1], of uint8 (or [-1, 1] float) RGB images."""
    x = _unit_rgb(images)
    r, g, b = x.unbind(-3)
    v, _ = x.max(-3)
    c = v - x.min(-3).values  # chroma
    safe = c.clamp_min(1e-8)
    hue = torch.where(v == r, (g - b) / safe % 6, torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return 60 * hue * (c > 0), c / v.clamp_min(1e-8), v


def colour_votes(images: torch.Tensor) -> torch.Tensor:
    """(n, len(COLOURS)): the share of each image's centre pixels that reads as each colour word. A pixel votes
    only when its colour is clear: saturated and not too dark (a hue), or white; grey and dark pixels abstain."""
    h, s, v = hsv(images[..., CENTRE, CENTRE])
    word = torch.full_like(h, NONE, dtype=torch.long)
    coloured = (s >= 0.35) & (v >= 0.3)
    for top, name in reversed(_HUES):  # lowest range last, so that it wins
        word = torch.where(coloured & (h < top), NONE if name is None else COLOURS.index(name), word)
    word = torch.where(coloured & (word == COLOURS.index("orange")) & (v < 0.6), COLOURS.index("brown"), word)
    word = torch.where((s < 0.2) & (v > 0.75), COLOURS.index("white"), word)
    counts = torch.stack([(word == k).flatten(1).float().mean(1) for k in range(len(COLOURS))], 1)
    return counts


def luma(images: torch.Tensor) -> torch.Tensor:
    """Each image's mean brightness in [0, 1] (ITU-R BT.601's weights, as in JPEG)."""
    r, g, b = _unit_rgb(images).unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).flatten(1).mean(1)


def attributes(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's colour (an index into COLOURS) and brightness (into BRIGHTNESS), NONE where the rule is not
    confident. Images: (n, 3, H, W), uint8 or floats in [-1, 1]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise DiffeduError(f"attributes reads RGB images of shape (n, 3, H, W), got {tuple(images.shape)}")
    share, colour = colour_votes(images).max(1)
    colour = torch.where(share >= CONFIDENT, colour, NONE)
    y = luma(images)
    brightness = torch.where(y < DARK, 0, torch.where(y > BRIGHT, 1, NONE))
    return colour, brightness


def _a(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def caption(label: int, colour: int = NONE, brightness: int = NONE, template: int = 0) -> str:
    """One caption: 'a photo of a car', 'a dark picture of a red car', 'a red car' (the third template takes no
    brightness word: it names the object alone)."""
    obj = " ".join(([COLOURS[colour]] if colour != NONE else []) + [CLASS_WORDS[label]])
    if template == len(TEMPLATES) - 1:
        return _a(obj)
    text = TEMPLATES[template].format(_a(obj))
    return _a(f"{BRIGHTNESS[brightness]} {text[2:]}") if brightness != NONE else text


def held_out(label: int, colour: int) -> bool:
    """Whether the pair is one of HELD_OUT, never named together in training."""
    return colour != NONE and (CLASS_WORDS[label], COLOURS[colour]) in HELD_OUT


def random_captions(
    labels: torch.Tensor,
    colours: torch.Tensor,
    brightness: torch.Tensor,
    generator: torch.Generator | None = None,
    keep: float = 0.5,
) -> list[str]:
    """A caption for each image, as training sees it: a random template, and each attribute the rules found kept
    with probability `keep`, so that short prompts are learned too. A held-out pair's colour is never named."""
    n = len(labels)
    template = torch.randint(len(TEMPLATES), (n,), generator=generator).tolist()
    kept = (torch.rand(2, n, generator=generator) < keep).tolist()
    return [
        caption(
            y,
            c if kept[0][i] and not held_out(y, c) else NONE,
            b if kept[1][i] else NONE,
            template[i],
        )
        for i, (y, c, b) in enumerate(zip(labels.tolist(), colours.tolist(), brightness.tolist()))
    ]


def vocabulary() -> list[str]:
    """Every word a caption can hold, sorted: the tokenizer's vocabulary."""
    words = {"a", "an", "photo", "picture", "of", *CLASS_WORDS, *COLOURS, *BRIGHTNESS}
    return sorted(words)
