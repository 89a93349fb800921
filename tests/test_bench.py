"""`python -m diffedu bench`: runs in the smoke profile and writes JSON with every field."""

import json
import math

import pytest
import torch
from torch import nn

from diffedu import bench, checkpoint, env, evaluation, measure, pretrained, report
from diffedu.cli import main
from diffedu.errors import DiffeduError


def test_flops_of_a_linear_layer_and_a_convolution_match_their_closed_forms():
    assert measure.forward_flops(nn.Linear(10, 20, bias=False), torch.zeros(3, 10)) == 2 * 3 * 10 * 20
    # a 3x3 conv, 4 -> 8 channels, on 5x5 with padding 1: 2 * (out pixels) * (out channels) * (in channels * 9)
    assert (
        measure.forward_flops(nn.Conv2d(4, 8, 3, padding=1, bias=False), torch.zeros(1, 4, 5, 5)) == 2 * 25 * 8 * 4 * 9
    )


def test_scaling_table_ratios():
    rows = bench.scaling_table()
    assert [r["side"] for r in rows] == [32, 64, 128, 256, 512, 1024]
    assert rows[0]["pixel"] == 3072 and rows[0]["f4"] == 256 and rows[4]["f8"] == 16_384
    assert all(r["f4_ratio"] == 12 and r["f8_ratio"] == 48 for r in rows)


def test_settings_come_from_the_profile_and_the_arguments():
    assert bench.settings_for("cpu").batch == 64
    assert bench.settings_for("cpu", quick=True).samples < bench.settings_for("cpu").samples
    assert bench.settings_for("smoke", quick=True) == bench.settings_for("smoke")  # no quicker smoke
    assert bench.settings_for("cpu", samples=7, reference=None).samples == 7


