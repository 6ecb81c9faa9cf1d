"""01_quickstart in JupyterLab and Notebook 7, driven with the mouse in headless Chromium.

One notebook run serves the module (running it takes most of the time); the tests then act
on it in file order, each starting from a state it establishes itself (Clear all, clicks).
Kernel state is read through a second kernel client, pixels with getImageData.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rewidget.widgets.grid import GAP

from .harness import (
    _panel_js,
    canvas_rgba,
    canvas_stats,
    click_at,
    drag,
    kernel_eval,
    kernel_wait,
    new_page,
    open_notebook,
    run_all,
    save,
    wait_canvas,
    wait_kernel_idle,
    widget_errors,
)

pytestmark = pytest.mark.browser

GRID = "canvas.rewidget-grid"
PAINTER = "canvas.rewidget-painter-canvas"
TRAY = "canvas.rewidget-tray"


@pytest.fixture(scope="module")
def nb(lab, browser):
    errors: list[str] = []
    page = new_page(browser, errors)
    open_notebook(page, lab, "01_quickstart.ipynb")
    run_all(page)
    kc = lab.kernel_client("01_quickstart.ipynb")
    yield SimpleNamespace(page=page, kc=kc, errors=errors, lab=lab)
    kc.stop_channels()
    page.context.close()


def settle(nb, timeout: float = 20.0) -> None:
    """Wait until the app's queued work is done in the kernel and the grid stops changing."""
    kernel_wait(nb.kc, "app.wait(10)", timeout=timeout)
    last, end = None, time.time() + timeout
    while time.time() < end:
        now = canvas_stats(nb.page, GRID)
        if now is not None and now == last:
            return
        last = now
        time.sleep(0.3)
    raise TimeoutError("the grid kept changing")


def button(page, css: str):
    loc = page.locator(f"button.{css}").first
    loc.scroll_into_view_if_needed()
    return loc


def tool(page, name: str) -> None:
    for attempt in range(3):  # the buttons are redrawn when the tool changes: find them again
        try:
            b = page.locator(".rewidget-tool button", has_text=name).first
            b.scroll_into_view_if_needed()
            b.click()
            return
        except Exception:  # playwright's Error: "Element is not attached to the DOM"
            if attempt == 2:
                raise
            time.sleep(0.3)


def grid_tile_fraction(stats: dict, index: int, columns: int = 4, tile: int = 128,
                       gap: int = GAP) -> tuple[float, float]:
    """Where tile ``index`` sits, as fractions of the grid canvas (default layout)."""
    r, c = divmod(index, columns)
    x = gap + c * (tile + gap) + tile / 2
    y = gap + r * (tile + gap) + tile / 2
    return x / stats["w"], y / stats["h"]


def test_app_renders_pixels(nb):
    page = nb.page
    assert page.locator(".rewidget-app").count() == 1
    grid = wait_canvas(page, GRID, "s.nonblank > s.n * 0.5")
    assert grid["w"] >= 4 * 128 and grid["h"] >= 4 * 128
    painter = wait_canvas(page, PAINTER, "s.nonblank > s.n * 0.9")
    assert painter["w"] == 64 * 4
    wait_canvas(page, TRAY, "s.nonblank > 100")
    assert widget_errors(page) == []
    tip = page.locator(".rewidget-help").first.get_attribute("title")
    assert "Ctrl+Z" in tip and "[ / ]" in tip and "Context (c)" in tip
    # the demo cell's edit landed and is listed
    assert kernel_eval(nb.kc, "len(session.history)") == 1
    assert "installed" in kernel_eval(nb.kc, "app.messages.last")


def cell_count(page) -> int:
    return page.evaluate(f"() => {_panel_js()}.content.widgets.length")


def test_app_keys_switch_tools_and_never_reach_the_notebook(nb):
    """x/c/v/k with an app button focused (or the painter, never painted on) switch the tool;
    before the fix, x cut the notebook cell holding the app."""
    page = nb.page
    cells = cell_count(page)
    tool(page, "context")  # a focused app button
    kernel_wait(nb.kc, "app.painter.tool == 'context'")
    for key, name in (("x", "copy"), ("v", "paste"), ("k", "keep"), ("c", "context")):
        page.keyboard.press(key)
        kernel_wait(nb.kc, f"app.painter.tool == {name!r}", timeout=10)
        assert cell_count(page) == cells
    page.locator("div.rewidget-painter").first.focus()  # the painter focused, never painted
    page.keyboard.press("x")
    kernel_wait(nb.kc, "app.painter.tool == 'copy'", timeout=10)
    page.keyboard.press("c")
    kernel_wait(nb.kc, "app.painter.tool == 'context'", timeout=10)
    assert cell_count(page) == cells


