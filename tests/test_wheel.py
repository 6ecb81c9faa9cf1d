"""The install path for people with their own environment: build the wheel, install it into a
fresh virtual environment outside the clone, open the app there.

The new environment reaches the dependencies (torch, ipywidgets, ...) through a .pth file that
names this environment's site-packages, so the test costs seconds, not a torch install; rewidget
itself comes only from the wheel (installed --no-deps), and the check runs from a directory
outside the clone so the source tree cannot stand in for it.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import json, sys
from pathlib import Path
import rewidget
from rewidget import RewriteSession
from rewidget.widgets.app import RewriteApp
from rewidget.widgets.painter import load_esm
from rewidget import examples
from rewidget.models import scenes_truth  # noqa: F401  notebook 05's ground truth

s = RewriteSession("tiny", stats_samples=200, quiet=True)
app = RewriteApp(s, preload=False)
assert app.wait(60)
esm = load_esm()
print(json.dumps({"file": rewidget.__file__, "esm": len(esm),
                  "keys": "data-lm-suppress-shortcuts" in esm,
                  "examples": examples.names(),
                  "roofs": examples.request("roof_to_tree").model,
                  "license": [str(p) for p in Path(sys.prefix).rglob("LICENSE")
                              if "rewidget" in str(p)],
                  "grid": app.grid.pixels.shape[:2] if app.grid.pixels is not None else None}))
app.close()
"""


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_environment_and_opens_the_app(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                            "-q", "-w", str(dist)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = next(dist.glob("rewidget-*.whl"))

    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env)
    py = env / "bin" / "python"
    target = Path(subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (target / "deps.pth").write_text("\n".join(ours) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run = subprocess.run([str(py), "-c", CHECK], cwd=outside, capture_output=True, text=True,
                         timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                           "REWIDGET_CACHE": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stdout + run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(target), got  # the wheel's copy, not the clone's
    assert got["esm"] > 1000 and got["keys"]  # the painter's JS shipped inside the wheel
    assert got["license"], "LICENSE is not in the installed wheel"
    assert got["grid"] is not None
    assert "roof_to_tree" in got["examples"] and got["roofs"] == "scenes"  # notebooks' requests
