"""Saved edit requests that ship with rewidget: the benchmarks' named edits, for notebooks and
for anyone without a clone of the repository.

    from rewidget import examples
    examples.names()                         # ['faces_close_mouths', 'faces_glasses', ...]
    req = examples.request("roof_to_tree")   # an EditRequest (scenes: roofs become crowns)
    session.replay(req)

Written by benchmarks/make_requests.py (scenes), benchmarks/suggest.py (faces_glasses_b) and
benchmarks/eyes_edit.py (eyes_blue_to_red).
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import RewriteError
from ..core.requests import EditRequest

REQUESTS = Path(__file__).resolve().parent / "requests"


def names() -> list[str]:
    """The saved requests' names, sorted."""
    return sorted(p.stem for p in REQUESTS.glob("*.json"))


def request(name: str) -> EditRequest:
    """The saved request ``name`` (see names())."""
    path = REQUESTS / f"{name}.json"
    if not isinstance(name, str) or "/" in name or not path.is_file():
        raise RewriteError(f"There is no saved example request {name!r}.",
                           f"use one of {names()}.")
    return EditRequest.from_json(path.read_text(encoding="utf-8"))
