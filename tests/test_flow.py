"""Flow matching (recipe kind "flow", fm-cifar10): its loss, its solvers and its pipeline, held to the exact
velocity of Gaussian data N(M, S^2), where the loss of the best model and the ODE's solution are known."""

import pytest
import torch

from diffedu import check, checkpoint, evaluation, runs
from diffedu.errors import DiffeduError
from diffedu.nets import UNet, UNetConfig
from diffedu.oracles import GaussianVelocity, MixtureVelocity
from diffedu.pipelines import FlowMatching, load_pipeline
from diffedu.samplers import flow_model_calls, flow_sample
from diffedu.training import flow_loss

M, S = 0.2, 0.3


def test_the_exact_velocity_scores_the_losss_floor():
    """The best velocity, E[eps - x0 | x_t], leaves Var(eps - x0 | x_t) = S^2 / ((1 - t)^2 S^2 + t^2) per value
    (the joint Gaussian's conditional variance), so its loss is the mean of that over t uniform in [0, 1]."""
    t = (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000  # the midpoint rule
    floor = (S**2 / ((1 - t) ** 2 * S**2 + t**2)).mean().item()
    x0 = M + S * torch.randn(200_000, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    losses = torch.stack([flow_loss(GaussianVelocity(M, S), chunk) for chunk in x0.split(20_000)])
    assert losses.mean().item() == pytest.approx(floor, abs=4 * losses.std().item() / 10**0.5)
    torch.manual_seed(1)
    worse = flow_loss(lambda x, t: GaussianVelocity(M, S)(x, t) + 0.1, x0)  # any other velocity scores more
    assert worse.item() == pytest.approx(losses.mean().item() + 0.01, abs=0.004)


def test_the_course_loss_passes_the_lessons_check():
    check.fm_loss(flow_loss)  # the loss fm-cifar10 trained with is the one lesson 09's learners write


@pytest.mark.parametrize("sampler, order", [("euler", 1), ("heun", 2)])
def test_each_flow_solver_has_its_order(sampler, order):
    exact = GaussianVelocity(M, S)
    x1 = torch.randn(8, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = exact.flow(x1, 1.0, 0.0)
    errors = [(flow_sample(exact, x1, steps, sampler).images - target).abs().max().item() for steps in (10, 20, 40, 80)]
    slopes = [
        torch.tensor(a / b).log2().item() for a, b in zip(errors, errors[1:])
    ]  # halving the step: 2^order less error
    assert slopes[-1] == pytest.approx(order, abs=0.2), f"{sampler}: orders {slopes}"


def test_euler_on_the_flow_is_the_lessons_fm_sample_and_counts_its_calls():
    exact = GaussianVelocity(M, S)
    x1 = torch.randn(16, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    run = flow_sample(exact, x1, 7)
    assert torch.allclose(run.images, check._ref_fm_sample(exact, x1, 7), atol=1e-12)
    assert run.model_calls == flow_model_calls("euler", 7) == 7 and flow_model_calls("heun", 7) == 13
    assert flow_sample(exact, x1, 7, "heun").model_calls == 13
    with pytest.raises(DiffeduError, match="'euler', 'heun'"):
        flow_model_calls("ddim", 7)


def test_the_unet_embeds_a_flow_models_time_scaled():
    torch.manual_seed(0)
    flow = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), time_scale=1000.0))
    plain = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=()))
    plain.load_state_dict(flow.state_dict())
    torch.nn.init.normal_(flow.head[-1].weight), plain.head[-1].weight.data.copy_(flow.head[-1].weight)  # not all zero
    flow.eval(), plain.eval()  # no dropout
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([0.05, 0.5, 0.95])
    assert torch.allclose(flow(x, t), plain(x, 1000 * t), atol=1e-5)
    with pytest.raises(DiffeduError, match="time_scale"):
        UNetConfig(time_scale=0)


def test_a_flow_run_trains_loads_and_samples(tiny_cifar, tmp_path):
    runs.train("smoke-flow", tmp_path / "fm", data_root=tiny_cifar, device="cpu")
    assert checkpoint.read_meta(tmp_path / "fm")["objective"] == "flow"
    pipe = load_pipeline(tmp_path / "fm", "cpu")
    assert isinstance(pipe, FlowMatching)
    images = pipe.sample(2, 3, sampler="heun", generator=torch.Generator().manual_seed(0), progress=False)
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1
    assert pipe.model_calls("heun", 3) == 5
    for wrong, message in [
        ({"sampler": "ddim"}, "'ddim' sampler"),
        ({"spacing": "quadratic"}, "'quadratic' spacing"),
        ({"eta": 1.0}, "eta"),
    ]:
        with pytest.raises(DiffeduError, match=message):
            pipe.sample(1, 2, **wrong)


def test_flow_rows_are_named_like_the_others():
    method = evaluation.Method.named("flow Heun 10")
    assert (method.space, method.sampler, method.steps) == ("flow", "heun", 10)
    assert evaluation.MODELS[method.space] == "fm-cifar10"
    for wrong in ("flow DDIM 10", "flow Euler 10 quadratic", "flow Euler 10, L1 decoder", "Euler 10"):
        with pytest.raises(DiffeduError, match="no sampling method"):
            evaluation.Method.named(wrong)


def test_the_shipped_table_shows_each_models_rows_by_space():
    from diffedu import pretrained
    from diffedu.viz import quality_rows

    table = pretrained.quality_table()
    flow = quality_rows(table, spaces=("flow",))
    assert {row.get("space") for row in flow.values()} == {"flow", None} and "real test images" in flow
    assert "VAE reconstructions of them" not in flow  # the latent model's yardstick comes with its rows only
    assert {label for label, row in flow.items() if row.get("space")} == {
        label for label in evaluation.QUALITY_ROWS if label.startswith("flow ")
    }


def test_the_mixture_velocity_is_the_gaussians_for_one_cluster_and_steps_to_the_mean_from_noise():
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    one = MixtureVelocity(torch.tensor([[0.2, 0.2]], dtype=torch.float64), 0.3)
    for t in (0.1, 0.5, 0.9):
        assert torch.allclose(one(x, t), GaussianVelocity(0.2, 0.3)(x, t), atol=1e-12)
    centres = torch.tensor([[-1.0, 0.5], [1.0, 0.5], [0.0, -1.0]], dtype=torch.float64)
    mixture = MixtureVelocity(centres, 0.1)
    # at t = 1 every cluster is equally likely, so one Euler step from noise lands on the data's mean, for any noise
    assert torch.allclose(x - mixture(x, 1.0), centres.mean(0).expand_as(x), atol=1e-12)
    # near the clean end, a point by a cluster moves as that cluster alone would move it
    near = (1 - 0.05) * centres[0] + 0.05 * x[:4]
    assert torch.allclose(mixture(near, 0.05), GaussianVelocity(centres[0], 0.1)(near, 0.05), atol=1e-9)
