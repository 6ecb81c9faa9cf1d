"""The notebook app and its parts (ipywidgets, ipycanvas, anywidget); the engine stays headless.

    from rewidget.widgets import RewriteApp
    RewriteApp(session)        # grid, painter, context tray, layers and heatmaps, suggest, history
    RewriteApp(text_session)   # a TextRewriteSession gets TextRewriteApp: prompt, token chips, panel

Parts, one job each: Painter (painter.py, browser-side strokes), SampleGrid (grid.py),
ContextTray (tray.py), LayerInspector (inspect.py), HistoryList (history.py), MessageArea
(messages.py), TaskRunner (tasks.py: work off the kernel's main thread), SuggestionPanel
(suggestions.py: candidates, meters, Commit), the per-layer chart (chart.py), ImageCanvas
(imagecanvas.py), pixel helpers (pixels.py); the app itself is app.py (controls, actions),
view.py (session state → widgets), suggesting.py (suggest → preview → commit, Rewrite on
auto) and selections.py (strokes → session selections). The text app is textapp.py, with
TokenChips (tokenchips.py: click the subject's tokens) and its panel table (textpanel.py).
"""

from .app import RewriteApp
from .grid import SampleGrid
from .history import HistoryList
from .imagecanvas import ImageCanvas
from .inspect import LayerInspector
from .messages import MessageArea
from .painter import Painter
from .suggestions import SuggestionPanel
from .tasks import TaskRunner
from .textapp import TextRewriteApp
from .tokenchips import TokenChips
from .tray import ContextTray

__all__ = ["ContextTray", "HistoryList", "ImageCanvas", "LayerInspector", "MessageArea",
           "Painter", "RewriteApp", "SampleGrid", "SuggestionPanel", "TaskRunner",
           "TextRewriteApp", "TokenChips"]
