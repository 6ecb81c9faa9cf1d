"""The output solver (core/through.py): the goal drawn in the output, Λ fitted through the later
layers. Tiny seeded generator; the scenes measurement is benchmarks/semantic_layers.py."""

import threading

import pytest
import torch

from rewidget import RewriteError, RewriteSession
from rewidget.core.edits import edit_problem, sample_latents
from rewidget.core.errors import Cancelled
from rewidget.core.memory import memory_for
from rewidget.core.requests import EditRequest
from rewidget.core.solve import solve_exact
from rewidget.core.through import output_loss, solve_output

from .conftest import box, edit_then_undo

LAYER = "main.7"


@pytest.fixture(scope="module")
def s():
    s = RewriteSession("tiny", stats_samples=400)
    m = box(32, 8, 20, 8, 20)
    s.add_context(1, m)
    s.add_context(3, m)
    s.set_copy(2, m)
    s.set_paste(1, (0, 0))
    s.add_paste(3, (0, 0))
    return s


def weights(s):
    return {n: s.gen.layer(n).weight.clone() for n in s.gen.layer_names()}


def test_it_fits_the_output_goal_better_than_the_exact_solve_and_changes_nothing(s):
    before = weights(s)
    exact = s.compute_edit(s.request(layer=LAYER, rank=3))
    out = s.compute_edit(s.request(layer=LAYER, rank=3, solver="output", steps=200))
    for n, w in before.items():
        assert torch.equal(w, s.gen.layer(n).weight), n
    problem = edit_problem(s.gen, out.request)
    goal = problem.output_goal(out.request.solver_options["grow"])
    mem = memory_for(s.gen.layer(LAYER), LAYER)

    def loss(edit):
        with torch.no_grad():
            img = s.gen.forward_from(LAYER, goal.keys, z=goal.z,
                                     weight=mem.weight + edit.delta(s.gen.layer(LAYER)))
        return float(output_loss(img, goal, out.request.solver_options["keep"]))

    assert loss(out) < 0.9 * loss(exact)
    assert out.report["installed"]["l2"] < out.report["before"]["l2"]  # in the output
    # still the method's constrained update: ΔW lies in span(D) along the key axis
    delta = out.delta(s.gen.layer(LAYER)).double()
    d = out.directions.double()
    flat = delta.movedim(mem.key_axis, -1)
    assert torch.allclose(flat @ d @ d.T, flat, atol=1e-6 * float(flat.abs().max()))


def test_the_goal_is_the_copy_composited_into_each_paste_target(s):
    req = s.request(layer=LAYER, rank=2, solver="output", grow=0)
    goal = edit_problem(s.gen, req).output_goal(0)
    assert goal.goal.shape[0] == 2  # two paste samples, one goal image each
    with torch.no_grad():
        src = s.gen.forward(sample_latents(s.gen, [req.copy.sample]))[0]
        dst = s.gen.forward(sample_latents(s.gen, [p.sample for _, p in req.pastes]))
    inside = goal.weight[:, 0] > 0.99
    outside = goal.weight[:, 0] == 0
    assert inside.any() and outside.any()
    for i in range(2):
        assert torch.allclose(goal.goal[i][:, inside[i]], src[:, inside[i]], atol=1e-6)
        assert torch.equal(goal.goal[i][:, outside[i]], dst[i][:, outside[i]])


def test_a_request_with_the_output_solver_replays_bit_for_bit(s):
    req = s.request(layer=LAYER, rank=2, solver="output", steps=50)
    again = EditRequest.from_json(req.to_json())
    assert again.solver == "output" and again.solver_options == req.solver_options
    a, b = s.compute_edit(req), s.compute_edit(again)
    assert torch.equal(a.factor, b.factor)


def test_an_erase_goal_is_filled_in_from_its_surroundings(s):
    e = s.compute_edit(s.request(kind="erase", layer=LAYER, rank=2, solver="output", steps=50))
    assert e.report["installed"]["l2"] < e.report["before"]["l2"]


@pytest.mark.parametrize("options, words", [
    ({"keep": -1.0}, "keep"), ({"grow": 100}, "grow"), ({"steps": 0}, "steps"),
    ({"lr": 1e9}, "lr"), ({"beta": 1}, "does not apply"),
])
def test_bad_options_are_refused_before_any_work_and_lose_nothing(s, options, words):
    before, history = weights(s), len(s.history)
    with pytest.raises(RewriteError, match=words):
        s.compute_edit(s.request(layer=LAYER, rank=2, solver="output", **options))
    assert len(s.history) == history
    for n, w in before.items():
        assert torch.equal(w, s.gen.layer(n).weight), n


def test_cancel_stops_the_solve_midway_and_changes_nothing(s):
    stop, seen = threading.Event(), []

    def progress(done, total, what):
        seen.append((done, what))
        if what == "output solve" and done >= 10:
            stop.set()  # as the Cancel button does, from another thread

    before = weights(s)
    with pytest.raises(Cancelled, match="output solve was cancelled"):
        s.compute_edit(s.request(layer=LAYER, rank=2, solver="output", steps=1000),
                       progress=progress, cancel=stop)
    assert max(d for d, w in seen if w == "output solve") < 1000
    for n, w in before.items():
        assert torch.equal(w, s.gen.layer(n).weight), n


def test_installing_and_undoing_an_output_edit_is_exact(s):
    edit_then_undo(s, s.request(layer=LAYER, rank=2, solver="output", steps=50))


def test_the_low_rank_path_fits_what_the_full_width_layer_fits(s):
    """A plain layer's output solve runs W₀k + ΛDᵀk instead of the full edited layer; the
    full-width path from the same start reaches the same loss and Λ."""
    request = s.request(layer=LAYER, rank=3, solver="output")
    problem = edit_problem(s.gen, request)
    inv = s.inverse(LAYER)
    d, _ = problem.directions(inv, 3, request.direction_rule)
    init, _ = solve_exact(problem.mem, d, problem.targets, normal=problem.normal(d), ridge=1.0)
    goal = problem.output_goal(0)
    assert problem.mem.plain
    runs = {low: solve_output(s.gen, problem.mem, LAYER, d, goal, init, 40, 0.05, 1.0,
                              low_rank=low) for low in (True, False)}
    (fast, a), (full, b) = runs[True], runs[False]
    a, b = a["output_l1"], b["output_l1"]
    assert a["unchanged"] == pytest.approx(b["unchanged"], rel=1e-5)
    assert a["start"] == pytest.approx(b["start"], rel=1e-5)
    assert a["installed"] == pytest.approx(b["installed"], rel=1e-3)
    assert a["installed"] < 0.9 * a["start"]  # it did fit
    rel = float((fast - full).norm() / full.norm())
    assert rel < 1e-2, rel
