"""Samplers driven by the exact noise predictor for Gaussian data N(m, s^2).

No training is involved: whatever a sampler returns with this model is the
sampler's doing, so its output can be held to the data distribution.
"""

import pytest
import torch

from diffedu.oracles import GaussianDenoiser
from diffedu.samplers import (
    SAMPLERS,
    DDIMScheduler,
    DDPMScheduler,
    Snapshots,
    StepOutput,
    ddim_invert,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    make_scheduler,
    sample,
    sample_trajectory,
    slerp,
)
from diffedu.schedules import Schedule

M, S = 0.3, 0.5  # data ~ N(M, S^2), per pixel


@pytest.fixture(scope="module")
def schedule():
    return Schedule.linear()


@pytest.fixture(scope="module")
def exact(schedule):
    return GaussianDenoiser(schedule, M, S)


def noise(n=4000, seed=0):
    # 4000 x 16 independent pixels: the sample mean is good to about S / 250
    return torch.randn(n, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_ddpm_with_the_exact_denoiser_returns_the_moments_of_its_exact_recursion(schedule, exact):
    """Not quite the data's: the fixed variance leaves out Var(x_0 | x_t) at every step (std 0.4961 for S = 0.5)."""
    x = ddpm_sample(exact, schedule, noise(), clip_x0=False, progress=False, generator=torch.Generator().manual_seed(1))
    mean, std = exact.ancestral_moments()
    assert x.mean().item() == pytest.approx(mean, abs=0.01) and mean == pytest.approx(M, abs=1e-5)
    se = std / (2 * x.numel()) ** 0.5  # the sample standard deviation's standard error
    assert abs(x.std().item() - std) < 4 * se and std < S - 0.003  # the recursion's, a little under the data's


def test_ddpm_large_is_exact_for_unit_variance_data_and_brackets_the_spread_with_ddpm(schedule):
    """sigma_t^2 = beta_t is the true reverse variance when the data is N(0, 1) (Ho et al., section 3.2): its
    recursion keeps the spread, but for the one skipped noise at t = 0. For narrower data it overshoots a little,
    where beta-tilde undershoots: the two bracket the data's spread."""
    variance = schedule.betas.clone()
    variance[0] = 0  # the last step adds no noise, in either sampler
    assert GaussianDenoiser(schedule, 0.0, 1.0).ancestral_moments(variance)[1] == pytest.approx(1, abs=1e-4)
    small, large = (GaussianDenoiser(schedule, M, S).ancestral_moments(v)[1] for v in (None, variance))
    assert small < S < large
    x = sample(
        GaussianDenoiser(schedule, M, S),
        make_scheduler("ddpm_large", schedule, clip_x0=False),
        noise(),
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    assert abs(x.std().item() - large) < 4 * large / (2 * x.numel()) ** 0.5


@pytest.mark.parametrize(("name", "variance_type"), [("ddpm", "fixed_small"), ("ddpm_large", "fixed_large")])
def test_both_ddpm_variances_match_diffusers_step_for_step(schedule, name, variance_type):
    diffusers = pytest.importorskip("diffusers")
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, variance_type=variance_type, clip_sample=False)
    theirs.betas, theirs.alphas, theirs.alphas_cumprod = schedule.betas, schedule.alphas, schedule.alpha_bar  # float64
    ours = make_scheduler(name, schedule, clip_x0=False)
    x, eps = noise(8), noise(8, seed=1)
    for t in (999, 500, 1, 0):
        want = theirs.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.allclose(ours.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev, want, atol=1e-10)


def ddim_prediction(schedule, x_T, steps, spacing):
    """Deterministic DDIM in closed form for Gaussian data. With x0_hat = E[x0 | x_t] and
    eps_hat = E[eps | x_t], each step is the affine map
        x_prev - sqrt(ab') M = k (x_t - sqrt(ab) M),  k = (sqrt(ab' ab) S^2 + sqrt((1-ab')(1-ab))) / (ab S^2 + 1 - ab).
    By Cauchy-Schwarz k^2 <= v'/v (v = ab S^2 + 1 - ab), equal only for ab' = ab: every step
    shrinks the spread a little, a big one more; the bias vanishes as steps grow."""
    ab_all = schedule.alpha_bar
    ts = ddim_timesteps(schedule.T, steps, spacing)
    x = x_T
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        ab, ab_p = ab_all[t], (ab_all[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64))
        k = ((ab_p * ab).sqrt() * S**2 + ((1 - ab_p) * (1 - ab)).sqrt()) / (ab * S**2 + 1 - ab)
        x = ab_p.sqrt() * M + k * (x - ab.sqrt() * M)
    return x


@pytest.mark.parametrize("steps", [10, 50, 100])
@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_ddim_eta0_with_the_exact_denoiser(schedule, exact, steps, spacing):
    x_T = noise()
    x = ddim_sample(exact, schedule, x_T, steps=steps, spacing=spacing, clip_x0=False, progress=False)
    assert torch.allclose(x, ddim_prediction(schedule, x_T, steps, spacing), atol=1e-9)  # the update, to rounding
    assert x.mean().item() == pytest.approx(M, abs=0.01)
    # The spread: within 1.5% of S at 100 steps (quadratic), the few-step bias shrinking as steps grow.
    tolerance = {"uniform": {10: 0.30, 50: 0.06, 100: 0.03}, "quadratic": {10: 0.20, 50: 0.03, 100: 0.015}}[spacing][
        steps
    ]
    assert x.std().item() == pytest.approx(S, rel=tolerance)
    assert x.std().item() <= S * 1.01


def test_ddim_spread_converges_as_steps_grow(schedule, exact):
    stds = [
        ddim_sample(exact, schedule, noise(), steps=n, clip_x0=False, progress=False).std().item()
        for n in (10, 20, 50, 100, 1000)
    ]
    assert stds == sorted(stds) and stds[-1] == pytest.approx(S, rel=0.01)


def test_ddim_eta1_over_all_steps_has_ddpms_posterior_sigma(schedule):
    ddim = DDIMScheduler(schedule, eta=1.0).set_timesteps(schedule.T)
    sigmas = torch.stack([ddim.sigma(t) for t in range(schedule.T)])
    assert torch.allclose(sigmas, schedule.posterior_variance.sqrt(), rtol=1e-10, atol=1e-12)


def test_ddim_eta1_over_all_steps_is_ddpm_sample_for_sample(schedule, exact):
    x_T = noise(200)
    a = ddim_sample(
        exact,
        schedule,
        x_T,
        steps=schedule.T,
        eta=1.0,
        clip_x0=False,
        progress=False,
        generator=torch.Generator().manual_seed(3),
    )
    b = ddpm_sample(exact, schedule, x_T, clip_x0=False, progress=False, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-9)


def test_ddim_eta0_is_deterministic_and_eta_adds_noise(schedule, exact):
    x_T = noise(50)

    def run(eta, seed):
        generator = torch.Generator().manual_seed(seed)
        return ddim_sample(exact, schedule, x_T, steps=20, eta=eta, clip_x0=False, progress=False, generator=generator)

    assert torch.equal(run(0.0, 1), run(0.0, 2))
    assert not torch.allclose(run(0.5, 1), run(0.5, 2))


def test_inversion_then_sampling_gives_the_image_back(schedule, exact):
    x0 = M + S * noise(500, seed=5)
    errors = []
    for steps in (100, 200, 1000):
        z = ddim_invert(exact, schedule, x0, steps=steps, progress=False)
        back = ddim_sample(exact, schedule, z, steps=steps, clip_x0=False, progress=False)
        errors.append((back - x0).abs().mean().item())
    assert errors[0] < 0.03 * 2 * S and errors[-1] < 0.005  # within 3% of the data's range at 100 steps
    assert errors[1] == pytest.approx(errors[0] / 2, rel=0.1)  # first order: twice the steps, half the error


def test_inverted_noise_looks_like_noise(schedule, exact):
    z = ddim_invert(exact, schedule, M + S * noise(500, seed=6), steps=200, progress=False)
    assert z.mean().item() == pytest.approx(0, abs=0.05) and z.std().item() == pytest.approx(1, abs=0.05)


@pytest.mark.parametrize("spacing", ["uniform", "quadratic", "logsnr"])
def test_step_spacings_run_from_T_minus_1_to_0(spacing, schedule):
    T = 1000
    for steps in range(1, T + 1):
        ts = ddim_timesteps(T, steps, spacing, schedule.alpha_bar)
        assert len(ts) == steps and ts[0] == T - 1
        assert all(a > b for a, b in zip(ts, ts[1:])), f"{steps} steps: not strictly decreasing"
        assert ts[-1] == (0 if steps > 1 else T - 1)  # a single step jumps from T-1 straight to the image
    assert ddim_timesteps(T, T, spacing, schedule.alpha_bar) == list(range(T - 1, -1, -1))


@pytest.mark.parametrize("steps", [5, 10, 20])
def test_logsnr_spacing_is_even_in_lambda_where_the_timesteps_allow(schedule, steps):
    lam = 0.5 * (schedule.alpha_bar / (1 - schedule.alpha_bar)).log()
    ts = ddim_timesteps(schedule.T, steps, "logsnr", schedule.alpha_bar)
    gaps = lam[ts[1:]] - lam[ts[:-1]]
    even = (lam[0] - lam[-1]) / (steps - 1)
    # each gap within the lambda-width of one timestep there (wide only near t = 0) of the even gap
    assert torch.allclose(gaps[:-3], even.expand(steps - 4), rtol=0.05)
    with pytest.raises(ValueError, match="needs the schedule's alpha_bar"):
        ddim_timesteps(schedule.T, steps, "logsnr")


def test_quadratic_spacing_crowds_the_small_ts():
    ts = ddim_timesteps(1000, 10, "quadratic")
    assert ts[-2] - ts[-1] < ts[0] - ts[1]


def test_bad_sampler_settings_say_what_is_allowed(schedule):
    for steps in (0, 1001):
        with pytest.raises(ValueError, match="between 1 and T=1000"):
            ddim_timesteps(1000, steps)
    with pytest.raises(ValueError, match="uniform"):
        ddim_timesteps(1000, 10, "cubic")
    with pytest.raises(ValueError, match="eta must be in"):
        DDIMScheduler(schedule, eta=1.5)
    with pytest.raises(ValueError, match="DDIMScheduler"):
        DDPMScheduler(schedule).set_timesteps(50)
    with pytest.raises(ValueError, match="one of 'ddpm', 'ddpm_large', 'ddim', 'heun', 'dpmpp2m'"):
        make_scheduler("euler", schedule)
    with pytest.raises(ValueError, match="eta is DDIM's knob"):
        make_scheduler("heun", schedule, 10, eta=0.5)


def test_the_scheduler_loop_by_hand_equals_ddim_sample(schedule, exact):
    x_T = noise(20)
    scheduler = DDIMScheduler(schedule, eta=0.0, clip_x0=False).set_timesteps(25)
    x = x_T
    for t in scheduler.timesteps:
        x, _ = scheduler.step(exact(x, torch.tensor(t)), t, x)
    assert torch.equal(x, ddim_sample(exact, schedule, x_T, steps=25, clip_x0=False, progress=False))


def test_trajectory_records_snapshots_and_the_same_final_images(schedule, exact):
    x_T = noise(6)
    scheduler = make_scheduler("ddim", schedule, steps=30)
    traj = sample_trajectory(exact, scheduler, x_T, frames=7, progress=False)
    assert traj.timesteps[0] == 999 and traj.timesteps[-1] == 0 and len(traj.timesteps) == 7
    assert traj.x_t.shape == traj.x0.shape == (7, 6, 1, 4, 4)
    assert torch.equal(traj.x_t[0], x_T.float())
    assert torch.equal(traj.images, sample(exact, scheduler, x_T, progress=False))


def test_snapshots_record_what_a_loop_written_anywhere_visits(schedule, exact):
    """Wrapped around the model of a DDPM run, Snapshots keeps the same frames sample_trajectory keeps."""
    x_T = noise(3)
    recorder = Snapshots(exact, schedule.alpha_bar, frames=20)
    images = sample(recorder, DDPMScheduler(schedule), x_T, generator=torch.Generator().manual_seed(1), progress=False)
    kept = recorder.trajectory(images)
    traj = sample_trajectory(
        exact, DDPMScheduler(schedule), x_T, frames=20, generator=torch.Generator().manual_seed(1), progress=False
    )
    assert kept.timesteps == traj.timesteps and len(kept.timesteps) == 20
    assert (
        torch.equal(kept.x_t, traj.x_t)
        and torch.equal(kept.x0, traj.x0)
        and torch.equal(kept.images, traj.images.float())
    )


def test_clipping_keeps_predicted_images_in_range(schedule):
    wild = GaussianDenoiser(schedule, 0.0, 3.0)  # data far outside [-1, 1]
    x = ddpm_sample(wild, schedule, noise(100), progress=False)
    assert x.abs().max() <= 1.0 + 1e-6


def test_slerp_keeps_the_norm_of_noise():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5).flatten(1).norm(dim=1)
    assert torch.allclose(mid, a.flatten(1).norm(dim=1), rtol=0.05)  # a straight line's midpoint is ~30% shorter
    assert ((a + b) / 2).flatten(1).norm(dim=1).mean() < 0.75 * mid.mean()
    assert torch.allclose(slerp(a, a, 0.3), a, atol=1e-5)


