"""The lessons in a real browser: JupyterLab as `make lab` starts it, driven by Playwright in headless Chromium.

For each lesson, in the smoke profile: open it (no "Select Kernel" dialog), run all cells from JupyterLab's own
Run menu, wait until the kernel is done, and fail on any error output, naming the lesson and the cell. Then move
each slider of its widgets with the keyboard, check from screenshots that the picture changed, and time the
change (from the key press to the new image on screen). A screenshot of each lesson goes to
browser-screenshots/ for a person to look at. And a lesson's .py opens as a notebook, as the README promises.

    make browser-test
"""
import json
import os
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


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """JupyterLab from this environment, as `make lab` runs it, on a copy of lessons/ (so that the outputs it
    saves never reach the committed notebooks). Yields (base URL, token, its folder)."""
    folder = tmp_path_factory.mktemp("lessons")
    for lesson in (ROOT / "lessons").glob("[0-9][0-9]_*"):
        shutil.copy(lesson, folder)
    shutil.copy(ROOT / "jupytext.toml", folder)
    port, token = free_port(), secrets.token_hex(16)
    command = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}"]
    if os.geteuid() == 0:
        command.append("--allow-root")  # as `make lab` does in containers
    log = open(tmp_path_factory.mktemp("log") / "lab.log", "w")
    server = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "DIFFEDU_PROFILE": "smoke"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"JupyterLab did not start in 60 s: see {log.name}")
    yield url, token, folder
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        pytest.fail("no Chromium: install Debian's with `apt-get install chromium` (make browser-test does, as root), "
                    "or set CHROMIUM=/path/to/chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
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
        busy = page.evaluate("""() => [...document.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('*'))
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
    return [f"cell {i} ({cell['source'][0].strip()[:60] if cell['source'] else ''}): {out['ename']}: {out['evalue'][:300]}"
            for i, cell in enumerate(cells) if cell["cell_type"] == "code"
            for out in cell.get("outputs", []) if out["output_type"] == "error"]


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
            document.addEventListener('keydown', () => { window.__moved ??= performance.now(); }, {capture: true, once: true});
        }""")
        page.keyboard.press("ArrowRight")
        page.wait_for_function("window.__painted !== null", timeout=10_000)
        latencies.append(page.evaluate("window.__painted - window.__moved"))
        after = [pictures.nth(j).screenshot() for j in range(pictures.count())]
        assert before != after, f"{lesson}: moving slider {i} did not change its picture"
    return latencies


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_from_jupyterlab_and_its_widgets_respond(lesson, lab, browser):
    page = open_notebook(browser, lab, f"{lesson}.ipynb")
    page.wait_for_timeout(2000)
    dialogs = page.locator(".jp-Dialog")
    assert dialogs.count() == 0, f"{lesson}: a dialog asks '{dialogs.first.inner_text()[:80]}' (no kernelspec in the notebook?)"
    run_all(page)
    errors = saved_errors(page, lab[2], f"{lesson}.ipynb")
    assert not errors, f"{lesson}: errors from Run All Cells in JupyterLab:\n" + "\n".join(errors)
    LATENCIES[lesson] = move_sliders(page, lesson)
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
