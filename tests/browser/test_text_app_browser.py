"""The text app in JupyterLab, driven in headless Chromium: type a prompt, click token chips,
type the new object, Check, Rewrite, see the panel's "now" column change, Undo, see it back.

The notebook is written into the server's temp root (nothing tracked changes); the model is
tiny-text (a seeded random Llama: gibberish completions, real mechanics). Kernel state is read
through a second kernel client. With REWIDGET_SCREENSHOTS=<folder> the app is photographed in
the light and the dark theme.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from .harness import kernel_eval, kernel_wait, new_page, open_notebook, run_all, widget_errors

pytestmark = pytest.mark.browser

NB = "text_app_browser.ipynb"
SETUP = """from rewidget.session.text import TextRewriteSession
from rewidget.widgets import RewriteApp

session = TextRewriteSession("tiny-text")
app = RewriteApp(session)  # a text session gets the text app
app"""
PROMPT = "The Eiffel Tower is located in the city of"
APP = ".rewidget-text-app"
WEIGHTS = ("__import__('hashlib').sha1(b''.join(session.gen.layer(n).weight.detach().numpy()"
           ".tobytes() for n in session.gen.layer_names())).hexdigest()")
NOW_CELLS = (f"{APP} .rewidget-panel td.rewidget-now, {APP} .rewidget-panel td.rewidget-p-old, "
             f"{APP} .rewidget-panel td.rewidget-p-new")


@pytest.fixture(scope="module")
def nb(lab, browser):
    import nbformat

    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(SETUP)]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                   "language": "python"}
    nbformat.write(book, lab.root / NB)
    errors: list[str] = []
    page = new_page(browser, errors)
    open_notebook(page, lab, NB)
    run_all(page)
    kc = lab.kernel_client(NB)
    kernel_wait(kc, "app.wait(10)", timeout=120)  # the statistics preload
    yield SimpleNamespace(page=page, kc=kc, errors=errors, lab=lab)
    kc.stop_channels()
    page.context.close()


def button(page, css: str):
    loc = page.locator(f"{APP} button.{css}").first
    loc.scroll_into_view_if_needed()
    return loc


def field(page, css: str, tag: str = "input"):
    loc = page.locator(f"{APP} .{css} {tag}").first
    loc.scroll_into_view_if_needed()
    return loc


def shoot(page, name: str) -> None:
    """A screenshot of the app for people, when REWIDGET_SCREENSHOTS names a folder."""
    folder = os.environ.get("REWIDGET_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        loc = page.locator(APP).first
        loc.scroll_into_view_if_needed()
        loc.screenshot(path=str(Path(folder) / f"{name}.png"))


def theme(page, name: str) -> None:
    page.evaluate("(t) => window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme: t})", name)
    page.wait_for_function("(t) => document.body.dataset.jpThemeName === t", arg=name)
    page.wait_for_timeout(500)  # the theme's CSS variables apply


def test_app_renders(nb):
    page = nb.page
    page.wait_for_selector(f"{APP} .rewidget-prompt input")
    assert page.locator(APP).count() == 1
    assert widget_errors(page) == []
    assert "type a prompt" in page.locator(f"{APP} .rewidget-tokens").first.inner_text().lower()
    assert "Check" in page.locator(f"{APP} .rewidget-panel").first.inner_text()
    tip = page.locator(f"{APP} .rewidget-help").first.get_attribute("title")
    assert "shift-click" in tip and "Undo" in tip


def test_type_click_tokens_rewrite_and_undo(nb):
    page, kc = nb.page, nb.kc
    cells = page.locator(".jp-NotebookPanel .jp-Cell").count()
    # typing into the prompt: chips appear, and no notebook shortcut fires (a, b, d, m, y …)
    field(page, "rewidget-prompt").click()
    field(page, "rewidget-prompt").press_sequentially(PROMPT, delay=5)
    kernel_wait(kc, f"app.prompt.value == {PROMPT!r}")
    n = kernel_eval(kc, "len(app.chips.tokens)")
    chips = page.locator(f"{APP} button.rewidget-token")
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length === n",
                           arg=[f"{APP} button.rewidget-token", n])
    assert page.locator(".jp-NotebookPanel .jp-Cell").count() == cells
    assert kernel_eval(kc, "len(session.history)") == 0
    # click the first token, shift-click the last token of "The Eiffel Tower"
    last = kernel_eval(kc, "[i for i, (a, b) in enumerate(app.chips.spans) "
                           "if b == len('The Eiffel Tower')][0]")
    chips.nth(0).scroll_into_view_if_needed()
    chips.nth(0).click()
    kernel_wait(kc, "app.chips.selected == [0]")
    chips.nth(last).click(modifiers=["Shift"])
    kernel_wait(kc, f"app.chips.selected == list(range({last + 1}))")
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length === n",
                           arg=[f"{APP} .rewidget-token-selected", last + 1])
    assert "The Eiffel Tower" in page.locator(f"{APP} .rewidget-subject").first.inner_text()
    # the new object and a neighbour, typed
    field(page, "rewidget-target").click()
    field(page, "rewidget-target").press_sequentially(" Rome", delay=5)
    field(page, "rewidget-neighbours", "textarea").click()
    field(page, "rewidget-neighbours", "textarea").press_sequentially(
        "The Louvre is located in the city of -> Paris", delay=2)
    kernel_wait(kc, "app.target.value == ' Rome' and app.neighbours.value.endswith('Paris')")
    assert page.locator(".jp-NotebookPanel .jp-Cell").count() == cells
    # Check: the panel, with nothing changed
    button(page, "rewidget-check").click()
    kernel_wait(kc, "len(app.panel_rows) == 2 and app.wait(10)", timeout=60)
    page.wait_for_function("(sel) => document.querySelectorAll(sel).length === 2",
                           arg=f"{APP} tr.rewidget-panel-row")
    before = page.locator(NOW_CELLS).all_inner_texts()
    assert len(before) == 6 and page.locator(f"{APP} .rewidget-changed").count() == 0
    w0 = kernel_eval(kc, WEIGHTS)
    # Rewrite: the edit is installed and the "now" column changes
    button(page, "rewidget-rewrite").click()
    if os.environ.get("REWIDGET_SCREENSHOTS"):  # for people: the progress bar and Cancel
        try:
            page.locator(f"{APP} button.rewidget-cancel").first.wait_for(state="visible",
                                                                          timeout=3000)
            shoot(page, "text_app_busy")
        except Exception:  # noqa: BLE001 - the tiny edit may be done before the shot
            pass
    kernel_wait(kc, "len(session.history) == 1", timeout=120)
    kernel_wait(kc, "app.wait(10)", timeout=60)
    page.wait_for_function("(sel) => document.querySelectorAll(sel).length > 0",
                           arg=f"{APP} .rewidget-panel .rewidget-changed", timeout=30_000)
    after = page.locator(NOW_CELLS).all_inner_texts()
    assert after != before
    assert kernel_eval(kc, WEIGHTS) != w0
    assert "installed" in page.locator(f"{APP} .rewidget-msg").first.inner_text()
    assert "The Eiffel Tower → Rome" in page.locator(f"{APP} .rewidget-history").first.inner_text()
    shoot(page, "text_app_light")
    if os.environ.get("REWIDGET_SCREENSHOTS"):  # for people: the same in the dark theme
        theme(page, "JupyterLab Dark")
        shoot(page, "text_app_dark")
        theme(page, "JupyterLab Light")
    # Undo: back to W₀ bit for bit, the "now" column as before
    button(page, "rewidget-undo").click()
    kernel_wait(kc, "len(session.history) == 0 and app.wait(10)", timeout=60)
    page.wait_for_function("(sel) => document.querySelectorAll(sel).length === 0",
                           arg=f"{APP} .rewidget-panel .rewidget-changed", timeout=30_000)
    assert page.locator(NOW_CELLS).all_inner_texts() == before
    assert kernel_eval(kc, WEIGHTS) == w0
    assert "(undone)" in page.locator(f"{APP} .rewidget-history").first.inner_text()


def test_bad_input_shows_the_error_and_its_fix(nb):
    page, kc = nb.page, nb.kc
    n = kernel_eval(kc, "len(session.history)")
    field(page, "rewidget-target").fill("")
    kernel_wait(kc, "app.target.value == ''")
    button(page, "rewidget-rewrite").click()
    page.wait_for_selector(f"{APP} .rewidget-msg-error")
    text = page.locator(f"{APP} .rewidget-msg-error").first.inner_text()
    assert "The new target is empty." in text and "Fix:" in text
    assert kernel_eval(kc, "len(session.history)") == n
    shoot(page, "text_app_error")


def test_no_console_or_page_errors(nb):
    assert widget_errors(nb.page) == []
    assert nb.errors == []
