"""The classroom edition works on the real tools: the student edition runs with only its checks failing,
and nbgrader grades a lesson as it is (full marks for the solutions, none for the blank)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from diffedu import cli
from diffedu.classroom import exercises, strip_solution, student_edition

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
SCRIPTS = sorted(LESSONS.glob("[0-9][0-9]_*.py"))


def test_a_solution_becomes_a_stub_that_names_its_exercise():
    source = 'def f(x):\n    """doc"""\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n'
    assert strip_solution(source, "f") == 'def f(x):\n    """doc"""\n    raise NotImplementedError("exercise f: write this part")'


def test_every_lesson_after_00_has_exercises_each_with_its_graded_check():
    found = {script.stem: exercises(script) for script in SCRIPTS}
    assert sum(map(len, found.values())) >= 17 and all(found[s.stem] for s in SCRIPTS[1:])
    for script in SCRIPTS:
        cells = jupytext.read(script).cells
        graded = [c for c in cells if c.metadata.get("nbgrader", {}).get("grade")]
        assert [c.metadata["nbgrader"]["grade_id"] for c in graded] == [f"check_{e}" for e in found[script.stem]]
        assert all(c.source == f"check.{e}({e})" for c, e in zip(graded, found[script.stem]))
        assert "inspect.getsource" not in script.read_text()  # a lesson shows the learner's code, not the package's


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    assert cli.main(["student", "--lessons", str(LESSONS), "--out", str(out)]) == 0
    return out


def test_the_edition_is_paired_and_holds_no_solution(edition):
    for script in SCRIPTS:
        student = edition / script.name
        paired = jupytext.read(student.with_suffix(".ipynb"))
        assert [c.source for c in jupytext.read(student).cells] == [c.source for c in paired.cells]
        assert not any(c.get("outputs") for c in paired.cells if c.cell_type == "code")
        text = student.read_text()
        assert "BEGIN SOLUTION" not in text
        for exercise in exercises(script):
            assert f'raise NotImplementedError("exercise {exercise}: write this part")' in text
    assert (edition / "jupytext.toml").exists()


def run(notebook: Path) -> list[tuple[dict, str]]:
    """Execute a notebook as JupyterLab's Run All would, going on after errors; (cell, error text) per error."""
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    return [(cell, "\n".join(o.get("evalue", "") for o in cell.get("outputs", []) if o.output_type == "error"))
            for cell in nb.cells if cell.cell_type == "code" and any(o.output_type == "error" for o in cell.get("outputs", []))]


@pytest.mark.parametrize("script", SCRIPTS[1:], ids=lambda p: p.stem)
def test_in_the_student_edition_only_the_checks_fail_and_say_not_implemented(script, edition, cifar_root, monkeypatch):
    monkeypatch.setenv("DIFFEDU_PROFILE", "smoke")
    errors = run(edition / f"{script.stem}.ipynb")
    assert [cell.metadata.get("nbgrader", {}).get("grade_id") for cell, _ in errors] == [f"check_{e}" for e in exercises(script)]
    for (_, text), exercise in zip(errors, exercises(script)):
        assert f"✗ {exercise}: not implemented yet" in text and "uses diffedu's reference" in text


def test_nbgrader_gives_the_solutions_full_marks_and_the_blank_none(tmp_path, cifar_root):
    from nbgrader.api import Gradebook

    lesson = "01_forward_process"
    (tmp_path / "source" / "lesson01").mkdir(parents=True)
    shutil.copy(LESSONS / f"{lesson}.ipynb", tmp_path / "source" / "lesson01")
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.course_id = 'diffedu'\n"
                                                 "c.ExecutePreprocessor.timeout = 600\n")
    environment = {**os.environ, "DIFFEDU_PROFILE": "smoke",
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # nbgrader runs alembic

    def nbgrader(*args):
        subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=tmp_path, env=environment, check=True,
                       capture_output=True, text=True)

    nbgrader("generate_assignment", "lesson01", "--force")
    released = tmp_path / "release" / "lesson01" / f"{lesson}.ipynb"
    assert "BEGIN SOLUTION" not in released.read_text()
    for student, notebook in (("solved", tmp_path / "source" / "lesson01" / f"{lesson}.ipynb"), ("blank", released)):
        (tmp_path / "submitted" / student / "lesson01").mkdir(parents=True)
        shutil.copy(notebook, tmp_path / "submitted" / student / "lesson01")
    nbgrader("autograde", "lesson01", "--force")
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        solved, blank = (gradebook.find_submission("lesson01", s) for s in ("solved", "blank"))
        assert solved.max_score == len(exercises(LESSONS / f"{lesson}.py")) == 3
        assert (solved.score, blank.score) == (3, 0)
