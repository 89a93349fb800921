"""The student edition: the lessons with the exercises' solutions taken out, for a teacher to hand out.

    make student                                  # writes student/
    python -m diffedu student --out student       # the same, from anywhere (--lessons says where they are)
    make course                                   # a course folder for nbgrader, assignments released

In the lessons, each exercise is a function whose body sits between nbgrader's markers
(`### BEGIN SOLUTION` / `### END SOLUTION`), in a cell with nbgrader's metadata; the check after it is an
autograded test cell. So a teacher with nbgrader can use the lessons as they are (generate_assignment,
autograde), and one without it gets the same student edition from this module: each solution becomes a
`raise NotImplementedError` that names its exercise, outputs are empty, and each lesson is again a paired
.py and .ipynb.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from . import env
from .errors import DiffeduError

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def strip_solution(source: str, exercise: str) -> str:
    """The cell's code with every marked solution replaced by a stub at the same indentation."""
    out, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("exercise {exercise}: write this part")')
            inside = True
        elif line.strip() == END:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise DiffeduError(f"exercise {exercise}: `{BEGIN}` has no `{END}` after it")
    return "\n".join(out)


def student_edition(lessons: str | Path, out: str | Path) -> tuple[list[Path], list[Path]]:
    """Write the student edition of every lesson in `lessons` (NN_name.py) to `out`, as .py and .ipynb pairs.
    A lesson whose pair in `out` was changed since it was written there (a learner's answers) is left as it is;
    a file that is not whole (a write cut short, by a full disk say) is nobody's work, and is rewritten.
    Returns (the notebooks written, those left as they were)."""
    import jupytext  # the lab and test extras install it
    from jupytext.config import load_jupytext_configuration_file

    lessons, out = Path(lessons), Path(out)
    scripts = sorted(lessons.glob("[0-9][0-9]_*.py"))
    if not scripts:
        raise DiffeduError(f"no lessons (NN_name.py) in {lessons}: pass the course's lessons/ folder")
    if out.resolve() == lessons.resolve():
        raise DiffeduError(
            f"--out {out} is the lessons' own folder: the edition would replace their solutions with stubs; "
            "write it to another folder (make student writes student/)"
        )
    config = lessons / "jupytext.toml"  # the pairing of .py and .ipynb, for JupyterLab wherever the edition goes
    if not config.exists():
        raise DiffeduError(f"{config} is missing: it pairs each lesson's .py with its .ipynb (restore it with git)")
    pairing = load_jupytext_configuration_file(str(config))
    folder = _Folder(out)
    folder.write("jupytext.toml", config.read_text())
    written: list[Path] = []
    kept: list[Path] = []
    for script in scripts:
        notebook = jupytext.read(
            script.with_suffix(".ipynb")
        )  # the pair's notebook: its cell ids and language_info too
        for cell in notebook.cells:
            grading = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and grading.get("solution"):
                if BEGIN not in cell.source:
                    raise DiffeduError(f"{script.name}: exercise {grading.get('grade_id')} has no `{BEGIN}` marker")
                cell.source = strip_solution(cell.source, grading["grade_id"])
        text_format = {"extension": ".py", "format_name": "percent"}
        pairing.set_default_format_options(text_format)  # the metadata filters JupyterLab applies when it saves
        done = folder.write_all(
            {
                script.name: jupytext.writes(notebook, fmt=text_format),
                f"{script.stem}.ipynb": jupytext.writes(notebook, fmt="ipynb") + "\n",
            }
        )
        (written if done else kept).append(out / f"{script.stem}.ipynb")
    return written, kept


NBGRADER_CONFIG = """\
# nbgrader's configuration for this course folder, written by `python -m diffedu course` (diffedu's classroom.py).
import os
import sys

c = get_config()
c.CourseDirectory.course_id = "diffedu"
# nbgrader stops a cell after 30 s, and some lessons' cells take longer on a CPU (lesson 02's 1000 DDPM steps).
c.Execute.timeout = 600
# Grade in the smoke profile unless told otherwise: the checks do not depend on the profile, and a lesson runs
# in about a minute instead of several.
os.environ.setdefault("DIFFEDU_PROFILE", "smoke")
# nbgrader runs alembic, its database's tool, from PATH: take the one beside this Python, activated or not.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
"""


