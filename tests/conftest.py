"""Shared fixtures: an isolated statistics cache, the tiny generator, the real faces model."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Statistics go to a per-run temp dir, never to the user's ~/.cache."""
    path = tmp_path_factory.mktemp("rewidget-cache")
    old = os.environ.get("REWIDGET_CACHE")
    os.environ["REWIDGET_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("REWIDGET_CACHE", None)
    else:
        os.environ["REWIDGET_CACHE"] = old


def box(size: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


# the faces model's "add glasses" edit (rewidget/examples/requests/faces_glasses.json uses the same boxes)
FACES_EYES = box(64, 24, 38, 12, 52)  # eye band of these aligned faces
FACES_GLASSES = box(64, 24, 38, 14, 54)  # seed 4 wears dark glasses there


@pytest.fixture
def tiny_session():
    from rewidget import RewriteSession

    s = RewriteSession("tiny", stats_samples=400)
    return s


@pytest.fixture(scope="session")
def faces_gen():
    from rewidget.models import load

    return load("dcgan-faces")


def edit_then_undo(s, request) -> None:
    """Install ``request``: the grid must change; undo: it must be back, bit for bit."""
    before = s.render().copy()
    s.rewrite(request)
    assert not np.array_equal(before, s.render())
    s.undo()
    assert np.array_equal(before, s.render())
