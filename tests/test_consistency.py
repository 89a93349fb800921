"""Consistency models (lesson 10): the parametrisation, ECT's curriculum and loss, multistep sampling, checked
against the exact consistency model of Gaussian data; the trainer, the pipeline and the quality rows' methods."""

import pytest
import torch

from diffedu import checkpoint, cli, runs
from diffedu.consistency import ConsistencyTrainer, consistency_fn, ct_loss, ect_r, ect_times, same_masks
from diffedu.errors import DiffeduError
from diffedu.evaluation import MODELS, Method
from diffedu.nets import Dropout, UNet, UNetConfig
from diffedu.oracles import GaussianConsistency, GaussianVelocity
from diffedu.pipelines import Consistency, load_pipeline
from diffedu.samplers import consistency_sample, consistency_times

MEAN, STD = 0.2, 0.3
EXACT = GaussianConsistency(MEAN, STD)  # f(x_t, t) = x_t - t EXACT(x_t, t) is the flow's exact solution map


def exact_f(x, t):
    return consistency_fn(EXACT, x, t)


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_the_boundary_condition_holds_whatever_the_network():
    net = UNet(UNetConfig(channels=8, channel_mult=(1,), num_res_blocks=1, attn_resolutions=(), time_scale=1000.0))
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(consistency_fn(net, x, torch.zeros(3)), x)


def test_the_exact_consistency_function_is_the_flows_solution_map():
    x, t = randn(64, 1, 2, 2, seed=0), torch.rand(64, dtype=torch.float64) * 0.98 + 0.01
    assert torch.allclose(exact_f(x, t), GaussianVelocity(MEAN, STD).flow(x, t, 0.0), atol=1e-12)
    # and it is constant along each path: from any point of one, the same end
    x1 = randn(64, 1, 2, 2, seed=1)
    ends = [
        exact_f(GaussianVelocity(MEAN, STD).flow(x1, 1.0, s), torch.full((64,), s, dtype=torch.float64))
        for s in (1.0, 0.7, 0.3, 0.05)
    ]
    assert all(torch.allclose(end, ends[0], atol=1e-12) for end in ends)


def test_one_step_with_the_exact_map_turns_noise_into_the_data_exactly():
    x1 = randn(32, 1, 2, 2, seed=2)
    assert torch.allclose(consistency_sample(exact_f, x1, 1).images, MEAN + STD * x1, atol=1e-12)


@pytest.mark.parametrize("steps", [2, 4])
def test_multistep_sampling_with_the_exact_map_keeps_the_datas_distribution(steps):
    n = 400_000  # the mean's standard error: 0.3 / sqrt(n) = 5e-4
    images = consistency_sample(exact_f, randn(n, 1, 1, 1, seed=3), steps, torch.Generator().manual_seed(4)).images
    assert abs(images.mean().item() - MEAN) < 5 * STD / n**0.5
    assert abs(images.std().item() - STD) < 5 * STD / (2 * n) ** 0.5
    assert consistency_times(steps) == [1 - i / steps for i in range(steps)]


def test_ects_curriculum_starts_at_diffusion_training_and_halves_the_gap():
    sigma = torch.logspace(-3, 3, 50, dtype=torch.float64)
    t = sigma / (1 + sigma)
    assert torch.equal(ect_r(sigma, 0), torch.zeros_like(sigma))  # r = 0: the target is the clean image
    for stage in range(4, 12):  # from stage 4 on, sigma_r > 0 for every sigma (n(sigma) <= 9 < 2^4)
        r, r_next = ect_r(sigma, stage), ect_r(sigma, stage + 1)
        assert (r < t).all() and (r > 0).all()
        gap, gap_next = sigma - r / (1 - r), sigma - r_next / (1 - r_next)
        assert torch.allclose(gap_next, gap / 2, rtol=1e-9)
    t, r = ect_times(torch.zeros(100_000, 3, 1, 1), stage=20)
    assert t.dtype == torch.float64 and (t > r).all()  # float64: near t = 1 the two stay apart
    assert abs(torch.logit(t).mean().item() + 1.1) < 0.03 and abs(torch.logit(t).std().item() - 2.0) < 0.03