def course_folder(lessons: str | Path, out: str | Path, force: bool = False) -> tuple[list[str], list[str]]:
    """Set up `out` as an nbgrader course folder: its configuration, and every lesson with exercises as an
    assignment of the lesson's name (source/NN_name/NN_name.ipynb), then released (nbgrader's
    generate_assignment writes release/NN_name/, the solutions stubbed). A file changed there since it was
    written (a release too: its files are kept, not regenerated) is kept as it is, unless `force`, which says
    what it replaced. An nbgrader configuration the course did not write is refused: nbgrader would run it.
    Returns (the assignments, the files kept)."""
    lessons, out = Path(lessons), Path(out)
    assignments = [script.stem for script in sorted(lessons.glob("[0-9][0-9]_*.py")) if exercises(script)]
    if not assignments:
        raise DiffeduError(f"no lessons with exercises (NN_name.py) in {lessons}: pass the course's lessons/ folder")
    folder, kept = _Folder(out), []
    # nbgrader runs the folder's nbgrader_config.py and reads its .json (which can name classes to import)
    foreign = [
        name
        for name, text in [("nbgrader_config.py", NBGRADER_CONFIG), ("nbgrader_config.json", None)]
        if folder.state(name, text) == "changed"
    ]
    if foreign and not force:
        raise DiffeduError(
            f"{out} holds {' and '.join(foreign)}, which this course did not write (or which was "
            "changed since), and nbgrader would run it: read it, then move it away, or pass --force to "
            "replace it with the course's configuration"
        )
    if "nbgrader_config.json" in foreign:
        (out / "nbgrader_config.json").unlink()
        print(f"removed {out / 'nbgrader_config.json'} (--force): the course did not write it")
    for name, text in [("nbgrader_config.py", NBGRADER_CONFIG)] + [
        (f"source/{a}/{a}.ipynb", (lessons / f"{a}.ipynb").read_text()) for a in assignments
    ]:
        if not folder.write(name, text, force):
            kept.append(name)
    for assignment in assignments:
        release = out / "release" / assignment
        files = [f for f in sorted(release.rglob("*")) if f.is_file() and not CACHES & set(f.relative_to(out).parts)]
        states = {f: folder.state(f.relative_to(out).as_posix()) for f in files}
        edited = [f.relative_to(out).as_posix() for f, state in states.items() if state == "changed"]
        if edited and not force:  # generate_assignment --force would replace the whole of release/<assignment>/
            kept += edited
            continue
        run = subprocess.run(
            [sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force"],
            cwd=out,
            capture_output=True,
            text=True,
        )
        if run.returncode:
            raise DiffeduError(f"nbgrader generate_assignment {assignment} failed in {out}:\n{run.stderr[-3000:]}")
        for file, state in states.items():
            _say(file, state)
        folder.remember({f.relative_to(out).as_posix(): f.read_bytes() for f in release.rglob("*") if f.is_file()})
    return assignments, kept


CACHES = {".ipynb_checkpoints", "__pycache__"}  # what Jupyter and Python leave beside a file: nobody's work


class _Folder:
    """A folder this module writes into, never over somebody's work: it records a digest of each version of each
    file it wrote there, and a file that matches none of them (nor the new text) has been changed since, so it
    stays, unless it is plainly not a whole file (see `state`)."""

    RECORD = ".diffedu-written.json"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        try:  # {name: [digest, ...]}; a single digest is how earlier versions recorded one
            record = json.loads((path / self.RECORD).read_bytes())
            self.digests = {name: [d] if isinstance(d, str) else list(d) for name, d in record.items()}
        except FileNotFoundError:
            self.digests = {}
        except (OSError, ValueError, AttributeError, TypeError, RecursionError):  # cut short, or not ours
            print(
                f"{path / self.RECORD} is damaged: read as if absent, so a file that differs from what would be "
                "written there now is kept as someone's"
            )
            self.digests = {}

    def state(self, name: str, text: str | None = None) -> str:
        """What `name` holds: "ours" (nothing, what this module wrote there, or `text`), "damaged" (a write of
        `text` cut short, by a full disk say: nobody's work) or "changed" (anything else: someone's)."""
        file = self.path / name
        if not file.exists():
            return "ours"
        data, new = file.read_bytes(), None if text is None else text.encode()
        if _digest(data) in self.digests.get(name, []) or data == new:
            return "ours"
        # cut short: what would be written, its tail missing (or zeros where it was, as a crash can leave); a file
        # that differs anywhere else, or is longer, is someone's work, whole or not (a line appended, a merge's markers)
        if new is not None and new.startswith(data.rstrip(b"\0")):
            return "damaged"
        return "changed"

    def write_all(self, files: dict[str, str], force: bool = False) -> bool:
        """Write all of `files` ({name: text}), or, if any of them was changed, none (they belong together),
        unless `force`. Says what it wrote over that it had not written."""
        states = {name: self.state(name, text) for name, text in files.items()}
        if "changed" in states.values() and not force:
            return False
        # recorded first: whatever stops the writes, each file is then the old version or the new, both recorded
        self.remember({name: text.encode() for name, text in files.items()})
        for name, text in files.items():
            # write_whole calls the lambda at once, so it writes this iteration's text
            env.write_whole(self.path / name, lambda partial: partial.write_bytes(text.encode()))  # noqa: B023
            _say(self.path / name, states[name])
        return True

    def write(self, name: str, text: str, force: bool = False) -> bool:
        return self.write_all({name: text}, force)

    def remember(self, files: dict[str, bytes]) -> None:
        """Record `files` ({name: content}) as written here, with what was written before."""
        for name, data in files.items():
            self.digests[name] = list(dict.fromkeys(self.digests.get(name, []) + [_digest(data)]))
        env.write_whole(self.path / self.RECORD, lambda partial: partial.write_text(json.dumps(self.digests, indent=1)))


def _say(file: Path, state: str) -> None:
    if state == "damaged":
        print(f"rewrote {file}: it was not a whole file (a write cut short, by a full disk say), so nobody's work")
    elif state == "changed":
        print(f"replaced {file} (--force): it was not what was last written there")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def exercises(notebook_path: str | Path) -> list[str]:
    """The exercises of a lesson, in order: the grade_id of each solution cell."""
    import jupytext

    return [
        c.metadata["nbgrader"]["grade_id"]
        for c in jupytext.read(notebook_path).cells
        if c.metadata.get("nbgrader", {}).get("solution")
    ]
