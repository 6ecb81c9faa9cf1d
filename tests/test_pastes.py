"""Several pastes in one edit: the same rule taught on more than one example, solved together."""

import json

import numpy as np
import pytest

from rewidget import RewriteError
from rewidget.core.requests import EditRequest, Paste, Sample, Selection

from .conftest import box

CTX_A, CTX_B = box(32, 8, 20, 8, 20), box(32, 10, 22, 6, 18)
COPY = box(32, 8, 16, 8, 16)


def two_pastes(s):
    s.set_layer("main.9")
    s.add_context(1, CTX_A)
    s.add_context(3, CTX_B)
    s.set_copy(2, COPY)
    assert s.add_paste(1, (2, 3)) == 1  # the first one is the paste
    assert s.add_paste(3, (0, 4)) == 2  # then further goals
    return s


def test_add_paste_builds_a_request_with_every_goal(tiny_session):
    s = two_pastes(tiny_session)
    assert s.paste == Paste(Sample(1), (2, 3))
    req = s.request(rank=2)
    assert [(c.sample.seed, p.sample.seed, p.offset) for c, p in req.pastes] == [
        (2, 1, (2.0, 3.0)), (2, 3, (0.0, 4.0))]
    edit = s.compute_edit(req)
    assert len(edit.targets) == 2


def test_joint_solve_fits_the_second_example_better_than_one_paste(tiny_session):
    s = two_pastes(tiny_session)
    both = s.compute_edit(s.request(rank=2))
    first_only = s.compute_edit(EditRequest(**{**_fields(s.request(rank=2)), "more_pastes": ()}))
    second = both.targets[1]
    mem = _mem(s)
    from rewidget.core.solve import masked_errors

    err_joint = masked_errors(mem, [second], mem.weight + both.delta(mem.module))["l2"]
    err_single = masked_errors(mem, [second], mem.weight + first_only.delta(mem.module))["l2"]
    before = masked_errors(mem, [second])["l2"]
    assert err_joint < err_single and err_joint < before


def test_more_pastes_round_trip_and_old_requests_keep_their_form(tiny_session):
    s = two_pastes(tiny_session)
    req = s.request()
    text = req.to_json()
    again = EditRequest.from_json(text)
    assert again == req and len(again.more_pastes) == 1
    assert np.array_equal(again.more_pastes[0][0].mask, COPY)
    s.clear_paste()
    s.set_paste(1, (2, 3))
    assert "more_pastes" not in json.loads(s.request().to_json())  # files without it: unchanged


def test_keep_paste_frees_the_paste_tool_and_clear_drops_every_paste(tiny_session):
    s = tiny_session
    s.add_context(1, CTX_A)
    s.set_copy(2, COPY)
    with pytest.raises(RewriteError, match="no placed paste"):
        s.keep_paste()
    s.set_paste(1, (1, 1))
    assert s.keep_paste() == 1 and s.paste is None
    req = s.request()  # complete: the kept paste is a goal
    assert req.paste is None and len(req.pastes) == 1
    s.set_paste(1, (-2, 0))
    assert len(s.request().pastes) == 2
    s.clear_paste()
    assert s.paste is None and not s.more_pastes and s.copy is not None
    with pytest.raises(RewriteError, match="not been pasted"):
        s.request()


def test_a_paste_may_use_part_of_the_copy(tiny_session):
    s = tiny_session
    s.add_context(1, CTX_A)
    s.set_copy(2, COPY)
    part = box(32, 8, 12, 8, 12)
    s.add_paste(1, (0, 0), mask=part)  # clipped: kept as a further goal, the copy unchanged
    assert s.paste is None and np.array_equal(s.more_pastes[0][0].mask, part)
    assert np.array_equal(s.copy.mask, COPY)
    assert len(s.compute_edit().targets) == 1


def test_use_request_restores_every_paste(tiny_session):
    req = two_pastes(tiny_session).request()
    tiny_session.clear_selection()
    tiny_session.use_request(req)
    assert tiny_session.request() == req


def test_bad_pastes_are_refused_clearly(tiny_session):
    s = tiny_session
    with pytest.raises(RewriteError, match="Nothing is copied"):
        s.add_paste(1)
    sel = Selection(Sample(2), COPY)
    with pytest.raises(RewriteError, match="erase edit has no pastes"):
        EditRequest(layer="main.9", kind="erase", more_pastes=((sel, Paste(Sample(1))),))
    with pytest.raises(RewriteError, match=r"\(Selection, Paste\) pair"):
        EditRequest(layer="main.9", more_pastes=((sel,),))
    obj = json.loads(two_pastes(s).request().to_json())
    obj["more_pastes"][0].pop("paste")
    with pytest.raises(RewriteError, match=r"more_pastes\[0\]"):
        EditRequest.from_json(obj)
    obj["more_pastes"] = {"not": "a list"}
    with pytest.raises(RewriteError, match="more_pastes"):
        EditRequest.from_json(obj)


def test_a_goal_the_context_cannot_reach_is_named_in_the_refusal(tiny_session):
    import torch

    from rewidget.core.edits import _check_targets_match
    from rewidget.core.targets import Target

    s = two_pastes(tiny_session)
    edit = s.compute_edit()
    ok = edit.targets[0]
    dead = Target(torch.zeros_like(ok.keys), ok.goal, ok.weight)  # keys with no component on D
    _check_targets_match(_mem(s), edit.directions, [ok], edit.context_level)  # reachable: fine
    with pytest.raises(RewriteError, match="goal 2 of 2"):
        _check_targets_match(_mem(s), edit.directions, [ok, dead], edit.context_level)


def _fields(req: EditRequest) -> dict:
    return {f: getattr(req, f) for f in ("layer", "model", "kind", "rank", "solver", "context",
                                         "copy", "paste", "stats_samples", "solver_options")}


def _mem(s):
    from rewidget.core.memory import memory_for

    return memory_for(s.gen.layer("main.9"), "main.9")
