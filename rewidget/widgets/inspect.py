"""Layers and heatmaps: choose the edit layer; see which channels of each layer the region hits.

    insp = LayerInspector()
    insp.set_layers(session.layers(), current="main.6")     # selector options with resolutions
    insp.set_layers(session.layers(), current=AUTO)         # "auto (suggested)": no layer picked
    insp.on_pick(lambda name: ...)                          # the user picked (AUTO or a layer)
    insp.set_heatmaps(rgb, session.channel_heatmaps(3, mask), "seed 3")
    insp.selector                                           # the Dropdown (the app places it)
    insp.panel                                              # heatmap thumbnails + large view

Thumbnails (canvas class ``rewidget-heatmaps``) show each layer's top channels for the painted
region over a grey copy of the sample; a click shows one large (``rewidget-heatmap-large``).
``insp.side`` holds what the app shows beside them (the suggestion's per-layer chart).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w
import numpy as np
import traitlets as t
from ipywidgets import CallbackDispatcher

from . import pixels as px
from .imagecanvas import ImageCanvas

THUMB = 64
LABEL_W = 118
GAP = 6
ROW_H = THUMB + 18
LARGE = 256
AUTO = ""  # the selector's "auto (suggested)" value: Rewrite uses the suggestion's layer
AUTO_LABEL = "auto (suggested) · Rewrite uses the best layer"


def layer_label(info: dict) -> str:
    """'main.6 · 8×8 keys (256 ch) → 16×16 · stats ✓' from one ``session.layers()`` entry."""
    def res(shape: Sequence[int]) -> str:
        return "×".join(str(s) for s in shape[1:]) if len(shape) == 3 else "1×1"

    keys, values = info["keys"], info["values"]
    stats = " · stats ✓" if info.get("stats") else ""
    return (f"{info['name']} · {res(keys)} keys ({keys[0]} ch) → {res(values)} "
            f"({values[0]} ch){stats}")


class LayerInspector(w.VBox):
    """The layer selector and the per-layer channel heatmaps of the painted region."""

    #: The layer chosen in the selector (the app makes it the edit layer); "" = auto (suggested).
    layer = t.Unicode("")
    #: "layer/position" of the enlarged heatmap, "" for none.
    enlarged = t.Unicode("")

    def __init__(self, **kwargs: Any) -> None:
        self.selector = w.Dropdown(description="Layer", options=[],
                                   tooltip="The layer whose rule is rewritten; auto: the one "
                                           "Suggest finds best for your selections",
                                   layout=w.Layout(width="430px"),
                                   style={"description_width": "44px"})
        self.selector.add_class("rewidget-layer")
        self.canvas = ImageCanvas("rewidget-heatmaps")
        self.large = ImageCanvas("rewidget-heatmap-large")
        self.caption = w.HTML("")
        self.large_caption = w.HTML("")
        self.side = w.VBox([], layout=w.Layout(align_items="flex-start", margin="0 0 0 12px"))
        self.panel = w.VBox([self.caption, w.HBox(
            [self.canvas, w.VBox([self.large, self.large_caption],
                                 layout=w.Layout(align_items="flex-start", margin="0 0 0 12px")),
             self.side],
            layout=w.Layout(align_items="flex-start", flex_flow="row wrap"))])
        super().__init__([self.panel], **kwargs)
        self._image: np.ndarray | None = None
        self._heat: dict[str, list[dict]] = {}
        self._rows: list[str] = []
        self._setting = False
        self._picks = CallbackDispatcher()
        self.selector.observe(self._on_pick, names="value")
        self.canvas.on_click(self._on_click)
        #: How a click's redraw runs: now (default), or handed to the app's worker.
        self.schedule: Callable[[Callable[[], None]], Any] = lambda fn: fn()
        self.observe(lambda _: self.schedule(self._draw), names="enlarged")
        self.set_heatmaps(None, {}, "")

    # -- layers ---------------------------------------------------------------------------------
    def set_layers(self, layers: Sequence[dict], current: str) -> None:
        """Options from ``session.layers()`` after "auto (suggested)"; selects ``current`` (a
        layer name or AUTO) without calling ``on_pick``."""
        options = [(AUTO_LABEL, AUTO)] + [(layer_label(info), info["name"]) for info in layers]
        self._setting = True
        try:
            with self.selector.hold_sync():
                if list(self.selector.options) != options:
                    self.selector.options = options
                self.selector.value = current
            self.layer = current
        finally:
            self._setting = False

    def on_pick(self, callback: Callable[[str], Any], remove: bool = False) -> None:
        """Call ``callback(name)`` when the user picks a layer (AUTO: "auto (suggested)")."""
        self._picks.register_callback(callback, remove=remove)

    def _on_pick(self, change: dict) -> None:
        if not self._setting and change["new"] is not None:
            self.layer = change["new"]
            self._picks(change["new"])

    # -- heatmaps -------------------------------------------------------------------------------
    def set_heatmaps(self, image: np.ndarray | None, heat: dict[str, list[dict]],
                     where: str, sizes: dict[str, str] | None = None) -> None:
        """``heat`` as from ``session.channel_heatmaps``; ``where`` names the painted sample."""
        self._image, self._heat = image, dict(heat)
        self._rows = list(self._heat)
        self._sizes = sizes or {}
        if image is None or not heat:
            self.caption.value = ("<span style='color:var(--jp-ui-font-color2,#666);font-size:12px'>Paint a region (context "
                                  "or copy) on the painter's sample to see which channels of "
                                  "each layer respond to it.</span>")
        else:
            self.caption.value = (f"<span style='font-size:12px'>Top channels of each layer for "
                                  f"the region painted on <b>{html.escape(str(where))}</b> "
                                  "(activation inside vs "
                                  "outside, high = specific to the region). Click one to enlarge."
                                  "</span>")
        if self.enlarged and self.enlarged.split("/")[0] not in self._heat:
            self.enlarged = ""
        self._draw()

    def _draw(self) -> None:
        self.canvas.show(self.compose())
        self.large.show(self.compose_large())

    def compose(self) -> np.ndarray:
        if self._image is None or not self._heat:
            return px.canvas(THUMB // 2, LABEL_W + 4 * (THUMB + GAP))
        ncols = max(len(v) for v in self._heat.values())
        out = px.canvas(len(self._rows) * ROW_H + GAP, LABEL_W + ncols * (THUMB + GAP) + GAP)
        for r, layer in enumerate(self._rows):
            y = GAP + r * ROW_H
            px.draw_text(out, layer, (4, y + 18), rgb=(20, 20, 20), bg=None, size=12)
            if layer in self._sizes:
                px.draw_text(out, self._sizes[layer], (4, y + 36), rgb=(110, 110, 110), bg=None,
                             size=10)
            for c, ch in enumerate(self._heat[layer]):
                x = LABEL_W + c * (THUMB + GAP)
                px.paste(out, px.heat_over(self._image, ch["map"], THUMB), x, y)
                px.draw_text(out, f"ch {ch['channel']} · {ch['score']:.2f}", (x, y + THUMB + 2),
                             rgb=(60, 60, 60), bg=None, size=10)
                if self.enlarged == f"{layer}/{c}":
                    px.frame(out, x, y, THUMB, THUMB, px.SELECTED_RGB, 2)
        return out

    def compose_large(self) -> np.ndarray:
        if not self.enlarged or self._image is None:
            self.large_caption.value = ""
            return px.canvas(1, 1)
        layer, pos = self.enlarged.split("/")
        ch = self._heat[layer][int(pos)]
        self.large_caption.value = (f"<span style='font-size:12px'><b>{html.escape(layer)}</b>, "
                                    "channel "
                                    f"{ch['channel']} (score {ch['score']:.2f}); map "
                                    f"{ch['map'].shape[0]}×{ch['map'].shape[1]}</span>")
        return px.heat_over(self._image, ch["map"], LARGE)

    def index_at(self, x: float, y: float) -> tuple[str, int] | None:
        r, ry = divmod(int(y) - GAP, ROW_H)
        c, cx = divmod(int(x) - LABEL_W, THUMB + GAP)
        if r < 0 or r >= len(self._rows) or ry >= THUMB or c < 0 or cx >= THUMB:
            return None
        layer = self._rows[r]
        return (layer, c) if c < len(self._heat[layer]) else None

    def _on_click(self, x: float, y: float) -> None:
        hit = self.index_at(x, y)
        if hit is not None:
            key = f"{hit[0]}/{hit[1]}"
            self.enlarged = "" if self.enlarged == key else key
