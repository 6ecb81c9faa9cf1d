"""The one place that writes weights: W = W₀ + Σ strength·ΛDᵀ over the active edits.

    hist = EditHistory(gen.layer)
    hist.apply(edit)            # installs it
    hist.apply_all([(e1, 1.0), (e2, 0.5)])   # several at once: all or none
    hist.set_strength(0, 0.5)   # half strength
    hist.undo(); hist.redo()
    hist.reset()                # every touched layer bit-for-bit back to W₀

Each touched layer's original weight is kept once (one layer of memory, never a model copy).
A layer with no active edit gets W₀ copied back, so undo and reset are exact.

Invariants:
- Nothing is written before everything is checked: the edit's type, its factors (real,
  finite, with data, shapes that fit the layer), the strength, the size of the update against
  the layer (at most MAX_RELATIVE_UPDATE × ‖W₀‖) and the finiteness of every weight it would
  produce. A failed call leaves weights and history exactly as they were.
- One layer of one generator takes edits from one history at a time. A history *holds* a layer
  while it has an applied entry there (W₀ is saved when it starts holding, dropped when it
  stops); another history's apply or redo on that layer is refused with a RewriteError. Two
  sessions on one generator thus work on different layers, or in turn (after an undo or reset
  the layer is exactly W₀ again), and undo and reset always return a layer to the weights it
  had before its holder's first edit.
- Every write bumps ``write_count`` of the modules written, so a reader can tell whether the
  weights changed while it worked (statistics collection does).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .edits import Edit
from .errors import RewriteError, check_int, check_real
from .memory import memory_for

#: the largest update accepted, relative to the layer's original weight (Frobenius norms): real
#: edits change a layer by well under 1×; a factor scaled by 1e20 must never reach the weights
MAX_RELATIVE_UPDATE = 100.0

_REGISTRY = threading.RLock()  # guards holders and write counts (all histories, all threads)
_HOLDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module → ref(EditHistory)
_WRITES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module → number of writes


def write_count(modules: Iterable[nn.Module]) -> int:
    """How many times EditHistory objects have written these modules' weights (a version)."""
    with _REGISTRY:
        return sum(_WRITES.get(m, 0) for m in modules)


def _written(module: nn.Module) -> None:
    with _REGISTRY:
        _WRITES[module] = _WRITES.get(module, 0) + 1


@dataclass
class Entry:
    edit: Edit
    strength: float = 1.0


