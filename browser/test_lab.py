"""The lessons in a real browser: JupyterLab as `make lab` starts it, driven by Playwright in headless Chromium.

For each lesson, in the smoke profile: open it (no "Select Kernel" dialog, not marked as modified), run all cells
from JupyterLab's own Run menu, wait until the kernel is done, and fail on any error output, naming the lesson and
the cell, or on an output that shows a path of this machine. Then move each slider of its widgets with the
keyboard, check from screenshots that the picture changed, and time the change (from the key press to the new
image on screen); type a prompt into each text box and see the picture redrawn. A screenshot of each lesson goes
to browser-screenshots/ for a person to look at. A lesson's .py opens as a notebook, and saving either file of a
pair updates the other, as docs/teaching.md says. And in the student edition, Run All goes past the exercises to
the last cell.

    make browser-test
"""

import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(p.stem for p in (ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
SHOTS = ROOT / "browser-screenshots"
LATENCIES: dict[str, list[float]] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(folder: Path, log: Path):
    """`jupyter lab <folder>` from this environment, as `make lab` runs it on lessons/ (the folder is a copy, so
    that the outputs JupyterLab saves never reach the committed notebooks). Yields (base URL, token, folder)."""
    port, token = free_port(), secrets.token_hex(16)
    command = [
        str(Path(sys.executable).parent / "jupyter"),
        "lab",
        folder.name,
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")  # as `make lab` does in containers
    with open(log, "w") as out:
        server = subprocess.Popen(
            command,
            cwd=folder.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DIFFEDU_PROFILE": "smoke"},
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"JupyterLab did not start in 60 s: see {log}")
    yield url, token, folder
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """JupyterLab on a copy of lessons/ (its notebooks, their .py and the jupytext.toml that pairs them)."""
    folder = tmp_path_factory.mktemp("course") / "lessons"
    shutil.copytree(ROOT / "lessons", folder, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
    yield from serve(folder, tmp_path_factory.mktemp("log") / "lab.log")


@pytest.fixture(scope="session")
def student_lab(tmp_path_factory):
    """JupyterLab on the student edition, as `make student` writes it."""
    from diffedu.classroom import student_edition

    folder = tmp_path_factory.mktemp("course") / "student"
    student_edition(ROOT / "lessons", folder)
    yield from serve(folder, tmp_path_factory.mktemp("log") / "student-lab.log")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        pytest.fail(
            "no Chromium: install Debian's with `apt-get install chromium` (make browser-test does, as root), "
            "or set CHROMIUM=/path/to/chromium"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield chromium
        chromium.close()
    SHOTS.mkdir(exist_ok=True)
    (SHOTS / "latencies.json").write_text(json.dumps(LATENCIES, indent=2))


def open_notebook(browser, lab, name: str):
    url, token, _ = lab
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(f"{url}/lab/workspaces/{name.replace('.', '-')}/tree/{name}?reset&token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=60_000)
    return page


def run_all(page, timeout_s: float = 600) -> None:
    """Run > Run All Cells, then wait until no cell is running or queued ("[*]") and the kernel is idle."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_timeout(1000)
    deadline, quiet = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        busy = page.evaluate("""() =>
            [...document.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('*'))
            || document.querySelector('.jp-Notebook-ExecutionIndicator[data-status="busy"]') !== null""")
        quiet = 0 if busy else quiet + 1
        if quiet >= 3:
            return
        page.wait_for_timeout(500)
    pytest.fail(f"the lesson was still running after {timeout_s:.0f} s")


def saved_errors(page, folder: Path, name: str) -> list[str]:
    """Save the notebook (JupyterLab writes its outputs to the copy) and list its error outputs by cell."""
    page.keyboard.press("Control+s")
    page.wait_for_timeout(2000)
    cells = json.loads((folder / name).read_text())["cells"]
    return [
        f"cell {i} ({cell['source'][0].strip()[:60] if cell['source'] else ''}): {out['ename']}: {out['evalue'][:300]}"
        for i, cell in enumerate(cells)
        if cell["cell_type"] == "code"
        for out in cell.get("outputs", [])
        if out["output_type"] == "error"
    ]


def shown_paths(folder: Path, name: str) -> list[str]:
    """Outputs of the saved notebook that show a path of this machine (a learner's notebook gets shared)."""
    cells = json.loads((folder / name).read_text())["cells"]
    places = {str(p) for p in (ROOT, folder, Path.home(), os.environ.get("DIFFEDU_DATA")) if p and str(p) != "/"}
    return [
        f"cell {i}: ...{text[max(0, text.find(place) - 60) : text.find(place) + 60]}..."
        for i, cell in enumerate(cells)
        if cell["cell_type"] == "code"
        for out in cell.get("outputs", [])
        for text in ["".join(out.get("text", "")) + json.dumps(out.get("data", {}))]
        for place in places
        if place in text
    ]


def modified(page) -> bool:
    return page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty").count() > 0


def move_sliders(page, lesson: str) -> list[float]:
    """Press the right arrow on each slider and time the change of its widget's pictures: from the key press to
    the new picture painted (a MutationObserver on the images, then the next animation frame). Screenshots of the
    pictures before and after must differ."""
    latencies = []
    handles = page.locator(".widget-slider .noUi-handle")
    for i in range(handles.count()):
        handle = handles.nth(i)
        widget = handle.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')][1]")
        pictures = widget.locator(".widget-image")
        if pictures.count() == 0:
            continue
        handle.scroll_into_view_if_needed()
        before = [pictures.nth(j).screenshot() for j in range(pictures.count())]
        handle.click()
        widget.evaluate("""(area) => {
            window.__moved = null; window.__painted = null;
            new MutationObserver(() => requestAnimationFrame(() => { window.__painted ??= performance.now(); }))
                .observe(area, {attributes: true, subtree: true, attributeFilter: ['src']});
            document.addEventListener('keydown', () => { window.__moved ??= performance.now(); },
                                      {capture: true, once: true});
        }""")
        page.keyboard.press("ArrowRight")
        page.wait_for_function("window.__painted !== null", timeout=10_000)
        latencies.append(page.evaluate("window.__painted - window.__moved"))
        after = [pictures.nth(j).screenshot() for j in range(pictures.count())]
        assert before != after, f"{lesson}: moving slider {i} did not change its picture"
    return latencies


def type_prompts(page, lesson: str) -> None:
    """Type a prompt into each text box of a widget (lesson 11's prompt widget) and press Enter: its status line must
    name the new prompt and its picture (the images and each word's attention map) must change. A word the model does
    not know must be said in the status line, the picture kept."""
    boxes = page.locator(".jp-OutputArea-output .widget-text input[type='text']")
    for i in range(boxes.count()):
        box = boxes.nth(i)
        widget = box.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')][1]")
        picture, status = widget.locator(".widget-image").first, widget.locator(".widget-html").first
        box.scroll_into_view_if_needed()
        before = picture.screenshot()
        for prompt, said in (("a bright picture of a white ship", "white ship', w ="), ("a crimson car", "vocabulary")):
            box.fill(prompt)
            box.press("Enter")
            deadline = time.monotonic() + 60
            while said not in status.inner_text():  # "drawing ..." until the images are there
                assert time.monotonic() < deadline, f"{lesson}: typing {prompt!r} gave {status.inner_text()!r}"
                page.wait_for_timeout(250)
        assert picture.screenshot() != before, f"{lesson}: typing a prompt did not redraw its images and maps"


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_from_jupyterlab_and_its_widgets_respond(lesson, lab, browser):
    page = open_notebook(browser, lab, f"{lesson}.ipynb")
    page.wait_for_timeout(2000)
    dialogs = page.locator(".jp-Dialog")
    assert dialogs.count() == 0, (
        f"{lesson}: a dialog asks '{dialogs.first.inner_text()[:80]}' (no kernelspec in the notebook?)"
    )
    recorded = json.loads((lab[2] / f"{lesson}.ipynb").read_text())["metadata"].get("language_info", {}).get("version")
    if recorded == platform.python_version():  # the kernel's language_info is what the notebook holds: nothing changed
        assert not modified(page), f"{lesson}: marked as modified right after opening"
    run_all(page)
    errors = saved_errors(page, lab[2], f"{lesson}.ipynb")
    assert not errors, f"{lesson}: errors from Run All Cells in JupyterLab:\n" + "\n".join(errors)
    assert not shown_paths(lab[2], f"{lesson}.ipynb"), f"{lesson}: outputs show this machine's paths:\n" + "\n".join(
        shown_paths(lab[2], f"{lesson}.ipynb")
    )
    LATENCIES[lesson] = move_sliders(page, lesson)
    type_prompts(page, lesson)
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{lesson}.png"))
    print(f"{lesson}: slider moves to new picture, ms: {[round(v) for v in LATENCIES[lesson]]}")
    page.close()


def test_a_lesson_source_opens_as_a_notebook(lab, browser):
    """Double-clicking a lesson's .py opens it as a notebook (jupytext pairs it with the .ipynb)."""
    page = open_notebook(browser, lab, "01_forward_process.py")
    page.wait_for_function("document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length > 10", timeout=30_000)
    assert page.locator(".jp-FileEditor").count() == 0
    page.screenshot(path=str(SHOTS / "01_forward_process.py.png"))
    page.close()


def edit_first_code_cell(page, line: str) -> None:
    editor = page.locator(".jp-Notebook .jp-CodeCell .cm-content").first
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.press("Enter")
    page.keyboard.type(line)
    page.keyboard.press("Control+s")


def wait_for_text(file: Path, text: str, timeout_s: float = 15) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in file.read_text():
            return True
        time.sleep(0.25)
    return False


def test_saving_either_file_of_a_pair_updates_the_other(lab, browser):
    """jupytext pairs each lesson's .ipynb and .py under `make lab` (its jupytext.toml sits in lessons/, the
    folder JupyterLab serves): save the notebook and the .py follows, without a version header; save the .py
    (opened as a notebook) and the notebook follows."""
    folder, lesson = lab[2], "00_pixel_vs_latent"
    page = open_notebook(browser, lab, f"{lesson}.ipynb")
    edit_first_code_cell(page, "# saved from the notebook")
    assert wait_for_text(folder / f"{lesson}.py", "# saved from the notebook"), (
        "saving the .ipynb left the .py as it was"
    )
    assert "jupytext_version" not in (folder / f"{lesson}.py").read_text()
    page.close()
    page = open_notebook(browser, lab, f"{lesson}.py")
    edit_first_code_cell(page, "# saved from the script")
    assert wait_for_text(folder / f"{lesson}.ipynb", "# saved from the script"), (
        "saving the .py left the .ipynb as it was"
    )
    page.close()


def test_run_all_in_the_student_edition_reaches_the_last_cell(student_lab, browser):
    """A learner's Run All before writing any exercise: every cell runs, none fails, and each check says plainly
    that its exercise is not written yet (while the lesson goes on with diffedu's reference)."""
    from diffedu.classroom import exercises

    lesson = "01_forward_process"
    page = open_notebook(browser, student_lab, f"{lesson}.ipynb")
    page.wait_for_timeout(2000)
    run_all(page)
    assert not saved_errors(page, student_lab[2], f"{lesson}.ipynb")
    cells = [
        c for c in json.loads((student_lab[2] / f"{lesson}.ipynb").read_text())["cells"] if c["cell_type"] == "code"
    ]
    assert all(c["execution_count"] for c in cells), "Run All stopped before the last cell"
    said = ["".join(o.get("text", "")) for c in cells for o in c["outputs"] if o.get("name") == "stderr"]
    for exercise in exercises(ROOT / "lessons" / f"{lesson}.py"):
        assert any(text.startswith(f"✗ {exercise}: not implemented yet") for text in said), exercise
    page.screenshot(path=str(SHOTS / f"student-{lesson}.png"))
    page.close()
