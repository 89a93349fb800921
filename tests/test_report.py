"""Comparisons in words, from the quality table alone: a paired difference from the rows' kept influences equals
the one computed from their features, the verdict follows the course's two-standard-error rule, and the README's
headline claims are the ones the shipped table makes."""

import json

import pytest
import torch

from diffedu import metrics, pretrained, report
from diffedu.errors import DiffeduError


def features(n: int, shift: float, seed: int, base: torch.Tensor | None = None) -> torch.Tensor:
    noise = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (noise if base is None else base + 0.3 * noise) + shift


@pytest.fixture(scope="module")
def measured():
    """A small quality table of three rows, two of them paired (drawn from nearly the same 'noise'), and their
    features."""
    reference = metrics.Reference(features(400, 0.0, 0))
    a = features(120, 0.3, 1)
    sets = {"A": a, "A'": features(120, 0.3, 2, base=a), "B": features(120, 0.0, 3)}
    rows = {
        label: {**metrics.scores_of(x, reference, influence=True), "seconds_per_image": 0.1}
        for label, x in sets.items()
    }
    return {"samples": 120, "reference": "synthetic", "rows": rows}, sets, reference


def test_a_paired_difference_from_kept_influences_equals_the_one_from_features(measured):
    table, sets, reference = measured
    for a, b in (("A", "A'"), ("A", "B")):
        kept, direct = report.paired(table, a, b), metrics.difference(sets[a], sets[b], reference)
        assert kept == pytest.approx(direct, rel=1e-5)
    paired, unpaired = report.paired(table, "A", "A'"), report.paired(table, "A", "B")
    rows = table["rows"]
    assert paired["fid_se"] < 0.5 * (rows["A"]["fid_se"] ** 2 + rows["A'"]["fid_se"] ** 2) ** 0.5  # pairing pays
    assert unpaired["fid_se"] == pytest.approx((rows["A"]["fid_se"] ** 2 + rows["B"]["fid_se"] ** 2) ** 0.5, rel=0.3)


def test_the_verdict_is_the_two_standard_error_rule():
    assert report.verdict(-2.1, 1.0) == "better" and report.verdict(2.1, 1.0) == "worse"
    assert report.verdict(-2.0, 1.0) == report.verdict(1.9, 1.0) == report.verdict(0.0, 0.0) == "level"
    assert report.in_words({"fid": 3.0, "fid_se": 1.0, "kid": 0.001, "kid_se": 0.001}) == "worse on FID, level on KID"
    assert report.in_words({"fid": -3.0, "fid_se": 1.0, "kid": -0.01, "kid_se": 0.001}) == "better on both"


def test_a_comparison_shows_both_rows_the_difference_and_the_verdict(measured):
    table, _, _ = measured
    d = report.paired(table, "A", "B")
    shown = report.compare(table, ("A", "B"))
    line = next(line for line in shown.splitlines() if line.startswith("| A vs B"))
    assert f"{d['fid']:+.1f} ± {d['fid_se']:.1f}" in line and line.endswith(f"| {report.in_words(d)} |")
    assert f"{table['rows']['A']['fid']:.1f} vs {table['rows']['B']['fid']:.1f}" in line


def test_rows_that_cannot_be_paired_are_refused_with_what_to_do(measured):
    table, _, _ = measured
    with pytest.raises(DiffeduError, match="no row 'C'"):
        report.paired(table, "A", "C")
    bare = {
        **table,
        "rows": {**table["rows"], "old": {k: v for k, v in table["rows"]["B"].items() if k != "influence"}},
    }
    with pytest.raises(DiffeduError, match="python -m diffedu quality --rows 'old'"):
        report.paired(bare, "A", "old")


def test_every_shipped_quality_row_can_be_compared_and_records_its_model_calls():
    table = pretrained.quality_table()
    for label, row in table["rows"].items():
        assert len(row["influence"]["fid"]) == len(row["influence"]["kid"]) == row["n"] == table["samples"], label
        assert metrics.standard_error(torch.tensor(row["influence"]["kid"])) == pytest.approx(row["kid_se"], rel=1e-4)
        assert "sampler" not in row or row["model_calls"] >= row["steps"] // 2, label


@pytest.mark.parametrize("block", report.BLOCKS)
def test_the_pages_state_the_numbers_the_shipped_measurements_make(block):
    """The README's headline claims and docs/models.md's table are written by `python -m diffedu.report`: a retrained
    model cannot leave a stale sentence behind."""
    path, start, end, make = report.BLOCKS[block]
    text = path.read_text()
    assert text[text.index(start) + len(start) : text.index(end)].strip() == make().strip(), (
        f"{path.name}'s numbers differ from their source: run python -m diffedu.report"
    )


def test_the_report_tool_on_damaged_tables_says_which_and_changes_no_page(tmp_path, monkeypatch):
    import shutil

    from diffedu import pretrained

    shipped = tmp_path / "checkpoints"
    shutil.copytree(pretrained.CHECKPOINTS, shipped, ignore=shutil.ignore_patterns("*.safetensors"))
    monkeypatch.setattr(pretrained, "CHECKPOINTS", shipped)
    monkeypatch.setattr(pretrained, "available", lambda: ["ldm-cifar10-cond", "sd-cifar10"])
    pages = {}
    for name, (path, start, end, make) in report.BLOCKS.items():  # copies of the pages, so that nothing real changes
        pages[name] = tmp_path / f"{name}-{path.name}"
        pages[name].write_text(path.read_text())
        monkeypatch.setitem(report.BLOCKS, name, (pages[name], start, end, make))
    before = {name: page.read_text() for name, page in pages.items()}
    table = json.loads((shipped / "quality.json").read_text())
    damages = {
        "truncated": lambda: (shipped / "quality.json").write_text(json.dumps(table)[:5000]),
        "no KID influences": lambda: (shipped / "quality.json").write_text(
            json.dumps(
                {
                    **table,
                    "rows": {
                        k: {**r, "influence": {"fid": r["influence"]["fid"]}} if "influence" in r else r
                        for k, r in table["rows"].items()
                    },
                }
            )
        ),
        "a row the README cites missing": lambda: (shipped / "quality.json").write_text(
            json.dumps({**table, "rows": {k: r for k, r in table["rows"].items() if k != "latent DDIM 50"}})
        ),
    }
    for what, damage in damages.items():
        damage()
        said = report.main()
        assert isinstance(said, str) and said.startswith("error: ") and "quality.json" in said, (what, said)
        assert "\n" not in said and {name: page.read_text() for name, page in pages.items()} == before, what
