"""The engine stays headless: core, session and models import no widget library."""

import subprocess
import sys

BANNED = ["ipywidgets", "ipycanvas", "anywidget", "traitlets", "IPython"]


def test_engine_imports_no_widget_code():
    code = ("import sys, rewidget, rewidget.core, rewidget.session, rewidget.models; "
            "s = rewidget.RewriteSession('tiny', stats_samples=50); "
            f"print([m for m in {BANNED!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
