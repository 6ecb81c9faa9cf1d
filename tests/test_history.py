"""One writer of weights: undo, redo, reset and strength are exact."""

import pytest
import torch

from rewidget.core.errors import RewriteError

from .conftest import box


def weights(s):
    return {n: s.gen.layer(n).weight.detach().clone() for n in s.gen.layer_names()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def prepared(s, layer="main.9"):
    s.set_layer(layer)
    s.add_context(1, box(32, 8, 20, 8, 20))
    s.set_copy(2, box(32, 8, 20, 8, 20))
    s.set_paste(1, (3, 0))
    return s


def test_undo_redo_reset_are_bit_exact(tiny_session):
    s = prepared(tiny_session)
    w0, img0 = weights(s), s.render().copy()
    e1 = s.rewrite()
    w1, img1 = weights(s), s.render().copy()
    assert not same(w0, w1) and (img0 != img1).any()
    s.set_layer("main.7")
    s.rewrite()
    w2 = weights(s)
    assert s.undo() is not None
    assert same(weights(s), w1)
    s.undo()
    assert same(weights(s), w0) and (s.render() == img0).all()
    s.redo()
    assert same(weights(s), w1) and (s.render() == img1).all()
    s.redo()
    assert same(weights(s), w2)
    s.reset()
    assert same(weights(s), w0) and (s.render() == img0).all()
    assert len(s.history) == 0 and e1 in [e.edit for e in s.history.redo_stack]


def test_strength_zero_is_original_and_half_is_linear(tiny_session):
    s = prepared(tiny_session)
    w0 = weights(s)["main.9"]
    e = s.rewrite()
    full = s.gen.layer("main.9").weight.detach().clone()
    s.set_strength(0, 0.0)
    assert torch.equal(s.gen.layer("main.9").weight, w0)
    s.set_strength(0, 0.5)
    torch.testing.assert_close(s.gen.layer("main.9").weight, (w0 + full) / 2)
    with pytest.raises(RewriteError, match="outside"):
        s.set_strength(0, 1.5)
    torch.testing.assert_close(s.gen.layer("main.9").weight, (w0 + full) / 2)
    assert e.rank == 1


def test_new_edit_after_undo_clears_redo(tiny_session):
    s = prepared(tiny_session)
    s.rewrite()
    s.undo()
    assert s.history.redo_stack
    s.rewrite()
    assert not s.history.redo_stack and s.redo() is None


def test_edits_at_several_layers_compose(tiny_session):
    s = prepared(tiny_session)
    w0 = weights(s)
    e1 = s.rewrite()
    s.set_layer("main.4")
    e2 = s.rewrite()
    w = weights(s)
    torch.testing.assert_close(w["main.9"], w0["main.9"] + e1.delta(s.gen.layer("main.9")))
    torch.testing.assert_close(w["main.4"], w0["main.4"] + e2.delta(s.gen.layer("main.4")))
    # re-rendering from cached features equals a full forward pass of the edited model
    with torch.no_grad():
        full = s.gen.to_rgb(s.gen.forward(s.gen.latents(range(16))))
    assert (s.render() == full).all()


def test_render_reuses_features_before_the_edited_layer(tiny_session):
    s = prepared(tiny_session)
    s.render()
    calls = []
    handle = s.gen.layer("main.4").register_forward_hook(lambda *a: calls.append(1))
    try:
        s.rewrite()
        calls.clear()
        s.render()
    finally:
        handle.remove()
    assert calls == []  # main.4 runs before the edited main.9: not re-run


def test_edits_are_numbered_per_session_and_a_new_edit_counts_the_redo_it_dropped():
    from rewidget import RewriteSession

    for _ in range(2):  # each session counts from 1, whatever ran before in this process
        s = prepared(RewriteSession("tiny", stats_samples=400))
        first = s.rewrite()
        second = s.rewrite()
        assert s.history.label(first) == "#1" and s.history.label(second) == "#2"
        assert s.history.dropped_redo == 0
        s.undo()
        third = s.rewrite()  # drops the undone second edit
        assert s.history.label(third) == "#3" and s.history.dropped_redo == 1
        s.undo()
        s.redo()  # redo keeps its number
        assert s.history.label(s.history.entries[-1].edit) == "#3"
        assert s.history.number(s.compute_edit()) == 0  # not installed: no number
