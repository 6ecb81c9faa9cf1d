"""The picture on an ImageCanvas is also widget state, so saved notebooks and static exports
(nbconvert HTML, nbviewer) show it instead of a blank canvas."""

import io
import time

import numpy as np
from PIL import Image

from rewidget.widgets import imagecanvas
from rewidget.widgets.imagecanvas import ImageCanvas


def test_the_last_picture_lands_in_the_saved_state_after_the_changes_settle(monkeypatch):
    monkeypatch.setattr(imagecanvas, "STATE_DELAY", 0.2)
    c = ImageCanvas("rewidget-test")
    try:
        first = np.zeros((6, 9, 3), np.uint8)
        second = first.copy()
        second[2:4, 3:7] = (200, 10, 30)
        c.show(first)
        c.show(second)  # a quick second change: only the settled picture is stored
        assert c.image_data is None
        deadline = time.time() + 5
        while c.image_data is None and time.time() < deadline:
            time.sleep(0.05)
        stored = np.asarray(Image.open(io.BytesIO(c.image_data)).convert("RGB"))
        assert np.array_equal(stored, second)
        state = c.get_state()
        assert state["image_data"] is not None  # what a saved notebook carries
    finally:
        c.close()
