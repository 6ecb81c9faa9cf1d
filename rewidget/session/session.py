"""RewriteSession: the generator, the user's selections, statistics, edits and their history.

    s = RewriteSession("dcgan-faces")                  # layer, rank, solver have defaults
    s.add_context(3, mask_a); s.add_context(7, mask_b)  # where the rule applies
    s.set_copy(5, object_mask)                          # what to insert
    s.set_paste(3, offset=(4, -2))                      # where it goes
    edit = s.rewrite(progress=print)                    # statistics (cached) → D → Λ → install
    grid = s.render()                                   # (16, 64, 64, 3) uint8, edited model
    s.undo(); s.save_request("edit.json"); s.export_delta("edit.delta.safetensors")
    s.on("edit", lambda **e: print(e["edit"].summary()))

Every method validates before it mutates: a failed call leaves the model, the history and
the selections as they were. Mutations hold one lock, so the app may run work in a thread.

What is checked at this surface (RewriteError naming the problem and the fix, never a raw
torch/numpy/PIL/safetensors exception): samples are seeds in [0, 2**64) or one latent of the
generator's latent shape; masks are 2-D, of the image's size (never silently stretched), not
0/1 uint8; numbers are numbers (no strings parsed), finite and in range; requests are for
this model, its layers, its image size; deltas are checked whole before any edit is
installed (history.apply_all). Listeners run after the state is consistent, each isolated: one
that raises gives a ListenerWarning and the others still run. Statistics are collected against
one consistent set of weights: if any weight of the generator is written meanwhile (another
thread, another session on the same generator) the collection is run again under the lock,
and refused if it changes once more; nothing collected on changing weights is cached.
"""

from __future__ import annotations

import threading
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import heatmaps
from ..core.directions import (
    DEFAULT_RULE,
    RULES,
    CovarianceInverse,
    check_rule,
    context_rule,
    match_map,
)
from ..core.edits import Edit, compute_edit, sample_latents
from ..core.errors import ListenerWarning, RewriteError, check_int, check_real
from ..core.export import load_delta, save_delta, save_state_dict
from ..core.history import EditHistory, write_count
from ..core.masks import as_mask, check_mask_size
from ..core.memory import memory_for
from ..core.placement import place_on_parts
from ..core.progress import CancelToken, ProgressFn, check_cancel, report
from ..core.requests import (
    MAX_REQUEST_CHARS,
    SOLVERS,
    EditRequest,
    Paste,
    Sample,
    Selection,
    from_paper_json,
)
from ..core.safefiles import atomic_write, read_limited, user_path
from ..core.serial import serial
from ..core.solve import DEFAULT_OPTIONS, MIN_IMPROVEMENT, default_options, masked_errors
from ..core.statistics import auto_samples, cached_second_moments
from ..models import GeneratorAdapter, load
from .bars import Bar
from .suggest import (
    ITERATIVE_FINALISTS,
    OUTPUT_FINALISTS,
    PREVIEW_SEEDS,
    RANKS,
    RIDGES,
    Candidate,
    Suggestion,
    suggest,
)

EVENTS = ("selection", "layer", "stats", "edit", "undo", "redo", "reset", "strength", "grid")
MAX_GRID = 1_024  # samples rendered at once
MAX_POOL = 100_000  # search pool (features of 100k samples at 8×8×256 are ~6 GB)


class _WeightsChanged(Exception):
    """The generator's weights were written while statistics were being collected."""


def _samples(items: Iterable) -> list[Sample]:
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable):
        raise RewriteError(f"Expected a list of samples (seeds or latents), got {items!r}.",
                           "pass e.g. [0, 1, 2] or range(16).")
    return [Sample.of(x) for x in items]


def _check_device(device):
    """A torch.device this machine has (None: keep the generator's)."""
    if device is None:
        return None
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise RewriteError(f"{device!r} is not a torch device ({e}).",
                           "pass 'cpu', 'cuda', 'cuda:0' or a torch.device.") from e
    if d.type == "meta":
        raise RewriteError("The meta device holds no weights.", "pass device='cpu' or 'cuda'.")
    if d.type == "cuda" and (not torch.cuda.is_available()
                             or (d.index or 0) >= torch.cuda.device_count()):
        raise RewriteError(f"Device {str(d)!r} is not available on this machine.",
                           "pass device='cpu' (or a GPU that torch.cuda can see).")
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise RewriteError("The mps device is not available on this machine.",
                           "pass device='cpu'.")
    return d


