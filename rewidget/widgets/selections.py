"""What a painter stroke does to the session's selections (called on the app's worker thread).

    set_context(session, seed=3, mask=m)    # one context entry per sample: m replaces seed 3's
    set_context(session, seed=3, mask=None) # erased to nothing: seed 3 leaves the context
    set_copy(session, seed=5, mask=m)       # the object to insert
    drop_copy(session)                      # no copy, hence no paste either
    parse_seeds("0-7, 12")                  # [0, ..., 7, 12] for the grid's seed box

The painter holds one mask per tool for the sample it shows, so a stroke hands over that
sample's whole mask. Each function validates before it changes anything.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

from ..core.errors import RewriteError
from ..core.requests import Sample, Selection
from ..session import RewriteSession


def set_context(session: RewriteSession, seed: int, mask: np.ndarray | None) -> None:
    """Make ``mask`` the context on sample ``seed`` (replacing its entry in place, so the tray
    keeps its order); None removes the sample's entry."""
    s, sample = session, Sample(seed)
    with s.lock:
        entries = [(c.sample, c.mask) for c in s.context]
        hits = [i for i, (smp, _) in enumerate(entries) if smp == sample]
        if mask is None:
            if not hits:
                return
            entries = [e for i, e in enumerate(entries) if i not in hits]
        else:
            new = Selection(sample, mask).mask  # validates before anything changes
            if not hits:
                s.add_context(sample, new)
                return
            entries = [(sample, new) if i == hits[0] else e
                       for i, e in enumerate(entries) if i == hits[0] or i not in hits]
        s.clear_context()
        for smp, m in entries:
            s.add_context(smp, m)


def remove_selection(session: RewriteSession, sel: Selection) -> None:
    """Remove this very context entry (if it is still there)."""
    with session.lock:
        for i, c in enumerate(session.context):
            if c is sel:
                session.remove_context(i)
                return


def set_copy(session: RewriteSession, seed: int, mask: np.ndarray | None
             ) -> Literal["set", "dropped", "unchanged"]:
    """Copy ``mask`` of sample ``seed``; None (erased to nothing) drops a copy from this sample."""
    if mask is None:
        if session.copy is not None and session.copy.sample == Sample(seed):
            drop_copy(session)
            return "dropped"
        return "unchanged"
    session.set_copy(seed, mask)
    return "set"


def drop_copy(session: RewriteSession) -> None:
    """No copy and no paste."""
    session.clear_copy()


def drop_paste(session: RewriteSession) -> None:
    """No paste (the copy stays)."""
    session.clear_paste()


def parse_seeds(text: str, limit: int = 64) -> list[int]:
    """'0-7, 12, 40' → [0, ..., 7, 12, 40]; raises RewriteError on anything else."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in re.split(r"[,\s]+", text))):
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise RewriteError(f"{part!r} is not a seed.",
                               "type seeds as non-negative integers or ranges, e.g. 0-7, 12, 40.")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise RewriteError(f"The range {part!r} runs backwards.", f"write it as {b}-{a}.")
        seeds.extend(range(a, b + 1))
        if len(seeds) > limit:
            raise RewriteError(f"More than {limit} seeds.", f"show at most {limit} at a time.")
    if not seeds:
        raise RewriteError("No seeds given.", "type seeds such as 0-15, or 3, 8, 21.")
    return list(dict.fromkeys(seeds))
