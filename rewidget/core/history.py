"""The one place that writes weights: W = W₀ + Σ strength·ΛDᵀ over the active edits.

    hist = EditHistory(gen.layer)
    hist.apply(edit)            # installs it
    hist.set_strength(0, 0.5)   # half strength
    hist.undo(); hist.redo()
    hist.reset()                # every touched layer bit-for-bit back to W₀

Each touched layer's original weight is kept once (one layer of memory, never a model copy).
A layer with no active edit gets W₀ copied back, so undo and reset are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .edits import Edit
from .errors import RewriteError


@dataclass
class Entry:
    edit: Edit
    strength: float = 1.0


class EditHistory:
    def __init__(self, resolve: Callable[[str], nn.Module]) -> None:
        self._resolve = resolve
        self._originals: dict[str, torch.Tensor] = {}
        self.entries: list[Entry] = []  # applied, oldest first
        self.redo_stack: list[Entry] = []

    # -- queries ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    @property
    def edits(self) -> list[Edit]:
        return [e.edit for e in self.entries]

    def state_token(self, layers) -> tuple:
        """Changes whenever the weights of any of ``layers`` change (for feature caches)."""
        names = set(layers)
        return tuple((e.edit.id, e.strength) for e in self.entries if e.edit.layer in names)

    # -- mutations ----------------------------------------------------------------------
    def apply(self, edit: Edit, strength: float = 1.0) -> int:
        strength = _check_strength(strength)
        module = self._resolve(edit.layer)
        delta = edit.delta(module)  # validates shapes before anything changes
        if delta.shape != module.weight.shape:
            raise RewriteError(f"The edit's update has shape {tuple(delta.shape)} but layer "
                               f"{edit.layer!r} has weight {tuple(module.weight.shape)}.",
                               "apply edits only to the model (and layer) they were made for.")
        self._originals.setdefault(edit.layer, module.weight.detach().clone())
        self.entries.append(Entry(edit, strength))
        self.redo_stack.clear()
        self._rebuild(edit.layer)
        return len(self.entries) - 1

    def undo(self) -> Edit | None:
        return self._move(self.entries, self.redo_stack)

    def redo(self) -> Edit | None:
        return self._move(self.redo_stack, self.entries)

    def _move(self, source: list[Entry], target: list[Entry]) -> Edit | None:
        """Pop the newest entry of ``source`` onto ``target`` and rebuild its layer."""
        if not source:
            return None
        entry = source.pop()
        target.append(entry)
        self._rebuild(entry.edit.layer)
        return entry.edit

    def reset(self) -> None:
        self.redo_stack = list(reversed(self.entries)) + self.redo_stack
        self.entries.clear()
        for layer in self._originals:
            self._rebuild(layer)

    def set_strength(self, index: int, strength: float) -> None:
        if not -len(self.entries) <= index < len(self.entries):
            raise RewriteError(f"There is no applied edit number {index} (history has "
                               f"{len(self.entries)}).", "pick an index from session.history.edits.")
        self.entries[index].strength = _check_strength(strength)
        self._rebuild(self.entries[index].edit.layer)

    @contextmanager
    def original_weights(self) -> Iterator[None]:
        """Temporarily install W₀ on every touched layer (e.g. to collect statistics)."""
        with torch.no_grad():
            for layer, w0 in self._originals.items():
                self._resolve(layer).weight.copy_(w0)
        try:
            yield
        finally:
            for layer in self._originals:
                self._rebuild(layer)

    def _rebuild(self, layer: str) -> None:
        module = self._resolve(layer)
        w0 = self._originals[layer]
        active = [e for e in self.entries if e.edit.layer == layer and e.strength > 0]
        with torch.no_grad():
            if not active:
                module.weight.copy_(w0)  # exact: no arithmetic on the way back to W₀
                return
            acc = w0.to(torch.float64)
            for e in active:
                acc = acc + e.strength * e.edit.delta(module).to(torch.float64)
            module.weight.copy_(acc.to(w0.dtype))


def _check_strength(strength: float) -> float:
    s = float(strength)
    if not 0.0 <= s <= 1.0:
        raise RewriteError(f"Strength {strength!r} is outside [0, 1].",
                           "use 1 for the full edit, 0 to switch it off, or a value between.")
    return s