@pytest.mark.parametrize("make", [DDPMScheduler, DDIMScheduler])
def test_both_schedulers_share_one_protocol(make, schedule, exact):
    scheduler = make(schedule).set_timesteps(None if make is DDPMScheduler else 20, "uniform")
    x = noise(3)
    out = scheduler.step(exact(x, torch.tensor(scheduler.timesteps[0])), scheduler.timesteps[0], x)
    assert isinstance(out, StepOutput) and out.prev.shape == out.x0.shape == x.shape
    prev, x0 = out  # unpacks like a tuple, as the sampling loop does
    assert torch.equal(
        x0, schedule.predict_x0(x, scheduler.timesteps[0], exact(x, torch.tensor(scheduler.timesteps[0]))).clamp(-1, 1)
    )


def test_inversion_is_the_ddim_step_backwards(schedule, exact):
    """invert_step from t_prev to t, then step from t back to t_prev, returns the start (same eps)."""
    scheduler = DDIMScheduler(schedule, clip_x0=False).set_timesteps(10)
    x, t = noise(4), scheduler.timesteps[3]
    eps = exact(x, torch.tensor(scheduler.prev_timestep(t)))
    up = scheduler.invert_step(eps, t, x).prev
    assert torch.allclose(scheduler.step(eps, t, up).prev, x, atol=1e-10)


