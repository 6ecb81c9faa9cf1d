"""rewidget: rewrite the rules inside a deep generative model, live, in JupyterLab.

    import rewidget
    s = rewidget.RewriteSession("dcgan-faces")     # headless engine (no widget imports)
    app = rewidget.RewriteApp(s)                    # the notebook app (imports ipywidgets lazily)
"""

from .core.errors import Cancelled, RewriteError
from .session import RewriteSession

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "RewriteApp":  # widgets are imported only when the app is asked for
        from .widgets.app import RewriteApp

        return RewriteApp
    raise AttributeError(name)


__all__ = ["Cancelled", "RewriteApp", "RewriteError", "RewriteSession", "__version__"]
