"""Every argument of the Python API a learner types (the pipelines' sample and sample_trajectory, load_pipeline) is
checked: a bad value gets a DiffeduError that names it and says what to do, or is converted where the intent is
plain. Nothing is silently ignored, and no NaN image is returned. Tiny UNets on 8x8 images keep it fast."""

import numpy as np
import pytest
import torch

from diffedu import checkpoint, pretrained
from diffedu.errors import DiffeduError
from diffedu.nets import UNet, UNetConfig
from diffedu.pipelines import Consistency, Diffusion, FlowMatching, load_pipeline
from diffedu.samplers import consistency_sample, flow_model_calls
from diffedu.schedules import Schedule

TINY = dict(image_size=8, channels=8, channel_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0)


def unet(**config) -> UNet:
    """A tiny UNet whose output head is not all zero, so that what it predicts depends on its input."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(**{**TINY, **config}))
    torch.nn.init.normal_(net.head[-1].weight, std=0.1)
    return net


@pytest.fixture(scope="module")
def pipe() -> Diffusion:
    return Diffusion(unet(), Schedule.linear())


@pytest.fixture(scope="module")
def cond() -> Diffusion:
    return Diffusion(unet(num_classes=10), Schedule.linear())


@pytest.fixture(scope="module")
def flow() -> FlowMatching:
    return FlowMatching(unet(time_scale=1000.0))


def sample(pipe, n=None, **kwargs) -> torch.Tensor:
    return pipe.sample(n, kwargs.pop("steps", 2), progress=False, **kwargs)


def noise(n=2, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=dtype)


# ---- x_T and n --------------------------------------------------------------------


def test_x_T_as_float64_or_as_a_numpy_array_is_converted(pipe, flow):
    for p in (pipe, flow):
        expected = sample(p, x_T=noise())
        for x_T in (noise().double(), noise().numpy(), noise().double().numpy()):
            assert torch.equal(sample(p, x_T=x_T), expected)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300])  # 1e300 is infinite in float32
def test_non_finite_x_T_is_refused(pipe, flow, value):
    x_T = noise(dtype=torch.float64)
    x_T[1, 0, 3, 3] = value
    for p in (pipe, flow):
        with pytest.raises(DiffeduError, match="x_T holds NaN or infinite values"):
            sample(p, x_T=x_T)


def test_n_comes_from_x_T_and_a_different_n_is_refused(pipe, flow):
    for p in (pipe, flow):
        assert sample(p, x_T=noise(3)).shape == (3, 3, 8, 8)
        assert sample(p, 3, x_T=noise(3)).shape == (3, 3, 8, 8)
        with pytest.raises(DiffeduError, match="n=2 images asked for, but x_T holds 3: leave n out"):
            sample(p, 2, x_T=noise(3))
    assert sample(pipe).shape == (16, 3, 8, 8)  # no x_T: 16 images, as before


@pytest.mark.parametrize(
    "x_T",
    [
        torch.zeros(2, 1, 8, 8),
        torch.zeros(3, 8, 8),
        torch.zeros(0, 3, 8, 8),
        torch.zeros(2, 3, 8, 8, dtype=torch.long),
        [[0.0]],
        "noise",
    ],
)
def test_x_T_of_the_wrong_shape_or_kind_is_refused_with_the_shape_expected(pipe, flow, x_T):
    for p in (pipe, flow):
        with pytest.raises(DiffeduError, match=r"x_T must be .*\(n, 3, 8, 8\)|x_T holds no images"):
            sample(p, x_T=x_T)


def test_an_absurd_number_of_images_is_refused_before_any_is_made(pipe, flow, monkeypatch):
    monkeypatch.setattr(torch, "randn", lambda *a, **k: pytest.fail("noise was drawn"))
    for p in (pipe, flow):
        with pytest.raises(DiffeduError, match="the number of images must be at most 50,000, got 1000000000000"):
            sample(p, 10**12)
        with pytest.raises(DiffeduError, match="at most 50,000"):
            p.noise(50_001)


# ---- generator, eta, frames, classes --------------------------------------------


def test_an_int_seed_is_a_generator_and_anything_else_is_refused(pipe, flow):
    for p in (pipe, flow):
        assert torch.equal(sample(p, 2, generator=7), sample(p, 2, generator=torch.Generator().manual_seed(7)))
        assert torch.equal(p.noise(2, np.int64(7)), p.noise(2, torch.Generator().manual_seed(7)))
        for wrong in ("7", 1.5, True, -1):
            with pytest.raises(DiffeduError, match="generator must be a torch.Generator or a seed"):
                sample(p, 2, generator=wrong)
    # eta > 0 draws from the generator at every step: an int seed makes that repeatable too
    assert torch.equal(sample(pipe, 2, eta=0.5, generator=3), sample(pipe, 2, eta=0.5, generator=3))


@pytest.mark.parametrize("eta", ["0.5", True, None, float("nan")])
def test_eta_must_be_a_number_not_a_string_or_a_bool(pipe, flow, eta):
    for p in (pipe, flow):
        with pytest.raises(DiffeduError, match="eta must be (a|one finite) number"):
            sample(p, 1, eta=eta)


@pytest.mark.parametrize("frames", [2.5, "3", -1, True])
def test_frames_must_be_a_whole_number(pipe, frames):
    with pytest.raises(DiffeduError, match="frames must be"):
        pipe.sample_trajectory(1, 2, frames=frames, progress=False)


def test_more_frames_than_steps_keep_one_a_step(pipe):
    assert len(pipe.sample_trajectory(1, 3, frames=10**12, progress=False).timesteps) == 3  # allocated nothing huge


@pytest.mark.parametrize("classes", [torch.tensor(2.0), np.float64(2.0), torch.tensor([1.0, 2.0])])
def test_classes_as_floats_are_refused(cond, classes):
    with pytest.raises(DiffeduError, match="classes must be a class name or index|a class index must be a whole"):
        sample(cond, 2, classes=classes)
    assert sample(cond, 2, classes=torch.tensor(2)).shape == (2, 3, 8, 8)  # a 0-d integer tensor: one class for all


# ---- load_pipeline's device ---------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return checkpoint.save_model(tmp_path_factory.mktemp("ckpt") / "tiny", unet(), schedule="linear", T=1000)


def test_an_int_device_is_that_gpu_not_the_cpu(saved):
    if torch.cuda.is_available():
        assert load_pipeline(saved, 0).device == torch.device("cuda", 0)
    else:
        with pytest.raises(DiffeduError, match="'0' asked for, but torch sees no CUDA GPU"):
            load_pipeline(saved, 0)
    for wrong in (True, 1.5, ["cpu"]):
        with pytest.raises(DiffeduError, match="unknown device"):
            load_pipeline(saved, wrong)
    assert load_pipeline(saved, "cpu").device == torch.device("cpu")


# ---- steps --------------------------------------------------------------------------


def test_flow_and_consistency_steps_have_a_limit(flow):
    with pytest.raises(DiffeduError, match="steps must be a whole number between 1 and 1,000, got 1000000000"):
        flow_model_calls("euler", 10**9)  # was 10**9, and sampling allocated 8 GB of t's before the first step
    for steps in (10**9, 10**20):  # 10**20 overflowed inside torch
        with pytest.raises(DiffeduError, match="between 1 and 1,000"):
            sample(flow, 1, steps=steps)
        with pytest.raises(DiffeduError, match="between 1 and 1,000"):
            consistency_sample(lambda x, t: x, noise(1), 10**20)
    consistency = Consistency(unet(time_scale=1000.0))
    for call in (lambda: consistency.model_calls(steps=10**9), lambda: sample(consistency, 1, steps=10**20)):
        with pytest.raises(DiffeduError, match="between 1 and 1,000"):
            call()
    assert flow_model_calls("heun", 1000) == 1999 and consistency.model_calls(steps=1000) == 1000


def test_what_ddpm_would_ignore_is_refused(pipe):
    for spacing in ("quadratic", "logsnr"):
        with pytest.raises(DiffeduError, match="DDPM visits every one of the T=1000 steps, so spacing"):
            pipe.scheduler("ddpm", spacing=spacing)
    with pytest.raises(DiffeduError, match="DDPM visits every one of the T=1000 steps: leave steps out"):
        pipe.scheduler("ddpm", 50)
    assert len(pipe.scheduler("ddpm").timesteps) == len(pipe.scheduler("ddpm", 1000).timesteps) == 1000


def test_what_a_flow_model_would_ignore_is_refused(flow):
    for wrong, message in [
        ({"eta": 0.5}, "takes no eta"),
        ({"spacing": "quadratic"}, "'quadratic' spacing"),
        ({"frames": 3}, "snapshots"),
        ({"sampler": "ddim"}, "'ddim' sampler"),
    ]:
        with pytest.raises(DiffeduError, match=message):
            flow.sample_trajectory(1, 2, progress=False, **wrong)


# ---- non-finite results ---------------------------------------------------------------


def test_a_sampler_that_makes_non_finite_images_says_so(cond):
    unclipped = Diffusion(cond.unet, cond.schedule)
    unclipped.clip_x0 = False  # as a latent pipeline's (a pixel pipeline's clipping turns the infinities into +-1)
    with pytest.raises(DiffeduError, match="guidance 1e\\+308 made the images non-finite .*between 0 and ~10"):
        sample(unclipped, 2, classes="horse", guidance=1e308)
    flow_cond = FlowMatching(unet(num_classes=10, time_scale=1000.0))
    with pytest.raises(DiffeduError, match="non-finite"):
        sample(flow_cond, 2, classes="horse", guidance=1e308)
    for p in (Diffusion(unet(), Schedule.linear()), FlowMatching(unet(time_scale=1000.0))):
        torch.nn.init.constant_(p.unet.head[-1].bias, float("nan"))  # as a model whose training diverged
        with pytest.raises(DiffeduError, match="sampling made the images non-finite"):
            sample(p, 2)
    assert sample(cond, 2, classes="horse", guidance=3.0).isfinite().all()


# ---- T: the number of diffusion steps a UNet learned ------------------------------------


def test_a_unet_records_its_T_and_a_schedule_of_another_T_is_refused():
    assert UNetConfig().T == 1000 and UNetConfig(T=100).to_dict()["T"] == 100
    for wrong in (0, 2.5, "1000", True):
        with pytest.raises(DiffeduError, match="UNetConfig.T must be a positive whole number"):
            UNetConfig(T=wrong)
    with pytest.raises(DiffeduError, match="this UNet learned T=1000 .* the schedule has T=100"):
        Diffusion(unet(), Schedule.linear(100))
    assert Diffusion(unet(T=100), Schedule.linear(100)).schedule.T == 100


@pytest.mark.parametrize("name", ["ddpm-cifar10", "ldm-cifar10", "ldm-cifar10-cond", "fm-cifar10", "ect-cifar10"])
def test_shipped_unets_load_unchanged_with_T_1000(name):
    meta = checkpoint.read_meta(pretrained.path(name))
    config = UNetConfig(**meta["config"])
    assert "T" not in meta["config"] and config.T == meta.get("T", 1000) == 1000
    assert UNetConfig(**config.to_dict()) == config
    assert {k: config.to_dict()[k] for k in meta["config"]} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()
    }
    assert load_pipeline(name, "cpu").unet.config == config


def test_a_checkpoint_whose_config_has_no_T_takes_the_one_beside_it(tmp_path):
    config = {k: v for k, v in unet().config.to_dict().items() if k != "T"}  # as checkpoints were saved before T
    tensors = {f"model.{k}": v for k, v in unet().state_dict().items()}
    checkpoint.save(tmp_path / "old", tensors, {"kind": "unet", "config": config, "schedule": "linear", "T": 100})
    pipe = load_pipeline(tmp_path / "old", "cpu")
    assert pipe.schedule.T == pipe.unet.config.T == 100
    checkpoint.save_model(tmp_path / "new", unet(), schedule="linear", T=100)  # its config says T=1000
    with pytest.raises(DiffeduError, match="this UNet learned T=1000 .* the schedule has T=100"):
        load_pipeline(tmp_path / "new", "cpu")
