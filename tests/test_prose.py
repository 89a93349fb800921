"""The text a learner reads, held to the course's writing limits and to its sources.

Counted as tools/prose_stats.py counts (numbers per 100 words, sentence lengths; markdown cells only). And: no
measured number typed into a lesson's text (they are printed by code from their one home), lesson 00's table
names every lesson, its notation table is docs/notation.md's, and each lesson's stated time is the measured one
(benchmarks/lesson_times.json, written by benchmarks/lesson_times.py).
"""

import json
import math
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import prose_stats  # noqa: E402

LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
DOCS = sorted((ROOT / "docs").glob("*.md"))
# Numbers with a decimal point that a lesson may state: constants of the methods and of the papers, cited there.
CITED = {"3.17", "35.7", "0.18215", "0.00085", "0.012", "0.02", "7.5"}
MEASURED = re.compile(
    r"(?:FID|KID|PSNR)[^.\n]{0,12}?\d|\d\s*(?:ms|dB|seconds)\b|\d(?:\.\d+)?x (?:faster|cheaper|less|more)"
)
TIME = re.compile(r"\*\*Time:\*\* about (\d+) minutes? of computing in the `cpu` profile\.")


def test_there_are_lessons_and_docs():
    assert len(LESSONS) >= 10 and len(DOCS) >= 4


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_a_lesson_reads_like_the_best_course_notebooks(lesson):
    s = prose_stats.stats(lesson)
    most = 4.0 if lesson.stem.startswith("00") else 2.5  # lesson 00's subject is arithmetic
    assert s["per100"] <= most, f"{lesson.name}: {s['per100']:.1f} numbers per 100 words (at most {most})"
    assert s["sentence"] <= 20, f"{lesson.name}: sentences of {s['sentence']:.1f} words on average (at most 20)"
    assert s["longest"] <= 45, f"{lesson.name}: a sentence of {s['longest']} words (at most 45)"


def test_the_course_as_a_whole_and_its_pages():
    words, numbers = zip(*((s["words"], s["numbers"]) for s in map(prose_stats.stats, LESSONS)))
    assert 100 * sum(numbers) / sum(words) <= 2.0
    readme = prose_stats.stats(ROOT / "README.md")
    assert readme["words"] <= 1500 and readme["per100"] <= 2.0, readme
    for page in DOCS:
        assert prose_stats.stats(page)["per100"] <= 2.5, page.name


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_no_measured_number_is_typed_into_a_lesson(lesson):
    """A measured number comes from its home through code; text carries only the constants it cites."""
    text = prose_stats.NAMED.sub(" ", "\n\n".join(prose_stats.paragraphs(lesson)))  # not "Exercise 3.2"
    decimals = set(re.findall(r"(?<![\w.])\d+\.\d+", text)) - CITED
    assert not decimals, f"{lesson.name} types the numbers {sorted(decimals)}: print them from their home instead"
    text = re.sub("|".join(re.escape(c) for c in CITED), " ", text)
    assert not MEASURED.findall(text), f"{lesson.name} types a measurement: {MEASURED.findall(text)}"


def test_lesson_00_names_every_lesson_and_its_notation_is_the_docs():
    plan = (ROOT / "lessons" / "00_pixel_vs_latent.py").read_text()
    assert re.findall(r"^# \| lesson (\d\d) \|", plan, re.M) == [p.stem[:2] for p in LESSONS]
    notation = [line[2:] for line in plan.splitlines() if line.startswith("# | $") or line.startswith("# | symbol")]
    docs = [
        line
        for line in (ROOT / "docs" / "notation.md").read_text().splitlines()
        if line.startswith("| $") or line.startswith("| symbol")
    ]
    assert notation and notation == docs, "lesson 00's notation table and docs/notation.md differ"


def test_each_lesson_states_its_measured_time():
    measured = json.loads((ROOT / "benchmarks" / "lesson_times.json").read_text())
    assert measured["profile"] == "cpu"
    for lesson in LESSONS:
        stated = TIME.findall(lesson.with_suffix(".py").read_text())
        assert len(stated) == 1, f"{lesson.name} does not state its time as the other lessons do"
        seconds = measured["lessons"][lesson.stem]
        assert int(stated[0]) == max(1, math.ceil(seconds / 60)), (
            f"{lesson.name} says {stated[0]} minutes, measured {seconds:.0f} s: run benchmarks/lesson_times.py"
        )
