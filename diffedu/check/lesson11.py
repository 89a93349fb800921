"""Lesson 11, Stable Diffusion in miniature (lessons/11_text_to_image.py): contrastive_loss, cross_attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..text import contrastive_loss as _ref_contrastive_loss
from .compare import compared
from .core import _randn


def _contrastive_cases() -> list[tuple]:
    """Embeddings of 6 images and their captions; in the second and third case captions 0, 2 and 5 are the same
    words (and 1 and 4), so each of them has several right answers."""
    same = torch.eye(6, dtype=torch.bool)
    for group in ((0, 2, 5), (1, 4)):
        for i in group:
            for j in group:
                same[i, j] = True
    image, text = _randn(6, 8, seed=160), _randn(6, 8, seed=161)
    return [
        (image, text, 14.3, torch.eye(6, dtype=torch.bool)),
        (image, text, 14.3, same),
        (3 * _randn(6, 8, seed=162), 0.5 * _randn(6, 8, seed=163), 2.0, same),
    ]


def _logits(image, text, scale) -> torch.Tensor:
    return scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T


def _targets(same) -> torch.Tensor:
    return same.double() / same.sum(1, keepdim=True)


contrastive_loss = compared(
    "contrastive_loss",
    "11_text_to_image",
    _ref_contrastive_loss,
    cases=_contrastive_cases,
    expected=lambda: [_ref_contrastive_loss(*case) for case in _contrastive_cases()],
    answer=lambda loss: torch.as_tensor(loss, dtype=torch.float64),
    mistakes={
        "identical captions are counted as negatives of each other: where same[i, j] is true, caption j is as right "
        "for image i as its own, so the target is shared among them, same / same.sum(1)": lambda i, t, s, same: (
            _ref_contrastive_loss(i, t, s, None)
        ),
        "the temperature is missing: multiply the cosine similarities by scale (1 / temperature) before the "
        "cross-entropy": lambda i, t, s, same: _ref_contrastive_loss(i, t, 1.0, same),
        "the two directions are not averaged: take the image-to-caption cross-entropy and the caption-to-image one "
        "(the logits transposed), and average them": lambda i, t, s, same: F.cross_entropy(
            _logits(i, t, s), _targets(same).float()
        ),
        "the two directions are added, not averaged: divide their sum by 2": lambda i, t, s, same: (
            2 * _ref_contrastive_loss(i, t, s, same)
        ),
        "the logits are not normalised: CLIP compares directions, the cosine similarity, so F.normalize each "
        "embedding before the dot products": lambda i, t, s, same: _unnormalised(i, t, s, same),
        "the targets do not sum to 1: each row's target is a probability distribution over the captions, so "
        "divide same by its row sums, same / same.sum(1, keepdim=True)": lambda i, t, s, same: _symmetric(
            _logits(i, t, s), same.float()
        ),
    },
    verifies="the symmetric cross-entropy of CLIP over cosine similarities times the scale, with identical captions "
    "sharing the target, on batches with and without repeated captions",
    rtol=1e-4,
    atol=1e-6,
)


def _symmetric(logits, targets) -> torch.Tensor:
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T)) / 2


def _unnormalised(image, text, scale, same) -> torch.Tensor:
    return _symmetric(scale * image @ text.T, _targets(same).float())


def _ref_cross_attention(x, context, mask, w_q, w_k, w_v) -> torch.Tensor:
    """Queries from the image's positions x (b, n, c), keys and values from the text's token states context
    (b, L, d), the padding (mask False) ignored: (b, n, c') by PyTorch's scaled_dot_product_attention."""
    return F.scaled_dot_product_attention(x @ w_q, context @ w_k, context @ w_v, attn_mask=mask[:, None, :])


def _cross_cases() -> list[tuple]:
    """Random inputs: 2 images of 6 positions with 8 channels, captions of 5 tokens (the second with 2 of padding),
    token states as wide as the image's channels (so that keys from the image would fit too)."""
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    return [
        (_randn(2, 6, 8, seed=s), _randn(2, 5, 8, seed=s + 1), mask, *(_randn(8, 4, seed=s + k) for k in (2, 3, 4)))
        for s in (170, 180)
    ]


def _weights(x, context, mask, w_q, w_k, scale=True, dim=-1, masked=True, width=None) -> torch.Tensor:
    """The attention weights, right or with one mistake: `width`, the width whose square root divides the scores (by
    right the queries'); `masked` "inverted", the real tokens' scores filled with -inf in place of the padding's."""
    scores = (x @ w_q) @ (context @ w_k).transpose(-1, -2) / (math.sqrt(width or w_q.shape[1]) if scale else 1)
    hidden = mask if masked == "inverted" else ~mask
    return (scores.masked_fill(hidden[:, None, :], float("-inf")) if masked else scores).softmax(dim)


cross_attention = compared(
    "cross_attention",
    "11_text_to_image",
    _ref_cross_attention,
    cases=_cross_cases,
    expected=lambda: [_ref_cross_attention(*case) for case in _cross_cases()],
    mistakes={
        "the keys and values come from the image: in cross-attention the queries come from the image, the keys and "
        "the values from the text (context @ w_k, context @ w_v)": lambda x, c, m, q, k, v: (
            F.scaled_dot_product_attention(x @ q, x @ k, x @ v)
        ),
        "the scores are not scaled: divide q k^T by the square root of the queries' width, or the softmax "
        "saturates": lambda x, c, m, q, k, v: _weights(x, c, m, q, k, scale=False) @ (c @ v),
        "the scores are scaled by the square root of the wrong width: d in sqrt(d) is the width of the queries and "
        "the keys, q.shape[-1], not that of x or of the token states": lambda x, c, m, q, k, v: (
            _weights(x, c, m, q, k, width=c.shape[-1]) @ (c @ v)
        ),
        "the softmax runs over the wrong axis: each position's weights over the tokens must sum to 1 "
        "(softmax over the last axis, the tokens)": lambda x, c, m, q, k, v: _weights(x, c, m, q, k, dim=-2) @ (c @ v),
        "the padding is not masked: set the scores of padding tokens (mask False) to -inf before the softmax, so "
        "that they get no weight": lambda x, c, m, q, k, v: _weights(x, c, m, q, k, masked=False) @ (c @ v),
        "the mask is inverted: it hides the real tokens and keeps the padding; masked_fill fills where its mask is "
        "true, and mask is true for the real tokens, so fill where ~mask": lambda x, c, m, q, k, v: (
            _weights(x, c, m, q, k, masked="inverted") @ (c @ v)
        ),
    },
    verifies="softmax(q k^T / sqrt(d)) v with queries from the image and keys and values from the text, padding "
    "masked, as torch's scaled_dot_product_attention computes it, on random inputs with padding",
    rtol=1e-4,
    atol=1e-6,
)
