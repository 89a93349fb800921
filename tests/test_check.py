"""The exercise checks, held to a catalogue of typical wrong answers, written as a learner would write them.

Each wrong answer must be rejected with the message that names its mistake: a check that accepts a wrong
answer, or blames the wrong mistake, is a bug. And every check must pass diffedu's own reference.
The catalogue runs as nbgrader grades, where a failed check raises; a learner's failed check prints instead.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffedu import check
from diffedu.check import ExerciseError

EXERCISES = list(check.EXERCISES)  # the registry; the wrong answers below are written by hand, independently of it


@pytest.fixture(autouse=True)
def grading(monkeypatch):
    monkeypatch.setenv(check.GRADING_ENV, "autograde")


def rejects(name, fn, *fragments):
    with pytest.raises(ExerciseError) as error:
        getattr(check, name)(fn)
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("name", EXERCISES)
def test_each_check_passes_the_reference_and_says_what_it_verified(name, capsys):
    exercise = getattr(check, name)
    exercise(exercise.reference)
    assert capsys.readouterr().out.startswith(f"✓ {name}: ")


@pytest.mark.parametrize("name", EXERCISES)
def test_a_stub_is_not_implemented_and_the_lesson_goes_on_with_the_reference(name):
    def stub(*args):
        raise NotImplementedError(f"exercise {name}")

    namespace = {name: stub, "check": check}
    with pytest.raises(ExerciseError, match=f"✗ {name}: not implemented yet"):
        exec(f"check.{name}({name})", namespace)  # as a notebook cell runs it
    assert namespace[name] is getattr(check, name).reference


def test_for_a_learner_a_failed_check_says_so_and_the_lesson_goes_on(monkeypatch, capsys):
    """Outside nbgrader a failure is printed, not raised, so that Run All reaches the end of the lesson; and
    when IPython shows a grading failure, it shows the message, not a traceback into diffedu."""
    monkeypatch.delenv(check.GRADING_ENV)
    namespace = {"q_sample": lambda x0, t, noise, ab: x0, "check": check}
    exec("check.q_sample(q_sample)", namespace)
    assert capsys.readouterr().err.startswith("✗ q_sample: ") and namespace["q_sample"] is check.q_sample.reference
    error = ExerciseError("✗ q_sample: wrong\n(the reference is used)")
    assert error._render_traceback_() == ["✗ q_sample: wrong", "(the reference is used)"]


def test_a_crash_in_the_learners_code_is_reported_with_a_hint():
    rejects("q_sample", lambda x0, t, noise, ab: ab[t] * x0, "raised RuntimeError", "reshape it to (B, 1, 1, 1)")


def test_a_wrong_answer_no_mistake_explains_is_located_with_the_call_that_gave_it():
    def posterior(betas, alpha_bar):
        coef_x0, coef_xt, variance = check.posterior.reference(betas, alpha_bar)
        return coef_x0, coef_xt, 1.01 * variance

    rejects(
        "posterior",
        posterior,
        "wrong on test case 1 of",
        "with betas = a tensor of shape (1000,), alpha_bar = a tensor of shape (1000,)",
        "value 3 of 3 is wrong",
    )


def test_an_answer_that_is_nan_is_told_so_and_where():
    rejects(
        "q_sample",
        lambda x0, t, noise, ab: x0 * float("nan"),
        "it returned NaN or infinity with x0 = a tensor of shape",
    )


@pytest.mark.parametrize("name", EXERCISES)
def test_a_function_that_forgets_return_is_told_so(name):
    """It returns None: not "it draws random numbers of its own", nor whatever a None makes of the check's next step."""

    def forgot_return(*args):
        answer = args  # noqa: F841  (computed, never returned)

    rejects(name, forgot_return, "it returned None where", "did you forget `return`?")


# ---- lesson 01 --------------------------------------------------------------------

ALPHA_BAR_WRONG = {
    "that multiplies the betas": lambda betas: torch.cumprod(betas, 0),
    "a sum where a product belongs": lambda betas: torch.cumsum(1 - betas, 0),
    "off by one": lambda betas: torch.cat([torch.ones(1, dtype=betas.dtype), torch.cumprod(1 - betas, 0)[:-1]]),
    "1 - prod(beta_s)": lambda betas: 1 - torch.cumprod(betas, 0),
    "wrong on test case": lambda betas: torch.cumprod(1 - betas, 0) * 0.999,  # no known mistake: located instead
    "it returned whole numbers (torch.int64) where real numbers are expected: it is off by up to":  # and why, said
    lambda betas: torch.cumprod(1 - betas, 0).long(),  # as when written into torch.tensor([1] * T), of integers
}


@pytest.mark.parametrize("message", ALPHA_BAR_WRONG)
def test_alpha_bar_catalogue(message):
    rejects("alpha_bar", ALPHA_BAR_WRONG[message], message)


def q_no_sqrt(x0, t, noise, alpha_bar):
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    return ab * x0 + (1 - ab) * noise


def q_noise_no_sqrt(x0, t, noise, alpha_bar):
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab) * noise


def q_off_by_one(x0, t, noise, alpha_bar):
    ab = alpha_bar[(t - 1).clamp(min=0)].view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_one_t(x0, t, noise, alpha_bar):
    ab = alpha_bar[t[0]]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_swapped(x0, t, noise, alpha_bar):
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    return (1 - ab).sqrt() * x0 + ab.sqrt() * noise


def q_own_noise(x0, t, noise, alpha_bar):
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn_like(x0)


def q_in_place(x0, t, noise, alpha_bar):
    """The right answer, written into x0: the caller's image is gone (and in eps_loss, the batch)."""
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    x0 *= ab.sqrt()
    return x0.add_((1 - ab).sqrt() * noise)


def q_complex(x0, t, noise, alpha_bar):
    """In complex numbers, whose real part is the right answer: a comparison would see only that part."""
    ab = alpha_bar[t].view(-1, 1, 1, 1).to(torch.complex128)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


