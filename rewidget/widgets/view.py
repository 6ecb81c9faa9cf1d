"""How RewriteApp shows the session: stale parts are marked, one coalesced job redraws them.

    app._mark("grid", "tray")   # from any thread (session events, clicks): cheap
    # on the light worker thread: _refresh() renders only what is stale, grid first

Session events say what changed (app._STALE); rendering reuses the session's cached features
and an image cache keyed by the history state, so the painter, the tray and the history
thumbnails take their pictures from the grid's render. Reads of the session happen under
its lock, on the worker thread, never on the kernel's main thread.
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any

import numpy as np

from ..core.requests import Sample
from . import pixels as px
from .history import HistoryRow
from .painter import _shift


class SessionView:
    """The RewriteApp part that turns session state into widget state (a mixin)."""

    session: Any

    def _init_view(self) -> None:
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._pending_strokes = 0  # strokes handed to the worker, not yet in the session
        self._images: dict[tuple, np.ndarray] = {}  # (Sample, history token, original) → RGB
        self._grid_key: tuple | None = None
        self._grid_edited: np.ndarray | None = None
        self._patch_key: tuple | None = None
        self._thumbs: dict[int, np.ndarray] = {}

    def _stats_ready(self, layer: str) -> bool:
        """Are the layer's key statistics in memory (so match and rewrite need no collection)?"""
        return any(info["name"] == layer and info["stats"] for info in self.session.layers())

    # -- marking and refreshing ----------------------------------------------------------------
    def _mark(self, *parts: str) -> None:
        """Note what is stale; one refresh job (coalesced) redraws it on the worker thread."""
        with self._dirty_lock:
            first = not self._dirty
            self._dirty.update(parts)
        if first:
            self.tasks.submit(self._refresh, "Updating the view")

    def _refresh(self) -> None:
        with self._dirty_lock:
            parts, self._dirty = self._dirty, set()
        # the grid first: it is what the user watches after an edit, and it renders the
        # images the painter, tray and history then take from the cache
        steps = [("status", self._refresh_status), ("layers", self._refresh_layers),
                 ("grid", self._refresh_grid), ("painter", self._refresh_painter),
                 ("tray", self._refresh_tray),
                 ("history", self._refresh_history), ("inspect", self._refresh_inspect)]
        if "show-edited" in parts and self.grid.view == "original":
            self.grid.view = "edited"
        for name, step in steps:
            if name in parts:
                try:
                    step()
                except Exception as e:  # noqa: BLE001 - one failing panel must not stop others
                    self.messages.report(e, f"Updating the {name}")

    def _token(self) -> tuple:
        s = self.session
        return s.history.state_token(s.gen.layer_names())

    def _image(self, sample: Sample, original: bool = False) -> np.ndarray:
        """(S, S, 3) uint8 of one sample from the current model (or the original), cached."""
        key = (sample, "original" if original else self._token())
        if key not in self._images:
            with self.session.lock:
                img = self.session.render([sample], original=original)[0]
            self._remember(key, img)
        return self._images[key]

    def _remember(self, key: tuple, img: np.ndarray) -> None:
        if len(self._images) > 512:
            self._images.clear()
        self._images[key] = img

    def _refresh_layers(self) -> None:
        s = self.session
        self.inspector.set_layers(s.layers(), self.layer_choice)
        if self.rank.value != self.rank_choice:
            self.rank.value = self.rank_choice
        if self.solver.value != s.solver:
            self.solver.value = s.solver
        self._refresh_toggles()

    def _refresh_toggles(self) -> None:
        """The checkboxes mirror the session (set in code, or by a loaded request)."""
        s = self.session
        if self.protect.value != (s.protect > 0):
            self.protect.value = s.protect > 0
        if self.replace.value != s.replace:
            self.replace.value = s.replace

    def _refresh_grid(self) -> None:
        s = self.session
        with s.lock:
            samples = list(s.grid)
            token = self._token()
            key = (tuple(samples), token)
            if key != self._grid_key or self._grid_edited is None:
                self._grid_edited = s.render(samples)
                self._grid_key = key
                for smp, img in zip(samples, self._grid_edited, strict=True):
                    self._remember((smp, token), img)
            shown, original = self._grid_edited, None
            preview = self._preview
            if preview is not None:  # an edit shown, not installed: "now" | preview side by side
                shown = self._preview_images(preview, samples)
                if self.grid.compare:
                    original = self._grid_edited
            if original is None and self.grid.needs_original:
                original = s.render(samples, original=True)  # the session caches the forward
            match = None
            if self.grid.show_match and s.context and self._stats_ready(s.layer):
                match = s.context_match(samples).detach().cpu().numpy()
        labels = [smp.label() + (f" · {float(match[i].max()):.2f}" if match is not None else "")
                  for i, smp in enumerate(samples)]
        sel = Sample(self.sample)
        self.grid.set_samples(labels, shown, original, match,
                              [self._tags(smp) for smp in samples],
                              selected=next((i for i, smp in enumerate(samples) if smp == sel), -1),
                              preview=preview.label() if preview is not None else "")
        if preview is not None and self.last_pick_at:
            self.last_preview_seconds = time.time() - self.last_pick_at
            self.last_pick_at = 0.0

    def _tags(self, sample: Sample) -> list[tuple[str, tuple[int, int, int]]]:
        s, tags = self.session, []
        if any(c.sample == sample for c in s.context):
            tags.append(("context", px.CONTEXT_RGB))
        if s.copy is not None and s.copy.sample == sample:
            tags.append(("copy", px.COPY_RGB))
        pasted = [p.sample for _, p in s.more_pastes] + ([s.paste.sample] if s.paste else [])
        if sample in pasted:
            tags.append(("paste", px.PASTE_RGB))
        if any(k.sample == sample for k in s.keep):
            tags.append(("keep", px.KEEP_RGB))
        return tags

    def _masks_for(self, sample: Sample) -> tuple[np.ndarray | None, ...]:
        """The session's context, copy and keep masks on ``sample`` (uint8) or None."""
        s = self.session
        ctx = [c.mask for c in s.context if c.sample == sample]
        context = np.maximum.reduce(ctx) if ctx else None
        copy = s.copy.mask if s.copy is not None and s.copy.sample == sample else None
        keep = next((k.mask for k in s.keep if k.sample == sample), None)
        return context, copy, keep

    def _build_patch(self) -> None:
        s, p = self.session, self.painter
        copy = s.copy
        if copy is None:
            if p.paste_patch:
                p.clear("paste")
            self._patch_key = None
            return
        key = (copy.sample, copy.mask.tobytes(), self._token())
        if key != self._patch_key or not p.paste_patch:
            p.set_paste_patch(self._image(copy.sample), copy.mask.astype(np.float32) / 255.0)
            self._patch_key = key

    def _refresh_painter(self) -> None:
        s, p = self.session, self.painter
        sample = Sample(self.sample)
        img = px.to_rgba(self._image(sample))
        with self._dirty_lock:
            pending = self._pending_strokes > 0
        before = (p.context_mask, p.copy_mask, p.paste_offset, p.paste_active, p.keep_mask)
        context, copy, keep = self._masks_for(sample)
        paste = s.paste if s.paste is not None and s.paste.sample == sample else None
        with p.hold_sync():
            if p.image != img.tobytes() or (p.height, p.width) != img.shape[:2]:
                p.set_image(img)  # clears masks and the paste placement; restored below
            self._build_patch()
            if pending:  # a stroke is on its way to the session: keep what the user sees
                p.context_mask, p.copy_mask, p.keep_mask = before[0], before[1], before[4]
                p.paste_offset, p.paste_active = before[2], before[3]
            else:
                p.set_mask("context", context)
                p.set_mask("copy", copy)
                p.set_mask("keep", keep)
                if paste is not None and p.paste_patch:
                    p.paste_offset = [int(round(v)) for v in paste.offset]
                    p.paste_active = True
                else:
                    p.paste_active = False
            p.kept_mask = self._kept_mask(sample, img.shape[:2])
        self._caption()

    def _kept_mask(self, sample: Sample, size: tuple[int, int]) -> bytes:
        """uint8 bytes: where the pastes kept with Paste again land on ``sample`` (b"": none)."""
        s = self.session
        with s.lock:
            kept = [(c, q) for c, q in s.more_pastes if q.sample == sample]
        if not kept:
            return b""
        out = np.zeros(size, np.uint8)
        for copy, paste in kept:  # whole pixels, as the painter places the paste patch
            dx, dy = (int(round(v)) for v in paste.offset)
            out = np.maximum(out, _shift((copy.mask > 127).astype(np.uint8), dx, dy))
        return out.tobytes()

    def _caption(self) -> None:
        tool = self.painter.tool
        what = {"context": "paint where the rule applies",
                "copy": "paint the object to copy",
                "paste": "drag the copied object into place",
                "keep": "paint what the edit must not change"}[tool]
        eraser = " (eraser on)" if self.painter.erasing else ""
        self.painter_caption.value = (f"<span style='font-size:12px'><b>seed {self.sample}</b> · "
                                      f"{tool} tool{eraser}: {what}</span>")

    def _refresh_tray(self) -> None:
        s = self.session
        with s.lock:
            ctx, keep = list(s.context), list(s.keep)
        sample = Sample(self.sample)
        # the samples as they were painted on (the original model), not as edits redraw them
        entries = [(self._image(c.sample, original=True), c.mask, c.sample.label())
                   for c in ctx]
        entries += [(self._image(k.sample, original=True), k.mask, f"keep {k.sample.label()}",
                     px.KEEP_RGB) for k in keep]
        current = next((i for i, c in enumerate(ctx) if c.sample == sample), -1)
        self.tray.set_entries(entries, current)

    def _refresh_history(self) -> None:
        s = self.session
        with s.lock:
            applied = list(s.history.entries)
            undone = list(reversed(s.history.redo_stack))
        rows = []
        for entry in applied:
            e = entry.edit
            if e.id not in self._thumbs:
                self._thumbs[e.id] = self._image(self._edit_sample(e))
            rows.append(self._row(e, entry.strength, True))
        for entry in undone:
            rows.append(self._row(entry.edit, entry.strength, False))
        self.history.set_rows(rows)

    def _row(self, e, strength: float, active: bool) -> HistoryRow:
        req = e.request
        kind = req.kind if req else "loaded"
        solver = f" · {req.solver}" if req else ""
        no = self.session.history.label(e)
        return HistoryRow(e.id, f"{no} {kind} @ {e.layer} · rank {e.rank}{solver}", e.created,
                          strength, active, self._thumbs.get(e.id))

    @staticmethod
    def _edit_sample(edit) -> Sample:
        req = edit.request
        if req is not None and req.pastes:
            return req.pastes[0][1].sample
        if req is not None and req.context:
            return req.context[0].sample
        return Sample(0)

    def _refresh_inspect(self) -> None:
        if self.more.selected_index != 0:
            return
        s = self.session
        sample = Sample(self.sample)
        context, copy, _ = self._masks_for(sample)
        mask = context if context is not None else copy
        if mask is None:
            self.inspector.set_heatmaps(None, {}, "")
            return
        layers = [info["name"] for info in s.layers()
                  if len(info["keys"]) == 3 and info["keys"][1] * info["keys"][2] > 1]
        with s.lock:
            heat = s.channel_heatmaps(sample, mask, layers, top=4)
        sizes = {info["name"]: f"{info['keys'][1]}x{info['keys'][2]}, {info['keys'][0]} ch"
                 for info in s.layers() if info["name"] in heat}
        which = "context" if context is not None else "copy"
        self.inspector.set_heatmaps(self._image(sample), heat, f"{sample.label()} ({which})",
                                    sizes)

    def _refresh_status(self) -> None:
        s = self.session
        self._refresh_toggles()
        ctx = list(s.context)
        parts = []
        if ctx:
            areas = ", ".join(f"{c.sample.label()}: {_area(c.mask)} px" for c in ctx)
            parts.append(f"<b class='rw-context'>Context</b> {len(ctx)} sample"
                         f"{'s' if len(ctx) != 1 else ''} ({areas})")
        else:
            parts.append("<b class='rw-context'>Context</b> none")
        parts.append(f"<b class='rw-copy'>Copy</b> {s.copy.sample.label()} "
                     f"({_area(s.copy.mask)} px)" if s.copy else
                     "<b class='rw-copy'>Copy</b> none")
        kept = len(s.more_pastes)
        also = f" + {kept} kept" if kept else ""
        if s.paste:
            dx, dy = s.paste.offset
            parts.append(f"<b class='rw-paste'>Paste</b> {s.paste.sample.label()} at "
                         f"({dx:+.0f}, {dy:+.0f}){also}")
        else:
            parts.append(f"<b class='rw-paste'>Paste</b> {f'{kept} kept' if kept else 'none'}")
        if s.keep or s.protect:
            keep = f"{len(s.keep)} sample{'s' if len(s.keep) != 1 else ''}" if s.keep else ""
            auto = f"auto-protect {s.protect:.0%}" if s.protect else ""
            parts.append(f"<b style='color:rgb{px.KEEP_RGB}'>Keep</b> "
                         f"{' + '.join(x for x in (keep, auto) if x)}")
        layer = html.escape(self.layer_choice or "auto")
        if getattr(self, "pending_layer", ""):
            layer = f"{html.escape(self.pending_layer)} (statistics loading…)"
        rank = self.rank_choice or "auto"
        parts.append(f"layer {layer}, rank {rank}, {html.escape(str(s.solver))} · "
                     f"{len(s.history)} edit(s)")
        panel = self.suggestions
        explicit = bool(self.layer_choice and self.rank_choice)
        if not ctx:
            step = ("1. Pick the <b>context</b> tool (c) and paint where the rule should apply, "
                    "on one or more samples (click a sample in the grid to paint on it).")
        elif panel.state == "stale" and not explicit:
            step = (f"<b style='color:#b35c00'>the suggestion is out of date</b> "
                    f"({self.suggestions.reason}): press <b>Suggest</b> again.")
        elif panel.state == "ready" and panel.candidate is not None:
            c = panel.candidate
            gate = (" It has a <b style='color:#c62828'>red</b> meter: Commit asks twice."
                    if c.blocked else "")
            step = (f"previewing <b>{html.escape(c.label())}</b> (not committed): <b>Commit</b> installs it, "
                    f"click another candidate to compare, or <b>Discard</b>.{gate}")
        elif s.copy is None:
            step = ("2. Pick the <b>copy</b> tool (x) and paint the object to insert, on any "
                    "sample. (Or press <b>Erase</b> to remove what the context draws.)")
        elif s.paste is None and not kept:
            step = ("3. Click a target sample, pick the <b>paste</b> tool (v) and drag the "
                    "copied object into place.")
        elif explicit:
            step = (f"4. Ready: <b>Rewrite</b> solves layer {html.escape(self.layer_choice)}, rank "
                    f"{self.rank_choice} (your choice). Set the layer to <i>auto</i> to let "
                    "<b>Suggest</b> find one.")
        elif not len(s.history):
            step = ("4. Ready: <b>Suggest</b> to find a layer and rank and preview the edit "
                    "(or pick a layer and rank); <b>Rewrite</b> installs the best at once. "
                    "(<b>Paste again</b> first teaches the rule on more examples.)")
        else:
            step = ("compare <b>Edited / Original</b> or <b>Side by side</b>; <b>Undo</b> is "
                    "exact. Change the selections and <b>Suggest</b> again for another edit.")
        self.status.value = (f"<div style='font-size:12px;line-height:18px'>{' · '.join(parts)}"
                             f"<br><span style='color:var(--jp-ui-font-color1,#444)'>Next: {step}</span></div>")


def _area(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))