class RewriteSession:
    def __init__(self, model: str | GeneratorAdapter = "dcgan-faces", *, device=None,
                 layer: str | None = None, rank: int = 1, solver: str = "exact",
                 direction_rule: str = DEFAULT_RULE, protect: float = 0.0,
                 replace: bool = False, stats_samples: int | str = "auto",
                 cache_dir: str | Path | None = None,
                 grid: Sequence[int] = range(16), quiet: bool = False) -> None:
        if not isinstance(model, (str, GeneratorAdapter)) and not all(
                hasattr(model, a) for a in ("latents", "layer_names", "layer", "keys")):
            raise RewriteError(f"{type(model).__name__} is not a model name or a generator.",
                               "pass a name such as 'dcgan-faces' or 'tiny', or a generator "
                               "from rewidget.models.load / from_module.")
        device = _check_device(device)
        #: False: statistics collected without a progress callback draw a tqdm bar (bars.py)
        self.quiet = bool(quiet)
        self.gen = load(model, device) if isinstance(model, str) else model
        self.fingerprint = self.gen.fingerprint()
        self.history = EditHistory(self.gen.layer)
        self.shapes = self.gen.layer_shapes()
        self._latent_shape = tuple(self.gen.latents([]).shape[1:])  # costs no sampling
        self._image_shape = (self.gen.image_size, self.gen.image_size)
        self.layer = layer or self._default_layer()
        self.gen.layer(self.layer)
        check_int(rank, "the rank", 1, fix="use rank=1 (or a small integer such as 2-3).")
        if solver not in SOLVERS:
            raise RewriteError(f"Unknown solver {solver!r}.", f"use one of {SOLVERS}.")
        self.rank, self.solver = int(rank), solver
        self.direction_rule = check_rule(direction_rule)
        EditRequest(layer="", protect=protect)  # validates: a share in [0, 1)
        self.protect = float(protect)
        EditRequest(layer="", replace=replace)  # validates: True or False
        #: pastes replace the context object they land on (EditRequest.replace)
        self.replace = bool(replace)
        self.keep: list[Selection] = []  # regions whose output the edit must leave alone
        if stats_samples != "auto" and (isinstance(stats_samples, (bool, np.bool_))
                                        or not isinstance(stats_samples, (int, np.integer))
                                        or not 1 <= stats_samples <= 1_000_000):
            raise RewriteError(f"stats_samples={stats_samples!r} is not a sample count.",
                               "pass \"auto\" (per layer) or a positive int (every layer).")
        #: "auto": each layer's count from the documented rule (samples_for); an int: every layer
        self.stats_samples = stats_samples if stats_samples == "auto" else int(stats_samples)
        self.cache_dir = None if cache_dir is None else user_path(cache_dir, "cache folder")
        self.context: list[Selection] = []
        self.copy: Selection | None = None
        self.paste: Paste | None = None
        self.more_pastes: list[tuple[Selection, Paste]] = []  # further goals (add_paste)
        self.grid: list[Sample] = self._grid_samples(grid)
        self.last_edit: Edit | None = None
        self._moments: dict[tuple[str, int], torch.Tensor] = {}  # (layer, samples) → C
        self._inverses: dict[tuple[str, int], CovarianceInverse] = {}
        self._keys_cache: dict[tuple, tuple[tuple, torch.Tensor]] = {}
        self._original_cache: dict[tuple, torch.Tensor] = {}
        #: suggest.reference_at: {stop layer: (weights state token, Reference)}
        self.suggest_references: dict = {}
        self._pool: dict[tuple, torch.Tensor] = {}
        self._listeners: dict[str, list[Callable]] = defaultdict(list)
        self.lock = threading.RLock()

    # -- events -------------------------------------------------------------------------------
    def on(self, event: str, callback: Callable[..., Any], remove: bool = False) -> None:
        """Call ``callback(**payload)`` on ``event`` (one of EVENTS); ``remove=True`` unsubscribes."""
        if not isinstance(event, str) or event not in EVENTS:
            raise RewriteError(f"Unknown event {event!r}.", f"use one of {EVENTS}.")
        if not callable(callback):
            raise RewriteError(f"The callback {callback!r} is not callable.",
                               "pass a function taking keyword arguments (**payload).")
        if remove:
            self._listeners[event] = [c for c in self._listeners[event] if c != callback]
        else:
            self._listeners[event].append(callback)

    def _emit(self, event: str, **payload: Any) -> None:
        """Call every listener; the state is already consistent. One that raises is reported
        as a ListenerWarning and the others still run: a listener's bug never turns a done
        change into an exception (which would look like a failed call that changed things)."""
        for cb in list(self._listeners[event]):
            try:
                cb(event=event, **payload)
            except Exception as e:  # noqa: BLE001 - isolated by design
                warnings.warn(ListenerWarning(
                    f"A listener for {event!r} ({getattr(cb, '__qualname__', cb)!r}) raised "
                    f"{type(e).__name__}: {e}. The {event} itself is done; the other listeners "
                    "ran."), stacklevel=3)

    # -- validation of what comes in ----------------------------------------------------------
    def _sample(self, ref) -> Sample:
        """A Sample this generator can render: a seed, or one latent of its latent shape."""
        sample = Sample.of(ref)
        if sample.latent is not None:
            shape = tuple(sample.latent.shape)
            if shape not in (self._latent_shape, (1, *self._latent_shape)):
                raise RewriteError(
                    f"Latents of shape {shape} do not fit this generator as one sample: a "
                    f"sample's latent is {self._latent_shape}.",
                    "pass one sample's latent, e.g. gen.latents([seed])[0]; for several samples "
                    "make one entry each.")
        return sample

    def _selection(self, sample, mask, what: str) -> Selection:
        sel = Selection(self._sample(sample), as_mask(_mask_of(mask, what), what))
        check_mask_size(sel.mask, self._image_shape, what)
        return sel

    def _grid_samples(self, samples) -> list[Sample]:
        items = _samples(samples)
        if len(items) > MAX_GRID:
            raise RewriteError(f"{len(items):,} samples is more than the {MAX_GRID:,} rendered at "
                               "once.", f"pass at most {MAX_GRID:,}.")
        return [self._sample(x) for x in items]

    def _check_request(self, request: EditRequest) -> EditRequest:
        """Refuse a request this session cannot run: another model, an unknown layer, samples or
        masks that do not fit this generator."""
        if not isinstance(request, EditRequest):
            raise RewriteError(f"{type(request).__name__} is not an EditRequest.",
                               "pass session.request(), or one from session.load_request().")
        if request.model and request.model != self.gen.name:
            raise RewriteError(f"The request was made for model {request.model!r}; this session "
                               f"holds {self.gen.name!r}.", "replay it in a session on that model.")
        self.gen.layer(request.layer)  # RewriteError for an unknown layer
        sels = [("context", c) for c in request.context] + [("keep region", k) for k in request.keep]
        sels += [("copy", c) for c, _ in request.pastes]
        if request.copy is not None:
            sels.append(("copy", request.copy))
        for what, sel in sels:
            self._sample(sel.sample)
            check_mask_size(sel.mask, self._image_shape, f"request's {what} mask")
        for _, p in request.pastes:
            self._sample(p.sample)
        if request.paste is not None:
            self._sample(request.paste.sample)
        return request

    # -- layers -------------------------------------------------------------------------------
    def _default_layer(self) -> str:
        """The spatial layer whose key grid is closest to 1/8 of the image (8×8 at 64 px)."""
        target = self.gen.image_size / 8
        spatial = [n for n, s in self.shapes.items() if len(s["keys"]) == 3]
        if not spatial:
            return self.gen.layer_names()[0]
        return min(spatial, key=lambda n: (abs(self.shapes[n]["keys"][-1] - target), n))

    def layers(self) -> list[dict]:
        """Editable layers with type, key/value shapes and whether statistics are loaded."""
        return [{"name": n, **self.shapes[n], "stats": (n, self.samples_for(n)) in self._moments}
                for n in self.gen.layer_names()]

    def set_layer(self, name: str) -> None:
        if not isinstance(name, str):
            raise RewriteError(f"Unknown layer {name!r}.", f"choose one of {self.gen.layer_names()}.")
        self.gen.layer(name)  # validates
        with self.lock:
            self.layer = name
        self._emit("layer", layer=name)

    # -- selections ---------------------------------------------------------------------------
    def add_context(self, sample, mask) -> int:
        sel = self._selection(sample, mask, "context mask")
        with self.lock:
            self.context.append(sel)
        self._emit("selection", what="context")
        return len(self.context) - 1

    def set_context(self, sample, mask) -> None:
        """Make ``mask`` the context on ``sample``, replacing its entry in place (the order stays);
        None removes the sample's entries."""
        sample = self._sample(sample)
        new = None if mask is None else self._selection(sample, mask, "context mask")  # first
        with self.lock:
            hits = [i for i, c in enumerate(self.context) if c.sample == sample]
            if not hits and new is None:
                return
            rest = [c for c in self.context if c.sample != sample]
            if new is not None:  # where the sample's first entry was (entries before it stay)
                rest.insert(hits[0] if hits else len(rest), new)
            self.context = rest
        self._emit("selection", what="context")

    def remove_context(self, index: int) -> None:
        index = check_int(index, "the context index", fix="pick an index from session.context.")
        with self.lock:
            if not -len(self.context) <= index < len(self.context):
                raise RewriteError(f"There is no context entry {index} ({len(self.context)} exist).",
                                   "pick an index from session.context.")
            del self.context[index]
        self._emit("selection", what="context")

    def clear_context(self) -> None:
        with self.lock:
            self.context.clear()
        self._emit("selection", what="context")

    def set_copy(self, sample, mask) -> None:
        sel = self._selection(sample, mask, "copy mask")
        with self.lock:
            self.copy = sel
        self._emit("selection", what="copy")

    def set_paste(self, sample, offset: tuple[float, float] = (0.0, 0.0)) -> None:
        p = Paste(self._sample(sample), offset)
        with self.lock:
            self.paste = p
        self._emit("selection", what="paste")

    def add_paste(self, sample, offset: tuple[float, float] = (0.0, 0.0), mask=None) -> int:
        """Paste the copy once more, on another place or sample; returns how many pastes exist.

        All pastes are solved together, so the rule is taught on several examples (the first
        call, with no paste yet, is ``set_paste``). ``mask`` optionally restricts this paste to
        part of the copied region (a mask on the copied sample, e.g. clipped to the shape of
        the object it lands on).
        """
        p = Paste(self._sample(sample), offset)
        with self.lock:
            if self.copy is None:
                raise RewriteError("Nothing is copied, so there is nothing to paste.",
                                   "paint the object to copy with the copy tool (set_copy) first.")
            copy = self.copy if mask is None else \
                self._selection(self.copy.sample, mask, "paste's copy mask")
            if self.paste is None and mask is None:
                self.paste = p
            else:
                self.more_pastes.append((copy, p))
            n = (self.paste is not None) + len(self.more_pastes)
        self._emit("selection", what="paste")
        return n

    def keep_paste(self) -> int:
        """Keep the current paste as one of several goals and free ``paste`` for another one.

        Returns how many pastes are kept. The app's "Paste again" button calls this.
        """
        with self.lock:
            if self.copy is None or self.paste is None:
                raise RewriteError("There is no placed paste to keep.",
                                   "place the copied object with the paste tool first.")
            self.more_pastes.append((self.copy, self.paste))
            self.paste = None
            n = len(self.more_pastes)
        self._emit("selection", what="paste")
        return n

    def paste_on_context(self) -> int:
        """Place the copy on every part of the context the pastes do not cover yet, as the
        latest paste sits on its own part; returns how many pastes were added.

        A part is a connected region of a context mask (a roof, an eye band). The latest paste
        (or the last kept one) gives the placement: on each axis the pasted copy keeps its
        distance to whichever of the part's edges or centre it lies nearest to (a crown resting
        on a roof's base, centred on it, rests on every roof's base). Parts where the copy would
        land mostly outside the image are skipped. All or nothing: on an error no paste is added.
        """
        with self.lock:
            template = (self.copy, self.paste) if self.paste is not None else \
                (self.more_pastes[-1] if self.more_pastes else None)
            if self.copy is None or template is None:
                raise RewriteError("There is no placed paste to repeat.",
                                   "place the copied object on one context object with the "
                                   "paste tool first.")
            placed = list(self.pastes_placed())
            new = place_on_parts(self.context, template, placed, self.gen.image_size)
            if new:
                if self.paste is not None:
                    self.more_pastes.append((self.copy, self.paste))
                    self.paste = None
                self.more_pastes.extend(new)
        self._emit("selection", what="paste")
        return len(new)

    def pastes_placed(self) -> list[tuple[Selection, Paste]]:
        """Every (copy, paste) placed so far: the current paste, then the kept ones."""
        with self.lock:
            first = [(self.copy, self.paste)] if self.copy is not None and \
                self.paste is not None else []
            return first + list(self.more_pastes)

    def set_replace(self, on: bool) -> None:
        """Pastes replace the context object they land on (True) or draw over it (False)."""
        EditRequest(layer=self.layer, replace=on)  # validates: True or False
        with self.lock:
            self.replace = bool(on)
        self._emit("selection", what="paste")

    def clear_copy(self) -> None:
        """Drop the copy, and every paste that placed it."""
        with self.lock:
            self.copy = self.paste = None
            self.more_pastes.clear()
        self._emit("selection", what="copy")

    def clear_paste(self) -> None:
        """Drop every paste (the copy stays)."""
        with self.lock:
            self.paste = None
            self.more_pastes.clear()
        self._emit("selection", what="paste")

    def set_keep(self, sample, mask) -> None:
        """Make ``mask`` the keep region on ``sample`` (what the edit must not change); None
        removes it. The edit's directions are kept orthogonal to the keys painted there."""
        sample = self._sample(sample)
        new = None if mask is None else self._selection(sample, mask, "keep mask")  # first
        with self.lock:
            rest = [k for k in self.keep if k.sample != sample]
            self.keep = rest + ([new] if new is not None else [])
        self._emit("selection", what="keep")

    def clear_keep(self) -> None:
        with self.lock:
            self.keep = []
        self._emit("selection", what="keep")

    def set_protect(self, share: float) -> None:
        """Automatic protection: keep D orthogonal to ``share`` (0 ≤ share < 1; 0 = off) of the
        energy of keys sampled where the context does not fire."""
        share = check_real(share, "the protected share", 0.0, 1.0,
                           fix="pass protect=0 (off) or e.g. 0.9.")
        EditRequest(layer=self.layer, protect=share)  # validates: a share in [0, 1)
        with self.lock:
            self.protect = float(share)
        self._emit("selection", what="keep")

    def clear_selection(self) -> None:
        with self.lock:
            self.keep = []
            self.context.clear()
            self.copy = self.paste = None
            self.more_pastes.clear()
        self._emit("selection", what="all")

    # -- statistics ---------------------------------------------------------------------------
    def samples_for(self, layer: str | None = None) -> int:
        """How many statistics samples C at ``layer`` is collected over: the session's int, or
        with stats_samples="auto" the per-layer rule documented in core/statistics.py."""
        layer = self.layer if layer is None else layer
        if not isinstance(layer, str):
            raise RewriteError(f"Unknown layer {layer!r}.", f"choose one of {self.gen.layer_names()}.")
        self.gen.layer(layer)
        if self.stats_samples != "auto":
            return self.stats_samples
        return auto_samples(self.gen, [layer], self.shapes)[layer]

    def statistics(self, layer: str | None = None, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None, refresh: bool = False,
                   samples: int | None = None) -> torch.Tensor:
        """C = E[kkᵀ] of the layer's keys on the original weights (disk-cached), over
        ``samples`` statistics samples (default: samples_for(layer))."""
        layer = layer or self.layer
        return self.statistics_for([layer], progress, cancel, refresh, samples)[layer]

    def statistics_for(self, layers: Sequence[str] | None = None,
                       progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                       refresh: bool = False, samples: int | None = None
                       ) -> dict[str, torch.Tensor]:
        """{layer: C} for ``layers`` (default: every editable layer), each over
        samples_for(layer) samples, or ``samples`` for all. Those not loaded yet come from the
        disk cache, and the ones missing there from one forward pass for all of them."""
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers or self.gen.layer_names())
        if samples is not None:
            samples = check_int(samples, "the statistics sample count", 1, 1_000_000)
        counts = {layer: self.samples_for(layer) if samples is None else samples
                  for layer in layers}
        missing = {layer: n for layer, n in counts.items()
                   if refresh or (layer, n) not in self._moments}
        if missing:
            if progress is None and not self.quiet:  # headless: show where it is
                with Bar(f"statistics ({', '.join(missing)})") as bar:
                    found = self._collect(missing, bar, cancel, refresh)
            else:
                found = self._collect(missing, progress, cancel, refresh)
            for layer, c in found.items():
                self._moments[(layer, missing[layer])] = c
                self._inverses.pop((layer, missing[layer]), None)
                self._emit("stats", layer=layer)
        return {layer: self._moments[(layer, n)] for layer, n in counts.items()}

    def _collect(self, missing: dict[str, int], progress, cancel, refresh: bool
                 ) -> dict[str, torch.Tensor]:
        """cached_second_moments on one consistent set of weights, keyed by those weights.

        Keys at a layer depend only on the layers before it: only when one of those is edited
        by this session must W₀ be swapped in, and only then is the lock held on the first try
        (renders would see W₀). If any weight of the generator is written during the pass (an
        edit applied in another thread or by another session on this generator), the pass is
        discarded before anything is cached and run again holding the lock; a second change
        is refused."""
        modules = [self.gen.layer(n) for n in self.gen.layer_names()]
        for attempt in (1, 2):
            upstream_edited = any(self.history.state_token(self._upstream(layer))
                                  for layer in missing)
            # first try: W₀ for this thread only (renders and selections carry on meanwhile);
            # the second, after the weights changed under the first: W₀ installed, lock held
            private = upstream_edited and attempt == 1 and hasattr(self.gen, "weights_in_this_thread")
            hold = (upstream_edited and not private) or attempt == 2
            before = write_count(modules)  # read before W₀ is looked up: no write slips between
            originals = self.history.originals() if private else None
            swap = (self.gen.weights_in_this_thread(originals) if private
                    else self.history.original_weights() if upstream_edited else nullcontext())
            with (self.lock if hold else nullcontext()), swap:
                version = before if private else write_count(modules)
                # the weights as they are now (this session's edits swapped out), not as loaded:
                # a generator shared with another session may carry that session's edits
                fingerprint = self.gen.fingerprint(current=True, overrides=originals)

                def unchanged(version=version) -> None:
                    if write_count(modules) != version:
                        raise _WeightsChanged

                try:
                    return cached_second_moments(self.gen, missing, fingerprint, self.cache_dir,
                                                 progress=progress, cancel=cancel,
                                                 refresh=refresh, check=unchanged)
                except _WeightsChanged:
                    if attempt == 2:
                        raise RewriteError(
                            "The generator's weights changed twice while statistics were being "
                            "collected (another session is editing this generator); nothing "
                            "was kept or cached.",
                            "collect the statistics again once the other session's edits are "
                            "done.") from None
        raise AssertionError("unreachable")

    def inverse(self, layer: str | None = None, progress=None, cancel=None,
                samples: int | None = None) -> CovarianceInverse:
        layer = layer or self.layer
        key = (layer, self.samples_for(layer) if samples is None else int(samples))
        if key not in self._inverses:
            self._inverses[key] = CovarianceInverse(self.statistics(layer, progress, cancel,
                                                                    samples=key[1]))
        return self._inverses[key]

    # -- edits --------------------------------------------------------------------------------
    def request(self, kind: str = "paste", layer: str | None = None, rank: int | None = None,
                solver: str | None = None, direction_rule: str | None = None,
                **solver_options: Any) -> EditRequest:
        """An EditRequest from the current selections (raises if one is missing).

        Solver options not given are filled from the solver's defaults and stored in the request.
        """
        solver = solver or self.solver
        solver_options = {**default_options(solver, self.replace and kind == "paste"),
                          **solver_options}
        layer = layer or self.layer
        req = EditRequest(layer=layer, model=self.gen.name, kind=kind,
                          rank=self.rank if rank is None else rank,
                          solver=solver, context=tuple(self.context),
                          direction_rule=direction_rule or self.direction_rule,
                          keep=tuple(self.keep), protect=self.protect,
                          replace=self.replace and kind == "paste",
                          copy=self.copy if kind == "paste" else None,
                          paste=self.paste if kind == "paste" else None,
                          more_pastes=tuple(self.more_pastes) if kind == "paste" else (),
                          stats_samples=self.samples_for(layer), solver_options=solver_options)
        req.validate_complete()
        return req

    def compute_edit(self, request: EditRequest | None = None, progress: ProgressFn | None = None,
                     cancel: CancelToken | None = None) -> Edit:
        """The edit for ``request`` (default: the current selections). Changes nothing.

        It is solved against the weights now installed: with an earlier edit active on the same
        layer, the new goals are measured on top of it (edits compose; undo the earlier one
        first to solve against W₀).
        """
        request = self._check_request(self.request() if request is None else request)
        n = request.stats_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise RewriteError(f"The request's stats_samples {n!r} is not a sample count.",
                               "record a positive int (session.samples_for(layer)).")
        # the statistics the request was made with: samples_for(layer) for this session's own
        # requests, or the count an older request recorded (collected for it if need be)
        inv = self.inverse(request.layer, progress, cancel, samples=n)
        with self.lock:
            edit = compute_edit(self.gen, request, inv, progress, cancel)
        before, after = edit.report.get("before"), edit.report.get("installed")
        if before and after and before["l2"] > 0 \
                and not after["l2"] < (1 - MIN_IMPROVEMENT) * before["l2"]:
            raise RewriteError(
                f"The solved edit would not move the goal (error {before['l2']:.4g} → "
                f"{after['l2']:.4g}), so it would install an empty change.",
                f"use the solver's default options ({DEFAULT_OPTIONS[request.solver]}): a huge "
                "ridge, or too few steps or too small an lr, keep the update at zero.")
        return edit

    def rewrite(self, request: EditRequest | None = None, strength: float = 1.0,
                progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Edit:
        """Compute the edit and install it (one history entry)."""
        check_real(strength, "the strength", 0.0, 1.0,
                   fix="use 1 for the full edit, 0 to switch it off, or a value between.")
        edit = self.compute_edit(request, progress, cancel)
        check_cancel(cancel, "The edit")
        return self.apply(edit, strength)

    def suggest(self, layers: Sequence[str] | None = None, ranks: Sequence[int] = RANKS,
                rules: Sequence[str] = RULES, kind: str | None = None, solver: str = "exact",
                preview: Sequence[int] = PREVIEW_SEEDS, progress: ProgressFn | None = None,
                cancel: CancelToken | None = None, extra: Sequence[Edit] = (),
                ridges: Sequence[float] = RIDGES, iterative: int = ITERATIVE_FINALISTS,
                output: int = OUTPUT_FINALISTS) -> Suggestion:
        """Solve the current selections at every layer × rank × direction rule (the
        ``iterative`` best also with the iterative solver, the ``output`` best with the goal
        drawn in the output), score each candidate on held-out
        samples (effect, collateral, realism) and rank them. Installs nothing: the weights are
        bit-for-bit the same afterwards. ``extra`` edits (a hand-chosen setting) are scored
        alongside. See session/suggest.py."""
        return suggest(self, layers, ranks, rules, kind, solver, preview, progress, cancel, extra,
                       ridges, iterative, output)

    def preview(self, edit: Edit | Candidate, samples: Sequence | None = None) -> np.ndarray:
        """(N, S, S, 3) uint8: the grid (or ``samples``) as it would look with ``edit`` added to
        the weights installed now. Nothing is written into the model."""
        edit = edit.edit if isinstance(edit, Candidate) else edit
        if not isinstance(edit, Edit):
            raise RewriteError(f"{type(edit).__name__} is not an Edit or a Candidate.",
                               "pass an edit from session.compute_edit() or a suggestion's "
                               "candidate.")
        samples = self.grid if samples is None else self._grid_samples(samples)
        # one small forward: on a loaded 2-core machine one thread is faster (core/serial.py)
        with self.lock, torch.no_grad(), serial():
            module = self.gen.layer(edit.layer)
            weight = module.weight + self.history.checked_delta(edit)  # checked like an apply
            keys = self.keys(edit.layer, samples)
            x = self.gen.forward_from(edit.layer, keys, z=sample_latents(self.gen, samples),
                                      weight=weight)
        return self.gen.to_rgb(x)

    def commit(self, candidate: Candidate, confirm: bool = False, strength: float = 1.0) -> Edit:
        """Install a suggested candidate. One whose collateral or realism meter is red is
        refused unless ``confirm=True`` (the app asks a second time)."""
        if not isinstance(candidate, Candidate):
            raise RewriteError(f"{type(candidate).__name__} is not a suggested Candidate.",
                               "pass one of session.suggest().candidates (or use apply(edit)).")
        if candidate.blocked and not confirm:
            why = "; ".join(m.why for k, m in candidate.meters.items()
                            if k in ("collateral", "realism") and m.level == "red")
            raise RewriteError(f"{candidate.label()} is likely to damage the images ({why}).",
                               "look at the preview, then commit with confirm=True, or choose "
                               "another candidate.")
        return self.apply(candidate.edit, strength)

    def prepare_statistics(self, layers: Sequence[str] | None = None,
                           progress: ProgressFn | None = None,
                           cancel: CancelToken | None = None) -> None:
        """Load or collect C (and factor it) for ``layers`` (default: all editable layers);
        the missing ones are collected in one forward pass (statistics_for)."""
        layers = [layers] if isinstance(layers, str) else list(layers or self.gen.layer_names())
        self.statistics_for(layers, progress, cancel)
        for layer in layers:
            self.inverse(layer)

    def erase(self, progress: ProgressFn | None = None, cancel: CancelToken | None = None,
              **kw: Any) -> Edit:
        """Make the context produce what its surroundings produce (removes what it draws)."""
        return self.rewrite(self.request(kind="erase", **kw), progress=progress, cancel=cancel)

    def apply(self, edit: Edit, strength: float = 1.0) -> Edit:
        """Install ``edit`` (checked whole first: history.apply)."""
        with self.lock:
            self.history.apply(edit, strength)
            self.last_edit = edit
            self._measure(edit)
        self._emit("edit", edit=edit)
        return edit

    def _measure(self, edit: Edit) -> None:
        """The error of the weights now in the model, not a solver's log (best effort: the
        edit is installed whether or not it can be measured)."""
        if not edit.targets:
            return
        try:
            mem = memory_for(self.gen.layer(edit.layer), edit.layer)
            edit.report["installed_measured"] = masked_errors(mem, edit.targets)
        except Exception as e:  # noqa: BLE001 - a report, never a reason to fail an install
            edit.report["installed_measured"] = {"error": f"{type(e).__name__}: {e}"}

    def undo(self) -> Edit | None:
        with self.lock:
            e = self.history.undo()
        self._emit("undo", edit=e)
        return e

    def redo(self) -> Edit | None:
        with self.lock:
            e = self.history.redo()
        self._emit("redo", edit=e)
        return e

    def reset(self) -> None:
        with self.lock:
            self.history.reset()
        self._emit("reset")

    def set_strength(self, index: int, strength: float) -> None:
        with self.lock:
            self.history.set_strength(index, strength)
            strength = self.history.entries[index].strength
        self._emit("strength", index=index, strength=strength)

    # -- rendering ----------------------------------------------------------------------------
    def _upstream(self, layer: str) -> list[str]:
        names = self.gen.layer_names()
        return names[: names.index(layer)]

    def render_layer(self) -> str:
        """Earliest layer with an edit (or the current layer): features before it never change."""
        names = self.gen.layer_names()
        touched = {e.layer for e in self.history.edits} | {self.layer}
        return min(touched, key=names.index)

    def keys(self, layer: str, samples: Sequence) -> torch.Tensor:
        """Keys at ``layer`` for samples, cached until an upstream layer's weights change."""
        samples = self._grid_samples(samples)
        ck = (layer, tuple(samples))
        token = self.history.state_token(self._upstream(layer))
        hit = self._keys_cache.get(ck)
        if hit is not None and hit[0] == token:
            return hit[1]
        with torch.no_grad():
            k = self.gen.keys(layer, sample_latents(self.gen, samples))
        if len(self._keys_cache) > 32:
            self._keys_cache.clear()
        self._keys_cache[ck] = (token, k)
        return k

    def images(self, samples: Sequence | None = None) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] from the current (edited) model; reuses cached features."""
        samples = self.grid if samples is None else self._grid_samples(samples)
        with self.lock, torch.no_grad():
            layer = self.render_layer()
            keys = self.keys(layer, samples)
            # z only matters to generators without a sequential trunk (see GeneratorAdapter)
            return self.gen.forward_from(layer, keys, z=sample_latents(self.gen, samples))

    def original_images(self, samples: Sequence | None = None) -> torch.Tensor:
        samples = self.grid if samples is None else self._grid_samples(samples)
        key = tuple(samples)
        if key not in self._original_cache:
            with self.lock, torch.no_grad(), self.history.original_weights():
                self._original_cache[key] = self.gen.forward(sample_latents(self.gen, samples))
            if len(self._original_cache) > 16:
                self._original_cache.pop(next(iter(self._original_cache)))
        return self._original_cache[key]

    def render(self, samples: Sequence | None = None, original: bool = False) -> np.ndarray:
        """(N, S, S, 3) uint8 images of the edited (or ``original``) model."""
        x = self.original_images(samples) if original else self.images(samples)
        return self.gen.to_rgb(x)

    def set_grid(self, samples: Sequence) -> None:
        samples = self._grid_samples(samples)
        if not samples:
            raise RewriteError("The grid needs at least one sample.", "pass one or more seeds.")
        with self.lock:
            self.grid = samples
        self._emit("grid", samples=samples)

    # -- context match and search ---------------------------------------------------------------
    def directions(self, layer: str | None = None, rank: int | None = None,
                   rule: str | None = None):
        """(D, level) of the current context at ``layer``: what a rank-r edit would act on."""
        layer = layer or self.layer
        if rank is not None:
            check_int(rank, "the rank", 1, fix="use rank=1 (or a small integer such as 2-3).")
        if not self.context:
            raise RewriteError("No context is selected.", "paint the context on a sample first.")
        mem = memory_for(self.gen.layer(layer), layer)
        entries = [(self.keys(layer, [c.sample]), c.mask) for c in self.context]
        return context_rule(mem, self.inverse(layer), entries, self.rank if rank is None else rank,
                            rule or self.direction_rule)

    def context_match(self, samples: Sequence | None = None, layer: str | None = None
                      ) -> torch.Tensor:
        """(N, h, w) where the current context fires; 1.0 = as strongly as the painted context."""
        layer = layer or self.layer
        d, level = self.directions(layer)
        mem = memory_for(self.gen.layer(layer), layer)
        with torch.no_grad():
            keys = self.keys(layer, self.grid if samples is None else samples)
            return match_map(mem, keys, d) / level

    def search(self, pool: int | Sequence[int] = 1000, top: int = 12,
               progress: ProgressFn | None = None, cancel: CancelToken | None = None,
               include_context: bool = False) -> list[tuple[int, float]]:
        """Rank pool samples by their strongest context match: [(seed, score), ...] best first.
        The context's own samples are left out (they match by construction) unless
        ``include_context``."""
        fix = f"pass pool=N (1 to {MAX_POOL:,}) for seeds 0..N-1, or a list of seeds."
        if isinstance(pool, (int, np.integer)) and not isinstance(pool, (bool, np.bool_)):
            seeds = list(range(check_int(pool, "the search pool", 1, MAX_POOL, fix)))
        else:
            if isinstance(pool, (str, bytes, bool)) or not isinstance(pool, Iterable):
                raise RewriteError(f"The search pool {pool!r} is not a count or a list of seeds.",
                                   fix)
            if hasattr(pool, "__len__") and len(pool) > MAX_POOL:
                raise RewriteError(f"The search pool has {len(pool):,} seeds; at most "
                                   f"{MAX_POOL:,} are searched.", fix)
            seeds = [Sample.of(s).seed for s in pool]
            if any(s is None for s in seeds) or not 1 <= len(seeds) <= MAX_POOL:
                raise RewriteError("The search pool must hold 1 to "
                                   f"{MAX_POOL:,} seeds (no latents).", fix)
        top = check_int(top, "top", 1, fix="pass top=12 (how many best matches to return).")
        layer = self.layer
        d, level = self.directions(layer)
        mem = memory_for(self.gen.layer(layer), layer)
        key = (layer, tuple(seeds), self.history.state_token(self._upstream(layer)))
        if key not in self._pool:
            chunks = []
            with torch.no_grad():
                for i in range(0, len(seeds), 250):
                    check_cancel(cancel, "The search")
                    chunks.append(self.gen.keys(layer, self.gen.latents(seeds[i:i + 250])))
                    report(progress, min(i + 250, len(seeds)), len(seeds), "search pool features")
            self._pool.clear()  # one pool at a time: it can be a few hundred MB
            self._pool[key] = torch.cat(chunks)
        with torch.no_grad():
            scores = match_map(mem, self._pool[key], d).flatten(1).amax(1) / level
        with self.lock:
            own = set() if include_context else {c.sample.seed for c in self.context}
        order = [i for i in torch.argsort(scores, descending=True).tolist()
                 if seeds[i] not in own][:top]
        return [(seeds[i], float(scores[i])) for i in order]

    # -- layer inspection -----------------------------------------------------------------------
    def channel_heatmaps(self, sample, mask, layers: Sequence[str] | None = None, top: int = 4
                         ) -> dict[str, list[dict]]:
        """For each layer, the ``top`` key channels most active inside ``mask`` vs outside."""
        sel = self._selection(sample, mask, "mask")
        top = check_int(top, "top", 1, fix="pass top=4 (channels per layer).")
        if isinstance(layers, str):
            layers = [layers]
        for layer in layers or []:
            self.gen.layer(layer)  # validates every name before any work
        out = {}
        for layer in layers or self.gen.layer_names():
            k = self.keys(layer, [sel.sample])
            if k.dim() != 4 or k.shape[-1] * k.shape[-2] == 1:  # no spatial map to show
                continue
            out[layer] = heatmaps.top_channels(k[0], sel.mask, top)
        return out

    # -- persistence --------------------------------------------------------------------------
    def save_request(self, path: str | Path, request: EditRequest | None = None) -> Path:
        """Write the request (default: the last edit's, else the current selections) as JSON,
        atomically: a failed write leaves an existing file as it was."""
        if request is not None and not isinstance(request, EditRequest):
            raise RewriteError(f"{type(request).__name__} is not an EditRequest.",
                               "pass session.request() or leave request out.")
        req = request or (self.last_edit.request if self.last_edit else None) or self.request()
        text = req.to_json()
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                            "request file")

    def load_request(self, path: str | Path) -> EditRequest:
        """A request saved by save_request (JSON, at most MAX_REQUEST_CHARS bytes)."""
        raw = read_limited(path, MAX_REQUEST_CHARS, "request file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RewriteError(f"{path} is not a text (JSON) file ({e.reason} at byte "
                               f"{e.start}).", "load a file saved by session.save_request(); "
                               "deltas load with load_delta().") from e
        return EditRequest.from_json(text)

    def import_paper_request(self, path_or_obj, latents: torch.Tensor, layer: str | None = None,
                             rank: int | None = None, solver: str | None = None) -> EditRequest:
        """A request saved by the paper's tool: a file path, its JSON text, or the parsed dict."""
        obj = path_or_obj
        if isinstance(obj, Path) or (isinstance(obj, str) and not obj.lstrip().startswith("{")):
            raw = read_limited(obj, MAX_REQUEST_CHARS, "paper-tool request file")
            try:
                obj = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RewriteError(f"{path_or_obj} is not a text (JSON) file.",
                                   "pass the path of the file the paper's tool saved, or its "
                                   "JSON text.") from e
        return from_paper_json(obj, latents, layer or self.layer, self.gen.name,
                               self.gen.image_size, rank=self.rank if rank is None else rank,
                               solver=solver or self.solver,
                               stats_samples=self.samples_for(layer or self.layer),
                               direction_rule=self.direction_rule)

    def replay(self, request: EditRequest | str | Path, **kw: Any) -> Edit:
        if not isinstance(request, EditRequest):
            request = self.load_request(request)
        return self.rewrite(request, **kw)

    def use_request(self, request: EditRequest) -> None:
        """Load a request's selections (and layer, rank, solver) into the session; a request
        of another model, layer set or image size is refused and nothing changes."""
        self._check_request(request)
        with self.lock:
            self.gen.layer(request.layer)
            self.layer, self.rank, self.solver = request.layer, request.rank, request.solver
            self.direction_rule = request.direction_rule
            self.keep, self.protect = list(request.keep), request.protect
            self.replace = request.replace
            self.context = list(request.context)
            self.copy, self.paste = request.copy, request.paste
            self.more_pastes = list(request.more_pastes)
        self._emit("layer", layer=self.layer)
        self._emit("selection", what="all")

    def export_weights(self, path: str | Path) -> Path:
        with self.lock:
            return save_state_dict(self.gen.module, path, {"model": self.gen.name,
                                                            "edits": len(self.history)})

    def export_delta(self, path: str | Path) -> Path:
        with self.lock:
            return save_delta(self.history, path, self.gen.name, self.fingerprint)

    def load_delta(self, path: str | Path) -> list[Edit]:
        """Install every edit of a delta file, or none: the file and each edit are checked
        (format, model, fingerprint, tensors, shapes, finite, size, strengths) first."""
        loaded = load_delta(path, self.fingerprint, model=self.gen.name)
        try:
            with self.lock:
                self.history.apply_all(loaded)
        except RewriteError as e:
            raise RewriteError(f"{path} was not installed: {e.problem}", e.fix) from e
        edits = [e for e, _ in loaded]
        if edits:
            self.last_edit = edits[-1]
        for edit in edits:
            self._emit("edit", edit=edit)
        return edits

    def __repr__(self) -> str:
        return (f"RewriteSession({self.gen.name!r}, layer={self.layer!r}, rank={self.rank}, "
                f"solver={self.solver!r}, edits={len(self.history)}, context={len(self.context)})")


def _mask_of(mask, what: str):
    """``mask`` as given (validated by Selection), with a clearer error for a missing one."""
    if mask is None:
        raise RewriteError(f"The {what} is None.", "pass an (H, W) mask array.")
    return mask
