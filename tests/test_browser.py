"""JupyterLab and an HTML report in a real browser: Debian's chromium driven by Playwright's Python client.

Playwright's own browser builds are never downloaded (`playwright install` cannot work offline); the test launches
the system chromium through `executable_path`, and skips, saying so, when it is not installed (`.ci/run` installs
it). JupyterLab serves a copy of notebooks/ from a temporary folder (its autosave must never write outputs into the
repository), on 127.0.0.1, a free port and a random token; its screenshot is kept under reports/browser/.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from e2p_lib import config
from e2p_lib.run_notebooks import KERNEL_NAME, NOTEBOOKS_DIR, render_html

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_SECONDS = 120  # JupyterLab starts in ~5 s on an idle 2-core machine; the test suite shares it
KERNEL_SECONDS = 300  # the import cell loads torch and MiniLM, slow on a busy machine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason=f"no chromium at {CHROMIUM}: `apt-get install -y chromium` (as .ci/run does) to run the browser tests",
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    """A headless chromium context with an empty profile, closed after the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def jupyterlab(tmp_path, alpaca_path):
    """(base URL, token) of a JupyterLab serving a copy of notebooks/, data and settings under tmp_path."""
    root = tmp_path / "lab"
    shutil.copytree(NOTEBOOKS_DIR, root / "notebooks")
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "jupyter-workspaces"),
        # the kernel inherits these: the notebook reads the test data and writes nothing into the repository
        "E2P_ALPACA_PATH": str(alpaca_path),
        "E2P_DATA_DIR": str(tmp_path / "data"),
        "E2P_FIGURES_DIR": str(tmp_path / "figures"),
        "E2P_REPORTS_DIR": str(tmp_path / "reports"),
    }
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError) as error:  # not listening yet: poll until the deadline
                if server.poll() is not None or time.monotonic() > deadline:
                    log = (tmp_path / "jupyterlab.log").read_text()[-3000:]
                    raise RuntimeError(f"JupyterLab did not start: {log}") from error
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_jupyterlab_runs_01_embed_on_the_e2p_kernel(jupyterlab, browser, tmp_path):
    from playwright.sync_api import expect

    base, token = jupyterlab
    reports = config.reports_dir() / "browser"
    reports.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    page.goto(f"{base}/lab/tree/notebooks/01_embed.ipynb?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=SERVER_START_SECONDS * 1000)
    # "No Kernel" until the session starts, then the display name of the kernel the notebook's metadata names.
    expect(page.locator(".jp-NotebookPanel-toolbar .jp-Toolbar-kernelName")).to_have_text(
        "Python (e2p)", timeout=KERNEL_SECONDS * 1000
    )

    # The label shows before the kernel is connected, and a cell run before that is dropped without a word (JupyterLab's
    # CodeCell.execute returns when the session has no kernel yet): wait until the page's own indicator says idle.
    page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(timeout=KERNEL_SECONDS * 1000)

    # Run the first cells: the markdown title, the parameters, the imports (MiniLM loads) and the data summary.
    page.locator(".jp-Notebook .jp-Cell").first.click()
    for _ in range(5):
        page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-Notebook .jp-OutputArea-output", has_text="rows_kept")
    try:
        output.first.wait_for(timeout=KERNEL_SECONDS * 1000)
    except Exception as error:  # say what the page showed instead: an error output, an unrun cell, a dialog
        shown = page.locator(".jp-Notebook").inner_text()[-3000:]
        page.screenshot(path=str(reports / "jupyterlab_01_embed_failed.png"))
        log = (tmp_path / "jupyterlab.log").read_text()[-3000:]
        raise AssertionError(
            f"no data summary after {KERNEL_SECONDS} s; the notebook shows:\n{shown}\nJupyterLab's log ends:\n{log}"
        ) from error
    assert "rows_read" in output.first.inner_text()
    # The kernel that ran them is the project's (the server's record, not just the toolbar's label).
    sessions = json.loads(urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=30).read())
    assert [s["kernel"]["name"] for s in sessions] == [KERNEL_NAME]
    page.screenshot(path=str(reports / "jupyterlab_01_embed.png"), full_page=False)
    assert (reports / "jupyterlab_01_embed.png").stat().st_size > 10_000


def tiny_report(folder: Path) -> Path:
    """An executed one-figure notebook on the e2p kernel, rendered to HTML the way run_notebooks renders reports."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": KERNEL_NAME, "display_name": "Python (e2p)", "language": "python"}}
    )
    nb.cells = [nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([0, 1, 4, 9])\nplt.show()")]
    NotebookClient(nb, timeout=KERNEL_SECONDS, kernel_name=KERNEL_NAME).execute()
    path = folder / "tiny_report.ipynb"
    nbformat.write(nb, path)
    return render_html(path)


def test_an_html_report_shows_its_figures(browser, tmp_path):
    reports = sorted(config.reports_dir().glob("0*.html"))
    report = reports[0] if reports else tiny_report(tmp_path)
    page = browser.new_page()
    page.goto(report.resolve().as_uri())
    widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
    assert widths, f"{report.name} has no figure"
    assert all(w > 0 for w in widths), f"{report.name}: figures that did not load: {widths}"
