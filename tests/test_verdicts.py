"""Every sentence a lesson concludes from a comparison of quality rows is written by code from the table
(report.verdicts and report.tally): change the rows' scores in a copy of the table, and the sentences follow. The
same for the two references: held-out scores that disagree are said."""

import ast
import copy
from pathlib import Path

import pytest

from diffedu import pretrained, report

LESSONS = sorted((Path(__file__).parents[1] / "lessons").glob("[0-9][0-9]_*.py"))


def verdict_groups() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(lesson, subject, pairs) of every group a lesson hands report.verdicts or report.tally, read from its source."""
    found = []
    for lesson in LESSONS:
        for node in ast.walk(ast.parse(lesson.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("verdicts", "tally")
                and getattr(node.func.value, "id", None) == "report"
            ):
                found += [(lesson.stem, subject, pairs) for subject, pairs in ast.literal_eval(node.args[1]).items()]
    return found


GROUPS = verdict_groups()
QUALITY = pretrained.quality_table()


def test_the_lessons_conclude_from_their_comparisons_by_code():
    lessons = {lesson for lesson, _, _ in GROUPS}
    assert {"03_ddim", "05_latent_diffusion", "08_ode_view", "09_flow_matching", "10_consistency"} <= lessons
    assert all(label in QUALITY["rows"] for _, _, pairs in GROUPS for pair in pairs for label in pair)


def moved(table: dict, pairs: list[tuple[str, str]], sign: int) -> dict:
    """A copy of the table in which each pair's first row scores 10 standard errors of their difference below
    (sign -1: better) or above (sign +1: worse) its second, on FID and KID alike."""
    table = copy.deepcopy(table)
    rows = table["rows"]
    for _ in range(len(pairs)):  # a row first in one pair and second in the next settles in as many passes
        for a, b in pairs:
            d = report.paired(table, a, b)
            for key in ("fid", "kid"):
                wanted = rows[b][key] + sign * 10 * d[f"{key}_se"]
                rows[a][key] = min(rows[a][key], wanted) if sign < 0 else max(rows[a][key], wanted)
    return table


@pytest.mark.parametrize(("lesson", "subject", "pairs"), GROUPS, ids=[f"{g[0]}: {g[1]}" for g in GROUPS])
@pytest.mark.parametrize(("sign", "word"), [(-1, "better"), (1, "worse")])
def test_each_lessons_sentence_follows_the_table(lesson, subject, pairs, sign, word):
    table = moved(QUALITY, pairs, sign)
    times = {1: "", 2: " in both pairs"}.get(len(pairs), f" in all {len(pairs)} pairs")
    assert report.tally(table, {subject: pairs}) == f"{subject} is {word} on both{times}."


def test_a_tally_counts_mixed_verdicts():
    pairs = [("DDIM 10", "DDIM 20"), ("DDIM 5", "DDIM 20")]
    table = moved(QUALITY, pairs[:1], -1)
    table = moved(table, pairs[1:], 1)
    rows = table["rows"]
    rows["DDIM 5"]["kid"] = rows["DDIM 10"]["kid"] = rows["DDIM 20"]["kid"]  # level on KID
    said = report.tally(table, {"Fewer steps": pairs})
    assert said == "Fewer steps is better on FID in 1 of 2 pairs and worse in 1, and level on KID in both pairs."


def test_the_held_out_verdicts_are_said_where_they_differ():
    pairs = [("DDIM 10", "DDIM 20")]
    table = moved(QUALITY, pairs, -1)  # better on both against the training images ...
    alike = copy.deepcopy(table)
    for row in alike["rows"].values():  # held-out scores that are the training ones: nothing differs
        row["held_out"] = {key: row[key] for key in ("fid", "fid_se", "kid", "kid_se", "influence")}
    assert report.references_agree(alike, *pairs).endswith("every verdict is the same.")
    assert "rank the other way round, beyond 2 standard errors each way: 0 on FID and 0 on KID." in (
        report.rankings_agree(alike)
    )
    held = table["rows"]["DDIM 10"]["held_out"]
    held["fid"], held["kid"] = 1000.0, 10.0  # ... and far worse against the held-out ones
    said = report.references_agree(table, *pairs)
    assert "1 of 1 verdicts change: DDIM 10 vs DDIM 20 is worse on both (against the training images: better" in said
    assert "worse on both" in report.compare(table, *pairs).splitlines()[4]  # the table's held-out column
    ranked = report.rankings_agree(table)  # DDIM 10 now flips against most rows
    assert ": 0 on FID" not in ranked and "vs DDIM 10" in ranked
