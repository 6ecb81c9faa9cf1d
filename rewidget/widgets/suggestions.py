"""The suggestion panel: ranked candidates with their meters, the per-layer chart, Commit.

    panel = SuggestionPanel()
    panel.show(suggestion, chart_png)      # rows: the best per layer and the best overall
    panel.selected                          # the previewed row (the app previews it on the grid)
    panel.candidate                         # its Candidate, or None
    panel.on_commit(lambda: ...); panel.on_discard(lambda: ...)
    panel.mark_stale("the selections changed")   # the list stays, greyed, and cannot commit

Each row is a button (class ``rewidget-candidate``) with three meter dots: effect, collateral,
realism, green / amber / red, the one-line why on hover; the selected row's whys are written
out beneath. The app owns what a click does (preview, the red-meter gate); the panel only shows.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import traitlets as t
from ipywidgets import CallbackDispatcher

from ..session.suggest import Candidate, Suggestion
from .chart import LEVEL_HEX

METERS = ("effect", "collateral", "realism")
MAX_ROWS = 8


def listed(suggestion: Suggestion, n: int = MAX_ROWS) -> list[Candidate]:
    """What the panel lists: each layer's best and then the best overall, by score, ``n`` at most."""
    chosen = list(suggestion.by_layer().values())
    for c in suggestion.candidates:
        if len(chosen) >= n:
            break
        if c not in chosen:
            chosen.append(c)
    rank = {id(c): i for i, c in enumerate(suggestion.candidates)}
    return sorted(chosen, key=lambda c: rank[id(c)])[:n]


def short_label(c: Candidate) -> str:
    """'main.6 · r6 · whitened' (+ any further setting the label names), for a row button."""
    parts = c.label().split(" · ")
    return " · ".join(p.replace("rank ", "r") if p.startswith("rank ") else p for p in parts)


def dot(level: str, title: str = "", size: int = 10) -> str:
    return (f"<span class='rewidget-meter rewidget-meter-{level}' title='{html.escape(title, True)}'"
            f" style='display:inline-block;width:{size}px;height:{size}px;border-radius:50%;"
            f"background:{LEVEL_HEX[level]};vertical-align:middle;margin:0 2px'></span>")


def meter_dots(c: Candidate) -> str:
    """Three dots with a letter each (E, C, R); hovering one shows its why."""
    return "".join(f"{dot(c.meters[m].level, f'{m} {c.meters[m].level}: {c.meters[m].why}')}"
                   f"<span style='font-size:10px;color:var(--jp-ui-font-color2,#777);margin-right:3px'>{m[0].upper()}</span>"
                   for m in METERS)


def meter_lines(c: Candidate) -> str:
    """The three meters written out, one line each (the selected candidate)."""
    rows = []
    for m in METERS:
        meter = c.meters[m]
        rows.append(f"<div style='margin:1px 0'>{dot(meter.level)} <b>{m}</b> "
                    f"<span style='color:{LEVEL_HEX[meter.level]}'>{meter.level}</span>: "
                    f"{html.escape(meter.why)}</div>")
    return "".join(rows)


def red_reasons(c: Candidate) -> list[str]:
    """Why committing needs a second click: the red collateral / realism meters."""
    return [f"{m}: {c.meters[m].why}" for m in ("collateral", "realism")
            if c.meters[m].level == "red"]


