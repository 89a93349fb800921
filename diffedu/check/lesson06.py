"""Lesson 06, the comparison (lessons/06_comparison.py): frechet_distance, mmd2_unbiased."""

from __future__ import annotations

import torch

from .. import metrics
from .compare import compared
from .core import F64, _randn


def _ref_frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    return metrics.frechet_distance(mu1, sigma1, mu2, sigma2)


def _covariance(d: int, seed: int) -> torch.Tensor:
    a = _randn(d, 2 * d, seed=seed)
    return a @ a.T / (2 * d)


def _sqrtm(s: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(s)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


_D = 8
_DIAG1, _DIAG2 = torch.diag(_randn(_D, seed=106).abs() + 0.1), torch.diag(_randn(_D, seed=107).abs() + 0.1)


def _frechet_cases() -> list[tuple]:
    return [
        (_randn(_D, seed=100), _covariance(_D, 101), _randn(_D, seed=102), _covariance(_D, 103)),
        (_randn(_D, seed=104), _covariance(_D, 105), _randn(_D, seed=104), _covariance(_D, 105)),  # identical: 0
        (torch.zeros(_D, dtype=F64), _DIAG1.clone(), torch.ones(_D, dtype=F64), _DIAG2.clone()),
    ]  # diagonal: a closed form


def _mean_term(m1, s1, m2, s2) -> float:
    return float(((m1 - m2) ** 2).sum())


frechet_distance = compared(
    "frechet_distance",
    "06_comparison",
    _ref_frechet_distance,
    cases=_frechet_cases,
    expected=lambda: [
        metrics.frechet_distance(*_frechet_cases()[0]),
        0.0,
        float(_D + ((_DIAG1.diagonal().sqrt() - _DIAG2.diagonal().sqrt()) ** 2).sum()),
    ],
    answer=float,
    mistakes={
        "the covariance term is missing: FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); the means alone miss "
        "differences in spread": _mean_term,
        "the cross term is 2 Tr((S1 S2)^(1/2)): the 2 is missing": lambda m1, s1, m2, s2: (
            _mean_term(m1, s1, m2, s2) + float(torch.trace(s1 + s2 - _sqrtm(_sqrtm(s1) @ s2 @ _sqrtm(s1))))
        ),
        "(S1 S2)^(1/2) is a matrix square root (scipy.linalg.sqrtm, or eigenvalues), "
        "not the square root of each entry": lambda m1, s1, m2, s2: (
            _mean_term(m1, s1, m2, s2) + float(torch.trace(s1 + s2) - 2 * (s1 @ s2).diagonal().sqrt().sum())
        ),
        "|mu1 - mu2|^2 is the squared distance between the means: square the norm": lambda m1, s1, m2, s2: (
            metrics.frechet_distance(m1, s1, m2, s2) - _mean_term(m1, s1, m2, s2) + float((m1 - m2).norm())
        ),
    },
    rtol=1e-6,
    atol=1e-8,
    verifies="the Frechet distance of two Gaussians: diffedu's value on random covariances, 0 for identical ones, and "
    "|mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2 for diagonal ones",
)


def _ref_mmd2_unbiased(x, y) -> float:
    return metrics.mmd2_unbiased(x, y)


def _mmd_cases() -> list[tuple]:
    return [
        (_randn(20, 16, seed=110), _randn(30, 16, seed=111) + 0.3),
        (_randn(25, 16, seed=112), _randn(25, 16, seed=113)),
    ]


def _kernel(a, b, scale=True, degree=3, plus=1.0) -> torch.Tensor:
    return (a @ b.T / (a.shape[1] if scale else 1) + plus) ** degree


def _mmd(x, y, unbiased=True, cross=2.0, **kernel) -> float:
    """MMD^2, right or with one of the mistakes the check names."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _kernel(x, x, **kernel), _kernel(y, y, **kernel), _kernel(x, y, **kernel)
    if unbiased:
        within = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    else:
        within = kxx.mean() + kyy.mean()
    return float(within - cross * kxy.mean())


mmd2_unbiased = compared(
    "mmd2_unbiased",
    "06_comparison",
    _ref_mmd2_unbiased,
    cases=_mmd_cases,
    expected=lambda: [metrics.mmd2_unbiased(*case) for case in _mmd_cases()],
    answer=float,
    mistakes={
        "unbiased: leave k(x_i, x_i) out of the within-set means "
        "(sum over i != j, divided by m (m - 1))": lambda x, y: _mmd(x, y, unbiased=False),
        "the kernel is (x . y / d + 1)^3: divide the dot product by the feature dimension d": lambda x, y: _mmd(
            x, y, scale=False
        ),
        "the kernel is cubic, (x . y / d + 1)^3": lambda x, y: _mmd(x, y, degree=2),
        "the kernel adds 1 before cubing: (x . y / d + 1)^3": lambda x, y: _mmd(x, y, plus=0.0),
        "the cross term counts twice: MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y)": lambda x, y: _mmd(
            x, y, cross=1.0
        ),
    },
    rtol=1e-6,
    atol=1e-8,
    verifies="the unbiased MMD^2 with KID's cubic kernel, equal to diffedu's on sets of equal and unequal sizes",
)
