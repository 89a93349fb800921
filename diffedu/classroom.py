"""The student edition: the lessons with the exercises' solutions taken out, for a teacher to hand out.

    make student                                  # writes student/
    python -m diffedu student --out student       # the same, from anywhere (--lessons says where they are)

In the lessons, each exercise is a function whose body sits between nbgrader's markers
(`### BEGIN SOLUTION` / `### END SOLUTION`), in a cell with nbgrader's metadata; the check after it is an
autograded test cell. So a teacher with nbgrader can use the lessons as they are (generate_assignment,
autograde), and one without it gets the same student edition from this module: each solution becomes a
`raise NotImplementedError` that names its exercise, outputs are empty, and each lesson is again a paired
.py and .ipynb.
"""
from __future__ import annotations

import shutil
from pathlib import Path

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


def student_edition(lessons: str | Path, out: str | Path) -> list[Path]:
    """Write the student edition of every lesson in `lessons` (NN_name.py) to `out`; returns the notebooks."""
    import jupytext  # the lab and test extras install it

    lessons, out = Path(lessons), Path(out)
    scripts = sorted(lessons.glob("[0-9][0-9]_*.py"))
    if not scripts:
        raise DiffeduError(f"no lessons (NN_name.py) in {lessons}: pass the course's lessons/ folder")
    out.mkdir(parents=True, exist_ok=True)
    config = next((folder / "jupytext.toml" for folder in (lessons, lessons.parent) if (folder / "jupytext.toml").exists()), None)
    if config:  # the pairing of .py and .ipynb, for JupyterLab wherever the edition goes
        shutil.copy(config, out)
    written = []
    for script in scripts:
        notebook = jupytext.read(script)
        for cell in notebook.cells:
            grading = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and grading.get("solution"):
                if BEGIN not in cell.source:
                    raise DiffeduError(f"{script.name}: exercise {grading.get('grade_id')} has no `{BEGIN}` marker")
                cell.source = strip_solution(cell.source, grading["grade_id"])
        jupytext.write(notebook, out / script.name, fmt="py:percent")
        jupytext.write(notebook, out / f"{script.stem}.ipynb")
        written.append(out / f"{script.stem}.ipynb")
    return written


def exercises(notebook_path: str | Path) -> list[str]:
    """The exercises of a lesson, in order: the grade_id of each solution cell."""
    import jupytext

    return [c.metadata["nbgrader"]["grade_id"] for c in jupytext.read(notebook_path).cells
            if c.metadata.get("nbgrader", {}).get("solution")]
