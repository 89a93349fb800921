"""Class conditioning and classifier-free guidance: exact at w = 0 and w = 1, label dropout at its rate, and
on the exact denoiser of a two-class Gaussian mixture, samples move towards the chosen class as w grows."""

import json
import math

import pytest
import torch
from torch import nn

from diffedu import checkpoint, cli
from diffedu.errors import DiffeduError
from diffedu.metrics import LinearProbe
from diffedu.nets import UNet, UNetConfig
from diffedu.oracles import TwoGaussians
from diffedu.pipelines import LatentDiffusion, load_pipeline
from diffedu.samplers import DDIMScheduler, Guided, sample
from diffedu.schedules import Schedule
from diffedu.training import eps_loss
from diffedu.vae import VAE, VAEConfig

COND = UNetConfig(
    in_channels=4,
    image_size=8,
    channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(),
    dropout=0.0,
    num_classes=10,
)


def conditional_unet(seed=0):
    torch.manual_seed(seed)
    unet = UNet(COND).eval()
    nn.init.normal_(unet.head[-1].weight, std=0.1)  # not the zero start: predictions must depend on the class
    nn.init.normal_(unet.class_emb.weight)
    return unet


@torch.no_grad()
def test_guidance_at_0_is_unconditional_and_at_1_conditional_exactly():
    unet, x, t = conditional_unet(), torch.randn(5, 4, 8, 8), torch.tensor([999, 500, 10, 3, 0])
    labels = torch.tensor([0, 3, 7, 9, 7])
    uncond, cond = unet(x, t), unet(x, t, labels)
    assert not torch.allclose(uncond, cond)
    assert torch.equal(Guided(unet, labels, 0.0)(x, t), uncond)
    assert torch.equal(Guided(unet, labels, 1.0)(x, t), cond)
    assert torch.allclose(Guided(unet, labels, 3.0)(x, t), uncond + 3 * (cond - uncond), atol=1e-5)  # one batched call


def test_an_unconditional_unet_is_unchanged_and_refuses_labels():
    plain = UNet(UNetConfig(**{**COND.to_dict(), "num_classes": 0}))
    assert not any("class_emb" in k for k in plain.state_dict())
    with pytest.raises(DiffeduError, match="not class-conditional"):
        plain(torch.zeros(1, 4, 8, 8), 0, torch.tensor([1]))
    with pytest.raises(DiffeduError, match="class labels must be in 0..9"):
        conditional_unet()(torch.zeros(1, 4, 8, 8), 0, torch.tensor([11]))


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.config, self.seen = COND, []

    def forward(self, x, t, y):
        self.seen.append(y)
        return torch.zeros_like(x)


@pytest.mark.parametrize("drop", [0.0, 0.1, 0.5])
def test_labels_are_dropped_to_no_label_at_the_given_rate(drop):
    recorder, labels = Recorder(), torch.randint(0, 10, (20_000,))
    torch.manual_seed(0)
    eps_loss(recorder, (torch.zeros(20_000, 1, 1, 1), labels), Schedule.linear(), drop=drop)
    seen = recorder.seen[0]
    dropped = seen == COND.num_classes
    assert dropped.float().mean().item() == pytest.approx(drop, abs=0.01)
    assert torch.equal(seen[~dropped], labels[~dropped])  # the others keep their own class


MEAN, STD = 1.0, 0.3


