"""Errors that say what was wrong and how to fix it.

    try:
        session.rewrite()
    except RewriteError as e:
        print(e)          # "The copy mask is empty. Fix: paint the object to copy ..."

Every check in rewidget runs before anything is mutated, so a raised error leaves the model,
the edit history and the user's selections exactly as they were.
"""

from __future__ import annotations


class RewriteError(ValueError):
    """A request rewidget cannot carry out; ``problem`` and ``fix`` are kept separately."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} Fix: {fix}" if fix else problem)


class Cancelled(RuntimeError):
    """Long work (statistics, solving, search) stopped because the user asked it to."""


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
