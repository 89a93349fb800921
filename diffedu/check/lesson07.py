"""Lesson 07, conditioning and classifier-free guidance (lessons/07_guidance.py): drop_labels, guided_eps."""

from __future__ import annotations

import torch

from ..training import drop_labels as _drop_labels
from .compare import compared
from .core import F64, Mistake, _randn, exercise


@exercise(_drop_labels, "07_guidance")
def drop_labels(fn) -> str:
    labels = torch.randint(0, 10, (100_000,), generator=torch.Generator().manual_seed(140))
    p, n = 0.1, len(labels)

    def run(p: float = p, labels: torch.Tensor = labels, seed: int = 141) -> torch.Tensor:
        return torch.as_tensor(fn(labels.clone(), 10, p, torch.Generator().manual_seed(seed)))

    global_state = torch.get_rng_state()
    got = run()
    if got.shape != labels.shape or got.is_floating_point():
        raise Mistake(
            f"it should return the {n} labels as integers, shape ({n},); "
            f"it returned {got.dtype} of shape {tuple(got.shape)}"
        )
    if not torch.equal(got, run()):
        raise Mistake(
            "the same seed gave different labels: draw with the generator, torch.rand(n, generator=generator)"
        )
    if not torch.equal(global_state, torch.get_rng_state()):
        raise Mistake(
            "it changed torch's global random state (torch.manual_seed, or a draw without the generator): "
            "leave it alone, and draw only from the generator it is given"
        )
    changed = got != labels
    if (got[changed] != 10).any():
        new = got[changed][got[changed] != 10].min().item()
        raise Mistake(
            f"a dropped label becomes {new}: 'no label' is the index no_label (here 10, the embedding after "
            f"the 10 classes){'; 0 is the first class, airplane' if new == 0 else ''}"
        )
    small = torch.stack([run(0.5, labels[i * 8 : (i + 1) * 8]) for i in range(200)]) == 10  # 200 batches of 8
    if ((small.all(1)) | (~small.any(1))).all():
        raise Mistake("each label is dropped on its own, with its own draw: not the whole batch at once")
    rate = (got == 10).double().mean().item()
    tolerance = 5 * (p * (1 - p) / n) ** 0.5  # five binomial standard deviations
    if abs(rate - (1 - p)) < tolerance:
        raise Mistake(
            f"it drops {rate:.0%} of the labels, 1 - p: drop a label when its draw is below p, torch.rand(n) < p"
        )
    if abs(rate - p) > tolerance:
        raise Mistake(f"it dropped {rate:.2%} of {n:,} labels at p = {p}: expected {p:.0%} ± {tolerance:.2%}")
    if torch.equal(got, run(seed=142)):
        raise Mistake(
            "two different seeds gave the same labels: draw from the generator it is given, not from one of its own"
        )
    # Each label on its own draw: the count dropped from a batch varies as a binomial's, n p (1 - p). Over 400 seeds
    # the sample variance lands within 0.5-1.6x of it by a wide margin (its relative error is about 7%).
    batch, q = 50, 0.2
    counts = torch.tensor([(run(q, labels[:batch], seed=1000 + k) == 10).sum().item() for k in range(400)], dtype=F64)
    spread = counts.var().item() / (batch * q * (1 - q))
    if not 0.5 < spread < 1.6:
        raise Mistake(
            f"the number dropped from a batch should vary as a binomial's does, each label on its own draw: "
            f"its variance over 400 seeds is {spread:.2f}x the binomial's (dropping exactly p n labels, or "
            f"labels drawn together, is not label dropout)"
        )
    if not (torch.equal(run(0.0), labels) and (run(1.0) == 10).all()):
        raise Mistake("p = 0 must keep every label and p = 1 drop every one")
    on_device = labels[:8].to("meta")  # PyTorch's 'meta' device stands in for a GPU: nothing is computed there
    try:
        moved = fn(on_device, 10, p, torch.Generator().manual_seed(141))
    except RuntimeError as error:
        raise Mistake(
            f"with labels on a GPU it fails ({error}): the generator draws on the CPU, so move the mask to "
            f"the labels' device, torch.rand(n, generator=generator).to(labels.device)"
        ) from None
    if torch.as_tensor(moved).device != on_device.device:
        raise Mistake("with labels on a GPU it returns them on the CPU: keep them on labels.device")
    return (
        f"each label on its own replaced by 'no label' (index 10): {rate:.2%} of {n:,} at p = 0.1 (expected 10% ± "
        f"{tolerance:.2%}), the count varying as a binomial's from seed to seed, the others unchanged, none at "
        f"p = 0, all at p = 1; the same seed the same labels, another seed others, the global random state "
        f"untouched, and labels on another device kept there"
    )


def _ref_guided_eps(eps_uncond, eps_cond, w) -> torch.Tensor:
    return eps_uncond + w * (eps_cond - eps_uncond)


def _guidance_cases() -> list[tuple]:
    return [(_randn(4, 4, 8, 8, seed=120), _randn(4, 4, 8, 8, seed=121), w) for w in (0.0, 1.0, 3.0, 7.5)]


guided_eps = compared(
    "guided_eps",
    "07_guidance",
    _ref_guided_eps,
    cases=_guidance_cases,
    expected=lambda: [_ref_guided_eps(*case) for case in _guidance_cases()],
    mistakes={
        "the roles are swapped: "
        "start from the unconditional prediction and move towards the conditional one": lambda u, c, w: c + w * (u - c),
        "here w = 1 is the plain conditional model: eps_uncond + w (eps_cond - eps_uncond); (1 + w) eps_cond - w "
        "eps_uncond is the other convention, where w = 0 is conditional": lambda u, c, w: (1 + w) * c - w * u,
        "the difference is added to the unconditional prediction, not used alone": lambda u, c, w: w * (c - u),
        "w scales the difference between the two predictions, not the conditional one alone": lambda u, c, w: u + w * c,
    },
    verifies="eps_uncond + w (eps_cond - eps_uncond): "
    "w = 0 the unconditional prediction, w = 1 the conditional one, more beyond it",
)
