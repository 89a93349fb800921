"""One click from Colab or Binder: every lesson's set-up cell and the README's links, from one URL.

Every lesson's first code cell is `setup_cell()`. On Colab (detected by Colab's own module, `google.colab`, which
its kernel imports before any cell runs) it pip-installs the course from its repository, once per session, keeping
Colab's PyTorch (the course's ranges admit it); anywhere else it does nothing. The repository's URL is written
once, in pyproject.toml (`[project.urls] Repository`): a fork changes it there and runs

    python -m diffedu.colab

which rewrites the lessons' set-up cells (.py and .ipynb) and the README's "Open in Colab" and Binder links from
it; tests/test_colab.py fails until they agree. Run from a checkout: it edits the checkout's files.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from .env import rewrite_block
from .errors import DiffeduError

ROOT = Path(__file__).resolve().parents[1]
BRANCH = "main"  # the branch the links open
INSTALL_ENV = "DIFFEDU_INSTALL"  # what the cell installs instead of the repository: a fork's branch, a test's clone
FIRST_LINE = "# Set-up: on Colab, install the course"


def repository(root: Path = ROOT) -> str:
    """The course's repository URL, from pyproject.toml."""
    try:
        url = tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    except (OSError, KeyError) as error:
        raise DiffeduError(
            f"no [project.urls] Repository in {root / 'pyproject.toml'} ({error}): run this from a "
            "checkout of the course"
        ) from None
    return url.rstrip("/")


def setup_cell(url: str) -> str:
    """The source of every lesson's first code cell."""
    return f'''{FIRST_LINE} (once per session); anywhere else this does nothing.
import importlib.util
import os
import subprocess
import sys

if "google.colab" in sys.modules and importlib.util.find_spec("diffedu") is None:
    course = os.environ.get("{INSTALL_ENV}", "diffedu @ git+{url}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", course], check=True)  # keeps Colab's PyTorch
    importlib.invalidate_caches()  # so that `import diffedu` finds what was just installed'''


def colab_link(url: str, notebook: str) -> str:
    """Opens `notebook` (a path in the repository) in Colab, straight from GitHub."""
    return f"https://colab.research.google.com/github/{_github_path(url)}/blob/{BRANCH}/{notebook}"


def binder_link(url: str, notebook: str = "lessons/00_pixel_vs_latent.ipynb") -> str:
    """Builds the repository on mybinder.org and opens `notebook` in JupyterLab."""
    return f"https://mybinder.org/v2/gh/{_github_path(url)}/{BRANCH}?urlpath=lab/tree/{notebook}"


def _github_path(url: str) -> str:
    found = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(\.git)?", url)
    if not found:
        raise DiffeduError(
            f"{url} is not a GitHub repository's URL (https://github.com/OWNER/NAME): Colab and "
            "Binder open notebooks from GitHub"
        )
    return found[1]


def lesson_notebooks(root: Path = ROOT) -> list[Path]:
    return sorted((root / "lessons").glob("[0-9][0-9]_*.ipynb"))


def lesson_title(notebook: Path) -> str:
    """A lesson's title, from its first heading ("# 03 · DDIM: ..." gives "DDIM: ...")."""
    heading = re.search(r"^# # (?:\d\d · )?(.+)$", notebook.with_suffix(".py").read_text(), re.M)
    return heading[1].strip() if heading else notebook.stem


def readme_links(url: str, root: Path = ROOT) -> str:
    """The README's table of lessons, each with its title and Colab link, and the Binder link."""
    rows = [
        f"| lesson {nb.stem[:2]} | [{lesson_title(nb)}](lessons/{nb.name}) | "
        f"[Open in Colab]({colab_link(url, f'lessons/{nb.name}')}) |"
        for nb in lesson_notebooks(root)
    ]
    return "\n".join(
        [
            "| | lesson | Colab |",
            "| --- | --- | --- |",
            *rows,
            "",
            f"Binder, all lessons in JupyterLab: [launch]({binder_link(url)})",
        ]
    )


README_START, README_END = "<!-- colab links: python -m diffedu.colab writes them -->", "<!-- end of colab links -->"


def write(root: Path = ROOT) -> list[Path]:
    """Rewrite every lesson's set-up cell and the README's links from pyproject's URL; the files changed."""
    import jupytext  # a maintainer's tool (the lab and test extras): the lessons never need it
    from jupytext.cli import jupytext as jupytext_cli

    url, changed = repository(root), []
    for notebook in lesson_notebooks(root):
        script = notebook.with_suffix(".py")
        lesson = jupytext.read(script)
        code = [cell for cell in lesson.cells if cell.cell_type == "code"]
        if code and code[0].source.startswith(FIRST_LINE):
            code[0].source = setup_cell(url)
        else:  # a lesson without one gets it before its first code cell
            index = lesson.cells.index(code[0]) if code else len(lesson.cells)
            lesson.cells.insert(index, jupytext.reads(setup_cell(url), fmt="py:percent").cells[0])
        if jupytext.writes(lesson, fmt="py:percent") != jupytext.writes(jupytext.read(script), fmt="py:percent"):
            jupytext.write(lesson, script, fmt="py:percent")
            jupytext_cli(["--sync", "--quiet", str(script)])  # the paired .ipynb follows, as `jupytext --sync` does
            changed.append(script)
    if rewrite_block(root / "README.md", README_START, README_END, readme_links(url, root)):
        changed.append(root / "README.md")
    return changed


if __name__ == "__main__":
    try:
        files = write()
    except DiffeduError as error:
        sys.exit(f"error: {error}")
    print(
        "\n".join(f"rewrote {f.relative_to(ROOT)}" for f in files)
        or "the set-up cells and the README's links agree with pyproject.toml's repository URL"
    )
