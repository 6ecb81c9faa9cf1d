"""rewidget: rewrite the rules inside a deep generative model, live, in JupyterLab.

    import rewidget
    s = rewidget.RewriteSession("dcgan-faces")     # headless engine (no widget imports)
    app = rewidget.RewriteApp(s)                    # the notebook app (imports ipywidgets lazily)
    t = rewidget.TextRewriteSession("smollm2")     # facts inside a language model
"""

from .core.errors import Cancelled, RewriteError
from .session import Fact, FactRequest, RewriteSession, TextRewriteSession

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "RewriteApp":  # widgets are imported only when the app is asked for
        from .widgets.app import RewriteApp

        return RewriteApp
    raise AttributeError(name)


__all__ = ["Cancelled", "Fact", "FactRequest", "RewriteApp", "RewriteError", "RewriteSession",
           "TextRewriteSession", "__version__"]
