"""Fixtures for the real-browser tests: one JupyterLab server and one Chromium per session.

Without /usr/bin/chromium (or Playwright) these tests FAIL when REWIDGET_REQUIRE_BROWSER=1 is
set (as `./dev test`, hence CI, does) and skip otherwise, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .harness import CHROMIUM, REPO, LabServer, chromium, new_page


def _require_browser() -> None:
    problem = None
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (pip install playwright; no `playwright install`)"
    if problem:
        if os.environ.get("REWIDGET_REQUIRE_BROWSER") == "1":  # ./dev test sets it
            pytest.fail(f"browser tests cannot run: {problem}", pytrace=False)
        pytest.skip(f"browser tests need a browser: {problem}")


@pytest.fixture(scope="session")
def stats_cache(tmp_path_factory) -> Path:
    """One statistics cache for the kernels of all servers (collected once per run)."""
    return tmp_path_factory.mktemp("lab-rewidget-cache")


def _serve(stats_cache):
    """A Jupyter server on a temp copy of notebooks/, for the life of the fixture."""
    _require_browser()
    server = LabServer(REPO / "notebooks", extra_env={"REWIDGET_CACHE": str(stats_cache)})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lab(stats_cache):
    """The server used through JupyterLab."""
    yield from _serve(stats_cache)


@pytest.fixture(scope="session")
def notebook7(stats_cache):
    """A second server for Notebook 7. Not the JupyterLab one: jupyter_server caches static
    file paths by file name across apps (FileFindHandler._static_paths), so after JupyterLab
    served its FontAwesome font, Notebook 7's request for the same-named file gets a 403."""
    yield from _serve(stats_cache)


@pytest.fixture(scope="session")
def browser():
    _require_browser()
    with chromium() as b:
        yield b


@pytest.fixture
def page_errors() -> list[str]:
    return []


@pytest.fixture
def page(browser, page_errors):
    """A fresh page; the test's console and page errors are in ``page_errors``."""
    p = new_page(browser, page_errors)
    yield p
    p.context.close()