@pytest.mark.parametrize(
    "wrong, message",
    [
        (q_no_sqrt, "the square roots are missing"),
        (q_noise_no_sqrt, "its square root is missing"),
        (q_off_by_one, "off by one"),
        (q_one_t, "each image has its own t"),
        (q_swapped, "x_0 and the noise are swapped"),
        (q_own_noise, "it draws random numbers of its own"),
        (q_in_place, "it changed its argument x0 in place"),
        (q_complex, "it returned complex numbers (torch.complex128) where real ones are expected"),
    ],
)
def test_q_sample_catalogue(wrong, message):
    rejects("q_sample", wrong, message)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda a, p: (a * (1 - p)).sqrt() + (1 - a).sqrt(), "standard deviations added"),
        (lambda a, p: a.sqrt() * (1 - p) + (1 - a), "scales its noise's variance by alpha_t"),
        (lambda a, p: (1 - p) + (1 - a), "the old noise shrinks too"),
    ],
)
def test_next_noise_variance_catalogue(wrong, message):
    rejects("next_noise_variance", wrong, message)


# ---- lesson 02 --------------------------------------------------------------------


def loss_with(target="noise", reduction="mean", t_low=0, t_high=None, one_t=False, sqrt=True, uniform=False, l1=False):
    """eps_loss as a learner might write it, with one thing changed."""

    def eps_loss(model, x0, alpha_bar):
        T = len(alpha_bar)
        t = torch.randint(t_low, t_high or T, (1,) if one_t else (len(x0),)).expand(len(x0))
        noise = torch.rand_like(x0) if uniform else torch.randn_like(x0)
        ab = alpha_bar[t].view(-1, 1, 1, 1)
        x_t = (ab.sqrt() * x0 + (1 - ab).sqrt() * noise) if sqrt else ab * x0 + (1 - ab) * noise
        out = model(x_t, t)
        goal = {"noise": noise, "x0": x0, "x_t": x_t}[target]
        return F.l1_loss(out, goal) if l1 else F.mse_loss(out, goal, reduction=reduction)

    return eps_loss


@pytest.mark.parametrize(
    "wrong, message",
    [
        (loss_with(target="x0"), "the target is the noise eps, not the clean image"),
        (loss_with(target="x_t"), "not the noisy x_t"),
        (loss_with(reduction="sum"), "summed over every value"),
        (loss_with(l1=True), "a mean absolute error"),
        (loss_with(one_t=True), "one t for the whole batch"),
        (loss_with(t_low=1), "t starts at 0 here"),
        (loss_with(t_high=999), "t never reaches T - 1"),
        (loss_with(t_low=1, t_high=1001), "raised IndexError"),  # Ho et al.'s t = 1..T, indexed from 0
        (loss_with(sqrt=False), "the square roots are missing"),
        (loss_with(uniform=True), "must be Gaussian: torch.randn_like, not torch.rand_like"),
    ],
)
def test_eps_loss_catalogue(wrong, message):
    rejects("eps_loss", wrong, message)


def test_eps_loss_that_calls_the_model_per_image_is_told_to_batch():
    def per_image(model, x0, alpha_bar):
        return sum(loss_with()(model, x[None], alpha_bar) for x in x0[:3])

    rejects("eps_loss", per_image, "called the model 3 times")


def posterior_with(variance="tilde", prev=True, sqrt_alpha=True, swap=False):
    def posterior(betas, alpha_bar):
        alphas = 1 - betas
        ab_prev = torch.cat([torch.ones(1, dtype=betas.dtype), alpha_bar[:-1]]) if prev else alpha_bar
        coef_x0 = betas * ab_prev.sqrt() / (1 - alpha_bar)
        coef_xt = (1 - ab_prev) * (alphas.sqrt() if sqrt_alpha else alphas) / (1 - alpha_bar)
        var = betas * (1 - ab_prev) / (1 - alpha_bar) if variance == "tilde" else betas
        return (coef_xt, coef_x0, var) if swap else (coef_x0, coef_xt, var)

    return posterior


@pytest.mark.parametrize(
    "wrong, message",
    [
        (posterior_with(variance="beta"), "beta_t itself is Ho et al.'s other choice"),
        (posterior_with(prev=False), "shift alpha_bar by one step"),
        (posterior_with(sqrt_alpha=False), "sqrt(alpha_t), not alpha_t"),
        (posterior_with(swap=True), "swapped"),
    ],
)
def test_posterior_catalogue(wrong, message):
    rejects("posterior", wrong, message)


def ddpm_step_with(clip=True, scale="std", eps_sqrt=True, shift=0):
    def ddpm_step(eps, t, x_t, noise, alpha_bar, posterior):
        coef_x0, coef_xt, variance = posterior
        i = max(t - shift, 0)
        ab = alpha_bar[i]
        x0 = (x_t - ((1 - ab).sqrt() if eps_sqrt else 1 - ab) * eps) / ab.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
        mean = coef_x0[i] * x0 + coef_xt[i] * x_t
        return mean + (variance[i].sqrt() if scale == "std" else variance[i]) * noise

    return ddpm_step


@pytest.mark.parametrize(
    "wrong, message",
    [
        (ddpm_step_with(clip=False), "clip the predicted x_0 to [-1, 1]"),
        (ddpm_step_with(scale="variance"), "scaled by the standard deviation sqrt(variance_t), not by the variance"),
        (ddpm_step_with(eps_sqrt=False), "the square root on (1 - alpha_bar_t) is missing"),
        (ddpm_step_with(shift=1), "off by one"),
        (
            lambda eps, t, x_t, noise, ab, post: ddpm_step_with()(eps, t, x_t, torch.randn_like(x_t), ab, post),
            "use the noise it is given",
        ),
    ],
)
def test_ddpm_step_catalogue(wrong, message):
    rejects("ddpm_step", wrong, message)


def test_ddpm_step_matches_diffusers_or_says_it_skipped(capsys):
    check.ddpm_step(check.ddpm_step.reference)
    out = capsys.readouterr().out
    pytest.importorskip("diffusers")
    assert "and to diffusers" in out and "DDPMScheduler.step on the same inputs and noise" in out