@torch.no_grad()
def test_guidance_moves_samples_towards_the_class_as_w_grows():
    schedule = Schedule.linear()
    model = TwoGaussians(schedule, MEAN, STD)
    x_T = torch.randn(4000, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scheduler = DDIMScheduler(schedule, clip_x0=False).set_timesteps(100)
    results = {
        w: sample(Guided(model, torch.ones(4000, dtype=torch.long), w), scheduler, x_T, progress=False)
        for w in (0, 1, 3)
    }
    in_class = {w: (x > 0).double().mean().item() for w, x in results.items()}
    assert in_class[0] == pytest.approx(0.5, abs=0.03)  # unconditional: the mixture, half each
    assert in_class[1] > 0.99 and results[1].mean().item() == pytest.approx(MEAN, abs=0.02)  # the class itself
    assert results[1].std().item() == pytest.approx(STD, rel=0.1)
    assert results[3].mean().item() > results[1].mean().item() > results[0].mean().item()  # w > 1 pushes further
    assert in_class[3] >= in_class[1]


def test_bad_classes_and_negative_guidance_are_clear_errors(tmp_path, capsys):
    vae = VAE(VAEConfig(channels=8, scale_factor=0.5))
    pipe = LatentDiffusion(vae, conditional_unet(), Schedule.linear())
    with pytest.raises(DiffeduError, match="unknown class 'zebra'; the classes are airplane, automobile"):
        pipe.sample(2, steps=2, classes="zebra", progress=False)
    with pytest.raises(DiffeduError, match="one class for all 2 images or one per image"):
        pipe.sample(2, steps=2, classes=[1, 2, 3], progress=False)
    with pytest.raises(DiffeduError, match="guidance scale w must be 0 or more"):
        pipe.sample(2, steps=2, classes="horse", guidance=-1, progress=False)
    images = pipe.sample(2, steps=2, classes=["horse", 3], guidance=2.0, progress=False)
    assert images.shape == (2, 3, 32, 32)
    with pytest.raises(DiffeduError, match="not class-conditional"):
        load_pipeline("ldm-cifar10", "cpu").sample(1, steps=2, classes="horse", progress=False)
    assert cli.main(["sample", "--ckpt", "ldm-cifar10", "--class", "horse", "--out", str(tmp_path / "x.png")]) == 2
    assert "not class-conditional" in capsys.readouterr().err


def test_train_and_sample_a_class_conditional_latent_model(tiny_cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFEDU_HOME", str(tmp_path / "home"))
    out = tmp_path / "cond"
    assert (
        cli.main(
            [
                "train",
                "latent",
                "--cond",
                "--profile",
                "smoke",
                "--vae",
                "vae-cifar10",
                "--steps",
                "3",
                "--data",
                str(tiny_cifar),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert checkpoint.read_meta(out)["config"]["num_classes"] == 10
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "2", "--data", str(tiny_cifar)]) == 0
    png = tmp_path / "horses.png"
    assert (
        cli.main(
            [
                "sample",
                "--ckpt",
                str(out),
                "--class",
                "horse",
                "--guidance",
                "3",
                "--steps",
                "3",
                "--samples",
                "2",
                "--out",
                str(png),
            ]
        )
        == 0
    )
    assert "class horse, guidance 3" in capsys.readouterr().out and png.exists()
    assert cli.main(["sample", "--ckpt", str(out), "--class", "zebra", "--out", str(png)]) == 2

    curve = tmp_path / "curve.json"  # the guidance curve, on a handful of images: its shape, not its values
    assert (
        cli.main(
            [
                "guidance",
                "--ckpt",
                str(out),
                "--samples",
                "8",
                "--reference",
                "12",
                "--scales",
                "0",
                "3",
                "--steps",
                "2",
                "--data",
                str(tiny_cifar),
                "--out",
                str(curve),
            ]
        )
        == 0
    )
    result = json.loads(curve.read_text())
    assert list(result["scales"]) == ["0.0", "3.0"] and result["samples"] == 8 and result["vae"] == "vae-cifar10"
    assert result["reference"] == "the first 12 CIFAR-10 training images"
    for row in [*result["scales"].values(), result["real test images"]]:
        assert row["n"] == 8 and 0 <= row["accuracy"] <= 1 and math.isfinite(row["fid"])
    assert "| w = 3 | 8 |" in capsys.readouterr().out


def test_the_linear_probe_reads_classes_off_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 64, generator=g) * 3
    labels = torch.arange(10).repeat(60)
    features = centres[labels] + torch.randn(600, 64, generator=g)
    probe = LinearProbe(features[:500], labels[:500])
    assert probe.accuracy(features[500:], labels[500:]) > 0.95
    assert probe.accuracy(features[500:], labels[500:].roll(1)) < 0.1  # the wrong classes are called wrong
    assert math.isclose(probe.accuracy(features, labels), (probe.predict(features) == labels).double().mean().item())
