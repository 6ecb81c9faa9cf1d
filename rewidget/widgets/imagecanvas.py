"""An ipycanvas Canvas that shows one RGBA image and redraws it for every new view.

    c = ImageCanvas("rewidget-grid")          # the CSS class lands on the <canvas>
    c.show(rgba)                              # (H, W, 4) uint8; resizes the canvas to fit
    c.on_click(lambda x, y: print(x, y))      # image pixel coordinates of a mouse press

ipycanvas drawings are messages, not state: a reopened notebook or a second view starts blank.
The last image is kept (as PNG bytes) and re-sent on ``on_client_ready``. It is also stored in
the canvas's ``image_data`` state (which ipycanvas draws when a view is created), a second
after the last change so live updates do not carry it twice: a saved notebook, an nbconvert
HTML export or nbviewer shows the last picture instead of a blank canvas. Drawing goes through
one lock because ``hold_canvas`` batches through a process-wide manager and the app draws from
worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from ipycanvas import Canvas, hold_canvas
from ipywidgets import CallbackDispatcher

from .pixels import png, to_rgba

DRAW_LOCK = threading.RLock()
#: seconds after the last change before the picture is written into the widget state
STATE_DELAY = 1.0

try:  # put pre-encoded PNG bytes (fast, level 1); fall back to the public call if this moves
    from ipycanvas.canvas import COMMANDS as _COMMANDS

    _PUT = _COMMANDS["putImageData"]
except (ImportError, KeyError):  # pragma: no cover - depends on the ipycanvas version
    _PUT = None


class ImageCanvas(Canvas):
    """A canvas holding one finished RGBA picture (no drawing state to lose)."""

    def __init__(self, css_class: str, **kwargs: Any) -> None:
        super().__init__(width=1, height=1, **kwargs)
        self.add_class(css_class)
        self._rgba: np.ndarray | None = None
        self._png: bytes = b""
        self._clicks = CallbackDispatcher()
        self._store_timer: threading.Timer | None = None
        self.on_client_ready(self._redraw)
        self.on_mouse_down(self._on_down)

    @property
    def pixels(self) -> np.ndarray | None:
        """The (H, W, 4) image the browser is showing (None before the first ``show``)."""
        return self._rgba

    def show(self, rgba: np.ndarray) -> None:
        """Display ``rgba`` (or RGB; converted) and keep it for redraws."""
        rgba = to_rgba(rgba)
        h, w = rgba.shape[:2]
        with DRAW_LOCK:
            if self._rgba is not None and np.array_equal(self._rgba, rgba):
                return
            self._rgba, self._png = rgba, png(rgba)
            if (self.width, self.height) != (w, h):
                with self.hold_sync():
                    self.width, self.height = w, h
                    self.layout.width, self.layout.height = f"{w}px", f"{h}px"
                    self.layout.min_width = f"{w}px"
            self._redraw()
            if self._store_timer is not None:
                self._store_timer.cancel()
            self._store_timer = threading.Timer(STATE_DELAY, self._store)
            self._store_timer.daemon = True
            self._store_timer.start()

    def _store(self) -> None:
        """Write the current picture into the saved widget state (static exports show it)."""
        with DRAW_LOCK:
            if self._png and self.comm is not None:
                self.set_trait("image_data", self._png)

    def close(self) -> None:
        if self._store_timer is not None:
            self._store_timer.cancel()
        super().close()

    def _redraw(self, *_: Any) -> None:
        with DRAW_LOCK:
            if self._rgba is None:
                return
            with hold_canvas():
                self.clear()
                if _PUT is not None:
                    self._canvas_manager.send_draw_command(self, _PUT, [0, 0], [self._png])
                else:  # pragma: no cover
                    self.put_image_data(self._rgba, 0, 0)

    def on_click(self, callback: Callable[[float, float], Any], remove: bool = False) -> None:
        """Call ``callback(x, y)`` (image pixels) when the mouse is pressed on the canvas."""
        self._clicks.register_callback(callback, remove=remove)

    def _on_down(self, x: float, y: float) -> None:
        self._clicks(x, y)
