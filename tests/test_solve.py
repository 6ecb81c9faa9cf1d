"""Directions and solvers against their defining equations, on the tiny generator."""

import numpy as np
import pytest
import torch

from rewidget.core.directions import RULES, CovarianceInverse, context_directions, context_keys
from rewidget.core.errors import RewriteError
from rewidget.core.memory import memory_for
from rewidget.core.solve import masked_errors, solve_exact, solve_iterative
from rewidget.core.statistics import collect_second_moment
from rewidget.core.targets import erase_target, paste_target
from rewidget.models import load_tiny

from .conftest import FACES_EYES, FACES_GLASSES, box

SPATIAL = ["main.4", "main.7", "main.9", "main.12"]


@pytest.fixture(scope="module")
def gen():
    return load_tiny()


_INVERSES: dict[tuple[int, str], CovarianceInverse] = {}


def inverse(gen, layer: str) -> CovarianceInverse:
    """C⁻¹ of ``layer`` over 200 samples, once per generator and layer (it is never modified)."""
    key = (id(gen), layer)
    if key not in _INVERSES:
        _INVERSES[key] = CovarianceInverse(collect_second_moment(gen, layer, 200))
    return _INVERSES[key]


def setup(gen, layer, rank=1):
    mem = memory_for(gen.layer(layer))
    inv = inverse(gen, layer)
    with torch.no_grad():
        keys = gen.keys(layer, gen.latents([1, 2, 3]))
    m = box(32, 8, 20, 8, 20)
    k, w = context_keys(mem, [(keys[0:1], m), (keys[2:3], m)])
    d = context_directions(inv, k, w, rank)
    target = paste_target(mem, keys[1:2], m, keys[0:1], (2, 2), 32)
    return mem, inv, keys, d, target, (k, w)


@pytest.mark.parametrize("rule", RULES)
def test_directions_are_c_inverse_keys_for_one_key(gen, rule):
    inv = inverse(gen, "main.9")
    k = gen.keys("main.9", gen.latents([5]))[0, :, 3, 4][None]  # one key
    d = context_directions(inv, k, torch.ones(1), 1, rule)
    ref = inv.solve(k)[0]
    ref = ref / ref.norm()
    torch.testing.assert_close(d[:, 0].double(), ref, atol=1e-5, rtol=1e-4)
    assert float(k[0] @ d[:, 0]) > 0  # oriented so the context matches positively


