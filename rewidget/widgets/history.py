"""The edit history list: one row per edit (thumbnail, layer, rank, time), strength per edit.

    hist = HistoryList()
    hist.set_rows([HistoryRow(id=1, text="paste @ main.6 · rank 1", when=t, strength=1.0,
                              active=True, thumb=rgb), ...])
    hist.on_strength(lambda index, value: session.set_strength(index, value))

Undone edits stay listed (greyed) until a new edit clears the redo stack.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as w
import numpy as np
import traitlets as t
from ipywidgets import CallbackDispatcher

from . import pixels as px


@dataclass(frozen=True)
class HistoryRow:
    id: int
    text: str
    when: float
    strength: float
    active: bool
    thumb: np.ndarray | None = None  # (S, S, 3) uint8


class HistoryList(w.VBox):
    """Rows of edits, oldest first; a strength slider on each applied edit."""

    #: Applied edits shown.
    applied = t.Int(0)
    #: Undone edits shown (they come back with Redo).
    undone = t.Int(0)

    def __init__(self, **kwargs: Any) -> None:
        self.header = w.HTML("")
        self.rows = w.VBox([])
        super().__init__([self.header, self.rows], **kwargs)
        self.add_class("rewidget-history")
        self._strength = CallbackDispatcher()
        self._widgets: dict[int, tuple[w.Image, w.HTML, w.FloatSlider]] = {}
        self._thumbs: dict[int, bytes] = {}
        self._boxes: dict[int, w.HBox] = {}
        self._index: dict[int, int] = {}
        self._quiet = False
        self.set_rows([])

    def set_rows(self, rows: Sequence[HistoryRow]) -> None:
        applied = [r for r in rows if r.active]
        self.applied, self.undone = len(applied), len(rows) - len(applied)
        self.header.value = ("<b>History</b> <span style='color:var(--jp-ui-font-color2,#666);font-size:12px'>"
                             + (f"{self.applied} applied" + (f", {self.undone} undone (Redo "
                                "brings them back)" if self.undone else "")
                                + " — the strength slider scales one edit (0 switches it off)"
                                if rows else "no edits yet") + "</span>")
        children = []
        self._index = {}
        self._quiet = True
        try:
            for i, row in enumerate(rows):
                if row.active:
                    self._index[row.id] = i
                img, label, slider = self._row_widgets(row)
                with slider.hold_sync():
                    slider.value = row.strength
                    slider.disabled = not row.active
                style = "" if row.active else "color:var(--jp-ui-font-color3,#999);text-decoration:line-through;"
                label.value = (f"<span style='font-size:12px;{style}'>{html.escape(row.text)} · "
                               f"{time.strftime('%H:%M:%S', time.localtime(row.when))}"
                               f"{'' if row.active else ' (undone)'}</span>")
                children.append(self._boxes[row.id])
        finally:
            self._quiet = False
        self.rows.children = children
        live = {r.id for r in rows}
        for k in [k for k in self._widgets if k not in live]:
            for widget in (*self._widgets.pop(k), self._boxes.pop(k)):
                widget.close()
            self._thumbs.pop(k, None)

    def _row_widgets(self, row: HistoryRow) -> tuple[w.Image, w.HTML, w.FloatSlider]:
        if row.id not in self._widgets:
            img = w.Image(format="png", layout=w.Layout(width="48px", height="48px"))
            label = w.HTML(layout=w.Layout(width="330px"))
            slider = w.FloatSlider(value=row.strength, min=0.0, max=1.0, step=0.05,
                                   description="strength", continuous_update=False,
                                   readout_format=".2f", style={"description_width": "56px"},
                                   layout=w.Layout(width="260px"))
            slider.observe(lambda ch, eid=row.id: self._on_slider(eid, ch["new"]), names="value")
            self._widgets[row.id] = (img, label, slider)
            self._boxes[row.id] = w.HBox([img, label, slider], layout=w.Layout(align_items="center"))
        img = self._widgets[row.id][0]
        if row.thumb is not None and row.id not in self._thumbs:
            self._thumbs[row.id] = px.png(px.to_rgba(px.upscale(row.thumb, max(1, 48 // row.thumb.shape[0]))))
            img.value = self._thumbs[row.id]
        return self._widgets[row.id]

    def on_strength(self, callback: Callable[[int, float], Any], remove: bool = False) -> None:
        """Call ``callback(index into history.entries, strength)`` when a slider moves."""
        self._strength.register_callback(callback, remove=remove)

    def _on_slider(self, edit_id: int, value: float) -> None:
        if not self._quiet and edit_id in self._index:
            self._strength(self._index[edit_id], float(value))