def test_context_match_leaves_the_grid_where_it_was(nb):
    page = nb.page
    grid = page.locator(GRID).first
    grid.scroll_into_view_if_needed()
    before = grid.bounding_box()
    toggle = page.locator(".rewidget-app button", has_text="Context match").first
    for _ in range(2):  # on, then off
        toggle.click()
        time.sleep(1.0)
        settle(nb)
        after = grid.bounding_box()
        assert abs(after["x"] - before["x"]) < 2 and abs(after["y"] - before["y"]) < 2, \
            (before, after)
    # the batch controls sit above the grid, in view with it
    batch = page.locator("button.rewidget-batch").first.bounding_box()
    assert batch["y"] < before["y"]


SCROLLER = ".jp-WindowedPanel-outer"  # JupyterLab 4's notebook scroll container


def test_the_mouse_wheel_over_the_grid_scrolls_the_notebook(nb):
    page = nb.page
    grid = page.locator(GRID).first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    top = page.evaluate(f"() => document.querySelector('{SCROLLER}').scrollTop")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 300)
    page.wait_for_function(
        f"top => document.querySelector('{SCROLLER}').scrollTop > top + 100", arg=top,
        timeout=5_000)


def clear_and_pick_context(nb) -> None:
    """Clear every selection, wait for the grid to settle, choose the context tool."""
    button(nb.page, "rewidget-clear-all").click()
    kernel_wait(nb.kc, "not session.context and session.copy is None and session.paste is None")
    settle(nb)
    tool(nb.page, "context")
    kernel_wait(nb.kc, "app.painter.tool == 'context'")


def test_a_stroke_during_statistics_reaches_the_kernel_within_a_second(nb):
    """Heavy work (statistics for every layer, collected again) must not hold up painting."""
    page = nb.page
    clear_and_pick_context(nb)
    nb.kc.execute("app.tasks.run('Statistics again', lambda progress, cancel: "
                  "session.statistics_for(None, progress=progress, cancel=cancel, refresh=True))",
                  silent=True)
    kernel_wait(nb.kc, "app.tasks.busy", timeout=10)
    t0 = time.time()
    drag(page, page.locator(PAINTER).first, [(0.3, 0.4), (0.5, 0.42), (0.7, 0.4)])
    kernel_wait(nb.kc, "len(session.context) == 1", timeout=10)
    took = time.time() - t0
    still_busy = kernel_eval(nb.kc, "app.tasks.busy")
    print(f"stroke → session during statistics: {took:.2f} s (statistics still running: "
          f"{still_busy})")
    assert took < 1.5  # 1 s plus the test's own polling of the kernel
    kernel_wait(nb.kc, "not app.tasks.busy", timeout=120)


def test_mouse_drag_sets_context_mask_in_kernel(nb):
    page = nb.page
    clear_and_pick_context(nb)
    drag(page, page.locator(PAINTER).first, [(0.25, 0.38), (0.5, 0.4), (0.75, 0.38)])
    kernel_wait(nb.kc, "len(session.context) == 1")
    painted = kernel_eval(nb.kc, "int((app.painter.mask('context') > 0).sum())")
    stored = kernel_eval(nb.kc, "int((session.context[0].mask > 0).sum())")
    assert painted > 50 and stored == painted
    assert kernel_eval(nb.kc, "session.context[0].sample.seed == app.sample")
    # the tray shows the entry
    kernel_wait(nb.kc, "app.tray.count == 1")


