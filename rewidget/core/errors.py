"""Errors that say what was wrong and how to fix it, and the checks that raise them.

    try:
        session.rewrite()
    except RewriteError as e:
        print(e)          # "The copy mask is empty. Fix: paint the object to copy ..."

    n = check_int(pool, "the search pool", lo=1, hi=100_000)     # not bool, not "12", not 1e3
    s = check_real(strength, "strength", lo=0.0, hi=1.0)        # finite, a real number
    t = as_real_tensor(latent, "the latent")                    # not a string, not a meta tensor

Every check in rewidget runs before anything is mutated, so a raised error leaves the model,
the edit history and the user's selections exactly as they were.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


class RewriteError(ValueError):
    """A request rewidget cannot carry out; ``problem`` and ``fix`` are kept separately."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} Fix: {fix}" if fix else problem)


class Cancelled(RuntimeError):
    """Long work (statistics, solving, search) stopped because the user asked it to."""


class ListenerWarning(RuntimeWarning):
    """A callback registered with ``session.on`` raised; the other callbacks still ran."""


class CacheWarning(UserWarning):
    """The statistics cache could not be read or written; statistics stay in memory."""


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(value: Any, what: str, lo: int | None = None, hi: int | None = None,
              fix: str = "") -> int:
    """``value`` as an int in [lo, hi]; bools, floats and strings are refused (no parsing)."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise RewriteError(f"{_cap(what)} is {_short(value)} ({type(value).__name__}); expected an "
                           "integer.", fix or f"pass {what} as an int.")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise RewriteError(f"{_cap(what)} is {_short(v)}, outside {bounds}.",
                           fix or f"pass {what} within {bounds}.")
    return v


def check_real(value: Any, what: str, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False, fix: str = "") -> float:
    """``value`` as a finite float in [lo, hi] (or (lo, hi] with ``lo_open``); a 0-d numpy or
    torch number is accepted, strings, None and bools are not."""
    import numpy as np
    import torch

    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0 \
            and value.dtype not in (torch.bool, np.bool_) and not _is_meta(value):
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise RewriteError(f"{_cap(what)} is {_short(value)} ({type(value).__name__}); expected a "
                           "number.", fix or f"pass {what} as a number.")
    v = float(value)
    if not math.isfinite(v):
        raise RewriteError(f"{_cap(what)} is {v}; it must be finite.", fix or f"pass a finite {what}.")
    if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
        left = "(" if lo_open else "["
        bounds = f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise RewriteError(f"{_cap(what)} is {v:g}, outside {bounds}.",
                           fix or f"pass {what} within {bounds}.")
    return v


def _is_meta(t: Any) -> bool:
    return getattr(t, "is_meta", False) or str(getattr(t, "device", "")) == "meta"


def as_real_tensor(value: Any, what: str, fix: str = "", max_elements: int | None = None):
    """A torch tensor of real numbers with data (numpy arrays and nested lists converted).

    Refuses strings, None, objects, complex or bool dtypes, meta tensors (no data) and, with
    ``max_elements``, anything larger. The result may share memory with ``value``.
    """
    import numpy as np
    import torch

    fix = fix or f"pass {what} as a float tensor or numpy array."
    if value is None or isinstance(value, (str, bytes, dict)):
        raise RewriteError(f"{_cap(what)} is {_short(value)}; expected a tensor or array.", fix)
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as e:  # ragged lists and the like  # noqa: BLE001
            raise RewriteError(f"{_cap(what)} is not an array ({e}).", fix) from e
        if arr.dtype.kind not in "biuf":
            raise RewriteError(f"{_cap(what)} has dtype {arr.dtype}; expected real numbers.", fix)
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if _is_meta(t):
        raise RewriteError(f"{_cap(what)} is a meta tensor (it has a shape but no data).",
                           "pass a tensor with values, e.g. materialised with .to('cpu') "
                           "from real data.")
    if t.is_complex() or t.dtype == torch.bool:
        raise RewriteError(f"{_cap(what)} has dtype {t.dtype}; expected real numbers.", fix)
    if max_elements is not None and t.numel() > max_elements:
        raise RewriteError(f"{_cap(what)} has {t.numel():,} elements; at most {max_elements:,} are "
                           "accepted.", fix)
    return t


def check_finite(name: str, tensor, fix: str = "") -> None:
    """Raise RewriteError if ``tensor`` (torch or numpy) holds NaN or Inf."""
    import numpy as np
    import torch

    if isinstance(tensor, torch.Tensor):
        bad = not bool(torch.isfinite(tensor).all())
    else:
        bad = not bool(np.isfinite(np.asarray(tensor)).all())
    if bad:
        raise RewriteError(
            f"{name} contains NaN or Inf values.",
            fix or f"pass a finite {name}; check where it was computed.",
        )