# ---- the probability-flow ODE's solvers ------------------------------------------------


def ode_error(schedule, exact, sampler, steps, x_T):
    """How far a deterministic sampler lands from the exact ODE solution at t = 0 (the last timestep, before the
    final jump to the clean image, which every one of them takes as the same first-order step), and its NFE."""
    scheduler = make_scheduler(sampler, schedule, steps, clip_x0=False)
    run = sample_trajectory(exact, scheduler, x_T, frames=len(scheduler.timesteps), progress=False)
    assert run.timesteps[-1] == 0
    return (run.x_t[-1].double() - exact.flow(x_T, schedule.T - 1, 0)).abs().max().item(), run.model_calls


@pytest.mark.parametrize("sampler, order", [("ddim", 1), ("heun", 2), ("dpmpp2m", 2)])
def test_each_solver_has_its_order_on_the_gaussian_oracle(schedule, exact, sampler, order):
    x_T = noise(8)
    runs = [ode_error(schedule, exact, sampler, steps, x_T) for steps in (50, 100, 200, 400)]
    errors, calls = torch.tensor([e for e, _ in runs]).log(), torch.tensor([float(n) for _, n in runs]).log()
    slope = -torch.linalg.lstsq(torch.stack([calls, torch.ones_like(calls)], 1), errors[:, None]).solution[0].item()
    assert slope == pytest.approx(order, abs=0.2), f"{sampler}: fitted order {slope:.2f}"
    assert SAMPLERS[sampler].order == order