def test_copy_and_paste_by_mouse(nb):
    page = nb.page
    source = kernel_eval(nb.kc, "app.sample")
    tool(page, "copy")
    drag(page, page.locator(PAINTER).first, [(0.35, 0.62), (0.5, 0.66), (0.65, 0.62)])
    kernel_wait(nb.kc, f"session.copy is not None and session.copy.sample.seed == {source}")
    kernel_wait(nb.kc, "len(app.painter.paste_patch) > 0")
    # another sample as the paste target: click its tile in the grid
    stats = canvas_stats(page, GRID)
    target_index = 2 if kernel_eval(nb.kc, "session.grid[2].seed") != source else 3
    target = kernel_eval(nb.kc, f"session.grid[{target_index}].seed")
    click_at(page, page.locator(GRID).first, *grid_tile_fraction(stats, target_index))
    kernel_wait(nb.kc, f"app.sample == {target}")
    settle(nb)
    tool(page, "paste")
    kernel_wait(nb.kc, "app.painter.tool == 'paste'")
    # drag the patch (it starts at the copy's place) 12 image pixels up
    drag(page, page.locator(PAINTER).first, [(0.5, 0.64), (0.5, 0.55), (0.5, 0.64 - 12 / 64)])
    kernel_wait(nb.kc, f"session.paste is not None and session.paste.sample.seed == {target}")
    dx, dy = kernel_eval(nb.kc, "tuple(session.paste.offset)")
    assert abs(dx) <= 2 and -15 <= dy <= -9
    # "Paste again" keeps that placement; a second drag places the copy once more
    button(page, "rewidget-paste-again").click()
    kernel_wait(nb.kc, "session.paste is None and len(session.more_pastes) == 1")
    kernel_wait(nb.kc, "not app.painter.paste_active")
    settle(nb)
    drag(page, page.locator(PAINTER).first, [(0.5, 0.64), (0.55, 0.6), (0.5 + 6 / 64, 0.64)])
    kernel_wait(nb.kc, "session.paste is not None and len(session.request().pastes) == 2")
    dx, dy = kernel_eval(nb.kc, "tuple(session.paste.offset)")
    assert 4 <= dx <= 8 and abs(dy) <= 2
    # the replace box reaches the session; "Paste on all" answers in the app's messages (this
    # target carries no context, so there is no object to repeat the paste on: nothing added)
    box = page.locator(".rewidget-replace input").first
    box.scroll_into_view_if_needed()
    box.click()
    kernel_wait(nb.kc, "session.replace")
    box.click()
    kernel_wait(nb.kc, "not session.replace")
    button(page, "rewidget-paste-all").click()
    kernel_wait(nb.kc, "'no object to repeat' in app.messages.last or 'Paste on all' in "
                "app.messages.last")
    assert kernel_eval(nb.kc, "len(session.request().pastes)") == 2


def test_rewrite_changes_grid_and_undo_restores_exactly(nb):
    page = nb.page
    settle(nb)
    n = kernel_eval(nb.kc, "len(session.history)")
    before = canvas_stats(page, GRID)
    before_rgba = canvas_rgba(page, GRID)
    button(page, "rewidget-rewrite").click()  # layer and rank on auto: the suggestion's best
    kernel_wait(nb.kc, f"len(session.history) == {n + 1} or app.suggestions.armed", timeout=120)
    if kernel_eval(nb.kc, "app.suggestions.armed"):  # a red meter: previewed, asks again
        commit = button(page, "rewidget-commit")
        assert commit.inner_text().strip() == "Commit anyway?"
        commit.click()
    kernel_wait(nb.kc, f"len(session.history) == {n + 1}")
    wait_canvas(page, GRID, f"s.hash !== {before['hash']}", timeout=60_000)
    settle(nb)
    after = canvas_stats(page, GRID)
    assert after["hash"] != before["hash"]
    button(page, "rewidget-undo").click()
    wait_canvas(page, GRID, f"s.hash === {before['hash']}", timeout=30_000)
    assert canvas_rgba(page, GRID) == before_rgba
    assert kernel_eval(nb.kc, "len(session.history)") == n
    # keyboard: Ctrl+Shift+Z on the painter redoes, Ctrl+Z undoes again
    page.evaluate("() => document.querySelector('.rewidget-painter').focus()")
    edited_view = canvas_stats(page, GRID)
    page.keyboard.press("Control+Shift+Z")
    kernel_wait(nb.kc, f"len(session.history) == {n + 1}")
    page.keyboard.press("Control+Z")
    kernel_wait(nb.kc, f"len(session.history) == {n}")
    wait_canvas(page, GRID, f"s.hash === {edited_view['hash']}", timeout=30_000)


