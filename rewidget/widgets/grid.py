"""The sample grid: generated samples by seed, before/after, side by side, context match.

    grid = SampleGrid(columns=4, scale=2)
    grid.set_samples(["seed 0", ...], edited, original=None, match=None, tags=None)
    grid.view = "original"      # before/after toggle ("edited" | "original")
    grid.compare = True         # each sample as an original | edited pair
    grid.set_samples(labels, preview, original=now, preview="main.6 · rank 6")  # not committed
    grid.on_select(lambda i: print("clicked sample", i))

The images are (N, S, S, 3) uint8 from the session; the grid composes one RGBA picture (tiles,
match tint, labels, tags, the selected frame) and shows it on one canvas (class
``rewidget-grid``). The toolbar holds the view controls; the app appends its own. A preview
(an edit shown but not installed) frames every tile in orange, badges it "preview" and says
so in the caption; side by side it pairs the model as it is ("now") with the preview.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w
import numpy as np
import traitlets as t
from ipywidgets import CallbackDispatcher

from . import pixels as px
from .imagecanvas import ImageCanvas

GAP = 6


class SampleGrid(w.VBox):
    """Samples in a grid on one ipycanvas; click one to select it."""

    #: "edited" shows the current (edited) model, "original" the model before any edit.
    view = t.Unicode("edited")
    #: True shows each sample as an original | edited pair.
    compare = t.Bool(False)
    #: True tints each sample where the current context fires (needs match maps).
    show_match = t.Bool(False)
    #: Grid index of the sample loaded in the painter; -1 when it is not in the grid.
    selected = t.Int(-1)
    #: Samples per row.
    columns = t.Int(4)
    #: Display pixels per image pixel.
    scale = t.Int(2)
    #: Label of the edit the tiles preview, not committed ("" = the tiles show the model).
    preview = t.Unicode("")

    def __init__(self, columns: int = 4, scale: int = 2, **kwargs: Any) -> None:
        self.canvas = ImageCanvas("rewidget-grid")
        self.view_toggle = w.ToggleButtons(
            options=[("Edited", "edited"), ("Original", "original")], value="edited",
            tooltips=["the current model, with the edits", "the model before any edit"],
            style={"button_width": "82px"})
        self.view_toggle.add_class("rewidget-view-toggle")
        self.compare_toggle = w.ToggleButton(description="Side by side", icon="columns",
                                             tooltip="Show each sample as original | edited",
                                             layout=w.Layout(width="130px"))
        self.match_toggle = w.ToggleButton(description="Context match", icon="crosshairs",
                                           tooltip="Tint where the current context fires "
                                                   "(where a rank-1 edit acts)",
                                           layout=w.Layout(width="150px"))
        w.link((self.view_toggle, "value"), (self, "view"))
        w.link((self.compare_toggle, "value"), (self, "compare"))
        w.link((self.match_toggle, "value"), (self, "show_match"))
        self.toolbar = w.HBox([self.view_toggle, self.compare_toggle, self.match_toggle],
                              layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.caption = w.HTML("")
        super().__init__([self.toolbar, self.canvas, self.caption],
                         layout=w.Layout(align_items="flex-start"), **kwargs)
        self.columns, self.scale = columns, scale
        self._labels: list[str] = []
        self._edited: np.ndarray | None = None
        self._original: np.ndarray | None = None
        self._match: np.ndarray | None = None
        self._tags: list[list[tuple[str, tuple[int, int, int]]]] = []
        self._selects = CallbackDispatcher()
        self._quiet = False
        #: How a view change gets redrawn: now (default), or handed to the app's worker.
        self.schedule: Callable[[Callable[[], None]], Any] = lambda fn: fn()
        self.canvas.on_click(self._on_click)
        self.observe(self._changed, names=["view", "compare", "show_match", "selected", "columns",
                                           "preview",
                                           "scale"])

    # -- data ------------------------------------------------------------------------------------
    def set_samples(self, labels: Sequence[str], edited: np.ndarray,
                    original: np.ndarray | None = None, match: np.ndarray | None = None,
                    tags: Sequence[Sequence[tuple[str, tuple[int, int, int]]]] | None = None,
                    selected: int | None = None, preview: str = "") -> None:
        """Images (N, S, S, 3) uint8; ``match`` (N, h, w) floats, 1.0 = as strong as the context;
        ``tags`` small coloured labels per sample; ``selected`` the framed sample; ``preview``
        the label of a not-committed edit that ``edited`` shows ("" = none; ``original`` is
        then the model as it is, for side by side)."""
        n = len(labels)
        if edited.shape[0] != n or (original is not None and original.shape[0] != n):
            raise ValueError(f"{n} labels but {edited.shape[0]} images")
        self._labels = list(labels)
        self._edited, self._original = edited, original
        self._match = None if match is None else np.asarray(match, np.float32)
        self._tags = [list(x) for x in tags] if tags is not None else [[] for _ in range(n)]
        self._quiet = True
        try:
            if selected is not None:
                self.selected = selected
            self.preview = preview
        finally:
            self._quiet = False
        self.redraw()

    @property
    def pixels(self) -> np.ndarray | None:
        """The composed (H, W, 4) picture last sent to the browser."""
        return self.canvas.pixels

    @property
    def needs_original(self) -> bool:
        return self.view == "original" or self.compare

    # -- layout ------------------------------------------------------------------------------------
    def _cols(self) -> int:
        """Samples per row; pairs (compare) take two places, so the picture keeps its width."""
        per_row = max(1, self.columns // 2) if self.compare else self.columns
        return max(1, min(per_row, len(self._labels)))

    def _geometry(self) -> tuple[int, int, int, int, int]:
        """(tile, cell width, rows, canvas width, canvas height)."""
        size = self._edited.shape[1] if self._edited is not None else 64
        tile = size * self.scale
        cell = 2 * tile + 2 if self.compare else tile
        n = max(1, len(self._labels))
        cols = self._cols()
        rows = math.ceil(n / cols)
        return tile, cell, rows, cols * cell + (cols + 1) * GAP, rows * tile + (rows + 1) * GAP

    def tile_origin(self, i: int) -> tuple[int, int]:
        """Canvas pixel of the top-left corner of sample ``i`` (its edited tile in compare)."""
        tile, cell, _, _, _ = self._geometry()
        cols = self._cols()
        r, c = divmod(i, cols)
        x, y = GAP + c * (cell + GAP), GAP + r * (tile + GAP)
        return (x + tile + 2, y) if self.compare else (x, y)

    def index_at(self, x: float, y: float) -> int:
        """The sample under canvas pixel (x, y), or -1."""
        tile, cell, rows, _, _ = self._geometry()
        cols = self._cols()
        c, cx = divmod(int(x) - GAP, cell + GAP)
        r, cy = divmod(int(y) - GAP, tile + GAP)
        if not (0 <= c < cols and 0 <= r < rows and cx < cell and cy < tile):
            return -1
        i = r * cols + c
        return i if i < len(self._labels) else -1

    # -- drawing ---------------------------------------------------------------------------------
    def compose(self) -> np.ndarray | None:
        if self._edited is None:
            return None
        tile, cell, rows, width, height = self._geometry()
        out = px.canvas(height, width, alpha=0)  # the gaps show the theme's background
        show_original = self.view == "original" and self._original is not None
        preview = bool(self.preview)
        for i, label in enumerate(self._labels):
            x, y = self.tile_origin(i)
            tiles: list[tuple[int, np.ndarray, str]] = []
            if self.compare and self._original is not None:
                tiles.append((x - tile - 2, self._original[i], "now" if preview else "before"))
                tiles.append((x, self._edited[i], "preview" if preview else "after"))
            else:
                tiles.append((x, (self._original if show_original else self._edited)[i],
                              "original" if show_original else "preview" if preview else ""))
            for tx, img, badge in tiles:
                if badge == "preview":
                    px.frame(out, tx, y, tile, tile, px.PREVIEW_RGB, 3)
                im = px.upscale(img, self.scale)
                if self.show_match and self._match is not None:
                    im = px.overlay(im, self._match[i], px.MATCH_RGB, 0.55)
                px.paste(out, im, tx, y)
                if badge:
                    bg = (200, 85, 0) if badge == "preview" else (60, 60, 60)
                    px.draw_text(out, badge, (tx + tile - px.text_width(badge, 10) - 4, y + 3),
                                 bg=bg, size=10)
            px.draw_text(out, label, (x + 4, y + tile - 15), size=11)
            tx = (x - tile - 2 if self.compare else x) + 3
            ty = y + 3 + (15 if self.compare else 0)  # side by side: below the before badge
            for text, rgb in self._tags[i] if i < len(self._tags) else []:
                px.draw_text(out, text, (tx + 1, ty), rgb=(0, 0, 0), bg=rgb, size=10)
                tx += px.text_width(text, 10) + 7
            if i == self.selected:
                left = x - tile - 2 if self.compare else x
                px.frame(out, left, y, cell, tile, px.SELECTED_RGB, 3)
        return out

    def _changed(self, _: dict) -> None:
        if not self._quiet:
            self.schedule(self.redraw)

    def redraw(self) -> None:
        if self.needs_original and self._original is None:
            return  # the owner is fetching the originals; drawing edited ones now would mislead
        out = self.compose()
        if out is not None:
            self.canvas.show(out)
            # the caption wraps inside the grid's width: a longer caption (Context match) must
            # not widen the grid's box, which made the app's row wrap and threw the grid below
            # the painter
            width = f"{out.shape[1]}px"
            if self.caption.layout.width != width:
                self.caption.layout.width = width
        mode = "original | edited" if self.compare else self.view
        match = " · yellow tint: where the context fires (1.0 = as strong as painted)" \
            if self.show_match else ""
        note = ""
        if self.preview:
            mode = "now | preview" if self.compare else \
                "original" if self.view == "original" else "preview"
            note = (f"<b class='rewidget-preview-note' style='color:#c85500'>PREVIEW of "
                    f"{html.escape(self.preview)} — not committed.</b> Commit installs it, "
                    "Discard shows the model again.<br>")
        self.caption.value = (f"<span style='font-size:12px;color:var(--jp-ui-font-color2,#666)'>{note}Showing: {mode}"
                              f"{match}. Click a sample to paint on it.</span>")

    # -- events ----------------------------------------------------------------------------------
    def on_select(self, callback: Callable[[int], Any], remove: bool = False) -> None:
        """Call ``callback(index)`` when a sample is clicked."""
        self._selects.register_callback(callback, remove=remove)

    def _on_click(self, x: float, y: float) -> None:
        i = self.index_at(x, y)
        if i >= 0:
            self._selects(i)
