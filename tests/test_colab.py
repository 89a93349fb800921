"""One click from Colab, Binder or a laptop: the lessons' set-up cell (its Colab branch with Colab faked, its no-op
branch for real), the links made from the one repository URL, Binder's CPU-only PyTorch, and the device order
CUDA -> MPS -> CPU with MPS faked. (`make colab-test` installs the course as Colab does and runs lesson 01.)"""

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import jupytext
import pytest
import torch

from diffedu import colab, env, measure
from diffedu.errors import DiffeduError
from diffedu.profiles import PROFILE_ENV, get_profile

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.py"))
URL = colab.repository()
FIND_SPEC = importlib.util.find_spec


def first_code_cell(path: Path) -> str:
    return next(cell.source for cell in jupytext.read(path).cells if cell.cell_type == "code")


@pytest.mark.parametrize("script", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_starts_with_the_set_up_cell_made_from_the_repository_url(script):
    assert first_code_cell(script) == colab.setup_cell(URL), (
        "run `python -m diffedu.colab` (the URL is pyproject.toml's)"
    )
    assert first_code_cell(script.with_suffix(".ipynb")) == colab.setup_cell(URL)


def test_the_readme_links_every_lesson_to_colab_and_binder():
    readme = (ROOT / "README.md").read_text()
    assert colab.readme_links(URL) in readme, "run `python -m diffedu.colab`"
    assert len(re.findall(r"colab\.research\.google\.com/github/", readme)) == len(LESSONS)
    assert colab.binder_link(URL).endswith("/main?urlpath=lab/tree/lessons/00_pixel_vs_latent.ipynb")
    with pytest.raises(DiffeduError, match="not a GitHub repository"):
        colab.colab_link("https://gitlab.com/x/y", "lessons/a.ipynb")


def run_cell(monkeypatch, on_colab: bool, installed: bool = False) -> list:
    """Run the set-up cell as a kernel would, with Colab's module there or not; the commands it would run."""
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda command, check: commands.append(command))
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: FIND_SPEC(name, *a) if installed or name != "diffedu" else None
    )
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(colab.setup_cell(URL), {})
    return commands


def test_on_colab_the_cell_pip_installs_the_course_from_its_repository(monkeypatch):
    monkeypatch.delenv(colab.INSTALL_ENV, raising=False)
    assert run_cell(monkeypatch, on_colab=True) == [
        [sys.executable, "-m", "pip", "install", "-q", "diffedu @ git+https://github.com/diffedu/diffedu"]
    ]
    monkeypatch.setenv(colab.INSTALL_ENV, "/some/clone")  # a fork's branch, or CI's clone
    assert run_cell(monkeypatch, on_colab=True)[0][-1] == "/some/clone"
    assert run_cell(monkeypatch, on_colab=True, installed=True) == []  # once per session: a second run installs nothing


def test_anywhere_else_the_cell_does_nothing(monkeypatch):
    assert "google.colab" not in sys.modules  # for real: this is no Colab
    assert run_cell(monkeypatch, on_colab=False) == []


def test_writing_the_links_inserts_a_missing_cell_and_is_idempotent(tmp_path):
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "lessons").mkdir()
    shutil.copy(ROOT / "lessons" / "jupytext.toml", tmp_path / "lessons")  # the pairing
    lesson = tmp_path / "lessons" / "01_x.py"
    lesson.write_text("# %% [markdown]\n# # A lesson\n\n# %%\nimport torch\n")
    subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", str(lesson)], check=True)
    toml = tmp_path / "pyproject.toml"
    toml.write_text(toml.read_text().replace(URL, "https://github.com/a-fork/course"))
    changed = colab.write(tmp_path)
    assert lesson in changed and tmp_path / "README.md" in changed
    assert (
        first_code_cell(lesson)
        == first_code_cell(lesson.with_suffix(".ipynb"))
        == colab.setup_cell("https://github.com/a-fork/course")
    )
    assert (
        "import torch" in lesson.read_text()
        and "github/a-fork/course/blob/main/lessons/01_x.ipynb" in (tmp_path / "README.md").read_text()
    )
    assert colab.write(tmp_path) == []


def test_binder_installs_the_cpu_only_pytorch_the_makefile_pins():
    pins = re.search(r"^TORCH\s*\?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)[1].split()
    binder = (ROOT / "binder" / "environment.yml").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in binder and all(f"- {pin}\n" in binder for pin in pins)
    post_build = ROOT / "binder" / "postBuild"
    assert post_build.stat().st_mode & 0o111 and 'pip install --no-cache-dir -e ".[lab]"' in post_build.read_text()


def test_the_colab_like_install_tests_the_lower_bounds_the_package_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lower = {re.split(r"[>=]", d)[0]: d.split(">=")[1] for d in declared if ">=" in d}
    oldest = dict(
        pin.split("==") for pin in re.search(r"^OLDEST := (.+)$", (ROOT / "Makefile").read_text(), re.M)[1].split()
    )
    assert oldest == {name: version for name, version in lower.items() if name not in ("torch", "torchvision")}


@pytest.fixture
def mac(monkeypatch):
    """A machine whose PyTorch sees Apple's MPS and no CUDA GPU."""
    monkeypatch.delenv(env.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)


def test_the_default_device_is_cuda_then_mps_then_the_cpu(mac, monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert env.get_device() == torch.device("mps") and env.get_device("mps") == torch.device("mps")
    assert get_profile().name == "cpu"  # on a Mac: MPS speeds the cpu profile up
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert env.get_device() == torch.device("cuda") and get_profile().name == "gpu"
    monkeypatch.setenv(env.DEVICE_ENV, "cpu")  # forced, and the profile follows
    assert env.get_device() == torch.device("cpu") and get_profile().name == "cpu"
    monkeypatch.delenv(env.DEVICE_ENV)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert env.get_device() == torch.device("cpu")
    with pytest.raises(DiffeduError, match="no Apple MPS device here: use cpu"):
        env.get_device("mps")
    monkeypatch.setenv(env.DEVICE_ENV, "tpu")
    with pytest.raises(DiffeduError, match="DIFFEDU_DEVICE"):
        env.get_device()


def test_timings_wait_for_mps_and_peak_memory_says_it_was_not_measured_there(mac, monkeypatch):
    waited = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: waited.append(True))
    measure.synchronize("mps")
    assert waited == [True]
    with measure.PeakMemory("mps") as memory:
        pass
    assert memory.mib is None