CLICK_TO_CHANGE = """([canvasSel, buttonSel, index]) => new Promise((resolve, reject) => {
    const canvas = document.querySelector(canvasSel);
    const hash = () => {
        const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let h = 2166136261 >>> 0;
        for (let i = 0; i < d.length; i += 4) h = Math.imul(h ^ d[i] ^ (d[i + 1] << 8) ^ (d[i + 2] << 16), 16777619) >>> 0;
        return h;
    };
    const h0 = hash();
    const target = [...document.querySelectorAll(buttonSel)].filter(b => b.offsetParent)[index];
    const t0 = performance.now();
    target.click();
    const tick = () => {
        if (hash() !== h0) return resolve(performance.now() - t0);
        if (performance.now() - t0 > 20000) return reject(new Error('no change in 20 s'));
        requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
})"""

WEIGHTS = ("__import__('hashlib').sha1(b''.join(session.gen.layer(n).weight.detach().numpy()"
           ".tobytes() for n in session.gen.layer_names())).hexdigest()")


def shoot(page, name: str, *selectors: str) -> None:
    """Screenshots of parts of the app for people, when REWIDGET_SCREENSHOTS names a folder."""
    folder = os.environ.get("REWIDGET_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for i, sel in enumerate(selectors or (".rewidget-app",)):
            loc = page.locator(sel).first
            loc.scroll_into_view_if_needed()
            loc.screenshot(path=str(Path(folder) / f"{name}{f'_{i}' if i else ''}.png"))


def test_suggest_preview_commit_and_undo_restores_exactly(nb):
    page, kc = nb.page, nb.kc
    settle(nb)
    n = kernel_eval(kc, "len(session.history)")
    w0 = kernel_eval(kc, WEIGHTS)
    before = canvas_stats(page, GRID)
    before_rgba = canvas_rgba(page, GRID)
    # Suggest: the best candidate is previewed on the grid, marked, with nothing installed
    button(page, "rewidget-suggest").click()
    kernel_wait(kc, "app.suggestions.state == 'ready' and not app.busy", timeout=180)
    wait_canvas(page, GRID, f"s.hash !== {before['hash']}", timeout=30_000)
    settle(nb)
    assert kernel_eval(kc, "app.grid.preview") == kernel_eval(kc, "app.suggestions.candidate"
                                                                 ".label()")
    assert kernel_eval(kc, "bool((app.grid._edited != session.render()).any())")
    assert kernel_eval(kc, WEIGHTS) == w0 and kernel_eval(kc, "len(session.history)") == n
    note = page.locator(".rewidget-preview-note").first
    assert "not committed" in note.inner_text()
    rows = page.locator("button.rewidget-candidate:visible")
    listed = kernel_eval(kc, "len(app.suggestions.candidates)")
    assert rows.count() == listed >= 2
    # three dots per row and three for the selected candidate's whys beneath
    assert page.locator(".rewidget-suggestions .rewidget-meter:visible").count() == 3 * listed + 3
    chart = page.locator("img.rewidget-suggest-chart").first
    chart.scroll_into_view_if_needed()
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 100",
                           arg=chart.element_handle())
    shoot(page, "suggest_preview", ".rewidget-grid", ".rewidget-suggestions",
          ".rewidget-selection")
    # click → preview, measured in the page (click to changed canvas pixels)
    times = []
    for i in (1, 0, 1, 0):
        rows.nth(i).scroll_into_view_if_needed()
        settle(nb)
        times.append(page.evaluate(CLICK_TO_CHANGE, [GRID, "button.rewidget-candidate", i]))
        kernel_wait(kc, f"app.suggestions.selected == {i} and app.grid.preview != ''")
    kernel_side = kernel_eval(kc, "app.last_preview_seconds")
    print(f"\nclick → preview in the page: {', '.join(f'{t:.0f}' for t in times)} ms; kernel "
          f"side (click → grid composed) last {kernel_side * 1000:.0f} ms")
    assert max(times) < 5000  # two busy shared cores; the figure is printed and reported
    assert kernel_eval(kc, WEIGHTS) == w0
    # the gate: a candidate with a red meter asks twice (when the list has one)
    red = kernel_eval(kc, "next((i for i, c in enumerate(app.suggestions.candidates) "
                          "if c.blocked), -1)")
    if red >= 0:
        rows.nth(red).click()
        kernel_wait(kc, f"app.suggestions.selected == {red}")
        button(page, "rewidget-commit").click()
        kernel_wait(kc, "app.suggestions.armed")
        page.wait_for_function("() => [...document.querySelectorAll('button.rewidget-commit')]"
                               ".some(b => b.textContent.includes('Commit anyway?'))")
        assert page.locator(".rewidget-gate").first.is_visible()
        shoot(page, "suggest_gate", ".rewidget-suggestions")
        assert kernel_eval(kc, "len(session.history)") == n and kernel_eval(kc, WEIGHTS) == w0
    # commit a candidate without a red meter (or confirm the red one)
    ok = kernel_eval(kc, "next((i for i, c in enumerate(app.suggestions.candidates) "
                         "if not c.blocked), -1)")
    if ok >= 0:
        rows.nth(ok).click()
        kernel_wait(kc, f"app.suggestions.selected == {ok} and not app.suggestions.armed")
    settle(nb)
    previewed = canvas_stats(page, GRID)
    button(page, "rewidget-commit").click()
    if ok < 0:
        kernel_wait(kc, "app.suggestions.armed")
        button(page, "rewidget-commit").click()
    kernel_wait(kc, f"len(session.history) == {n + 1}")
    wait_canvas(page, GRID, f"s.hash !== {previewed['hash']}", timeout=30_000)
    settle(nb)
    assert kernel_eval(kc, "app.grid.preview") == ""
    assert page.locator(".rewidget-preview-note").count() == 0
    committed = canvas_stats(page, GRID)
    assert committed["hash"] != before["hash"]
    assert kernel_eval(kc, WEIGHTS) != w0
    shoot(page, "suggest_committed", ".rewidget-grid")
    # undo restores the grid exactly
    button(page, "rewidget-undo").click()
    wait_canvas(page, GRID, f"s.hash === {before['hash']}", timeout=30_000)
    assert canvas_rgba(page, GRID) == before_rgba
    assert kernel_eval(kc, WEIGHTS) == w0 and kernel_eval(kc, "len(session.history)") == n