# ---- lesson 03 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda a, p, eta: ((1 - p) / (1 - a) * (1 - a / p)).sqrt(), "eta multiplies sigma"),
        (lambda a, p, eta: eta * (1 - p) / (1 - a) * (1 - a / p), "take the square root"),
        (lambda a, p, eta: eta * ((1 - a) / (1 - p) * (1 - a / p)).sqrt(), "not its inverse"),
    ],
)
def test_ddim_sigma_catalogue(wrong, message):
    rejects("ddim_sigma", wrong, message)


def ddim_step_with(eta_used=True, direction="with sigma", clip=True, recompute=True, sqrt_prev=True):
    def ddim_step(eps, x_t, alpha_bar_t, alpha_bar_prev, eta, noise):
        a, p = alpha_bar_t, alpha_bar_prev
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
            if recompute:
                eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        sigma = (eta if eta_used else 1.0) * ((1 - p) / (1 - a) * (1 - a / p)).sqrt()
        share = (1 - p - sigma**2).sqrt() if direction == "with sigma" else (1 - p).sqrt()
        return (p.sqrt() if sqrt_prev else p) * x0 + share * eps + sigma * noise

    return ddim_step


@pytest.mark.parametrize(
    "wrong, message",
    [
        (ddim_step_with(eta_used=False), "eta multiplies sigma"),
        (ddim_step_with(direction="all"), "the noise's share of the variance comes out of it"),
        (ddim_step_with(clip=False), "clip the predicted x_0 to [-1, 1]"),
        (ddim_step_with(recompute=False), "after clipping x_0, recompute eps"),
        (ddim_step_with(sqrt_prev=False), "the square root is missing"),
    ],
)
def test_ddim_step_catalogue(wrong, message):
    rejects("ddim_step", wrong, message)


def ddpm_loop_with(order="down", stop=0, fresh=True, seeded=True):
    """A learner's DDPM loop, with one mistake."""
    step = check.ddpm_step.reference

    def sample_ddpm(model, x_T, alpha_bar, posterior, generator=None):
        T, x = len(alpha_bar), x_T
        once = None if fresh else torch.randn(x.shape, generator=generator, dtype=x.dtype)
        for t in range(T - 1, stop - 1, -1) if order == "down" else range(T):
            eps = model(x, torch.full((len(x),), t))
            noise = torch.randn(x.shape, generator=generator if seeded else None, dtype=x.dtype) if fresh else once
            x = step(eps, t, x, noise, alpha_bar, posterior)
        return x

    return sample_ddpm


def test_a_learners_ddpm_loop_passes(capsys):
    check.sample_ddpm(ddpm_loop_with())
    assert capsys.readouterr().out.startswith("✓ sample_ddpm")


@pytest.mark.parametrize(
    "wrong, message",
    [
        (ddpm_loop_with(order="up"), "from t = T - 1 (pure noise) down to 0"),
        (ddpm_loop_with(stop=1), "stops one step early"),
        (ddpm_loop_with(fresh=False), "fresh noise at every step"),
        (ddpm_loop_with(seeded=False), "the same seed gave different results"),
    ],
)
def test_sample_ddpm_catalogue(wrong, message):
    rejects("sample_ddpm", wrong, message)


def ddim_loop_with(prev="next", clean=True, order="down", last_step=True, use_eta=True, index_clean=False):
    """A learner's DDIM loop, with one mistake."""
    step, timesteps = check.ddim_step.reference, check.ddim_timesteps.reference

    def sample_ddim(model, x_T, alpha_bar, steps, eta=0.0, spacing="uniform", generator=None):
        ts = timesteps(len(alpha_bar), steps, spacing)
        ts, x = ts if order == "down" else ts[::-1], x_T
        for t, t_next in zip(ts, ts[1:] + [-1] if last_step else ts[1:]):
            eps = model(x, torch.full((len(x),), t))
            t_prev = t_next if prev == "next" else t - 1
            ab_prev = (
                alpha_bar[t_prev]
                if t_prev >= 0 or index_clean  # alpha_bar[-1]: the table's last entry
                else torch.tensor(1.0, dtype=alpha_bar.dtype)
                if clean
                else alpha_bar[0]
            )
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = step(eps, x, alpha_bar[t], ab_prev, eta if use_eta else 0.0, noise)
        return x

    return sample_ddim


def test_a_learners_ddim_loop_passes(capsys):
    check.sample_ddim(ddim_loop_with())
    assert capsys.readouterr().out.startswith("✓ sample_ddim")


@pytest.mark.parametrize(
    "wrong, message",
    [
        (ddim_loop_with(prev="t-1"), "not at t - 1"),
        (ddim_loop_with(clean=False), "from the last timestep to the clean image"),
        (ddim_loop_with(last_step=False), "from the last timestep to the clean image"),  # the same images
        (ddim_loop_with(order="up"), "largest first"),
        (ddim_loop_with(index_clean=True), "NaN"),  # not "largest first", whose answer is NaN too
        (ddim_loop_with(index_clean=True), "alpha_bar[-1] is the table's last entry"),
        (ddim_loop_with(use_eta=False), "differs from diffedu's DDIM sampler"),  # no known mistake: located
    ],
)
def test_sample_ddim_catalogue(wrong, message):
    rejects("sample_ddim", wrong, message)


def test_ddim_step_matches_diffusers_or_says_it_skipped(capsys):
    check.ddim_step(check.ddim_step.reference)
    pytest.importorskip("diffusers")
    assert "DDIMScheduler.step (its own timesteps 900, 800, ..., 0)" in capsys.readouterr().out