def _span(d: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(d.double())
    return q @ q.T  # projector onto span(D)


@pytest.mark.parametrize("layer", ["main.7", "main.9"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_whitened_rule_matches_a_whitened_svd_by_hand(gen, layer, rank):
    """D = span(Z·U_r), U_r the top left singular vectors of Z·K*ᵀ, Z = C^-1/2 (paper's rule)."""
    mem, inv, _, d, _, (k, w) = setup(gen, layer, rank)
    c = inv.moment.double()
    dim = c.shape[0]
    ridge = inv.relative_ridge * float(torch.diagonal(c).mean())
    evals, evecs = torch.linalg.eigh(c + ridge * torch.eye(dim, dtype=c.dtype))
    z = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    zk = z @ (k.double() * w.double().sqrt()[:, None]).T  # (C_in, n)
    u = torch.linalg.svd(zk, full_matrices=False)[0][:, :rank]
    ref = z @ u
    assert d.shape == (dim, rank)
    torch.testing.assert_close((d.double().T @ d.double()), torch.eye(rank, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(_span(d), _span(ref), atol=1e-4, rtol=0)
    torch.testing.assert_close(d[:, 0].double(), ref[:, 0] / ref[:, 0].norm()
                               * torch.sign(ref[:, 0] @ d[:, 0].double()), atol=1e-4, rtol=0)
    # the two rules really differ for several keys (else the choice would not matter)
    old = context_directions(inv, k, w, rank, "cinv")
    assert float((_span(old) - _span(d)).norm()) > 1e-2


def test_unknown_direction_rule_is_refused(gen):
    _, inv, _, _, _, (k, w) = setup(gen, "main.9")
    with pytest.raises(RewriteError, match="direction rule"):
        context_directions(inv, k, w, 1, "pca")


@pytest.mark.parametrize("layer", SPATIAL)
@pytest.mark.parametrize("rank", [1, 2])
def test_exact_solver_satisfies_its_normal_equations(gen, layer, rank):
    mem, _, _, d, target, _ = setup(gen, layer, rank)
    factor, rep = solve_exact(mem, d, [target], ridge=0.0 if layer != "main.12" else 1e-9)
    goal, w, keep = target.rows(mem)
    with torch.no_grad():
        z = mem.project(target.keys.double(), d.double())
        a = mem.value_rows(mem.design(z))[keep]
        resid = goal.double() - mem.value_rows(mem.values(target.keys))[keep].double()
    flat = torch.linalg.lstsq(a * w.double().sqrt()[:, None], resid * w.double().sqrt()[:, None]).solution
    # the normal equations Aᵀ W (A X − R) + λX = 0 hold for the solver's X
    x = _flat(mem, factor, rank).T
    lhs = (a * w.double()[:, None]).T @ (a @ x - resid) + rep["ridge"] * x
    assert float(lhs.abs().max()) < 1e-6 * max(1.0, float((a.T @ resid).abs().max()))
    # and it is no worse than numpy-grade least squares
    err = lambda xx: float(((a @ xx - resid).pow(2).sum(1) * w.double()).sum())  # noqa: E731
    assert err(x) <= err(flat) * (1 + 1e-6) + 1e-9


def _flat(mem, factor, rank):
    if mem.kind == "conv2d":
        return factor.reshape(mem.value_dim, -1)
    return factor.transpose(0, 1).reshape(mem.value_dim, -1)


@pytest.mark.parametrize("layer", SPATIAL)
def test_exact_update_has_rank_r_and_reduces_the_error(gen, layer):
    for rank in (1, 3):
        mem, _, _, d, target, _ = setup(gen, layer, rank)
        factor, _ = solve_exact(mem, d, [target])
        dw = mem.delta_weight(d, factor)
        mat = dw.movedim(mem.key_axis, -1).reshape(-1, mem.key_dim).double()
        assert int(torch.linalg.matrix_rank(mat, rtol=1e-6)) == rank
        before = masked_errors(mem, [target])["l2"]
        after = masked_errors(mem, [target], mem.weight + dw)["l2"]
        assert after < before


@pytest.mark.parametrize("layer", ["main.7", "main.9"])
def test_iterative_solver_lowers_l1_and_stays_in_span(gen, layer):
    mem, _, _, d, target, _ = setup(gen, layer, 2)
    factor, rep = solve_iterative(mem, d, [target], steps=300)
    dw = mem.delta_weight(d, factor)
    torch.testing.assert_close(mem.project_delta(dw, d), dw, atol=1e-6, rtol=1e-4)
    assert masked_errors(mem, [target], mem.weight + dw)["l1"] < masked_errors(mem, [target])["l1"]
    assert rep["steps"] == 300


def test_iterative_step_size_follows_weight_scale(gen):
    """Scaling a layer's weight by 100 scales the iterative update by 100: lr is relative."""
    mem, _, _, d, target, _ = setup(gen, "main.9", 1)
    f1, r1 = solve_iterative(mem, d, [target], steps=50)
    with torch.no_grad():
        mem.weight.mul_(100)
    try:
        f2, r2 = solve_iterative(mem, d, [target], steps=50)
    finally:
        with torch.no_grad():
            mem.weight.div_(100)
    assert r2["lr"] == pytest.approx(100 * r1["lr"], rel=1e-5)
    assert np.isfinite(f2.numpy()).all()


def test_erase_goal_fills_from_surroundings(gen):
    mem = memory_for(gen.layer("main.9"))
    keys = gen.keys("main.9", gen.latents([4]))
    m = box(32, 10, 22, 10, 22)
    t = erase_target(mem, keys, m)
    vals = mem.values(keys).detach()
    outside = t.weight < 1e-6
    torch.testing.assert_close(t.goal[..., outside], vals[..., outside])  # untouched outside
    inside = t.weight > 0.99
    lo = vals[..., outside].amin(-1, keepdim=True)
    hi = vals[..., outside].amax(-1, keepdim=True)
    g = t.goal[..., inside]
    assert bool(((g >= lo - 1e-5) & (g <= hi + 1e-5)).all())  # harmonic fill stays in range


def test_iterative_solver_improves_the_faces_last_layer(faces_gen):
    """Regression: Adam on the full weight, projected onto span(D) after each step, went uphill
    on every step at the faces model's last layer and returned no update; Adam on Λ descends."""
    from rewidget import RewriteSession

    s = RewriteSession(faces_gen, layer="main.12", stats_samples=300)
    for seed in (1, 7, 0):
        s.add_context(seed, FACES_EYES)
    s.set_copy(4, FACES_GLASSES)
    s.set_paste(1, (0, 0))
    it = s.compute_edit(s.request(solver="iterative", steps=301))
    ex = s.compute_edit(s.request(solver="exact"))
    assert float(it.factor.abs().max()) > 0
    assert it.report["installed"]["l1"] < 0.95 * it.report["before"]["l1"]
    assert it.report["installed"]["l1"] <= 1.05 * ex.report["installed"]["l1"]


@pytest.mark.parametrize("layer", SPATIAL)
def test_a_nested_basis_serves_every_rank_its_own_normal_equations(gen, layer):
    """EditProblem.normal slices the equations of the widest basis for each leading rank: the
    same solve as building the rank's own equations, and the installed error from W₀k plus the
    rank-r change is the one of running the layer with W₀ + ΔW."""
    from rewidget.core.edits import EditProblem
    from rewidget.core.solve import normal_equations

    mem, inv, keys, _, target, (k, w) = setup(gen, layer)
    problem = EditProblem(mem, k, w, [target])
    d3, _ = problem.directions(inv, 3, "whitened", 3)
    for rank in (1, 2, 3):
        d, _ = problem.directions(inv, rank, "whitened", 3)
        gram, rhs = problem.normal(d)
        own_gram, own_rhs = normal_equations(mem, d, [target])
        assert gram.shape == own_gram.shape
        torch.testing.assert_close(gram, own_gram, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(rhs, own_rhs, rtol=1e-9, atol=1e-9)
        factor, _ = solve_exact(mem, d, [target], normal=(gram, rhs))
        full = masked_errors(mem, [target], mem.weight + mem.delta_weight(d, factor))
        fast = problem.errors(d, factor)
        assert fast["l2"] == pytest.approx(full["l2"], rel=1e-5)
        assert mem.delta_norm(d, factor) == pytest.approx(
            float(mem.delta_weight(d, factor).double().norm()), rel=1e-6)
    assert torch.equal(d3[:, :1], problem.directions(inv, 1, "whitened", 3)[0])