class EditHistory:
    def __init__(self, resolve: Callable[[str], nn.Module]) -> None:
        self._resolve = resolve
        self._originals: dict[str, torch.Tensor] = {}  # the layers this history holds → W₀
        self.entries: list[Entry] = []  # applied, oldest first
        self.redo_stack: list[Entry] = []
        self._numbers: dict[int, int] = {}  # edit id → its number in this history (1, 2, ...)

    # -- queries ------------------------------------------------------------------------
    #: how many undone edits the last install dropped from the redo stack (the app says so)
    dropped_redo: int = 0

    def number(self, edit: Edit) -> int:
        """The edit's number in this history: 1 for the first edit ever installed here, 2 for
        the next, ... (edit ids count across the whole process; these are what users see)."""
        return self._numbers.get(edit.id, 0)

    def label(self, edit: Edit) -> str:
        """"#n" for an edit installed here, else its process-wide id "id …"."""
        n = self.number(edit)
        return f"#{n}" if n else f"id {edit.id}"

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def edits(self) -> list[Edit]:
        return [e.edit for e in self.entries]

    def state_token(self, layers) -> tuple:
        """Changes whenever the weights of any of ``layers`` change (for feature caches)."""
        names = set(layers)
        return tuple((e.edit.id, e.strength) for e in self.entries if e.edit.layer in names)

    def originals(self) -> dict[str, torch.Tensor]:
        """{layer: W₀} of the layers this history holds (a snapshot; nothing is written)."""
        with _REGISTRY:
            return dict(self._originals)

    def held_layers(self) -> list[str]:
        """Layers this history holds (has an applied edit on)."""
        return list(self._originals)

    # -- mutations ----------------------------------------------------------------------
    def apply(self, edit: Edit, strength: float = 1.0) -> int:
        """Install ``edit``; returns its index. Checked first, nothing changes on an error."""
        self.apply_all([(edit, strength)])
        return len(self.entries) - 1

    def apply_all(self, edits: Sequence[tuple[Edit, float]]) -> list[int]:
        """Install several edits as one step: every one is checked, and the weights they give
        together, before any is installed; all are installed or none."""
        pairs = list(edits)
        with _REGISTRY:
            checked = [(edit, _check_strength(strength), self.checked_delta(edit))
                       for edit, strength in pairs]
            layers = list(dict.fromkeys(edit.layer for edit, _, _ in checked))
            for layer in layers:
                self._check_holder(layer)
            new = [Entry(edit, s) for edit, s, _ in checked]
            entries = self.entries + new
            weights = {}
            for layer in layers:
                base = self._originals.get(layer)
                if base is None:
                    base = self._resolve(layer).weight.detach()
                for edit, _, delta in checked:
                    if edit.layer == layer:
                        self._check_size(edit, delta, base)
                weights[layer] = self._compose(layer, entries, base)
            # everything is checked: now change state
            for layer in layers:
                self._hold(layer)
            start = len(self.entries)
            self.entries.extend(new)
            self.dropped_redo = len(self.redo_stack)
            self.redo_stack.clear()
            for entry in new:
                self._numbers.setdefault(entry.edit.id, len(self._numbers) + 1)
            for layer in layers:
                self._write(layer, weights[layer])
            return list(range(start, len(self.entries)))

    def undo(self) -> Edit | None:
        return self._move(self.entries, self.redo_stack)

    def redo(self) -> Edit | None:
        return self._move(self.redo_stack, self.entries)

    def _move(self, source: list[Entry], target: list[Entry]) -> Edit | None:
        """Pop the newest entry of ``source`` onto ``target`` and rebuild its layer."""
        if not source:
            return None
        with _REGISTRY:
            entry = source[-1]
            layer = entry.edit.layer
            if source is self.redo_stack:  # redo: the layer must be free or ours
                self._check_holder(layer)
                base = self._originals.get(layer)
                if base is None:
                    base = self._resolve(layer).weight.detach()
                weight = self._compose(layer, self.entries + [entry], base)
                self._hold(layer)
                source.pop()
                target.append(entry)
                self._write(layer, weight)
            else:
                source.pop()
                target.append(entry)
                self._rebuild(layer)
                self._release_unused(layer)
            return entry.edit

    def reset(self) -> None:
        with _REGISTRY:
            self.redo_stack = list(reversed(self.entries)) + self.redo_stack
            self.entries.clear()
            for layer in list(self._originals):
                self._rebuild(layer)
                self._release_unused(layer)

    def set_strength(self, index: int, strength: float) -> None:
        index = check_int(index, "the edit index", fix="pick an index from session.history.edits.")
        if not -len(self.entries) <= index < len(self.entries):
            raise RewriteError(f"There is no applied edit number {index} (history has "
                               f"{len(self.entries)}).", "pick an index from session.history.edits.")
        strength = _check_strength(strength)
        with _REGISTRY:
            entry = self.entries[index]
            layer = entry.edit.layer
            entries = [Entry(e.edit, strength) if e is entry else e for e in self.entries]
            weight = self._compose(layer, entries, self._originals[layer])
            entry.strength = strength
            self._write(layer, weight)

    @contextmanager
    def original_weights(self) -> Iterator[None]:
        """Temporarily install W₀ on every layer this history holds (e.g. to collect
        statistics); other histories' layers are left as they are."""
        with _REGISTRY:
            held = dict(self._originals)
            with torch.no_grad():
                for layer, w0 in held.items():
                    self._write(layer, w0)
        try:
            yield
        finally:
            with _REGISTRY:
                for layer in held:
                    if layer in self._originals:
                        self._rebuild(layer)

    # -- internals ----------------------------------------------------------------------
    def checked_delta(self, edit: Edit) -> torch.Tensor:
        """ΔW of ``edit`` at full strength, after checking everything it is made of (what
        apply checks per edit; a preview uses it too). Changes nothing."""
        if not isinstance(edit, Edit):
            raise RewriteError(f"{type(edit).__name__} is not an Edit.",
                               "pass an Edit from session.compute_edit() or a delta file.")
        if not isinstance(edit.layer, str):
            raise RewriteError(f"The edit's layer is {edit.layer!r}, not a layer name.",
                               "apply edits made by rewidget for this model.")
        module = self._resolve(edit.layer)  # RewriteError for an unknown layer
        mem = memory_for(module, edit.layer)
        fix = "apply only edits made for this model and layer (session.compute_edit or a " \
              "delta exported from it)."
        for name, t in (("directions", edit.directions), ("factor", edit.factor)):
            if not isinstance(t, torch.Tensor):
                raise RewriteError(f"The edit's {name} is a {type(t).__name__}, not a tensor.", fix)
            if t.is_meta:
                raise RewriteError(f"The edit's {name} is a meta tensor (no data).", fix)
            if not t.is_floating_point():
                raise RewriteError(f"The edit's {name} has dtype {t.dtype}; expected floats.", fix)
            if not bool(torch.isfinite(t).all()):
                raise RewriteError(f"The edit's {name} contains NaN or Inf.", fix)
        d = edit.directions
        if d.dim() != 2 or d.shape[0] != mem.key_dim or not 1 <= d.shape[1] <= mem.key_dim:
            raise RewriteError(f"The edit's directions have shape {tuple(d.shape)}; layer "
                               f"{edit.layer!r} needs ({mem.key_dim}, rank).", fix)
        try:
            delta = edit.delta(module)
        except (RuntimeError, ValueError, IndexError, TypeError) as e:
            raise RewriteError(f"The edit's factor {tuple(edit.factor.shape)} does not fit layer "
                               f"{edit.layer!r} ({e}).", fix) from e
        if delta.shape != module.weight.shape:
            raise RewriteError(f"The edit's update has shape {tuple(delta.shape)} but layer "
                               f"{edit.layer!r} has weight {tuple(module.weight.shape)}.",
                               "apply edits only to the model (and layer) they were made for.")
        if not bool(torch.isfinite(delta).all()):
            raise RewriteError(f"The edit's update of {edit.layer!r} overflows to NaN or Inf.", fix)
        return delta

    @staticmethod
    def _check_size(edit: Edit, delta: torch.Tensor, base: torch.Tensor) -> None:
        size = float(delta.to(torch.float64).norm())
        ref = float(base.to(torch.float64).norm()) or 1.0
        if size > MAX_RELATIVE_UPDATE * ref:
            raise RewriteError(f"The edit changes layer {edit.layer!r} by {size / ref:.3g}× its "
                               f"weight (at most {MAX_RELATIVE_UPDATE:g}× is accepted).",
                               "this is not an edit of this model; check where it came from.")

    def _check_holder(self, layer: str) -> None:
        module = self._resolve(layer)
        ref = _HOLDERS.get(module)
        other = ref() if ref is not None else None
        if other is not None and other is not self:
            raise RewriteError(
                f"Layer {layer!r} of this generator holds {len(other.entries)} edit(s) of "
                "another RewriteSession on the same generator object; two sessions cannot stack "
                "edits on one layer (undo in one would clobber the other).",
                "undo or reset the other session's edits on that layer first, or give each "
                "session its own generator (rewidget.models.load(name) per session).")

    def _hold(self, layer: str) -> None:
        if layer not in self._originals:
            module = self._resolve(layer)
            self._originals[layer] = module.weight.detach().clone()
            _HOLDERS[module] = weakref.ref(self)

    def _release_unused(self, layer: str) -> None:
        """Stop holding ``layer`` once no applied entry is on it (its weight is W₀ again)."""
        if layer in self._originals and not any(e.edit.layer == layer for e in self.entries):
            del self._originals[layer]
            module = self._resolve(layer)
            ref = _HOLDERS.get(module)
            if ref is not None and ref() is self:
                del _HOLDERS[module]

    def _compose(self, layer: str, entries: list[Entry], w0: torch.Tensor) -> torch.Tensor:
        """The weight ``layer`` gets with ``entries`` applied over ``w0`` (checked finite)."""
        module = self._resolve(layer)
        active = [e for e in entries if e.edit.layer == layer and e.strength > 0]
        if not active:
            return w0  # exact: no arithmetic on the way back to W₀
        with torch.no_grad():
            acc = w0.to(torch.float64)
            for e in active:
                acc = acc + e.strength * e.edit.delta(module).to(torch.float64)
            out = acc.to(w0.dtype)
        if not bool(torch.isfinite(out).all()):
            raise RewriteError(f"The edits on {layer!r} together give NaN or Inf weights.",
                               "lower their strengths, or undo one of them.")
        return out

    def _write(self, layer: str, weight: torch.Tensor) -> None:
        module = self._resolve(layer)
        with torch.no_grad():
            module.weight.copy_(weight)
        _written(module)

    def _rebuild(self, layer: str) -> None:
        self._write(layer, self._compose(layer, self.entries, self._originals[layer]))


def _check_strength(strength: float) -> float:
    return check_real(strength, "the strength", 0.0, 1.0,
                      fix="use 1 for the full edit, 0 to switch it off, or a value between.")