def test_bench_runs_in_the_smoke_profile_and_writes_every_field(cifar_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFEDU_HOME", str(tmp_path))  # the Inception cache goes to tmp_path/fid
    out = tmp_path / "bench.json"
    assert main(["bench", "--profile", "smoke", "--device", "cpu", "--data", str(cifar_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = bench.load(out)
    assert result["profile"] == "smoke" and result["settings"] == json.loads(
        json.dumps(vars(bench.settings_for("smoke")))
    )
    assert set(result) >= {
        "format",
        "models",
        "machine",
        "options",
        "sizes",
        "sampling",
        "training",
        "scores",
        "scaling",
        "seconds",
        "date",
    }
    assert result["options"] == {
        "inference_mode": True,
        "bf16_autocast": False,
        "channels_last": True,
        "torch_compile": False,
    }

    sizes = result["sizes"]
    assert list(sizes) == ["pixel UNet", "latent UNet", "VAE encoder", "VAE decoder"]
    assert all(r["params"] > 0 and r["gflops"] > 0 for r in sizes.values())

    sampling = result["sampling"]
    assert list(sampling) == ["DDPM 1000", "DDIM 100", "DDIM 50", "latent DDIM 50"]
    for r in sampling.values():
        assert (
            r["seconds"] > 0 and r["runs"] == len(r["all_seconds"]) >= 1 and r["peak_memory_mib"] is None
        )  # a CPU run
    assert sampling["DDIM 100"]["gflops_per_image"] == pytest.approx(100 * sizes["pixel UNet"]["gflops"])
    assert sampling["latent DDIM 50"]["gflops_per_image"] == pytest.approx(
        50 * sizes["latent UNet"]["gflops"] + sizes["VAE decoder"]["gflops"]
    )

    assert list(result["training"]) == ["pixel", "latent, cached latents", "latent, encoder run per batch"]
    for r in result["training"].values():
        assert r["images_per_second"] > 0
        assert r["hours_per_100_epochs"] == pytest.approx(100 * 50_000 / r["images_per_second"] / 3600)

    scores = result["scores"]["rows"]
    assert list(scores) == [*sampling, "real test images", "VAE reconstructions of them"]
    assert all(r["n"] == 4 and math.isfinite(r["fid"]) and math.isfinite(r["kid"]) for r in scores.values())
    assert "first 16 CIFAR-10 training images" in result["scores"]["reference"]
    assert len(list((tmp_path / "fid").glob("inception-*.safetensors"))) == 1  # the reference, cached

    assert printed.startswith(report.tables(result))
    for line in (
        "| DDPM 1000 | 1000 | 1000 |",
        "| latent, cached latents |",
        "| real test images | 4 |",
        "| 32x32x3 | 3,072 | 256 | 12x |",
    ):
        assert line in printed


def test_bench_times_other_step_counts_without_fid(cifar_root, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "--profile", "smoke", "--device", "cpu", "--data", str(cifar_root), "--out", str(out)]
    assert main([*args, "--ddim-steps", "20", "10", "--also", "Heun 3", "DPM-Solver++(2M) 4", "--no-fid"]) == 0
    result = bench.load(out)
    assert list(result["sampling"]) == [
        "DDPM 1000",
        "DDIM 20",
        "DDIM 10",
        "latent DDIM 50",
        "Heun 3",
        "DPM-Solver++(2M) 4",
    ]
    assert [r["model_calls"] for r in result["sampling"].values()] == [1000, 20, 10, 50, 5, 4] and result[
        "scores"
    ] is None
    assert result["sampling"]["Heun 3"]["gflops_per_image"] == pytest.approx(
        5 * result["sizes"]["pixel UNet"]["gflops"]
    )
    assert "FID and KID" not in capsys.readouterr().out


def test_an_old_or_damaged_result_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEDU_HOME", str(tmp_path))
    assert bench.saved_result("cpu") is None
    bench.results_path("cpu").parent.mkdir(parents=True)
    bench.results_path("cpu").write_text('{"sampling": []}')  # the list-shaped result of an earlier diffedu
    assert bench.saved_result("cpu") is None
    rows = {m.label: {} for m in bench.methods()}
    env.write_json({"format": bench.FORMAT, "sampling": rows, "scores": None}, bench.results_path("cpu"))
    assert bench.saved_result("cpu") is None  # measured with --no-fid: lesson 06 needs FID/KID
    complete = {"format": bench.FORMAT, "sampling": rows, "scores": {"rows": {}}}
    env.write_json(complete, bench.results_path("cpu"))
    assert bench.saved_result("cpu") == complete


def test_the_quality_table_measures_rows_resumably(tiny_cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFEDU_HOME", str(tmp_path))  # the Inception cache goes to tmp_path/fid
    out = tmp_path / "quality.json"
    args = ["quality", "--samples", "4", "--data", str(tiny_cifar), "--device", "cpu", "--out", str(out), "--rows"]
    assert main([*args, "real test images", "latent DDIM 10"]) == 0
    first = json.loads(out.read_text())
    assert list(first["rows"]) == ["real test images", "latent DDIM 10"] and first["samples"] == 4
    assert first["rows"]["latent DDIM 10"]["steps"] == 10 and first["rows"]["latent DDIM 10"]["model"] == "ldm-cifar10"
    assert all(row["n"] == 4 and row["seconds_per_image"] > 0 for row in first["rows"].values())
    assert "| latent DDIM 10 | 10 | 10 |" in capsys.readouterr().out  # the table, printed

    assert main([*args, "DDIM 10 quadratic", "latent DDIM 10"]) == 0  # one new row; the measured one is kept
    second = json.loads(out.read_text())
    assert list(second["rows"]) == ["real test images", "DDIM 10 quadratic", "latent DDIM 10"]  # the table's order
    assert second["rows"]["latent DDIM 10"] == first["rows"]["latent DDIM 10"]
    assert second["rows"]["DDIM 10 quadratic"]["spacing"] == "quadratic"

    assert (
        main(
            [
                "quality",
                "--samples",
                "2",
                "--data",
                str(tiny_cifar),
                "--device",
                "cpu",
                "--out",
                str(out),
                "--rows",
                "real test images",
            ]
        )
        == 2
    )  # another count: refused, the rows measured are kept
    assert "measured at 4 images" in capsys.readouterr().err and json.loads(out.read_text()) == second
    assert main([*args, "DDIM 7"]) == 2
    assert "no quality row 'DDIM 7'" in capsys.readouterr().err


def test_a_quality_table_scores_against_held_out_images_and_migrates_format_3(
    tiny_cifar, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("DIFFEDU_HOME", str(tmp_path))
    out = tmp_path / "quality.json"
    args = ["quality", "--samples", "4", "--data", str(tiny_cifar), "--device", "cpu", "--out", str(out), "--rows"]
    assert main([*args, "real test images", "VAE reconstructions of them"]) == 0
    measured = json.loads(out.read_text())
    assert measured["format"] == 4 and measured["held_out_reference"] == "the 4 CIFAR-10 test images after the first 4"
    assert all(len(row["held_out"]["influence"]["kid"]) == 4 for row in measured["rows"].values())
    assert measured["rows"]["real test images"]["held_out"]["fid"] != measured["rows"]["real test images"]["fid"]
    # the same table as format 3 wrote it (the training images its only reference) migrates row by row
    old = {key: measured[key] for key in ("samples", "reference")} | {"format": 3}
    old["rows"] = {label: {k: v for k, v in row.items() if k != "held_out"} for label, row in measured["rows"].items()}
    out.write_text(json.dumps(old))
    assert main([*args, "real test images"]) == 0
    halfway = json.loads(out.read_text())
    assert list(halfway["rows"]) == ["real test images"] and list(halfway["format_3_rows"]) == [
        "VAE reconstructions of them"
    ]
    with pytest.raises(DiffeduError, match="has no held-out scores"):
        pretrained.scored_against({**halfway, "rows": old["rows"]}, "held-out")
    assert main([*args, "VAE reconstructions of them"]) == 0
    migrated = json.loads(out.read_text())
    assert "format_3_rows" not in migrated and migrated["format"] == 4
    for label, row in migrated["rows"].items():
        assert row["held_out"] == measured["rows"][label]["held_out"] and "made again" in row["migrated"]
        assert row["date"] == measured["rows"][label]["date"]  # the rest of the row as it was
    held_out = pretrained.scored_against(migrated, "held-out")
    assert held_out["reference"] == migrated["held_out_reference"]
    assert held_out["rows"]["real test images"]["fid"] == migrated["rows"]["real test images"]["held_out"]["fid"]
    # a format-3 row whose images come out otherwise is not migrated: another model, sampler or library made them
    old["rows"]["real test images"]["fid"] += 1
    out.write_text(json.dumps(old))
    assert main([*args, "real test images"]) == 2
    assert "these are not the images it measured" in capsys.readouterr().err and json.loads(out.read_text()) == old


def test_the_shipped_quality_table_is_one_protocol():
    table = pretrained.quality_table()
    assert table["samples"] == 500 and table["reference"].startswith("all 5170 CIFAR-10 training images")
    assert (
        list(table["rows"]) == [label for label in evaluation.QUALITY_ROWS if label in table["rows"]]
        and "real test images" in table["rows"]
    )
    assert all(row["n"] == row["held_out"]["n"] == 500 for row in table["rows"].values())
    assert table["held_out_reference"] == "the 517 CIFAR-10 test images after the first 500"
    assert table["format"] == evaluation.FORMAT and all(
        row["fid_se"] > 0 and row["kid_se"] > 0 for row in table["rows"].values()
    )
    real = table["rows"]["real test images"]
    assert all(
        row["fid"] > real["fid"] and row["kid"] > real["kid"]
        for label, row in table["rows"].items()
        if label != "real test images"
    )
    # the latent model before and after the decoder stage, each with its decoder's reconstructions
    assert (
        table["rows"]["latent DDIM 50, L1 decoder"]["vae"]
        == table["rows"][evaluation.L1_RECONSTRUCTIONS]["model"]
        == "vae-cifar10"
    )
    assert (
        table["rows"][evaluation.YARDSTICKS[1]]["model"] == checkpoint.read_meta(pretrained.path("ldm-cifar10"))["vae"]
    )


def test_a_method_is_named_by_its_label_and_a_wrong_label_says_what_is_meant():
    assert evaluation.Method.named("DDIM 20 quadratic") == evaluation.Method(
        "DDIM 20 quadratic", "pixel", "ddim", 20, "quadratic"
    )
    assert evaluation.Method.named("latent DDIM 50, L1 decoder").vae == evaluation.L1_DECODER
    assert evaluation.Method.named("DDPM 1000").sampler == "ddpm"
    assert evaluation.Method.named("DDPM-large 1000").sampler == "ddpm_large"
    assert evaluation.Method.named("DPM-Solver++(2M) 10 log-SNR").spacing == "logsnr"
    assert evaluation.Method.named("latent DPM-Solver++(2M) 10 quadratic") == evaluation.Method(
        "latent DPM-Solver++(2M) 10 quadratic", "latent", "dpmpp2m", 10, "quadratic"
    )
    for wrong in ("DDPM 1000 quadratic", "DDPM-large 1000 log-SNR", "ddim 50", "DDIM fifty", "Euler 10"):
        with pytest.raises(evaluation.DiffeduError, match="no sampling method"):
            evaluation.Method.named(wrong)
    with pytest.raises(evaluation.DiffeduError, match="quality --rows 'flow Euler 10'"):
        bench.methods(also=("flow Euler 10",))  # the bench times the profile's models; the flow model is measured apart


def test_one_seeded_protocol_draws_every_scored_image():
    from diffedu.nets import UNet, UNetConfig
    from diffedu.pipelines import Diffusion
    from diffedu.schedules import Schedule

    torch.manual_seed(0)
    unet = UNet(
        UNetConfig(image_size=8, channels=8, channel_mult=(1,), num_res_blocks=1, attn_resolutions=(), num_classes=10)
    )
    nn.init.normal_(unet.head[-1].weight, std=0.1)  # not the zero start: the samples must depend on the noise and class
    pipe = Diffusion(unet, Schedule.linear())
    classes = torch.tensor([3, 1, 4, 1, 5])
    drawn = evaluation.sample_images(pipe, 5, steps=3, classes=classes, guidance=2.0, batch_size=2, seed=7)
    # batch k is seeded seed + k * batch_size, and its images get their own classes
    for start in (0, 2, 4):
        batch = pipe.sample(
            len(classes[start : start + 2]),
            3,
            classes=classes[start : start + 2],
            guidance=2.0,
            progress=False,
            generator=torch.Generator().manual_seed(7 + start),
        )
        assert torch.equal(drawn[start : start + 2], batch)
    assert not torch.equal(
        drawn[:2], evaluation.sample_images(pipe, 2, steps=3, classes=classes[:2].flip(0), guidance=2.0, seed=7)
    )
