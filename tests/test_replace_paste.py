"""Replacing pastes and "Paste on all": the context object under a paste goes (filled from its
surroundings), and one placed paste is repeated on every context object. Tiny seeded generator
and hand-made masks; the scenes measurement is benchmarks/semantic_layers.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rewidget import RewriteError, RewriteSession
from rewidget.core.edits import edit_problem, sample_latents
from rewidget.core.masks import mask_at, parts_touching, shift
from rewidget.core.memory import memory_for
from rewidget.core.placement import mask_parts, place_on_parts
from rewidget.core.requests import EditRequest, Paste, Sample, Selection
from rewidget.core.targets import _inpaint, inpaint_dense, paste_target

S = 32
LAYER = "main.7"


def blobs(*boxes) -> np.ndarray:
    m = np.zeros((S, S), np.uint8)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = 255
    return m


def test_parts_touching_keeps_only_the_parts_the_region_lands_on():
    m = blobs((2, 8, 2, 8), (2, 8, 20, 26), (20, 24, 4, 30))
    region = torch.zeros(S, S)
    region[5, 21] = 1.0  # inside the second blob only
    got = parts_touching(m, region)
    assert np.array_equal(got > 0, blobs((2, 8, 20, 26)) > 0)
    assert not parts_touching(m, torch.zeros(S, S)).any()
    parts = mask_parts(m)
    assert [int(p.sum()) for p in parts] == [104, 36, 36]  # largest first
    assert np.array_equal(np.logical_or.reduce(parts), m > 0)


@pytest.fixture(scope="module")
def s():
    return RewriteSession("tiny", stats_samples=400)


def test_a_replacing_paste_fills_the_context_object_around_the_copy(s):
    """Naive reference: the target's values inpainted over (context part ∪ pasted copy), then
    the copy composited in; the goal counts on the whole context part."""
    mem = memory_for(s.gen.layer(LAYER), LAYER)
    keys = s.gen.keys(LAYER, sample_latents(s.gen, [Sample(1), Sample(2)]))
    ctx = blobs((0, 20, 0, 20), (24, 32, 24, 32))  # the second blob is another object
    copy = blobs((8, 12, 8, 12))
    plain = paste_target(mem, keys[1:], copy, keys[:1], (0, 0), S)
    rep = paste_target(mem, keys[1:], copy, keys[:1], (0, 0), S, replace_mask=ctx)
    grid = tuple(plain.goal.shape[-2:])
    part = mask_at(blobs((0, 20, 0, 20)), grid)
    moved = mask_at(copy, grid)
    with torch.no_grad():
        dst, src = mem.values(keys[:1]), mem.values(keys[1:])
    want = _inpaint(dst, (part > 1e-6) | (moved > 1e-6))
    want = want * (1 - moved) + src * moved
    assert torch.allclose(rep.goal, want, atol=1e-6)
    assert torch.equal(rep.weight, torch.maximum(moved, part))
    assert torch.equal(plain.weight, moved)
    # outside the copy but inside the replaced part, the goal is the fill, not the old values
    ring = (part > 0.99) & (moved < 1e-6)
    assert ring.any() and not torch.allclose(rep.goal[..., ring], dst[..., ring])
    # the other context object is left as it is
    other = mask_at(blobs((24, 32, 24, 32)), grid) > 0.5
    assert torch.equal(rep.weight[other], torch.zeros_like(rep.weight[other]))


def _request(**kw) -> EditRequest:
    ctx = blobs((6, 18, 6, 18))
    return EditRequest(layer=LAYER, rank=3, context=(Selection(1, ctx),
                                                                   Selection(3, ctx)),
                       copy=Selection(2, blobs((8, 14, 8, 14))), paste=Paste(1, (0, 0)),
                       more_pastes=((Selection(2, blobs((8, 14, 8, 14))), Paste(3, (1, 0))),),
                       stats_samples=400, **kw)


def test_replace_round_trips_and_changes_the_edit(s):
    req = _request(replace=True)
    assert EditRequest.from_json(req.to_json()) == req and EditRequest.from_json(
        req.to_json()).replace
    assert "replace" not in _request().to_dict()  # old requests keep their exact form
    a = s.compute_edit(_request())
    b = s.compute_edit(req)
    assert not torch.equal(a.factor, b.factor)
    again = s.compute_edit(EditRequest.from_json(req.to_json()))
    assert torch.equal(again.factor, b.factor)  # replay is identical
    with pytest.raises(RewriteError, match="not True or False"):
        _request(replace=1)
    with pytest.raises(RewriteError, match="no paste to replace"):
        EditRequest(layer=LAYER, kind="erase", replace=True)
    with pytest.raises(RewriteError, match="replace"):
        EditRequest.from_json(req.to_json().replace('"replace": true', '"replace": "yes"'))


def test_the_output_goal_of_a_replacing_paste_fills_the_object(s):
    req = dataclasses.replace(_request(replace=True), solver="output",
                              solver_options={"grow": 0, "steps": 50})
    plain = edit_problem(s.gen, dataclasses.replace(req, replace=False)).output_goal(0)
    rep = edit_problem(s.gen, req).output_goal(0)
    part = mask_at(blobs((6, 18, 6, 18)), (S, S)) > 0.5
    copy = mask_at(blobs((8, 14, 8, 14)), (S, S)) > 0.5
    ring = part & ~copy & ~shift(copy[None, None].float(), (1, 0), S)[0, 0].bool()
    assert bool((rep.weight[:, 0][:, part] > 0.99).all())  # the whole object counts
    assert not torch.allclose(rep.goal[..., ring], plain.goal[..., ring])
    assert torch.allclose(rep.goal[:, :, ~part], plain.goal[:, :, ~part])  # elsewhere the same
    edit = s.compute_edit(req)
    assert edit.report["installed"]["l1"] < edit.report["before"]["l1"]


def test_place_on_parts_anchors_each_copy_as_the_first_sits_on_its_object():
    # three "roofs" of different heights, bases on row 20; the copy rests on the first's base
    roofs = blobs((10, 20, 2, 8), (14, 20, 12, 20), (8, 20, 24, 30))
    speck = blobs((1, 2, 30, 31))  # too small to be an object: no paste goes there
    context = (Selection(5, np.maximum(roofs, speck)), Selection(6, blobs((4, 12, 10, 16))))
    copy = Selection(9, blobs((0, 6, 0, 4)))  # 6 rows × 4 columns
    first = Paste(5, (3, 14))  # lands on rows 14-19, columns 3-6: base-aligned, centred
    new = place_on_parts(context, (copy, first), [(copy, first)], S)
    got = sorted((p.sample.seed, p.offset) for _, p in new)
    # roof 2 (columns 12-19): centre 16 → copy columns 14-17; base row 20 → rows 14-19;
    # roof 3 (columns 24-29): columns 25-28; sample 6's object ends at row 12 → rows 6-11
    assert got == [(5, (14.0, 14.0)), (5, (25.0, 14.0)), (6, (11.0, 6.0))]
    # nothing twice: the placed ones are covered now
    assert place_on_parts(context, (copy, first), [(copy, first), *new], S) == []
    with pytest.raises(RewriteError, match="does not land on the context"):
        place_on_parts(context, (copy, Paste(5, (26, 26))), [], S)


def test_session_paste_on_context_adds_the_pastes_all_or_nothing(tiny_session):
    s = tiny_session
    with pytest.raises(RewriteError, match="no placed paste"):
        s.paste_on_context()
    roofs = blobs((10, 20, 2, 8), (14, 20, 12, 20))
    s.add_context(5, roofs)
    s.add_context(6, blobs((4, 12, 10, 16)))
    s.set_copy(9, blobs((0, 6, 0, 4)))
    s.set_paste(5, (40, 40))  # off the context: refused, nothing changes
    with pytest.raises(RewriteError, match="does not land"):
        s.paste_on_context()
    assert s.paste.offset == (40.0, 40.0) and not s.more_pastes
    s.set_paste(5, (3, 14))
    assert s.paste_on_context() == 2
    req = s.request(layer=LAYER, rank=3)
    assert len(req.pastes) == 3 and s.paste is None
    assert s.paste_on_context() == 0  # from the last kept paste: every object has one
    s.set_replace(True)
    assert s.request(layer=LAYER).replace and not s.request("erase", layer=LAYER).replace
    s.use_request(dataclasses.replace(req, replace=False))
    assert s.replace is False


@pytest.mark.parametrize("shared", [False, True])
def test_the_fill_matches_jacobi_on_the_whole_image(shared):
    """_inpaint updates only the hole pixels (gathered by index); it must equal the whole-image
    average-pool iteration, holes on the borders and corners included."""
    g = torch.Generator().manual_seed(3)
    values = torch.randn(3, 5, 12, 10, generator=g)
    hole = torch.rand(3, 12, 10, generator=g) < 0.2
    hole[:, 0, :3] = True  # top edge and a corner
    hole[1, 4:9, 9] = True  # right edge
    hole[2] = False  # a sample with nothing to fill
    if shared:
        hole = hole[0]
    got = _inpaint(values, hole, iterations=37)
    want = inpaint_dense(values, hole, iterations=37)
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
    known = ~(hole[None].expand(3, -1, -1) if shared else hole)
    assert torch.equal(got.permute(1, 0, 2, 3)[:, known], values.permute(1, 0, 2, 3)[:, known])
