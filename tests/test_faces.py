"""Behaviour on the real pretrained face generator (DCGAN, 64×64): the "add glasses" edit."""

import numpy as np
import pytest
import torch

from rewidget import RewriteSession
from rewidget.core.metrics import change_inside_outside

from .conftest import FACES_EYES as EYES
from .conftest import FACES_GLASSES as GLASSES

HELD_OUT = list(range(100, 124))


@pytest.fixture(scope="module")
def session(faces_gen):
    s = RewriteSession(faces_gen, layer="main.9", stats_samples=2000)
    for seed in (1, 7, 0):
        s.add_context(seed, EYES)
    s.set_copy(4, GLASSES)
    s.set_paste(1, (0, 0))
    return s


def test_faces_model_loads_with_expected_layers(faces_gen):
    assert faces_gen.layer_shapes()["main.9"] == {"type": "ConvTranspose2d", "keys": (128, 16, 16),
                                                  "values": (64, 32, 32)}
    img = faces_gen.render([0])
    assert img.shape == (1, 64, 64, 3) and img.std() > 20  # a real image, not noise or flat


def test_paste_moves_the_target_toward_the_copied_content(session):
    s = session
    src = s.images([4]).clone()
    before = s.images([1]).clone()
    edit = s.rewrite()
    try:
        after = s.images([1])
        m = torch.from_numpy(GLASSES > 0)
        d0 = float((before[0][:, m] - src[0][:, m]).abs().mean())
        d1 = float((after[0][:, m] - src[0][:, m]).abs().mean())
        print(f"\npasted region: mean |target - copied| {d0:.3f} -> {d1:.3f} "
              f"({(1 - d1 / d0):.0%} closer); layer-value L2 "
              f"{edit.report['before']['l2']:.4f} -> {edit.report['installed_measured']['l2']:.4f}")
        assert d1 < 0.93 * d0
        assert edit.report["installed_measured"]["l2"] < 0.85 * edit.report["before"]["l2"]
    finally:
        s.undo()


def test_held_out_faces_change_mainly_where_the_context_fires(session):
    s = session
    before = s.images(HELD_OUT).clone()
    s.rewrite()
    try:
        after = s.images(HELD_OUT)
        r = change_inside_outside(before, after, s.context_match(HELD_OUT), threshold=0.5)
        print(f"\nheld-out change inside the match {r['inside']:.4f} vs outside {r['outside']:.4f} "
              f"(ratio {r['ratio']:.2f}, match covers {r['inside_share']:.0%} of pixels)")
        assert r["ratio"] > 1.5
        assert 0.02 < r["inside_share"] < 0.6
    finally:
        s.undo()
    assert np.array_equal(s.render(HELD_OUT), s.gen.to_rgb(before))