def timesteps_with(order="down", spacing_fix=True, leading=False, from_T=False):
    def ddim_timesteps(T, steps, spacing="uniform"):
        if steps == 1:
            return [T - 1]
        if leading and spacing == "uniform":
            return list(range(0, T, T // steps))[::-1]
        if from_T and spacing == "uniform":
            return np.round(np.linspace(T, 0, steps)).astype(int).tolist()
        frac = np.linspace(0, 1, steps)
        t = np.round((T - 1) * (frac if spacing == "uniform" else frac**2)).astype(int)
        if spacing_fix:
            t = np.maximum(t, np.arange(steps))
        return t[::-1].tolist() if order == "down" else t.tolist()

    return ddim_timesteps


@pytest.mark.parametrize(
    "wrong, message",
    [
        (timesteps_with(order="up"), "largest first"),
        (timesteps_with(leading=True), "'leading' spacing"),
        (timesteps_with(spacing_fix=False), "quadratic spacing repeats timesteps"),
        (timesteps_with(from_T=True), "starts at T, outside 0..T-1"),
    ],
)
def test_ddim_timesteps_catalogue(wrong, message):
    rejects("ddim_timesteps", wrong, message)


def invert_with(swap=False, plus=False, clip=False, noise_at_prev=False):
    def ddim_invert_step(eps, x, alpha_bar_t, alpha_bar_prev):
        a, p = (alpha_bar_prev, alpha_bar_t) if swap else (alpha_bar_t, alpha_bar_prev)
        x0 = (x + (1 - p).sqrt() * eps) / p.sqrt() if plus else (x - (1 - p).sqrt() * eps) / p.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
        return a.sqrt() * x0 + ((1 - p) if noise_at_prev else (1 - a)).sqrt() * eps

    return ddim_invert_step


@pytest.mark.parametrize(
    "wrong, message",
    [
        (invert_with(swap=True), "that is the sampling step"),
        (invert_with(plus=True), "subtract the noise"),
        (invert_with(clip=True), "do not clip x_0 when inverting"),
        (invert_with(noise_at_prev=True), "at the step you move to"),
    ],
)
def test_ddim_invert_step_catalogue(wrong, message):
    rejects("ddim_invert_step", wrong, message)


# ---- lesson 04 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda mean, logvar, noise: mean + logvar.exp() * noise, "exp(logvar) is the variance"),
        (lambda mean, logvar, noise: mean + logvar * noise, "logvar is the log of the variance"),
        (lambda mean, logvar, noise: mean + (0.5 * logvar).exp() + noise, "not added to it"),
        (
            lambda mean, logvar, noise: mean + (0.5 * logvar).exp() * torch.randn_like(mean),
            "draws random numbers of its own",
        ),
        (lambda mean, logvar, noise: mean.detach() + (0.5 * logvar.detach()).exp() * noise, "gradients must flow"),
    ],
)
def test_reparameterize_catalogue(wrong, message):
    rejects("reparameterize", wrong, message)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda mean, logvar: 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(), "summed: average over every"),
        (
            lambda mean, logvar: 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1).mean(),
            "averaged over the batch",
        ),
        (lambda mean, logvar: (mean**2 + logvar.exp() - 1 - logvar).mean(), "the factor 1/2 is missing"),
        (lambda mean, logvar: 0.5 * (mean**2 + logvar.exp() - 1 + logvar).mean(), "the log term enters with a minus"),
        (lambda mean, logvar: 0.5 * (mean**2 + (2 * logvar).exp() - 1 - logvar).mean(), "not exp(2 logvar)"),
    ],
)
def test_kl_divergence_catalogue(wrong, message):
    rejects("kl_divergence", wrong, message)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda latents: latents.std().item(), "that is the standard deviation"),
        (lambda latents: 1 / latents.var().item(), "1 / variance over-corrects"),
        (lambda latents: 1 / latents.std(dim=(0, 2, 3)), "not one per channel"),
        (lambda latents: 1 / latents.abs().mean().item(), "not the mean absolute value"),
    ],
)
def test_scale_factor_catalogue(wrong, message):
    rejects("scale_factor", wrong, message)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda real, fake: 0.5 * (F.relu(1 + real).mean() + F.relu(1 - fake).mean()), "the signs are swapped"),
        (lambda real, fake: 0.5 * ((1 - real).mean() + (1 + fake).mean()), "not a hinge"),
        (lambda real, fake: 0.5 * (F.relu((1 - real).mean()) + F.relu((1 + fake).mean())), "inside the mean"),
        (lambda real, fake: 0.5 * (F.relu(-real).mean() + F.relu(fake).mean()), "the margin is 1"),
        (lambda real, fake: F.relu(1 - real).mean() + F.relu(1 + fake).mean(), "the factor 1/2 is missing"),
        (lambda real, fake: 0.5 * (F.relu(1 - real).sum() + F.relu(1 + fake).sum()), "summed over patches"),
        (lambda real, fake: 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean()) * 1.01, "wrong on test case"),
    ],
)
def test_hinge_d_loss_catalogue(wrong, message):
    rejects("hinge_d_loss", wrong, message)


# ---- lesson 05 --------------------------------------------------------------------


def sampler_with(unscale=True, order="down", clamp=True, seeded=True, multiply=False):
    @torch.inference_mode()
    def sample_latents(unet, vae, scheduler, n, generator):
        cfg = unet.config
        x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=generator if seeded else None)
        for t in scheduler.timesteps if order == "down" else scheduler.timesteps[::-1]:
            x = scheduler.step(unet(x, t), t, x).prev
        if multiply:
            x = x * vae.config.scale_factor * vae.config.scale_factor  # decoded below as x * scale_factor
        images = vae.decode(x / vae.config.scale_factor if unscale else x)
        return images.clamp(-1, 1) if clamp else images

    return sample_latents


@pytest.mark.parametrize(
    "wrong, message",
    [
        (sampler_with(unscale=False), "divide the latents by vae.config.scale_factor before decoding"),
        (sampler_with(multiply=True), "multiplied by the scale factor where it divides"),
        (sampler_with(order="up"), "step from the largest timestep down"),
        (sampler_with(clamp=False), "clamp the decoded images"),
        (sampler_with(seeded=False), "the same seed gave different results"),
        (lambda *args: None, "it returned None where a tensor was expected"),
    ],
)
def test_sample_latents_catalogue(wrong, message):
    rejects("sample_latents", wrong, message)