@pytest.mark.parametrize("sampler", ["heun", "dpmpp2m"])
def test_second_order_solvers_beat_ddim_at_equal_model_calls(schedule, exact, sampler):
    x_T = noise(8)
    ddim, ddim_calls = ode_error(schedule, exact, "ddim", 100, x_T)
    better, calls = ode_error(schedule, exact, sampler, 50 if sampler == "heun" else 100, x_T)
    assert calls <= ddim_calls and better < ddim / 1.5  # measured: Heun 9x, DPM-Solver++(2M) 2x closer


@pytest.mark.parametrize(
    "sampler, steps, calls", [("ddpm", None, 1000), ("ddim", 10, 10), ("heun", 10, 19), ("dpmpp2m", 10, 10)]
)
def test_a_run_counts_its_model_calls(schedule, exact, sampler, steps, calls):
    scheduler = make_scheduler(sampler, schedule, steps)
    run = sample_trajectory(
        exact, scheduler, noise(2), frames=0, progress=False, generator=torch.Generator().manual_seed(0)
    )
    assert run.model_calls == scheduler.model_calls() == calls


def test_dpm_solver_starts_afresh_each_run(schedule, exact):
    scheduler = make_scheduler("dpmpp2m", schedule, 8)
    first = sample(exact, scheduler, noise(4), progress=False)
    assert torch.equal(
        first, sample(exact, scheduler, noise(4), progress=False)
    )  # nothing left over from the first run


