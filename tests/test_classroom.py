"""The classroom edition works on the real tools: the student edition runs with only its checks failing,
and nbgrader grades a lesson as it is (full marks for the solutions, none for the blank)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from diffedu import check, cli
from diffedu.classroom import exercises, strip_solution, student_edition

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
SCRIPTS = sorted(LESSONS.glob("[0-9][0-9]_*.py"))


def test_the_exercise_registry_is_what_the_lessons_and_the_teaching_page_say():
    registry = list(check.EXERCISES.values())
    for script in SCRIPTS:
        mine = [e for e in registry if e.lesson == script.stem]
        assert exercises(script) == [e.name for e in mine], script.stem  # the solution cells, in order
        points = [c.metadata["nbgrader"]["points"] for c in jupytext.read(script).cells if c.metadata.get("nbgrader", {}).get("grade")]
        assert points == [e.points for e in mine], script.stem
    assert {e.lesson for e in registry} <= {script.stem for script in SCRIPTS}
    page = (LESSONS.parent / "docs" / "teaching.md").read_text()
    rows = re.findall(r"^\| \d\d \| `(\w+)` \|.*\| (.*) \|$", page, re.M)
    assert [lesson for lesson, _ in rows] == list(dict.fromkeys(e.lesson for e in registry))  # a row per lesson with exercises
    for lesson, written in rows:
        assert re.findall(r"`(\w+)`", written) == [e.name for e in registry if e.lesson == lesson], lesson
    assert f"({len(registry)} exercises in all)" in " ".join(page.split())
    assert "test cell worth one point" in " ".join(page.split()) and {e.points for e in registry} == {1}


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
        assert "BEGIN SOLUTION" not in text and "jupytext_version" not in text  # as JupyterLab would save it
        for exercise in exercises(script):
            assert f'raise NotImplementedError("exercise {exercise}: write this part")' in text
    assert (edition / "jupytext.toml").read_text() == (LESSONS / "jupytext.toml").read_text()


def test_writing_the_edition_again_keeps_a_learners_answers(tmp_path, capsys):
    out = tmp_path / "student"
    student_edition(LESSONS, out)
    answered = out / "01_forward_process.ipynb"
    answered.write_text(answered.read_text().replace('raise NotImplementedError(\\"exercise alpha_bar: write this part\\")',
                                                     "return torch.cumprod(1 - betas, 0)"))
    assert "torch.cumprod(1 - betas, 0)" in answered.read_text()
    untouched = (out / "02_ddpm.py").read_text()
    assert cli.main(["student", "--lessons", str(LESSONS), "--out", str(out)]) == 0
    assert "torch.cumprod(1 - betas, 0)" in answered.read_text()
    said = capsys.readouterr().out
    assert "kept 1 as they were" in said and "01_forward_process" in said
    assert (out / "02_ddpm.py").read_text() == untouched  # rewritten: nothing of the learner's was there


def test_the_edition_is_never_written_over_the_lessons(tmp_path, capsys):
    lessons = tmp_path / "lessons"
    shutil.copytree(LESSONS, lessons, ignore=shutil.ignore_patterns("runs"))
    before = {p.name: p.read_text() for p in lessons.iterdir()}
    assert cli.main(["student", "--lessons", str(lessons), "--out", str(lessons)]) == 2
    assert "the lessons' own folder" in capsys.readouterr().err
    assert {p.name: p.read_text() for p in lessons.iterdir()} == before


def submission_with_first_exercise_blank(lesson: Path) -> dict:
    """The lesson's notebook with its solutions, but the first exercise left as the student edition has it."""
    nb = nbformat.read(lesson, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution"))
    cell.source = strip_solution(cell.source, cell.metadata["nbgrader"]["grade_id"])
    return nb


def test_nbgrader_grades_every_lesson_in_the_course_folder(tmp_path, edition, cifar_root, monkeypatch):
    """The course folder `make course` sets up, with its nbgrader configuration (cell timeout, profile, PATH):
    every lesson's student edition handed in blank scores 0 and still runs to its end (its only errors are its
    checks, shown as the check's message, no traceback); lesson 01 with one exercise blank scores 2 of 3."""
    from nbgrader.api import Gradebook

    monkeypatch.delenv("DIFFEDU_PROFILE", raising=False)  # the course's configuration chooses it
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if Path(p) != Path(sys.executable).parent))
    course = tmp_path / "course"
    assert cli.main(["course", "--lessons", str(LESSONS), "--out", str(course)]) == 0
    lessons = [s.stem for s in SCRIPTS if exercises(s)]
    for lesson in lessons:
        released = (course / "release" / lesson / f"{lesson}.ipynb").read_text()
        assert "BEGIN SOLUTION" not in released and "NotImplementedError" in released
        (course / "submitted" / "blank" / lesson).mkdir(parents=True)
        shutil.copy(edition / f"{lesson}.ipynb", course / "submitted" / "blank" / lesson)
    (course / "submitted" / "one_blank" / lessons[0]).mkdir(parents=True)
    nbformat.write(submission_with_first_exercise_blank(LESSONS / f"{lessons[0]}.ipynb"),
                   course / "submitted" / "one_blank" / lessons[0] / f"{lessons[0]}.ipynb")
    for lesson in lessons:
        subprocess.run([sys.executable, "-m", "nbgrader", "autograde", lesson, "--force"], cwd=course, check=True,
                       capture_output=True, text=True)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for lesson in lessons:
            blank = gradebook.find_submission(lesson, "blank")
            assert (blank.score, blank.max_score) == (0, len(exercises(LESSONS / f"{lesson}.py"))), lesson
        one_blank = gradebook.find_submission(lessons[0], "one_blank")
        assert (one_blank.score, one_blank.max_score) == (2, 3)
    for lesson in lessons:
        cells = nbformat.read(course / "autograded" / "blank" / lesson / f"{lesson}.ipynb", as_version=4).cells
        errors = [(c.metadata.get("nbgrader", {}).get("grade_id"), o) for c in cells if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.output_type == "error"]
        assert [grade_id for grade_id, _ in errors] == [f"check_{e}" for e in exercises(LESSONS / f"{lesson}.py")], lesson
        for (grade_id, error), exercise in zip(errors, exercises(LESSONS / f"{lesson}.py")):
            assert error.traceback[0].startswith(f"✗ {exercise}: not implemented yet") and "check.py" not in "".join(error.traceback)