# ---- lesson 06 --------------------------------------------------------------------


def sqrtm(s):
    values, vectors = torch.linalg.eigh(s)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def fid_with(trace=True, two=2.0, matrix_sqrt=True, squared=True):
    def frechet_distance(mu1, sigma1, mu2, sigma2):
        mean = ((mu1 - mu2) ** 2).sum() if squared else (mu1 - mu2).norm()
        if not trace:
            return mean
        root = (
            torch.trace(sqrtm(sqrtm(sigma1) @ sigma2 @ sqrtm(sigma1)))
            if matrix_sqrt
            else (sigma1 @ sigma2).diagonal().sqrt().sum()
        )
        return mean + torch.trace(sigma1) + torch.trace(sigma2) - two * root

    return frechet_distance


@pytest.mark.parametrize(
    "wrong, message",
    [
        (fid_with(trace=False), "the covariance term is missing"),
        (fid_with(two=1.0), "the 2 is missing"),
        (fid_with(matrix_sqrt=False), "a matrix square root"),
        (fid_with(squared=False), "square the norm"),
    ],
)
def test_frechet_distance_catalogue(wrong, message):
    rejects("frechet_distance", wrong, message)


def test_frechet_distance_in_complex_numbers_is_refused():
    """Tr((S1 S2)^(1/2)) as the sum of the square roots of S1 S2's eigenvalues is right, but torch.linalg.eigvals
    returns complex numbers: without .real, float() of the answer would quietly drop the imaginary part."""

    def frechet_distance(mu1, sigma1, mu2, sigma2):
        root = torch.linalg.eigvals(sigma1 @ sigma2).sqrt().sum()
        return ((mu1 - mu2) ** 2).sum() + torch.trace(sigma1 + sigma2) - 2 * root

    rejects("frechet_distance", frechet_distance, "it returned complex numbers", ".real")


def test_frechet_distance_with_scipy_passes(capsys):
    scipy_linalg = pytest.importorskip("scipy.linalg")

    def frechet_distance(mu1, sigma1, mu2, sigma2):
        root = scipy_linalg.sqrtm(sigma1.numpy() @ sigma2.numpy()).real
        return float(((mu1 - mu2) ** 2).sum() + torch.trace(sigma1 + sigma2) - 2 * np.trace(root))

    check.frechet_distance(frechet_distance)
    assert capsys.readouterr().out.startswith("✓ frechet_distance")


def mmd_with(unbiased=True, scaled=True, degree=3, plus=1.0, cross=2.0):
    def mmd2_unbiased(x, y):
        d = x.shape[1]
        k = lambda a, b: (a @ b.T / (d if scaled else 1) + plus) ** degree  # noqa: E731
        m, n = len(x), len(y)
        kxx, kyy = k(x, x), k(y, y)
        if unbiased:
            within = (kxx.sum() - kxx.trace()) / (m * (m - 1)) + (kyy.sum() - kyy.trace()) / (n * (n - 1))
        else:
            within = kxx.mean() + kyy.mean()
        return within - cross * k(x, y).mean()

    return mmd2_unbiased


@pytest.mark.parametrize(
    "wrong, message",
    [
        (mmd_with(unbiased=False), "leave k(x_i, x_i) out"),
        (mmd_with(scaled=False), "divide the dot product by the feature dimension"),
        (mmd_with(degree=2), "the kernel is cubic"),
        (mmd_with(plus=0.0), "adds 1 before cubing"),
        (mmd_with(cross=1.0), "the cross term counts twice"),
    ],
)
def test_mmd2_unbiased_catalogue(wrong, message):
    rejects("mmd2_unbiased", wrong, message)


# ---- lesson 07 --------------------------------------------------------------------


def dropout_with(value=None, keep_below=True, whole_batch=False, seeded=True, scale=1.0, moved=True):
    """A learner's label dropout, with one mistake."""

    def drop_labels(labels, no_label, p, generator=None):
        draws = torch.rand(1 if whole_batch else len(labels), generator=generator if seeded else None)
        dropped = (draws < p * scale if keep_below else draws > p).expand(len(labels))
        return torch.where(
            dropped.to(labels.device) if moved else dropped, no_label if value is None else value, labels
        )

    return drop_labels


def exactly_p_n(labels, no_label, p, generator=None):
    """Drops exactly round(p n) labels: the right rate in every batch, but not each label on its own draw."""
    labels = labels.clone()
    labels[torch.randperm(len(labels), generator=generator)[: round(p * len(labels))].to(labels.device)] = no_label
    return labels


def own_generator(labels, no_label, p, generator=None):
    dropped = torch.rand(len(labels), generator=torch.Generator().manual_seed(0)).to(labels.device) < p
    return torch.where(dropped, no_label, labels)


def reseeds_torch(labels, no_label, p, generator=None):
    torch.manual_seed(generator.initial_seed())  # the same seed, the same labels: but torch's own state is reset
    return torch.where(torch.rand(len(labels)).to(labels.device) < p, no_label, labels)


def test_a_learners_label_dropout_passes(capsys):
    check.drop_labels(dropout_with())
    assert capsys.readouterr().out.startswith("✓ drop_labels")


@pytest.mark.parametrize(
    "wrong, message",
    [
        (dropout_with(value=0), "a dropped label becomes 0"),
        (dropout_with(value=-1), "a dropped label becomes -1"),
        (dropout_with(keep_below=False), "1 - p"),
        (dropout_with(whole_batch=True), "not the whole batch at once"),
        (dropout_with(seeded=False), "the same seed gave different labels"),
        (dropout_with(scale=0.5), "expected 10%"),  # no known mistake: the rate is located
        (exactly_p_n, "vary as a binomial's does"),
        (own_generator, "two different seeds gave the same labels"),
        (reseeds_torch, "global random state"),
        (dropout_with(moved=False), "move the mask to the labels' device"),
    ],
)
def test_drop_labels_catalogue(wrong, message):
    rejects("drop_labels", wrong, message)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda eps_uncond, eps_cond, w: eps_cond + w * (eps_uncond - eps_cond), "the roles are swapped"),
        (lambda eps_uncond, eps_cond, w: (1 + w) * eps_cond - w * eps_uncond, "the other convention"),
        (lambda eps_uncond, eps_cond, w: w * (eps_cond - eps_uncond), "not used alone"),
        (lambda eps_uncond, eps_cond, w: eps_uncond + w * eps_cond, "not the conditional one alone"),
    ],
)
def test_guided_eps_catalogue(wrong, message):
    rejects("guided_eps", wrong, message)