def test_ddim_is_the_euler_step_of_the_ode(schedule, exact):
    """With one step of each, DDIM and Heun's first (Euler) half land on the same point; DPM-Solver++'s first step
    is DDIM's."""
    x_T = noise(4)
    ddim = make_scheduler("ddim", schedule, 10, clip_x0=False)
    t = ddim.timesteps[0]
    step = ddim.sample_step(exact, x_T, t).prev
    assert torch.allclose(make_scheduler("dpmpp2m", schedule, 10, clip_x0=False).sample_step(exact, x_T, t).prev, step)
    ab, ab_prev = schedule.alpha_bar[t], schedule.alpha_bar[ddim.prev_timestep(t)]
    sigma, sigma_prev = ((1 - ab) / ab).sqrt(), ((1 - ab_prev) / ab_prev).sqrt()
    euler = ab_prev.sqrt() * (x_T / ab.sqrt() + (sigma_prev - sigma) * exact(x_T, torch.tensor(t)))
    assert torch.allclose(step, euler)


def test_heun_and_dpm_solver_match_diffusers(schedule, exact):
    diffusers = pytest.importorskip("diffusers")
    x_T, timesteps = noise(4).float(), make_scheduler("ddim", schedule, 12).timesteps
    model = GaussianDenoiser(schedule, M, S)
    config = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    # DPM-Solver++(2M), VP variables as ours; diffusers computes in float32, so float32 agreement is what can be asked
    theirs = diffusers.DPMSolverMultistepScheduler(
        **config, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
    )
    theirs.set_timesteps(timesteps=timesteps)
    x = x_T.clone()
    for t in theirs.timesteps:
        x = theirs.step(model(x.double(), t).float(), t, x).prev_sample
    ours = sample(model, make_scheduler("dpmpp2m", schedule, 12, clip_x0=False), x_T.double(), progress=False)
    assert torch.allclose(x.double(), ours, atol=2e-5)
    # Heun: diffusers works in x~ = x / sqrt(alpha_bar) and hands the model x~ / sqrt(sigma^2 + 1), which is x
    theirs = diffusers.HeunDiscreteScheduler(**config)
    theirs.set_timesteps(timesteps=timesteps)
    x = x_T / schedule.alpha_bar[timesteps[0]].float().sqrt()
    for t in theirs.timesteps:
        eps = model(theirs.scale_model_input(x, t).double(), t.round().long()).float()
        x = theirs.step(eps, t, x).prev_sample
    ours = sample(model, make_scheduler("heun", schedule, 12, clip_x0=False), x_T.double(), progress=False)
    assert torch.allclose(x.double(), ours, atol=2e-5)
