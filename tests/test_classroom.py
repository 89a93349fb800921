"""The classroom edition works on the real tools: the student edition runs with only its checks failing,
and nbgrader grades a lesson as it is (full marks for the solutions, none for the blank)."""

import builtins
import errno
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from diffedu import check, classroom, cli
from diffedu.classroom import course_folder, exercises, strip_solution, student_edition
from diffedu.errors import DiffeduError

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
SCRIPTS = sorted(LESSONS.glob("[0-9][0-9]_*.py"))


def test_the_exercise_registry_is_what_the_lessons_and_the_teaching_page_say():
    registry = list(check.EXERCISES.values())
    for script in SCRIPTS:
        mine = [e for e in registry if e.lesson == script.stem]
        assert exercises(script) == [e.name for e in mine], script.stem  # the solution cells, in order
        points = [
            c.metadata["nbgrader"]["points"]
            for c in jupytext.read(script).cells
            if c.metadata.get("nbgrader", {}).get("grade")
        ]
        assert points == [e.points for e in mine], script.stem
    assert {e.lesson for e in registry} <= {script.stem for script in SCRIPTS}
    page = (LESSONS.parent / "docs" / "teaching.md").read_text()
    rows = re.findall(r"^\| \d\d \| `(\w+)` \|.*\| (.*) \|$", page, re.M)
    assert [lesson for lesson, _ in rows] == list(
        dict.fromkeys(e.lesson for e in registry)
    )  # a row per lesson with exercises
    for lesson, written in rows:
        assert re.findall(r"`(\w+)`", written) == [e.name for e in registry if e.lesson == lesson], lesson
    assert f"({len(registry)} exercises in all)" in " ".join(page.split())
    assert "test cell worth one point" in " ".join(page.split()) and {e.points for e in registry} == {1}


def test_a_solution_becomes_a_stub_that_names_its_exercise():
    source = 'def f(x):\n    """doc"""\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n'
    assert (
        strip_solution(source, "f")
        == 'def f(x):\n    """doc"""\n    raise NotImplementedError("exercise f: write this part")'
    )


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
    answered.write_text(
        answered.read_text().replace(
            'raise NotImplementedError(\\"exercise alpha_bar: write this part\\")', "return torch.cumprod(1 - betas, 0)"
        )
    )
    assert "torch.cumprod(1 - betas, 0)" in answered.read_text()
    untouched = (out / "02_ddpm.py").read_text()
    assert cli.main(["student", "--lessons", str(LESSONS), "--out", str(out)]) == 0
    assert "torch.cumprod(1 - betas, 0)" in answered.read_text()
    said = capsys.readouterr().out
    assert "kept 1 as they were" in said and "01_forward_process" in said
    assert (out / "02_ddpm.py").read_text() == untouched  # rewritten: nothing of the learner's was there