# ---- lesson 08: written as a learner might, each with one thing changed ------------------------------


def heun_with(average=True, second_where="landing", into_zero="euler", direction=1.0):
    def step(slope, x, sigma, sigma_prev):
        dt = direction * (sigma_prev - sigma)
        d = slope(x, sigma)
        trial = x + dt * d
        if sigma_prev == 0 and into_zero == "euler":
            return trial
        d2 = slope(trial if second_where == "landing" else x, sigma_prev)
        return x + dt * ({True: (d + d2) / 2, False: d2, "sum": d + d2}[average])

    return step


def test_a_learners_heun_step_passes(capsys):
    check.heun_step(heun_with())
    assert "✓ heun_step" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (heun_with(into_zero="ask"), "asked the model at sigma = 0"),
        (heun_with(second_where="start"), "where the Euler step lands"),
        (heun_with(average=False), "the mean of the two slopes"),
        (heun_with(direction=-1.0), "multiply by sigma_prev - sigma"),
        (heun_with(average="sum"), "the two slopes weigh the same"),
    ],
)
def test_heun_step_catalogue(wrong, message):
    rejects("heun_step", wrong, message)


def test_heun_step_that_calls_the_model_thrice_is_told_so():
    def thrice(slope, x, sigma, sigma_prev):
        slope(x, sigma)
        return heun_with()(slope, x, sigma, sigma_prev)

    rejects("heun_step", thrice, "Heun asks twice a step")


def dpm_with(half=True, lam_scale=0.5, r_flip=False, expm1_sign=-1.0, clean="x0", noise_ratio="falls"):
    def step(x, x0, x0_last, a, a_prev, a_last):
        if a_prev == 1:
            return x0 if clean == "x0" else x * 0 + x0.mean()
        lam = lambda ab: lam_scale * torch.log(ab / (1 - ab))  # noqa: E731
        h = lam(a_prev) - lam(a)
        d = x0
        if x0_last is not None:
            r = (lam(a) - lam(a_last)) / h
            r = 1 / r if r_flip else r
            c = 1 / (2 * r) if half else 1 / r
            d = (1 + c) * x0 - c * x0_last
        ratio = (1 - a_prev) / (1 - a) if noise_ratio == "falls" else (1 - a) / (1 - a_prev)
        return torch.sqrt(ratio) * x - torch.sqrt(a_prev) * torch.expm1(expm1_sign * h) * d

    return step


def test_a_learners_dpm_solver_step_passes(capsys):
    check.dpm_solver_step(dpm_with())
    assert "✓ dpm_solver_step" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (dpm_with(half=False), "the 1/2 is missing"),
        (dpm_with(lam_scale=1.0), "half the log of the signal-to-noise ratio"),
        (dpm_with(r_flip=True), "not its inverse"),
        (dpm_with(expm1_sign=1.0), "the factor is exp(-h) - 1"),  # the first step already goes wrong
        (dpm_with(noise_ratio="grows"), "the ratio of the noise levels, which falls"),
    ],
)
def test_dpm_solver_step_catalogue(wrong, message):
    rejects("dpm_solver_step", wrong, message)


def test_a_step_that_writes_into_its_inputs_is_told_so_and_the_shared_schedule_is_left_alone():
    """sqrt_ where sqrt was meant writes into alpha_bar_t: were it the check's own table (a view of the schedule every
    check shares), the later checks would compare with a corrupted schedule and reject right answers."""

    def sqrt_in_place(x, x0, x0_last, alpha_bar_t, alpha_bar_prev, alpha_bar_last):
        root = alpha_bar_t.sqrt_()
        return dpm_with()(x, x0, x0_last, root**2, alpha_bar_prev, alpha_bar_last)

    table = check.LINEAR.alpha_bar.clone()
    try:
        rejects("dpm_solver_step", sqrt_in_place, "it changed its argument alpha_bar_t in place")
        assert torch.equal(check.LINEAR.alpha_bar, table)
    finally:
        check.LINEAR.alpha_bar.copy_(table)  # else, were it corrupted, the tests after this one would fail too


def fm_loss_with(target="velocity", swapped=False, one_t=False, integer_t=False, reduce="mean", triangular=False):
    def loss(model, x0):
        t = torch.full((len(x0),), 0.3) if one_t else torch.rand(len(x0))
        t = (t + torch.rand(len(x0))) / 2 if triangular else t  # symmetric about 0.5, with mean 0.5, but not uniform
        t = (t * 1000).long() if integer_t else t
        noise = torch.randn_like(x0)
        tt = t.view(-1, 1, 1, 1).to(x0.dtype)
        x_t = tt * x0 + (1 - tt) * noise if swapped else (1 - tt) * x0 + tt * noise
        goal = {"velocity": noise - x0, "reversed": x0 - noise, "noise": noise}[target]
        return F.mse_loss(model(x_t, t), goal, reduction=reduce)

    return loss


def test_a_learners_fm_loss_passes(capsys):
    check.fm_loss(fm_loss_with())
    assert "✓ fm_loss" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (fm_loss_with(target="reversed"), "not x_0 - eps"),
        (fm_loss_with(target="noise"), "not the noise alone"),
        (fm_loss_with(swapped=True), "the weights are swapped"),
        (fm_loss_with(one_t=True), "one t per image"),
        (fm_loss_with(integer_t=True), "one float per image"),
        (fm_loss_with(reduce="sum"), "summed: take the mean"),
        (fm_loss_with(triangular=True), "t must be uniform on [0, 1]"),
    ],
)
def test_fm_loss_catalogue(wrong, message):
    rejects("fm_loss", wrong, message)


