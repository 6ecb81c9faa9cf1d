"""The per-layer suggestion chart: each layer's best candidate, its score and its three meters.

    png = layer_chart(suggestion, order=session.gen.layer_names(), sizes={"main.6": "8×8"})
    widgets.Image(value=png, format="png")

Four small panels share the layer axis: the best score, the effect shown (effect ×
generalisation), the collateral change (/255) and the realism loss, each bar coloured by its
meter (green / amber / red) with the meter thresholds dashed. Rendered with matplotlib's Agg
canvas on a Figure (no pyplot state), so it is safe on the app's worker threads.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from ..session.suggest import (
    COLLATERAL_AMBER,
    COLLATERAL_GREEN,
    EFFECT_AMBER,
    EFFECT_GREEN,
    REALISM_AMBER,
    REALISM_GREEN,
    Suggestion,
)

#: meter colours shared with the candidate list (meters.py)
LEVEL_HEX = {"green": "#2e7d32", "amber": "#d08c00", "red": "#c62828"}
SCORE_HEX = "#4a6fa5"


def layer_chart(suggestion: Suggestion, order: Sequence[str], sizes: dict[str, str] | None = None,
                highlight: str | None = None, width_px: int = 380) -> bytes:
    """PNG bytes of the chart; ``order`` gives the layers' order (the model's), ``sizes`` an
    optional second tick line per layer (its key grid), ``highlight`` the previewed layer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    best = suggestion.by_layer()
    layers = [name for name in order if name in best]
    dpi = 100
    fig = Figure(figsize=(width_px / dpi, 4.0), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True)
    x = list(range(len(layers)))
    cands = [best[name] for name in layers]
    panels = [
        ("best score", [c.score for c in cands], [SCORE_HEX] * len(cands), ()),
        ("effect shown", [c.meters["effect"].value for c in cands],
         [LEVEL_HEX[c.meters["effect"].level] for c in cands], (EFFECT_AMBER, EFFECT_GREEN)),
        ("collateral /255", [c.collateral * 255 for c in cands],
         [LEVEL_HEX[c.meters["collateral"].level] for c in cands],
         (COLLATERAL_GREEN * 255, COLLATERAL_AMBER * 255)),
        ("realism loss", [c.realism for c in cands],
         [LEVEL_HEX[c.meters["realism"].level] for c in cands], (REALISM_GREEN, REALISM_AMBER)),
    ]
    for ax, (title, values, colours, lines) in zip(axes, panels, strict=True):
        edges = ["black" if name == highlight else "none" for name in layers]
        ax.bar(x, values, color=colours, edgecolor=edges, linewidth=1.2, width=0.6)
        for y in lines:
            ax.axhline(y, color="#888", linestyle="--", linewidth=0.7)
        ax.axhline(0, color="#444", linewidth=0.6)
        ax.set_title(title, fontsize=7, loc="left", pad=2)
        ax.tick_params(labelsize=7, length=2)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for i, c in enumerate(cands):  # which rank and rule won at each layer
        axes[0].annotate(f"r{c.rank} {c.rule[:4]}", (i, c.score), ha="center", fontsize=6,
                         xytext=(0, 2 if c.score >= 0 else -8), textcoords="offset points")
    fig.suptitle("best candidate per layer (dashed: meter thresholds)", fontsize=8)
    ticks = [f"{name}\n{sizes[name]}" if sizes and name in sizes else name for name in layers]
    axes[-1].set_xticks(x, ticks, fontsize=7)
    fig.subplots_adjust(left=0.12, right=0.98, top=0.9, bottom=0.12, hspace=0.55)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=dpi, facecolor="white")
    return out.getvalue()