def test_keep_tool_by_mouse(nb):
    page, kc = nb.page, nb.kc
    settle(nb)
    page.evaluate("() => document.querySelector('.rewidget-painter').focus()")
    page.keyboard.press("k")
    kernel_wait(kc, "app.painter.tool == 'keep'")
    drag(page, page.locator(PAINTER).first, [(0.2, 0.85), (0.5, 0.9), (0.8, 0.85)])
    kernel_wait(kc, "len(session.keep) == 1 and session.keep[0].sample.seed == app.sample")
    painted = kernel_eval(kc, "int((app.painter.mask('keep') > 0).sum())")
    assert painted > 50 and kernel_eval(kc, "int((session.keep[0].mask > 0).sum())") == painted
    # drawn in its own colour on the painter: violet pixels near the bottom
    violet = page.evaluate("""(sel) => { const c = document.querySelector(sel);
        const d = c.getContext('2d').getImageData(0, Math.floor(c.height * 0.85), c.width, 4).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 2] > d[i + 1] + 60) n++;
        return n; }""", PAINTER)
    assert violet > 20
    shoot(page, "keep_tool", ".rewidget-painter", ".rewidget-tray")
    page.locator(".rewidget-protect input").first.check()
    kernel_wait(kc, "session.protect == 0.9")
    page.locator(".rewidget-protect input").first.uncheck()
    kernel_wait(kc, "session.protect == 0.0")
    button(page, "rewidget-clear").click()
    kernel_wait(kc, "session.keep == []")
    tool(page, "context")
    if os.environ.get("REWIDGET_SCREENSHOTS"):  # for people: the app in the dark theme
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', "
                      "{theme: 'JupyterLab Dark'})")
        page.wait_for_timeout(1500)
        shoot(page, "dark", ".rewidget-app", ".rewidget-suggestions")
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', "
                      "{theme: 'JupyterLab Light'})")
        page.wait_for_timeout(1000)