def fm_sample_with(flip=False, ask_at_end=False, grid="linspace"):
    def run(velocity, x1, steps):
        ts = {
            "linspace": [1 - i / steps for i in range(steps + 1)],
            "unreached": [1 - i / steps for i in range(steps)],  # a loop over range(steps) of times: 0 never comes
            "too few": [1 - i / max(steps - 1, 1) for i in range(max(steps, 2))],
            "short": [1 - i / (steps + 1) for i in range(steps + 1)],
        }[grid]
        x = x1
        for t, t_next in zip(ts[:-1], ts[1:]):
            dt = t - t_next if flip else t_next - t
            x = x + dt * velocity(x, torch.tensor(t_next if ask_at_end else t, dtype=x.dtype))
        return x

    return run


def test_a_learners_fm_sample_passes(capsys):
    check.fm_sample(fm_sample_with())
    assert "✓ fm_sample" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (fm_sample_with(flip=True), "the sign is flipped"),
        (fm_sample_with(ask_at_end=True), "not where it ends"),
        (fm_sample_with(grid="unreached"), "the last step must reach t = 0"),
        (fm_sample_with(grid="too few"), "that takes steps - 1 steps"),
        (
            fm_sample_with(grid="short"),
            "wrong on test case",
        ),  # stops short of t = 0 by another amount: located, not named
    ],
)
def test_fm_sample_catalogue(wrong, message):
    rejects("fm_sample", wrong, message)


# ---- lesson 10: written as a learner would, each with one mistake -----------------------------------------------


def consistency_fn_with(sign=-1.0, weight="t", raw=False, broadcast=True):
    def fn(model, x_t, t):
        v = model(x_t, t)
        if raw:
            return v
        tt = t.view(-1, 1, 1, 1) if broadcast else t
        return x_t + sign * (tt if weight == "t" else 1 - tt) * v

    return fn


def test_a_learners_consistency_fn_passes(capsys):
    check.consistency_fn(consistency_fn_with())
    assert "✓ consistency_fn" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (consistency_fn_with(sign=1.0), "the sign is flipped"),
        (consistency_fn_with(weight="1 - t"), "with t, not 1 - t"),
        (consistency_fn_with(raw=True), "not the answer itself"),
        (consistency_fn_with(broadcast=False), "reshape it to (B, 1, 1, 1)"),
    ],
)
def test_consistency_fn_catalogue(wrong, message):
    rejects("consistency_fn", wrong, message)


def ct_loss_with(noises=1, stopgrad="r", weight="sigma", reduce="mean", calls="two", shared="", times="(B,)"):
    def fn(f, x0, t, r):
        tt, rr = t.view(-1, 1, 1, 1), r.view(-1, 1, 1, 1)
        noise = {
            "": lambda: torch.randn_like(x0),
            "per image": lambda: torch.randn(len(x0), 1, 1, 1, dtype=x0.dtype).expand_as(x0),
            "batch": lambda: torch.randn(1, *x0.shape[1:], dtype=x0.dtype).expand_as(x0),
        }[shared]()
        other = noise if noises == 1 else torch.randn_like(x0)
        x_t, x_r = (1 - tt) * x0 + tt * noise, (1 - rr) * x0 + rr * other
        online, target = (f(x_t, tt), f(x_r, rr)) if times == "(B, 1, 1, 1)" else (f(x_t, t), f(x_r, r))
        if stopgrad == "r":
            target = target.detach()
        elif stopgrad == "t":
            online = online.detach()
        if calls == "per image":
            online = torch.cat([f(x_t[i : i + 1], t[i : i + 1]) for i in range(len(x0))])
        gap = ((online - target) ** 2).flatten(1).mean(1)
        w = {
            "sigma": 1 / (t / (1 - t) - r / (1 - r)),
            "flow": 1 / (t - r),
            "inverted": t / (1 - t) - r / (1 - r),
            "none": torch.ones_like(t),
        }[weight]
        return (gap * w).mean() if reduce == "mean" else (gap * w).sum()

    return fn


def test_a_learners_ct_loss_passes(capsys):
    check.ct_loss(ct_loss_with())
    assert "✓ ct_loss" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (ct_loss_with(stopgrad="none"), "must be under stop-gradient"),
        (ct_loss_with(stopgrad="t"), "the stop-gradient is on the wrong side"),
        (ct_loss_with(noises=2), "draw one noise eps and use it for both"),
        (ct_loss_with(weight="inverted"), "not sigma_t - sigma_r"),
        (ct_loss_with(weight="flow"), "not 1 / (t - r)"),
        (ct_loss_with(weight="none"), "without it the loss shrinks"),
        (ct_loss_with(reduce="sum"), "the loss should be mean("),
        (ct_loss_with(calls="per image"), "call it twice"),
        (ct_loss_with(shared="per image"), "one number per image, the same at every pixel"),
        (ct_loss_with(shared="batch"), "one noise for the whole batch"),
        (ct_loss_with(times="(B, 1, 1, 1)"), "give f one time per image as it comes, shape (B,)"),
    ],
)
def test_ct_loss_catalogue(wrong, message):
    rejects("ct_loss", wrong, message)


def consistency_sample_with(noise="fresh", renoise=True, swap=False, seeded=True, keep="x0"):
    def fn(f, x1, times, generator):
        n = len(x1)
        x0 = f(x1, torch.full((n,), times[0], dtype=x1.dtype))
        x_t = x1
        for t in times[1:]:
            z = (
                x1
                if noise == "first"
                else torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.dtype)
                if noise == "float32"
                else torch.randn(x0.shape, generator=generator if seeded else None, dtype=x0.dtype)
            )
            x_t = ((t * x0 + (1 - t) * z) if swap else ((1 - t) * x0 + t * z)) if renoise else x0
            x0 = f(x_t, torch.full((n,), t, dtype=x1.dtype))
        return x0 if keep == "x0" else x_t

    return fn


