"""Every notebook in notebooks/ runs top to bottom on a clean kernel without an error.

    pytest -m slow tests/test_notebooks.py

Each notebook runs in its own python3 kernel (the venv's, via the ipykernel spec) with
cwd = notebooks/, as a user would open it. Key statistics go to one temporary REWIDGET_CACHE
shared by the notebooks of this run, so the first notebook that needs a layer collects it and
the others reuse it; the user's ~/.cache is never touched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def notebook_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook-stats")


def test_notebooks_found():
    assert PATHS, f"no notebooks in {NOTEBOOKS}"


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs(path: Path, notebook_cache: Path, monkeypatch):
    monkeypatch.setenv("REWIDGET_CACHE", str(notebook_cache))  # inherited by the kernel
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"


def test_notebooks_committed_without_outputs():
    for path in PATHS:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            assert not cell.get("outputs"), f"{path.name} cell {i} has outputs: clear them"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has a count"