def test_displayed_twice_and_after_reload(nb):
    page = nb.page
    page.evaluate("""() => {
        const app = window.jupyterapp, panel = app.shell.currentWidget;
        panel.content.activeCellIndex = panel.content.widgets.length - 1;
        return app.commands.execute('notebook:insert-cell-below').then(() => {
            panel.content.activeCell.model.sharedModel.setSource('app');
            return app.commands.execute('notebook:run-cell');
        });
    }""")
    page.wait_for_function(f"() => document.querySelectorAll('{GRID}').length === 2")
    first = wait_canvas(page, GRID, "s.nonblank > s.n * 0.5", index=0)
    wait_canvas(page, GRID, f"s.hash === {first['hash']}", index=1)
    wait_canvas(page, PAINTER, "s.nonblank > s.n * 0.9", index=1)
    # reopen: save, reload; the views are rebuilt from the kernel's widget state
    save(page)
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")
    page.reload()
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=90_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
    wait_kernel_idle(page)
    for i in (0, 1):
        wait_canvas(page, GRID, f"s.hash === {first['hash']}", index=i, timeout=30_000)
        wait_canvas(page, PAINTER, "s.nonblank > s.n * 0.9", index=i)
    assert widget_errors(page) == []


def test_no_console_or_page_errors(nb):
    assert nb.errors == []


def nb7_startup_error(e: str) -> bool:
    """Notebook 7.6's own errors while its page loads, before any cell (or rewidget code) ran,
    thrown inside its notebook_core bundle: "Cannot read properties of undefined (reading
    'schema')" from the shortcuts settings, and at times "Command 'filebrowser:open-path' not
    registered" (a start-up race). Both happen with a notebook that was never executed."""
    first = e.splitlines()[1] if "\n" in e else ""
    return e.startswith("pageerror: ") and "notebook_core" in e and "rewidget" not in e \
        and ("reading 'schema'" in first or "filebrowser:open-path" in first)


def test_renders_in_notebook7(notebook7, page, page_errors):
    lab = notebook7
    open_notebook(page, lab, "01_quickstart.ipynb", ui="tree")
    assert "/tree/" in page.url or "/notebooks/" in page.url
    startup = list(page_errors)
    assert all(nb7_startup_error(e) for e in startup), "\n".join(startup)
    page_errors.clear()  # from here on, every error counts
    run_all(page)
    wait_canvas(page, GRID, "s.nonblank > s.n * 0.5", timeout=30_000)
    wait_canvas(page, PAINTER, "s.nonblank > s.n * 0.9")
    assert page.locator(".rewidget-app").count() == 1
    assert widget_errors(page) == []
    # Notebook 7: x with the painter focused cut the app's cell (9 → 8 cells) before the fix
    kc = lab.kernel_client("01_quickstart.ipynb")
    try:
        cells = cell_count(page)
        page.locator("div.rewidget-painter").first.focus()
        page.keyboard.press("x")
        kernel_wait(kc, "app.painter.tool == 'copy'", timeout=10)
        tool(page, "keep")  # a focused app button
        page.keyboard.press("c")
        kernel_wait(kc, "app.painter.tool == 'context'", timeout=10)
        assert cell_count(page) == cells
    finally:
        kc.stop_channels()
    assert page_errors == [], "\n".join(page_errors + lab.log_lines("403", "WARNING", "ERROR"))


CONTRAST_JS = """() => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(',').map(Number); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = ({r, g, b}) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bgOf = (el) => { for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c.a > 0.5) return c; } return parse(getComputedStyle(document.body).backgroundColor) || {r: 255, g: 255, b: 255}; };
  const out = [];
  for (const el of document.querySelectorAll('.rewidget-app *')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.offsetParent === null) continue;
    const st = getComputedStyle(el); const fg = parse(st.color); if (!fg) continue;
    const op = parseFloat(st.opacity); if (op < 0.9) continue;  // faded older messages
    const l1 = lum(fg), l2 = lum(bgOf(el));
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    if (ratio < 4.5) out.push(`${ratio.toFixed(2)} ${el.tagName}.${el.className} ${st.color} "${el.textContent.trim().slice(0, 40)}"`);
  }
  return out;
}"""


@pytest.mark.parametrize("theme", ["JupyterLab Dark", "JupyterLab Light"])
def test_app_text_is_legible_in_both_themes(nb, theme):
    page = nb.page
    page.evaluate(f"() => window.jupyterapp.commands.execute('apputils:change-theme', "
                  f"{{theme: '{theme}'}})")
    page.wait_for_function(f"() => document.body.dataset.jpThemeName === '{theme}'",
                           timeout=20_000)
    time.sleep(1.0)
    shoot(page, "app_" + theme.split()[-1].lower())
    low = page.evaluate(CONTRAST_JS)
    assert low == [], "text under WCAG AA contrast (4.5:1):\n" + "\n".join(low)