class SuggestionPanel(w.VBox):
    """Candidates of one suggestion; click one to preview it, Commit to install it."""

    #: Index (into ``candidates``) of the previewed row; -1 for none.
    selected = t.Int(-1)
    #: True after a first Commit click on a candidate whose collateral or realism is red.
    armed = t.Bool(False)
    #: "empty" (nothing suggested yet), "ready", "stale" (selections or weights changed since)
    #: or "committed".
    state = t.Unicode("empty")
    #: True while a heavy task runs: rows and buttons are disabled.
    busy = t.Bool(False)

    def __init__(self, **kwargs: Any) -> None:
        self.candidates: list[Candidate] = []
        self.suggestion: Suggestion | None = None
        self.reason = ""  # why the suggestion is stale
        self.title = w.HTML("")
        self.title.add_class("rewidget-suggest-title")
        self._rows: list[tuple[w.Button, w.HTML, w.HBox]] = []
        for i in range(MAX_ROWS):  # a fixed pool: no widgets are created per suggestion
            b = w.Button(layout=w.Layout(width="250px", height="26px"))
            b.add_class("rewidget-candidate")
            b.on_click(lambda _, i=i: self._pick(i))
            info = w.HTML("")
            row = w.HBox([b, info], layout=w.Layout(align_items="center", display="none"))
            self._rows.append((b, info, row))
        self.detail = w.HTML("")
        self.detail.add_class("rewidget-suggest-detail")
        self.commit_button = w.Button(description="Commit", icon="check", button_style="success",
                                      tooltip="Install the previewed edit (Undo is exact)",
                                      layout=w.Layout(width="auto"))
        self.commit_button.add_class("rewidget-commit")
        self.discard_button = w.Button(description="Discard", icon="times",
                                       tooltip="Stop previewing; the grid shows the model again",
                                       layout=w.Layout(width="auto"))
        self.discard_button.add_class("rewidget-discard")
        self.chart = w.Image(format="png", layout=w.Layout(width="380px", display="none"))
        self.chart.add_class("rewidget-suggest-chart")
        self._commits = CallbackDispatcher()
        self._discards = CallbackDispatcher()
        self.commit_button.on_click(lambda _: self._commits())
        self.discard_button.on_click(lambda _: self._discards())
        self.buttons = w.HBox([self.commit_button, self.discard_button],
                              layout=w.Layout(align_items="center"))
        super().__init__([self.title, *[r for _, _, r in self._rows], self.detail, self.buttons,
                          self.chart], layout=w.Layout(width="470px", align_items="flex-start"),
                         **kwargs)
        self.add_class("rewidget-suggestions")
        self.observe(lambda _: self._draw(), names=["selected", "armed", "state", "busy"])
        self._note = ""
        self._draw()

    # -- data ------------------------------------------------------------------------------------
    @property
    def candidate(self) -> Candidate | None:
        """The previewed candidate (None when nothing is selected)."""
        if 0 <= self.selected < len(self.candidates):
            return self.candidates[self.selected]
        return None

    def show(self, suggestion: Suggestion, chart_png: bytes | None = None,
             selected: int = 0) -> None:
        """List ``suggestion``'s candidates (see ``listed``) and select one."""
        self.suggestion, self.candidates = suggestion, listed(suggestion)
        self._note = ""
        if chart_png:
            self.chart.value = chart_png
        self.chart.layout.display = "block" if chart_png else "none"
        with self.hold_trait_notifications():
            self.state, self.armed = "ready", False
            self.selected = selected if self.candidates else -1
        self._draw()

    def mark_stale(self, reason: str) -> None:
        """The suggestion no longer fits the session (``reason`` says why); it cannot commit."""
        if self.state != "ready":
            return
        self.reason = reason
        self._note = f"Out of date: {html.escape(reason)}. Press <b>Suggest</b> again."
        with self.hold_trait_notifications():
            self.state, self.armed = "stale", False

    def mark_committed(self, text: str) -> None:
        self._note = html.escape(text)
        with self.hold_trait_notifications():
            self.state, self.armed = "committed", False

    def clear(self) -> None:
        self.suggestion, self.candidates, self._note = None, [], ""
        with self.hold_trait_notifications():
            self.state, self.armed, self.selected = "empty", False, -1

    # -- events ----------------------------------------------------------------------------------
    def on_commit(self, callback: Callable[[], Any], remove: bool = False) -> None:
        """Call ``callback()`` when Commit is clicked (the app decides about the gate)."""
        self._commits.register_callback(callback, remove=remove)

    def on_discard(self, callback: Callable[[], Any], remove: bool = False) -> None:
        self._discards.register_callback(callback, remove=remove)

    def _pick(self, i: int) -> None:
        if self.state == "ready" and 0 <= i < len(self.candidates) and not self.busy:
            with self.hold_trait_notifications():
                self.armed = False
                self.selected = i

    # -- drawing ---------------------------------------------------------------------------------
    def _draw(self) -> None:
        sug, ready = self.suggestion, self.state == "ready"
        usable = ready and not self.busy
        if sug is None or self.state == "empty":
            self.title.value = ("<div style='font-size:12px;color:var(--jp-ui-font-color2,#555);max-width:460px'>"
                                "<b>Suggest</b> solves your selections at every layer × rank × "
                                "direction rule, scores each on held-out samples and previews "
                                "the best here before anything is installed.</div>")
        else:
            skipped = f", {len(sug.skipped)} skipped" if sug.skipped else ""
            self.title.value = (f"<div style='font-size:12px'><b>Suggestion</b>: "
                                f"{len(sug.candidates)} settings in {sug.seconds:.1f} s{skipped}"
                                " · best first · click one to preview it · dots: "
                                "<b>E</b>ffect, <b>C</b>ollateral, <b>R</b>ealism</div>")
        for i, (b, info, row) in enumerate(self._rows):
            if i >= len(self.candidates) or self.state == "empty":
                row.layout.display = "none"
                continue
            c = self.candidates[i]
            row.layout.display = "flex"
            with b.hold_sync():
                b.description = short_label(c)
                b.tooltip = c.label() + "\n" + "\n".join(f"{m}: {c.meters[m].level} — {c.meters[m].why}"
                                      for m in METERS)
                b.button_style = "info" if i == self.selected and ready else ""
                b.disabled = not usable
            tags = " ★" if sug is not None and c is sug.best else ""
            tags += " · front" if c.pareto else ""
            info.value = (f"<span style='font-size:11px;white-space:nowrap;"
                          f"{'' if ready else 'opacity:.5;'}' title='★ best score · front: on "
                          "the Pareto front of effect, collateral and realism'>"
                          f"{meter_dots(c)} score {c.score:+.3f}"
                          f"<span style='color:var(--jp-ui-font-color2,#777)'>{tags}</span></span>")
        c = self.candidate
        detail = ""
        if c is not None and ready:
            detail = (f"<div style='font-size:11px;line-height:15px;max-width:460px'>"
                      f"<b>{html.escape(c.label())}</b> (previewed on the grid; ΔW/W "
                      f"{c.relative_update:.2f}){meter_lines(c)}</div>")
            if self.armed:
                why = "<br>".join(html.escape(r) for r in red_reasons(c))
                detail += (f"<div class='rewidget-gate' style='font-size:12px;line-height:16px;"
                           f"color:#9b1c1c;"
                           f"background:#fdeeee;border-left:3px solid #c62828;padding:2px 6px;"
                           f"max-width:450px'><b>Likely to damage the images.</b> {why}<br>"
                           "Click <b>Commit anyway?</b> to install it regardless, or pick "
                           "another candidate.</div>")
        if self._note:
            tone = "rw-good" if self.state == "committed" else "rw-warn"
            detail += (f"<div class='rewidget-suggest-note {tone}' style='font-size:12px;"
                       f"max-width:460px'>{self._note}</div>")
        self.detail.value = detail
        with self.commit_button.hold_sync():
            blocked = c is not None and c.blocked
            if self.armed:
                self.commit_button.description = "Commit anyway?"
                self.commit_button.button_style = "danger"
                self.commit_button.icon = "exclamation-triangle"
            else:
                self.commit_button.description = "Commit"
                self.commit_button.button_style = "warning" if blocked else "success"
                self.commit_button.icon = "check"
            self.commit_button.disabled = not usable or c is None
        self.discard_button.disabled = not usable or c is None
        self.buttons.layout.display = "flex" if self.state != "empty" else "none"
        if self.state == "empty":
            self.chart.layout.display = "none"