def pull(f, stage, teacher=None):
    """The loss's gradient at f in the direction t x (zero at t = 0: the boundary kept): which way training moves f."""
    a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    x0 = MEAN + STD * randn(200_000, 1, 1, 1, seed=6)
    t = torch.full((len(x0),), 0.7, dtype=torch.float64)
    torch.manual_seed(5)
    loss = ct_loss(lambda x, s: f(x, s) + a * s.view(-1, 1, 1, 1) * x, x0, t, ect_r(t / (1 - t), stage), teacher)
    return loss, torch.autograd.grad(loss, a)[0].item()


def test_the_loss_stops_pulling_on_the_exact_map_as_r_nears_t_and_keeps_pulling_on_a_wrong_one():
    euler_jump = lambda x, t: consistency_fn(GaussianVelocity(MEAN, STD), x, t)  # noqa: E731  (close, not constant on paths)
    exact = [abs(pull(exact_f, stage)[1]) for stage in (4, 8, 12)]
    wrong = [abs(pull(euler_jump, stage)[1]) for stage in (4, 8, 12)]
    assert exact[2] < exact[0] / 20 and exact[2] < 1e-4  # Monte Carlo noise: about 3e-6
    assert wrong[2] > 0.5 * wrong[0] and wrong[2] > 100 * exact[2]


def test_distillation_from_the_exact_velocity_makes_the_exact_maps_loss_zero_to_rounding():
    assert pull(exact_f, 12, teacher=GaussianVelocity(MEAN, STD))[0].item() < 1e-12


def test_both_calls_of_one_step_share_their_dropout_masks_and_the_global_random_state_is_kept():
    class Dropped(torch.nn.Module):  # a velocity that is its input through the course's dropout
        def __init__(self):
            super().__init__()
            self.dropout = Dropout(0.5)

        def forward(self, x, t):
            return self.dropout(x)

    net = Dropped().train()
    x, t = torch.randn(4, 3, 32, 32), torch.rand(4)
    f = same_masks(net)
    state = torch.get_rng_state()
    assert torch.equal(f(x, t), f(x, t))
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(same_masks(net)(x, t), f(x, t))  # another step: other masks


def test_a_consistency_run_tunes_saves_resumes_and_samples(tmp_path, tiny_cifar):
    out = tmp_path / "ect"
    trainer = runs.train("smoke-consistency", out, data_root=tiny_cifar, device="cpu")
    assert isinstance(trainer, ConsistencyTrainer) and not trainer.autocast  # float32 even on CUDA
    assert trainer.stage == trainer.step and all(loss == loss for loss in trainer.history)  # smoke: a stage a step
    meta = checkpoint.read_meta(out)
    assert meta["objective"] == "consistency" and meta["recipe"] == "smoke-consistency"
    resumed = runs.train(out=out, resume=True, steps=2, data_root=tiny_cifar, device="cpu")
    assert resumed.step == trainer.step + 2
    pipe = load_pipeline(out)
    assert isinstance(pipe, Consistency) and pipe.model_calls() == 1 and pipe.model_calls(steps=4) == 4
    images = pipe.sample(3, 2, generator=torch.Generator().manual_seed(0), progress=False)
    assert images.shape == (3, 3, 32, 32) and images.abs().max() <= 1
    again = pipe.sample(3, 2, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(images, again)  # the re-noising draws from the generator
    for wrong in (dict(sampler="euler"), dict(eta=0.5), dict(classes="horse")):
        with pytest.raises(DiffeduError, match="a consistency model takes no"):
            pipe.sample(2, **wrong)


def test_the_quality_rows_name_the_consistency_model():
    method = Method.named("consistency 2")
    assert (method.space, method.sampler, method.steps) == ("consistency", "consistency", 2)
    assert MODELS["consistency"] == "ect-cifar10"
    for wrong in ("flow consistency 2", "consistency 2 quadratic", "latent consistency 1"):
        with pytest.raises(DiffeduError, match="no sampling method"):
            Method.named(wrong)


def test_the_command_line_samples_the_consistency_model_in_the_calls_asked(tmp_path, capsys):
    out = tmp_path / "one.png"
    assert cli.main(["sample", "--ckpt", "ect-cifar10", "--samples", "4", "--steps", "2", "--out", str(out)]) == 0
    assert out.exists() and "multistep consistency sampling, 2 model calls" in capsys.readouterr().out
    assert cli.main(["sample", "--ckpt", "ect-cifar10", "--sampler", "ddim", "--out", str(tmp_path / "x.png")]) == 2
    assert "a consistency model takes no 'ddim' sampler" in capsys.readouterr().err
