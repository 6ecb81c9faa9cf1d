"""The lowest ipycanvas the package allows really works: its Python side asks the browser for a
front-end version its own bundled front end satisfies (0.13.0 asked for "^0.12" and 0.14.0 for
"^0.13", shipping 0.13.0 / 0.14.0: "Module ipycanvas, version ^0.13 is not registered")."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def caret_allows(spec: str, version: str) -> bool:
    """npm's caret range: ^0.M allows 0.M.x, ^X.Y (X ≥ 1) allows X.y.z with y ≥ Y."""
    want = [int(x) for x in spec.lstrip("^").split(".")]
    have = [int(x) for x in version.split(".")[:3]]
    want += [0] * (3 - len(want))
    if want[0] == 0:
        return have[0] == 0 and have[1] == want[1] and have[2] >= want[2]
    return have[0] == want[0] and have[1:] >= want[1:]


def test_caret_ranges_read_as_npm_reads_them():
    assert caret_allows("^0.14", "0.14.3") and not caret_allows("^0.13", "0.14.0")
    assert not caret_allows("^0.12", "0.13.0") and caret_allows("^1.2", "1.5.0")


@pytest.mark.slow
def test_the_ipycanvas_floor_ships_the_front_end_it_asks_for(tmp_path):
    found = re.search(r'"ipycanvas>=([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert found, "pyproject.toml no longer states an ipycanvas floor"
    floor = found.group(1)
    got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                          f"ipycanvas=={floor}", "-d", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, f"could not fetch ipycanvas {floor}: {got.stderr[-500:]}"
    with zipfile.ZipFile(next(tmp_path.glob("ipycanvas-*.whl"))) as whl:
        frontend = whl.read("ipycanvas/_frontend.py").decode()
        shipped = json.loads(whl.read("ipycanvas/labextension/package.json"))["version"]
    asked = re.search(r'module_version\s*=\s*"([^"]+)"', frontend)
    assert asked, "the floor's _frontend.py no longer states its version as a literal"
    assert caret_allows(asked.group(1), shipped), \
        f"ipycanvas {floor} asks for {asked.group(1)} but ships {shipped}"