def disk_with_room_for(monkeypatch, folder: Path, room: int, only: str = ""):
    """From here on, the disk under `folder` has `room` bytes left (characters, for text) for files whose name
    holds `only`: a write there writes what fits, then fails as a full disk does (ENOSPC), leaving what it wrote."""
    real_open, left = io.open, [room]

    class OnFullDisk:
        def __init__(self, file):
            self.file = file

        def write(self, data):
            fits = data[: left[0]]
            left[0] -= len(fits)
            self.file.write(fits)
            if len(fits) < len(data):
                self.file.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return len(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def fake_open(file, mode="r", *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        there = isinstance(file, (str, Path)) and str(file).startswith(str(folder)) and only in Path(file).name
        return OnFullDisk(opened) if there and any(m in mode for m in "wax+") else opened

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(builtins, "open", fake_open)


@pytest.mark.parametrize(
    "share, only", [(0, ""), (0.001, ""), (0.03, ""), (0.2, ""), (0.5, ""), (0.9, ""), (0.002, ".diffedu-written.json")]
)
def test_a_full_disk_leaves_nothing_that_a_later_edition_keeps_as_someones_work(tmp_path, monkeypatch, share, only):
    """The disk fills up while the edition is written, the first time or again over an edition, in a lesson
    or in the record of what was written; once there is room again, writing it again gives the whole edition,
    keeps nothing, and leaves no temporary file behind."""
    whole = tmp_path / "whole"
    student_edition(LESSONS, whole)
    expected = {p.name: p.read_bytes() for p in whole.iterdir()}
    for again in (False, True):
        out = tmp_path / f"student{again}"
        if again:
            student_edition(LESSONS, out)
        with monkeypatch.context() as m:
            disk_with_room_for(m, out, int(share * sum(map(len, expected.values()))), only)
            with pytest.raises(OSError, match="No space left"):
                student_edition(LESSONS, out)
        written, kept = student_edition(LESSONS, out)
        assert kept == [] and len(written) == len(SCRIPTS)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == expected


def test_a_lesson_cut_short_is_rewritten_and_a_damaged_record_gives_no_traceback(tmp_path, capsys):
    """A lesson that is not a whole file (a write cut short by a full disk, in an earlier version) is nobody's
    work: it is rewritten, and said so. A damaged record of what was written counts as none: a learner's
    answers (a file that differs, yet is a whole notebook) stay."""
    out = tmp_path / "student"
    student_edition(LESSONS, out)
    whole = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "02_ddpm.ipynb").write_bytes(whole["02_ddpm.ipynb"][:5000])
    (out / "03_ddim.py").write_bytes(b"")
    assert cli.main(["student", "--lessons", str(LESSONS), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "rewrote" in said and "02_ddpm.ipynb" in said and "03_ddim.py" in said and "kept" not in said
    assert {p.name: p.read_bytes() for p in out.iterdir()} == whole

    record = out / ".diffedu-written.json"
    record.write_bytes(record.read_bytes()[:100])
    answered = out / "01_forward_process.ipynb"
    answered.write_text(answered.read_text().replace("write this part", "my answer"))
    (out / "02_ddpm.ipynb").write_bytes(whole["02_ddpm.ipynb"][:5000] + b"\x00" * 100)
    assert cli.main(["student", "--lessons", str(LESSONS), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert ".diffedu-written.json" in said and "kept 1 as they were" in said and "01_forward_process" in said
    assert "my answer" in answered.read_text() and (out / "02_ddpm.ipynb").read_bytes() == whole["02_ddpm.ipynb"]


def test_someones_edit_is_never_taken_for_a_write_cut_short(tmp_path, capsys):
    """A student notebook with a line appended, or a merge conflict's markers in it, no longer parses: it is still
    someone's work, kept without --force (in `course`'s release/ too, which writes through the same folder)."""
    out = tmp_path / "student"
    student_edition(LESSONS, out)
    appended, merged = out / "01_forward_process.ipynb", out / "02_ddpm.ipynb"
    appended.write_bytes(appended.read_bytes() + b"\nmy note\n")
    text = merged.read_text()
    merged.write_text("<<<<<<< HEAD\n" + text[:3000] + "=======\n" + text[3000:] + ">>>>>>> theirs\n")
    edited = {p: p.read_bytes() for p in (appended, merged)}
    assert cli.main(["student", "--lessons", str(LESSONS), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "kept 2 as they were" in said and "rewrote" not in said
    assert {p: p.read_bytes() for p in (appended, merged)} == edited


def no_nbgrader(monkeypatch) -> list:
    """nbgrader is not started: the list that comes back collects the command lines that would have started it."""
    started = []
    monkeypatch.setattr(
        subprocess, "run", lambda args, **kwargs: started.append(args) or subprocess.CompletedProcess(args, 0)
    )
    return started


@pytest.mark.parametrize("name", ["nbgrader_config.py", "nbgrader_config.json"])
def test_a_course_folder_never_runs_an_nbgrader_configuration_it_did_not_write(tmp_path, monkeypatch, capsys, name):
    """nbgrader runs the course folder's nbgrader_config.py (and reads its .json): one the course did not
    write, or that was changed since, is refused, and replaced only with force, which says so."""
    course = tmp_path / "course"
    started = no_nbgrader(monkeypatch)
    course_folder(LESSONS, course)
    course_folder(LESSONS, course)  # its own configuration, recognised
    assert started and (course / "nbgrader_config.py").read_text() == classroom.NBGRADER_CONFIG
    planted = 'import os\nos.system("echo ran")\n' if name.endswith(".py") else '{"Exchange": {"root": "/tmp"}}'
    (course / name).write_text(planted)
    started.clear()
    with pytest.raises(DiffeduError, match=f"{name}.*--force"):
        course_folder(LESSONS, course)
    assert not started and (course / name).read_text() == planted
    course_folder(LESSONS, course, force=True)
    assert started and (course / "nbgrader_config.py").read_text() == classroom.NBGRADER_CONFIG
    assert not (course / "nbgrader_config.json").exists()
    assert name in capsys.readouterr().out


def test_a_course_regenerated_keeps_a_teachers_edits_in_release_unless_forced(tmp_path, capsys):
    """nbgrader generate_assignment --force replaces release/<lesson>/ whole: a teacher's edits there are kept
    (and reported) unless force, which says what it replaced; a release as nbgrader wrote it is regenerated."""
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    for path in LESSONS.glob("01_forward_process.*"):
        shutil.copy(path, lessons)
    course = tmp_path / "course"
    assert course_folder(lessons, course) == (["01_forward_process"], [])
    assert course_folder(lessons, course) == (["01_forward_process"], [])
    released = course / "release" / "01_forward_process" / "01_forward_process.ipynb"
    edited = released.read_text().replace("# YOUR CODE HERE", "# YOUR CODE HERE (hint: torch.cumprod)")
    assert edited != released.read_text()
    released.write_text(edited)
    kept = ["release/01_forward_process/01_forward_process.ipynb"]
    assert course_folder(lessons, course) == (["01_forward_process"], kept)
    assert released.read_text() == edited
    capsys.readouterr()
    assert course_folder(lessons, course, force=True) == (["01_forward_process"], [])
    assert "hint" not in released.read_text() and "NotImplementedError" in released.read_text()
    assert "replaced" in capsys.readouterr().out


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
    monkeypatch.setenv(
        "PATH",
        os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent),
    )
    course = tmp_path / "course"
    assert cli.main(["course", "--lessons", str(LESSONS), "--out", str(course)]) == 0
    lessons = [s.stem for s in SCRIPTS if exercises(s)]
    for lesson in lessons:
        released = (course / "release" / lesson / f"{lesson}.ipynb").read_text()
        assert "BEGIN SOLUTION" not in released and "NotImplementedError" in released
        (course / "submitted" / "blank" / lesson).mkdir(parents=True)
        shutil.copy(edition / f"{lesson}.ipynb", course / "submitted" / "blank" / lesson)
    (course / "submitted" / "one_blank" / lessons[0]).mkdir(parents=True)
    nbformat.write(
        submission_with_first_exercise_blank(LESSONS / f"{lessons[0]}.ipynb"),
        course / "submitted" / "one_blank" / lessons[0] / f"{lessons[0]}.ipynb",
    )
    for lesson in lessons:
        subprocess.run(
            [sys.executable, "-m", "nbgrader", "autograde", lesson, "--force"],
            cwd=course,
            check=True,
            capture_output=True,
            text=True,
        )
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for lesson in lessons:
            blank = gradebook.find_submission(lesson, "blank")
            assert (blank.score, blank.max_score) == (0, len(exercises(LESSONS / f"{lesson}.py"))), lesson
        one_blank = gradebook.find_submission(lessons[0], "one_blank")
        assert (one_blank.score, one_blank.max_score) == (2, 3)
    for lesson in lessons:
        cells = nbformat.read(course / "autograded" / "blank" / lesson / f"{lesson}.ipynb", as_version=4).cells
        errors = [
            (c.metadata.get("nbgrader", {}).get("grade_id"), o)
            for c in cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o.output_type == "error"
        ]
        assert [grade_id for grade_id, _ in errors] == [f"check_{e}" for e in exercises(LESSONS / f"{lesson}.py")], (
            lesson
        )
        for (_, error), exercise in zip(errors, exercises(LESSONS / f"{lesson}.py")):
            assert error.traceback[0].startswith(
                f"✗ {exercise}: not implemented yet"
            ) and "diffedu/check" not in "".join(error.traceback)
