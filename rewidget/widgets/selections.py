"""What a painter stroke does to the session's selections (called on the app's worker thread).

    set_copy(session, seed=5, mask=m)       # the object to insert; None drops it from seed 5
    remove_selection(session, sel)          # a tray thumbnail clicked away
    parse_seeds("0-7, 12")                  # [0, ..., 7, 12] for the grid's seed box

A context stroke is ``session.set_context(seed, mask)`` (one entry per sample). The painter
holds one mask per tool for the sample it shows, so a stroke hands over that sample's whole
mask. Each function validates before it changes anything.
"""

from __future__ import annotations

import re

import numpy as np

from ..core.errors import RewriteError
from ..core.requests import Sample, Selection
from ..session import RewriteSession


def remove_selection(session: RewriteSession, sel: Selection) -> None:
    """Remove this very context entry (if it is still there)."""
    with session.lock:
        for i, c in enumerate(session.context):
            if c is sel:
                session.remove_context(i)
                return


def set_copy(session: RewriteSession, seed: int, mask: np.ndarray | None) -> None:
    """Copy ``mask`` of sample ``seed``; None (erased to nothing) drops a copy from this sample."""
    if mask is None:
        if session.copy is not None and session.copy.sample == Sample(seed):
            session.clear_copy()
    else:
        session.set_copy(seed, mask)


SEED_LIMIT = 2**64  # torch seeds are 64-bit (core.requests.SEED_LIMIT)
MAX_SEEDS_TEXT = 10_000  # characters typed in the seed box


def parse_seeds(text: str, limit: int = 64) -> list[int]:
    """'0-7, 12, 40' → [0, ..., 7, 12, 40]; raises RewriteError on anything else.

    Each range's size is checked before it is expanded, so '0-49999999' costs nothing; seeds
    are integers below 2**64 (at most 20 digits)."""
    if not isinstance(text, str):
        raise RewriteError(f"The seeds {text!r} are not text.", "type seeds such as 0-15, or 3, 8.")
    if len(text) > MAX_SEEDS_TEXT:
        raise RewriteError(f"The seed text is {len(text):,} characters long.",
                           f"show at most {limit} seeds at a time.")
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in re.split(r"[,\s]+", text))):
        m = re.fullmatch(r"(\d{1,20})(?:\s*-\s*(\d{1,20}))?", part)
        if not m:
            raise RewriteError(f"{part!r} is not a seed.",
                               "type seeds as non-negative integers or ranges, e.g. 0-7, 12, 40.")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if max(a, b) >= SEED_LIMIT:
            raise RewriteError(f"Seed {max(a, b)} is not below 2**64.",
                               "type seeds from 0 to 18446744073709551615.")
        if b < a:
            raise RewriteError(f"The range {part!r} runs backwards.", f"write it as {b}-{a}.")
        if len(seeds) + (b - a + 1) > limit:  # before expanding it
            raise RewriteError(f"More than {limit} seeds.", f"show at most {limit} at a time.")
        seeds.extend(range(a, b + 1))
    if not seeds:
        raise RewriteError("No seeds given.", "type seeds such as 0-15, or 3, 8, 21.")
    return list(dict.fromkeys(seeds))
