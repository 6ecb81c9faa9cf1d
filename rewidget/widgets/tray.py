"""The context tray: one thumbnail per context entry (and per keep region); click one to remove it.

    tray = ContextTray()
    tray.set_entries([(rgb, mask_uint8, "seed 3"), ...], current=0)
    tray.set_entries(context_entries + [(rgb, keep_mask, "keep 7", px.KEEP_RGB)])
    tray.on_remove(lambda i: session.remove_context(i))

Thumbnails show the sample with its mask tinted in the painter's colour (context by default,
or the entry's own colour: keep regions) on a canvas of class ``rewidget-tray``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w
import numpy as np
import traitlets as t
from ipywidgets import CallbackDispatcher

from . import pixels as px
from .imagecanvas import ImageCanvas

THUMB = 64
GAP = 8
LABEL_H = 16


class ContextTray(w.VBox):
    """Thumbnails of the context entries (where the rule applies)."""

    #: Number of entries shown.
    count = t.Int(0)
    #: Thumbnails per row before wrapping.
    per_row = t.Int(8)

    def __init__(self, **kwargs: Any) -> None:
        self.canvas = ImageCanvas("rewidget-tray")
        self.title = w.HTML("")
        super().__init__([self.title, self.canvas], layout=w.Layout(align_items="flex-start"),
                         **kwargs)
        self._entries: list[tuple[np.ndarray, np.ndarray, str, tuple[int, int, int]]] = []
        self._current = -1
        self._removes = CallbackDispatcher()
        self.canvas.on_click(self._on_click)
        self.set_entries([])

    def set_entries(self, entries: Sequence[tuple], current: int = -1) -> None:
        """``entries``: (image (S, S, 3) uint8, mask (S, S) uint8, label[, rgb]); an entry with
        an rgb is a keep region (tinted in it); ``current`` is framed."""
        self._entries = [(*e[:3], e[3] if len(e) > 3 else px.CONTEXT_RGB) for e in entries]
        self._current = current
        self.count = len(self._entries)
        kept = sum(len(e) > 3 for e in entries)
        n = self.count - kept
        keep = (f" <b style='color:rgb{px.KEEP_RGB}'>{kept} keep region"
                f"{'s' if kept != 1 else ''}</b> (violet) — what the edit must leave alone."
                if kept else "")
        self.title.value = (
            "<b>Context tray</b> <span style='color:var(--jp-ui-font-color2,#666);font-size:12px'>"
            + (f"{n} sample{'s' if n != 1 else ''} — where the rule applies. Context strokes "
               "are added automatically, one entry per sample; click a thumbnail to remove it."
               if n else "empty — paint with the context tool (c) on a sample: each painted "
               "sample is added here.") + keep + "</span>")
        self.canvas.show(self.compose())

    def compose(self) -> np.ndarray:
        n = len(self._entries)
        if n == 0:
            out = px.canvas(THUMB // 2, 360)
            px.draw_text(out, "(no context yet)", (GAP, 10), rgb=(120, 120, 120), bg=None)
            return out
        cols = min(n, self.per_row)
        rows = -(-n // cols)
        cw, ch = THUMB + GAP, THUMB + LABEL_H + GAP
        out = px.canvas(rows * ch + GAP, cols * cw + GAP)
        for i, (img, mask, label, rgb) in enumerate(self._entries):
            r, c = divmod(i, cols)
            x, y = GAP + c * cw, GAP + r * ch
            k = max(1, THUMB // img.shape[0])
            thumb = px.mask_tint(px.upscale(img, k), px.upscale(mask, k), rgb, 0.55)
            px.paste(out, thumb, x, y)
            px.close_mark(out, x + THUMB - 14, y + 1, 13)
            px.draw_text(out, label, (x, y + THUMB + 2), rgb=(40, 40, 40), bg=None, size=11)
            if i == self._current:
                px.frame(out, x, y, THUMB, THUMB, px.SELECTED_RGB, 2)
        return out

    def index_at(self, x: float, y: float) -> int:
        n = len(self._entries)
        if not n:
            return -1
        cols = min(n, self.per_row)
        c, cx = divmod(int(x) - GAP, THUMB + GAP)
        r, cy = divmod(int(y) - GAP, THUMB + LABEL_H + GAP)
        if c < 0 or r < 0 or c >= cols or cx >= THUMB or cy >= THUMB:
            return -1
        i = r * cols + c
        return i if i < n else -1

    def on_remove(self, callback: Callable[[int], Any], remove: bool = False) -> None:
        """Call ``callback(index)`` when the user clicks entry ``index``."""
        self._removes.register_callback(callback, remove=remove)

    def _on_click(self, x: float, y: float) -> None:
        i = self.index_at(x, y)
        if i >= 0:
            self._removes(i)
