"""The forward process against its closed forms."""

import math

import pytest
import torch

from diffedu.schedules import Schedule, at, cosine_betas, linear_betas


@pytest.fixture(params=["linear", "cosine"])
def schedule(request):
    return Schedule.by_name(request.param)


def test_linear_betas_are_ddpms():
    betas = linear_betas()
    assert len(betas) == 1000
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(betas.diff(), betas.diff()[0].expand(999))


def test_cosine_alpha_bar_follows_cos_squared():
    s, T = 0.008, 1000
    alpha_bar = Schedule.cosine(T).alpha_bar

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    for t in (0, 100, 500, 900):  # before the beta clipping at the very end
        assert alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert cosine_betas(T).max() <= 0.999


def test_alpha_bar_is_the_product_of_alphas(schedule):
    for t in (0, 1, 10, 500, 999):
        assert schedule.alpha_bar[t].item() == pytest.approx(math.prod(schedule.alphas[: t + 1].tolist()), rel=1e-12)
    assert (schedule.alpha_bar.diff() < 0).all(), "signal must only fade"
    assert schedule.alpha_bar[-1] < 1e-4, "x_T must be (nearly) pure noise"
    assert torch.allclose(schedule.snr, schedule.alpha_bar / (1 - schedule.alpha_bar))


def test_q_sample_has_the_closed_form_mean_and_variance(schedule):
    torch.manual_seed(0)
    x0 = torch.tensor([-0.8, 0.0, 0.5], dtype=torch.float64).view(1, 3, 1, 1).expand(200_000, 3, 1, 1)
    for t in (0, 250, 999):
        xt = schedule.q_sample(x0, torch.full((len(x0),), t))
        ab = schedule.alpha_bar[t].item()
        assert torch.allclose(xt.mean(0).flatten(), math.sqrt(ab) * x0[0].flatten(), atol=0.01)
        assert torch.allclose(xt.var(0).flatten(), torch.full((3,), 1 - ab, dtype=torch.float64), rtol=0.02, atol=2e-5)


def test_q_sample_in_one_jump_matches_the_step_by_step_chain():
    schedule = Schedule.linear()
    torch.manual_seed(1)
    x = x0 = torch.full((100_000, 1, 1, 1), 0.7, dtype=torch.float64)
    for t in range(300):  # x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) noise, one step at a time
        x = schedule.alphas[t].sqrt() * x + schedule.betas[t].sqrt() * torch.randn_like(x)
    jump = schedule.q_sample(x0, torch.full((len(x0),), 299))
    assert x.mean().item() == pytest.approx(jump.mean().item(), abs=0.01)
    assert x.std().item() == pytest.approx(jump.std().item(), rel=0.01)


def test_posterior_is_the_product_of_the_two_gaussians(schedule):
    """Bayes: q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0).
    Multiply the two Gaussians by hand and compare with the schedule's tables."""
    for t in (1, 10, 500, 999):
        ab_prev, alpha, beta = schedule.alpha_bar[t - 1], schedule.alphas[t], schedule.betas[t]
        precision = 1 / (1 - ab_prev) + alpha / beta  # precisions add
        x0, xt = 0.4, -1.3
        mean = (ab_prev.sqrt() * x0 / (1 - ab_prev) + alpha.sqrt() * xt / beta) / precision
        coef_mean = schedule.posterior_coef_x0[t] * x0 + schedule.posterior_coef_xt[t] * xt
        assert schedule.posterior_variance[t].item() == pytest.approx(1 / precision.item(), rel=1e-10)
        assert coef_mean.item() == pytest.approx(mean.item(), rel=1e-10)
    assert schedule.posterior_variance[0] == 0  # from t = 0 the clean image is certain


def test_predict_x0_inverts_q_sample(schedule):
    x0, noise, t = (
        torch.randn(5, 3, 8, 8, dtype=torch.float64),
        torch.randn(5, 3, 8, 8, dtype=torch.float64),
        torch.tensor([0, 3, 200, 700, 999]),
    )
    assert torch.allclose(schedule.predict_x0(schedule.q_sample(x0, t, noise), t, noise), x0, atol=1e-6)


def test_at_broadcasts_over_a_batch():
    table = torch.arange(10.0, dtype=torch.float64)
    out = at(table, torch.tensor([2, 7]), torch.zeros(2, 3, 4, 4))
    assert out.shape == (2, 1, 1, 1) and out.dtype == torch.float32 and out.flatten().tolist() == [2.0, 7.0]


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="choose one of"):
        Schedule.by_name("quadratic")
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        Schedule(torch.tensor([0.1, 1.5]))
