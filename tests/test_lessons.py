"""Every lesson is a jupytext .py (the reviewed source) paired with an .ipynb
(for Colab and Binder) with the same cells and no outputs. nbval runs the
notebooks themselves (pytest --nbval-lax collects lessons/*.ipynb)."""

import re
from pathlib import Path

import jupytext
import pytest

from diffedu.viz import FIGURE_WIDTH

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
SCRIPTS = sorted(LESSONS.glob("[0-9][0-9]_*.py"))


def cells(notebook):
    return [
        (c.cell_type, c.source.strip(), {k: v for k, v in c.metadata.items() if k in ("nbgrader", "tags")})
        for c in notebook.cells
    ]


def test_there_are_lessons():
    assert len(SCRIPTS) >= 3


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_lesson_pair_is_in_sync_and_clean(script):
    paired = script.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing: run `jupytext --sync {script}`"
    notebook = jupytext.read(paired)
    assert cells(jupytext.read(script)) == cells(notebook), (
        f"{script.name} and {paired.name} differ: run `jupytext --sync {script}`"
    )
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        f"{paired.name} has outputs committed"
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_lesson_fits_beside_the_file_browser(script):
    """Code lines of at most 120 characters (JupyterLab cuts longer ones when its file browser is open), and
    figures at most viz.FIGURE_WIDTH inches wide (wider ones are shrunk, their labels with them)."""
    code = [line for c in jupytext.read(script).cells if c.cell_type == "code" for line in c.source.splitlines()]
    assert [line for line in code if len(line) > 120] == []
    widths = [float(w) for w in re.findall(r"figsize=\((\d+(?:\.\d+)?)\s*,", script.read_text())]
    assert all(w <= FIGURE_WIDTH for w in widths), widths
