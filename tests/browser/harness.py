"""Drive the notebook app in a real browser: an isolated JupyterLab server, headless Chromium,
and helpers to run notebooks, read canvas pixels, drag the mouse and query the kernel.

    with LabServer(notebooks_dir) as lab, chromium() as browser:
        page = new_page(browser)
        open_notebook(page, lab, "01_quickstart.ipynb"); run_all(page)
        kernel = lab.kernel_client("01_quickstart.ipynb")
        kernel_eval(kernel, "len(session.context)")

Used by tests/browser and benchmarks/browser_latency.py. The recipe and its pitfalls are in
shared/BROWSER_TESTS.md (Debian chromium, never `playwright install`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("REWIDGET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
WIDGET_ERRORS = ("Loading widget", "Error displaying widget", "Click to show javascript error")

_SETTINGS = {
    # no autosave: the temp copy is never rewritten behind the test's back
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    # no news or update checks: nothing may try to reach the internet
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """`jupyter lab` on a temp copy of ``notebooks``, isolated config/runtime/settings dirs."""

    def __init__(self, notebooks: Path | str, extra_env: dict[str, str] | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="rewidget-lab-"))
        self.root = self.tmp / "root"
        shutil.copytree(notebooks, self.root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                     "JUPYTERLAB_WORKSPACES_DIR"):
            d = self.tmp / name.lower()
            d.mkdir()
            self.env[name] = str(d)
        self.env.setdefault("REWIDGET_CACHE", str(self.tmp / "rewidget-cache"))
        self.env.update(extra_env or {})
        settings = Path(self.env["JUPYTERLAB_SETTINGS_DIR"])
        for rel, value in _SETTINGS.items():
            (settings / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings / rel).write_text(json.dumps(value))
        self.proc: subprocess.Popen | None = None
        self.log = self.tmp / "server.log"

    def start(self, timeout: float = 60.0) -> LabServer:
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
               "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--LabApp.expose_app_in_browser=True",
               "--JupyterNotebookApp.expose_app_in_browser=True"]
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.root, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}",
                                            timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"jupyter lab did not answer in {timeout} s: "
                           f"{self.log.read_text()[-3000:]}")

    def log_lines(self, *needles: str) -> list[str]:
        """Server log lines containing any of ``needles`` (for failure messages)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if any(n in line for n in needles)]

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}?token={self.token}", timeout=10) as r:
            return json.loads(r.read())

    def kernel_client(self, notebook: str, timeout: float = 60.0):
        """A BlockingKernelClient on the kernel of the open ``notebook`` (a second client)."""
        from jupyter_client import BlockingKernelClient

        end = time.time() + timeout
        while time.time() < end:
            for sess in self.api("/api/sessions"):
                if sess.get("path", "").endswith(notebook) and sess.get("kernel"):
                    cf = Path(self.env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{sess['kernel']['id']}.json"
                    if cf.exists():
                        kc = BlockingKernelClient(connection_file=str(cf))
                        kc.load_connection_file()
                        kc.start_channels()
                        kc.wait_for_ready(timeout=30)
                        return kc
            time.sleep(0.3)
        raise RuntimeError(f"no kernel for {notebook}")

    def stop(self) -> None:
        """SIGTERM the server, then end its leftover children (kernels) by PID."""
        if self.proc is None:
            return
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for child in children:
            try:
                child.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            child.kill()
        self._log.close()
        self.proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextmanager
def chromium():
    """Headless Debian chromium through Playwright (its bundled node driver only)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, errors: list[str] | None = None, width: int = 1500, height: int = 1100):
    """A fresh page; console errors and page errors are appended to ``errors``."""
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    if errors is not None:
        page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}\n{e.stack}"))
        page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.request.method} {r.url}")
                if r.status >= 400 else None)
    page.on("dialog", lambda d: d.accept())  # beforeunload on reload
    return page


def open_notebook(page, lab: LabServer, notebook: str, ui: str = "lab",
                  timeout: float = 90_000) -> None:
    """Open ``notebook`` in JupyterLab (``ui="lab"``) or Notebook 7 (``ui="tree"``)."""
    path = f"/lab/tree/{notebook}" if ui == "lab" else f"/tree/{notebook}"
    extra = "&reset" if ui == "lab" else ""
    page.goto(f"{lab.url}{path}?token={lab.token}{extra}")
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=timeout)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout)
    wait_kernel_idle(page, timeout)


def _panel_js() -> str:
    return ("(() => { const app = window.jupyterapp; const w = app.shell.currentWidget;"
            " return w && w.sessionContext ? w : null; })()")


def wait_kernel_idle(page, timeout: float = 90_000) -> None:
    page.wait_for_function(
        f"() => {{ const p = {_panel_js()}; const k = p && p.sessionContext.session"
        " && p.sessionContext.session.kernel; return k && k.status === 'idle'; }",
        timeout=timeout)


def run_all(page, timeout: float = 240_000) -> None:
    """Run every cell; wait until each code cell has an execution count and the kernel idles."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        f"() => {{ const p = {_panel_js()}; if (!p) return false;"
        " const cells = p.content.widgets.filter(c => c.model.type === 'code');"
        " const done = cells.every(c => c.model.executionCount !== null);"
        " const k = p.sessionContext.session && p.sessionContext.session.kernel;"
        " return done && k && k.status === 'idle'; }",
        timeout=timeout)


def save(page) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")


def kernel_eval(kc, expr: str, timeout: float = 30.0) -> Any:
    """Evaluate ``expr`` in the kernel and return ``ast.literal_eval`` of its repr."""
    import ast

    msg_id = kc.execute("", silent=True, user_expressions={"r": expr})
    end = time.time() + timeout
    while time.time() < end:
        reply = kc.get_shell_msg(timeout=max(0.1, end - time.time()))
        if reply["parent_header"].get("msg_id") != msg_id:
            continue
        r = reply["content"]["user_expressions"]["r"]
        if r["status"] != "ok":
            raise RuntimeError(f"{expr!r} failed in the kernel: {r.get('ename')}: {r.get('evalue')}")
        return ast.literal_eval(r["data"]["text/plain"])
    raise TimeoutError(expr)


def kernel_wait(kc, expr: str, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll ``expr`` in the kernel until it is truthy; return its value."""
    end = time.time() + timeout
    value = None
    while time.time() < end:
        value = kernel_eval(kc, expr)
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{expr!r} stayed {value!r} for {timeout} s")


CANVAS_PIXELS = """(sel) => {
    const c = document.querySelectorAll(sel)[%d];
    if (!c || !c.width || !c.height) return null;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let h = 2166136261 >>> 0, nonblank = 0;
    for (let i = 0; i < d.length; i += 4) {
        const v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
        if (d[i + 3] && v !== 0xf5f5f5) nonblank++;
        h = Math.imul(h ^ d[i] ^ (d[i + 1] << 8) ^ (d[i + 2] << 16) ^ (d[i + 3] << 24), 16777619) >>> 0;
    }
    return {w: c.width, h: c.height, hash: h, nonblank: nonblank, n: d.length / 4};
}"""


def canvas_stats(page, selector: str, index: int = 0) -> dict | None:
    """Size, a hash of every RGBA value and the count of non-background pixels of a canvas."""
    return page.evaluate(CANVAS_PIXELS % index, selector)


def canvas_rgba(page, selector: str, index: int = 0) -> bytes:
    """Every RGBA byte of a canvas (sent as base64: a JSON list of numbers is 10x slower)."""
    import base64

    b64 = page.evaluate(
        """([sel, i]) => { const c = document.querySelectorAll(sel)[i];
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = ''; for (let k = 0; k < d.length; k += 0x8000)
            s += String.fromCharCode.apply(null, d.subarray(k, k + 0x8000));
        return btoa(s); }""", [selector, index])
    return base64.b64decode(b64)


def wait_canvas(page, selector: str, predicate: str, index: int = 0,
                timeout: float = 20_000) -> dict:
    """Wait until ``predicate`` (a JS expression over ``s``, the canvas stats) holds."""
    page.wait_for_function(
        f"([sel]) => {{ const s = ({CANVAS_PIXELS % index})(sel); return s && ({predicate}); }}",
        arg=[selector], timeout=timeout, polling="raf")
    return canvas_stats(page, selector, index)


def widget_errors(page) -> list[str]:
    """Texts of widget outputs that failed to render."""
    text = page.locator(".jp-OutputArea").all_inner_texts()
    return [e for e in WIDGET_ERRORS for t in text if e in t]


def drag(page, locator, points: list[tuple[float, float]], steps: int = 4) -> None:
    """Press at the first point, move through the rest, release; points are fractions of the
    element's box (0..1), so the drag is independent of the display scale."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def click_at(page, locator, fx: float, fy: float) -> None:
    """Click at a fraction (fx, fy) of the element's box."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
