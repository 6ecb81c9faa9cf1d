"""Suggest, preview, commit: the RewriteApp part that turns a suggestion into an edit (a mixin).

    app.suggest(); app.wait()        # every layer × rank × rule solved, the best previewed
    app.pick(2)                      # preview another listed candidate (nothing is installed)
    app.commit(); app.wait()         # install it; a red collateral/realism meter asks twice
    app.discard()                    # stop previewing: the grid shows the model again

Rewrite with the layer on "auto (suggested)" and the rank on "auto" runs the same suggestion and
commits its best (or the candidate being previewed), behind the same red-meter gate: a blocked
candidate stops at the preview and Commit turns into "Commit anyway?". A picked layer or rank
restricts the suggestion to it; with both picked, Rewrite solves that one setting as before.
Any selection change or edit makes a shown suggestion stale, and the status line says so.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..session.suggest import RANKS, Candidate, default_layers
from .chart import layer_chart
from .suggestions import red_reasons

#: the session events that make a shown suggestion stale, and how the status line says why
INVALIDATING = {
    "selection": "the selections changed",
    "edit": "an edit was installed",
    "undo": "an edit was undone",
    "redo": "an edit was redone",
    "reset": "the edits were reset",
    "strength": "an edit's strength changed",
}


class SuggestFlow:
    """Suggest / preview / commit for RewriteApp (needs its session, tasks, panel and grid)."""

    session: Any
    layer_choice: str
    rank_choice: int

    def _init_suggest(self) -> None:
        self._version = 0  # counts selection and weight changes; a suggestion remembers its own
        self._scope: tuple | None = None  # (kind, layers, ranks, solver) of the shown suggestion
        self._preview: Candidate | None = None  # what the grid previews (None: the model)
        self._previews: dict[tuple, np.ndarray] = {}  # (candidate id, samples) → images
        self.last_pick_at = 0.0  # time.time() of the last candidate click (for latency checks)
        self.last_preview_seconds = 0.0  # click → preview composed on the grid, kernel side

    # -- what a suggestion covers ----------------------------------------------------------------
    def suggest_layers(self) -> list[str]:
        """The picked layer, or every layer with a spatial key grid (where a painted region
        means something)."""
        if self.layer_choice:
            return [self.layer_choice]
        return default_layers(self.session)

    def suggest_ranks(self) -> tuple[int, ...]:
        return (self.rank_choice,) if self.rank_choice else tuple(RANKS)

    def _current_scope(self, kind: str | None) -> tuple:
        return (kind, tuple(self.suggest_layers()), self.suggest_ranks(), self.session.solver)

    # -- actions ---------------------------------------------------------------------------------
    def suggest(self, kind: str | None = None, then_commit: bool = False) -> bool:
        """Solve the selections at every layer × rank × direction rule (background), list the
        candidates and preview the best on the grid. Nothing is installed unless
        ``then_commit`` (Rewrite on auto), and then only a candidate with no red meter."""
        s = self.session
        layers, ranks, solver = self.suggest_layers(), self.suggest_ranks(), s.solver
        sizes = {i["name"]: "×".join(map(str, i["keys"][1:])) for i in s.layers()
                 if len(i["keys"]) == 3}
        scope = f"{len(layers)} layer{'s' if len(layers) != 1 else ''} × rank " \
                f"{', '.join(map(str, ranks))}"

        def job(progress, cancel):
            version = self._version  # strokes queued before the click are in (tasks.py)
            sug = s.suggest(layers=layers, ranks=ranks, kind=kind, solver=solver,
                            progress=progress, cancel=cancel)
            return version, sug, layer_chart(sug, s.gen.layer_names(), sizes,
                                             highlight=sug.best.layer)

        def done(result, secs: float) -> None:
            version, sug, chart = result
            best = sug.best
            self._scope = (best.edit.request.kind, tuple(layers), tuple(ranks), solver)
            self._previews.clear()
            self.suggestions.show(sug, chart, 0)
            if version != self._version:
                self.suggestions.mark_stale("the selections or edits changed while it ran")
                self.messages.warn("The selections changed while the suggestion ran; press "
                                   "Suggest again.")
                return
            levels = ", ".join(f"{m} {best.meters[m].level}" for m in best.meters)
            if then_commit and not best.blocked:
                self._install(best, False, f" — the best of {len(sug.candidates)} settings, "
                                           f"suggested in {secs:.1f} s")
                return
            self._show_preview(self.suggestions.candidate)
            if then_commit:
                self.suggestions.armed = True
                self.messages.warn(f"Not installed: the suggested {best.label()} is likely to "
                                   f"damage the images ({'; '.join(red_reasons(best))}). It is "
                                   "previewed on the grid: click Commit anyway? to install it, "
                                   "or pick another candidate.")
            else:
                self.messages.success(f"Suggested in {secs:.1f} s: {best.label()} ({levels}), "
                                      "previewed on the grid — not committed. Click a candidate "
                                      "to compare, Commit to install.")

        return self.tasks.run(f"Suggesting a layer and rank ({scope}, {solver})", job, done)

    def pick(self, index: int) -> None:
        """Preview listed candidate ``index`` on the grid (as a click on its row does)."""
        self.suggestions._pick(int(index))

    def commit(self, confirm: bool = False) -> None:
        """Install the previewed candidate. One whose collateral or realism meter is red needs
        a second call (Commit turns into "Commit anyway?") or ``confirm=True``."""
        self._commit(confirm, from_button=True)

    def discard(self) -> None:
        """Stop previewing; the list stays (click a candidate to preview it again)."""
        self.suggestions.selected = -1

    # -- internals -------------------------------------------------------------------------------
    def _commit(self, confirm: bool, from_button: bool) -> None:
        panel = self.suggestions
        c = panel.candidate
        if panel.state != "ready" or c is None:
            self.messages.warn({
                "stale": "Nothing to commit: the suggestion is out of date; press Suggest again.",
                "committed": "Already committed; Suggest again for another edit.",
            }.get(panel.state, "Nothing to commit: press Suggest and pick a candidate first."))
            return
        if self._refuse_while_busy("commit"):
            return
        if c.blocked and not confirm and not (from_button and panel.armed):
            panel.armed = True
            self.messages.warn(f"{c.label()} is likely to damage the images "
                               f"({'; '.join(red_reasons(c))}). Look at the preview; click "
                               "Commit anyway? to install it regardless.")
            return
        self._submit(lambda: self._install(c, c.blocked), "Committing")

    def _install(self, c: Candidate, confirm: bool, how: str = "") -> None:
        """Commit ``c`` (on a worker thread) if it is still the one previewed."""
        panel = self.suggestions
        if panel.state != "ready" or panel.candidate is not c:
            self.messages.warn("Not committed: the suggestion changed in the meantime; look at "
                               "the preview and commit again.")
            return
        strength = float(self.strength.value)
        edit = self.session.commit(c, confirm=confirm, strength=strength)
        gate = " (confirmed despite a red meter)" if confirm else ""
        at = f" at strength {strength:.2f}" if strength != 1.0 else ""
        no = self.session.history.label(edit)
        panel.mark_committed(f"Committed {c.label()} as edit {no}{at}{gate}. Undo is "
                             "exact; change the selections and Suggest again for another edit.")
        dropped = self.session.history.dropped_redo
        lost = (f" It replaced {dropped} undone edit(s) that Redo would have brought back."
                if dropped else "")
        self.messages.success(f"Edit {no} installed ({edit.request.kind} @ {c.layer}, rank "
                              f"{c.rank}, {c.rule}){how}{gate}.{lost}")

    def _rewrite_by_suggestion(self, kind: str) -> bool:
        """Rewrite / Erase when the layer or the rank is on auto."""
        panel = self.suggestions
        if panel.state == "ready" and panel.candidate is not None \
                and self._scope == self._current_scope(kind):
            self._commit(False, from_button=False)  # the previewed one; a red meter asks
            return True
        return self.suggest(kind, then_commit=True)

    def _show_preview(self, c: Candidate | None) -> None:
        self._preview = c
        self._mark("grid", "status")

    def _on_pick(self, change: dict) -> None:
        self.last_pick_at = time.time()
        self._show_preview(self.suggestions.candidate if self.suggestions.state == "ready"
                           else None)

    def _invalidate(self, event: str) -> None:
        """A session event: a shown suggestion no longer fits (selections or weights changed)."""
        if event not in INVALIDATING:
            return
        self._version += 1
        if self.suggestions.state == "ready":
            self.suggestions.mark_stale(INVALIDATING[event])
        if self._preview is not None:
            self._preview = None
            self._mark("grid")
        self._mark("status")

    def _preview_images(self, c: Candidate, samples: list) -> np.ndarray:
        """(N, S, S, 3) uint8 of ``samples`` with ``c`` added to the weights (none written).
        Call with the session lock held."""
        key = (id(c), tuple(samples))
        if key not in self._previews:
            images = self.session.preview(c, samples)
            if len(self._previews) > 16:
                self._previews.clear()
            self._previews[key] = images
        return self._previews[key]