def test_a_learners_consistency_sample_passes(capsys):
    check.consistency_sample(consistency_sample_with())
    assert "✓ consistency_sample" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (consistency_sample_with(noise="first"), "re-noise with fresh noise at each step"),
        (consistency_sample_with(renoise=False), "puts the image back on a line at t"),
        (consistency_sample_with(swap=True), "the weights are swapped"),
        (consistency_sample_with(seeded=False), "draw every random number from the generator"),
        (consistency_sample_with(keep="x_t"), "differs from diffedu's multistep consistency sampler"),
        (consistency_sample_with(noise="float32"), "in the images' own dtype (here float64)"),
    ],
)
def test_consistency_sample_catalogue(wrong, message):
    rejects("consistency_sample", wrong, message)


# ---- lesson 11: written as a learner would, each with one mistake -----------------------------------------------


def contrastive_with(targets="shared", scale=True, directions="both", reduce="mean", normalise=True, caption_axis=0):
    def loss(image_emb, text_emb, scale_, same):
        if normalise:
            image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
        logits = (scale_ if scale else 1.0) * image_emb @ text_emb.T
        goal = {
            "shared": same.float() / same.float().sum(1, keepdim=True),
            "by columns": same.float() / same.float().sum(0, keepdim=True),
            "diagonal": torch.arange(len(logits)),
            "unnormalised": same.float(),
        }[targets]
        to_captions = F.cross_entropy(logits, goal)
        if directions == "image to caption":
            return to_captions
        # the caption-to-image direction: a cross-entropy over each column, the images (axis 0), as logits.T gives
        to_images = F.cross_entropy(logits.T if caption_axis == 0 else logits, goal.T if goal.dim() == 2 else goal)
        return (to_captions + to_images) / 2 if reduce == "mean" else to_captions + to_images

    return loss


def test_a_learners_contrastive_loss_passes(capsys):
    check.contrastive_loss(contrastive_with())
    assert "✓ contrastive_loss" in capsys.readouterr().out


def test_a_contrastive_loss_whose_targets_are_normalised_by_columns_passes(capsys):
    """Not a mistake: captions i and j are the same words, an equivalence, so where same[i, j] is true rows i and j
    have the same sum, and same / same.sum(0) is the same numbers as same / same.sum(1) for any `same` there can be."""
    check.contrastive_loss(contrastive_with(targets="by columns"))
    assert "✓ contrastive_loss" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (contrastive_with(targets="diagonal"), "identical captions are counted as negatives"),
        (contrastive_with(scale=False), "the temperature is missing"),
        (contrastive_with(directions="image to caption"), "the two directions are not averaged"),
        (contrastive_with(reduce="sum"), "the two directions are added, not averaged"),
        (contrastive_with(normalise=False), "the logits are not normalised"),
        # the caption direction over the captions again: twice the first direction, halved, so only it
        (contrastive_with(caption_axis=1), "the caption-to-image one (the logits transposed)"),
        (contrastive_with(targets="unnormalised"), "the targets do not sum to 1"),
    ],
)
def test_contrastive_loss_catalogue(wrong, message):
    rejects("contrastive_loss", wrong, message)


def cross_attention_with(keys="context", scale="sqrt", dim=-1, masked=True, fill=float("-inf"), keep="mask", out="all"):
    def attend(x, context, mask, w_q, w_k, w_v):
        source = context if keys == "context" else x
        q, k, v = x @ w_q, source @ w_k, source @ w_v
        d = q.shape[-1]
        divisor = {"sqrt": math.sqrt(d), "none": 1.0, "d": d, "sqrt of the context's": math.sqrt(context.shape[-1])}
        scores = q @ k.transpose(-1, -2) / divisor[scale]
        if masked:
            hidden = ~mask if keep == "mask" else mask
            scores = scores.masked_fill(hidden[:, None, :], fill)
        weights = scores.softmax(dim)
        return {"all": weights @ v, "first": (weights @ v)[0], "transposed": (weights @ v).transpose(1, 2)}[out]

    return attend


def test_a_learners_cross_attention_passes(capsys):
    check.cross_attention(cross_attention_with())
    assert "✓ cross_attention" in capsys.readouterr().out


def test_a_learners_cross_attention_masking_with_a_large_negative_number_passes(capsys):
    check.cross_attention(cross_attention_with(fill=-1e9))  # exp(-1e9) is 0 as exp(-inf) is
    assert "✓ cross_attention" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (cross_attention_with(keys="image", masked=False), "the keys and values come from the image"),
        # masked as well, its (b, n, n) scores do not take the (b, L) mask: the crash is reported
        (cross_attention_with(keys="image"), "calling it raised RuntimeError: The size of tensor a (5)"),
        (cross_attention_with(scale="none"), "the scores are not scaled"),
        (cross_attention_with(scale="sqrt of the context's"), "d in sqrt(d) is the width of the queries"),
        (cross_attention_with(dim=1), "the softmax runs over the wrong axis"),
        (cross_attention_with(dim=-2), "the softmax runs over the wrong axis"),
        (cross_attention_with(masked=False), "the padding is not masked"),
        (cross_attention_with(keep="real tokens"), "the mask is inverted"),
        (cross_attention_with(scale="d"), "wrong on test case 1 of 2"),  # by 4, not 2: located, not named
        (cross_attention_with(out="first"), "it returned shape (6, 4) where (2, 6, 4) is expected"),
        (cross_attention_with(out="transposed"), "it returned shape (2, 4, 6) where (2, 6, 4) is expected"),
    ],
)
def test_cross_attention_catalogue(wrong, message):
    rejects("cross_attention", wrong, message)


@pytest.mark.parametrize("name", EXERCISES)
def test_an_answer_that_is_text_is_told_what_it_returned(name):
    # it used to be told "the same inputs gave two different answers: it draws random numbers of its own"
    rejects(name, lambda *args, **kwargs: "x", "it returned a str ('x')")
