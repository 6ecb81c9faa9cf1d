"""Solve for Λ so the context keys produce the goal values: W₁ = W₀ + ΛDᵀ.

    factor, report = solve_exact(mem, D, targets)          # one linear solve
    factor, report = solve_iterative(mem, D, targets)      # the paper's Adam + L1, run on Λ
    dW = mem.delta_weight(D, factor)                       # weight-shaped, rank r along keys

Exact: the layer's output is linear in Λ (memory.py), so minimising the mask-weighted squared
error Σ w‖v₀ + AΛ − v*‖² + λ‖Λ‖² is a least-squares problem with one small normal matrix shared by
every output channel (q = r·kh·kw unknowns per channel). λ = ``ridge``·mean(diag AᵀWA) keeps it
well-posed when a paste region is small and keeps the update from growing large to fit the
last few percent of the goal (which shows as artefacts elsewhere); the report gives λ.

Iterative: the paper's procedure (Adam with an L1 loss on the masked goal) run on Λ itself, so
every iterate is a rank-r update (the paper projects a full-weight Adam step onto span(D), which
can point uphill; see solve_iterative). The step size is ``lr`` times the RMS of the layer's
weight, so it means the same on unit-scale and on 0.02-scale weights; it decays linearly to 0
and the best iterate is kept (constant-lr Adam on L1 ends up oscillating).

Invariant: neither solver changes the model; both return Λ and a report whose losses are those
of W₀ + ΛDᵀ, the weights that would be installed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from .errors import RewriteError, check_finite, check_int, check_real
from .memory import LinearMemory
from .progress import CancelToken, ProgressFn, check_cancel, report
from .serial import serial
from .targets import Target

#: Solver options a request records explicitly, so a saved request replays with the same values
#: even if these defaults change. ridge 0.1: on a three-face "closed mouth → smile" edit the faces
#: outside the context changed 2.1/255 instead of 18.4/255 at 1e-6, for a slightly looser fit.
#: lr 0.2 (× the weight's RMS): within 1% of converged after 2001 steps on faces main.6-12 and
#: scenes main.6-12 (0.05 stopped 1-10% short), about 0.2 s per solve on CPU.
#: output (through.py): Adam from the exact solution (ridge) on the goal drawn in the output;
#: grow 2 px and keep 1: on scenes roofs → crowns at main.9 the best trade of shape efficacy
#: against trunks changed among grow 0/2/3 × keep 0.3/1/3; 100 steps drew the crowns as well as
#: 300 or 1,000 (shape efficacy 66.7% / 65.5% / 64.7% at rank 20, 150 held-out seeds)
DEFAULT_OPTIONS = {"exact": {"ridge": 0.1}, "iterative": {"steps": 2001, "lr": 0.2},
                   "output": {"ridge": 0.1, "steps": 100, "lr": 0.05, "keep": 1.0, "grow": 2}}

#: the output solver's copy growth for replacing pastes: their goal covers the replaced object
#: already, and a grown copy drags its own surroundings along (grass around a crown pasted into
#: the sky). Scenes roofs → crowns, 6 replacing pastes, main.9 rank 10, 150 held-out seeds:
#: grow 2 → 0 took collateral 5.1% → 2.6% and shape efficacy 59.0% → 60.8%
REPLACE_GROW = 0


def default_options(solver: str, replace: bool = False) -> dict:
    """The options a request of ``solver`` records when the caller gives none (a copy)."""
    out = dict(DEFAULT_OPTIONS.get(solver, {}))
    if solver == "output" and replace:
        out["grow"] = REPLACE_GROW
    return out


#: bounds on the options (checked before any work): 50× the default steps is ~10 s per solve on
#: CPU; an lr outside [1e-6, 10] × the weight's RMS either never moves or diverges
MAX_STEPS = 100_000
LR_RANGE = (1e-6, 10.0)
MAX_RIDGE = 1e6
MAX_KEEP, MAX_GROW = 1e3, 32
#: an iterative solve that lowers the goal error by less than this share installs nothing useful
MIN_IMPROVEMENT = 1e-4


def check_solver_options(solver: str, options: dict) -> dict:
    """Refuse options a solver does not take, and values outside their bounds (RewriteError)."""
    allowed = DEFAULT_OPTIONS.get(solver)
    if allowed is None:
        raise RewriteError(f"Unknown solver {solver!r}.", f"use one of {sorted(DEFAULT_OPTIONS)}.")
    out = {}
    for k, v in options.items():
        if k not in allowed:
            raise RewriteError(f"Solver option {k!r} does not apply to the {solver} solver.",
                               f"use only {sorted(allowed)}.")
        if k == "steps":
            out[k] = check_int(v, f"the {solver} solver's steps", 1, MAX_STEPS,
                               f"pass steps between 1 and {MAX_STEPS:,} (default "
                               f"{allowed['steps']}).")
        elif k == "lr":
            out[k] = check_real(v, f"the {solver} solver's lr", *LR_RANGE,
                                fix=f"pass lr between {LR_RANGE[0]:g} and {LR_RANGE[1]:g} "
                                    f"(default {allowed['lr']}; it is × the weight's RMS).")
        elif k == "keep":
            out[k] = check_real(v, "the output solver's keep", 0.0, MAX_KEEP,
                                fix=f"pass keep between 0 and {MAX_KEEP:g} (default "
                                    f"{allowed['keep']}).")
        elif k == "grow":
            out[k] = check_int(v, "the output solver's grow (pixels)", 0, MAX_GROW,
                               f"pass grow between 0 and {MAX_GROW} (default {allowed['grow']}).")
        else:
            fix = f"pass ridge between 0 and {MAX_RIDGE:g} (default {allowed['ridge']})."
            try:
                out[k] = check_real(v, f"the {solver} solver's ridge", 0.0, MAX_RIDGE, fix=fix)
            except RewriteError:
                raise RewriteError(f"Solver option ridge={v!r} is not a finite non-negative "
                                   f"number up to {MAX_RIDGE:g}.", fix) from None
    return out


def masked_errors(mem: LinearMemory, targets: Sequence[Target],
                  weight: torch.Tensor | None = None,
                  values: Sequence[torch.Tensor] | None = None) -> dict[str, float]:
    """Mask-weighted mean |v − v*| and (v − v*)² over the goal region, per value element;
    v = the layer's output for each target's keys (with ``weight``), or ``values`` given."""
    l1 = l2 = total = 0.0
    with torch.no_grad():
        for i, t in enumerate(targets):
            goal, w, keep = t.rows(mem)
            v = mem.values(t.keys, weight) if values is None else values[i]
            vals = mem.value_rows(v)[keep]
            err = (vals - goal).to(torch.float64)
            l1 += float((err.abs().mean(1) * w).sum())
            l2 += float((err.pow(2).mean(1) * w).sum())
            total += float(w.sum())
    return {"l1": l1 / total, "l2": l2 / total}


def _design_rows(mem: LinearMemory, directions: torch.Tensor, targets: Sequence[Target],
                 dtype: torch.dtype, values: Sequence[torch.Tensor] | None = None
                 ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per target: design rows A (P, q), residual v* - v0 (P, C_out) and weights (P,), in dtype
    (v0: the unedited layer's output for the target's keys, or ``values`` given)."""
    d = directions.to(dtype)
    out = []
    with torch.no_grad():
        for i, t in enumerate(targets):
            goal, w, keep = t.rows(mem)
            a = mem.value_rows(mem.design(mem.project(t.keys.to(dtype), d)))[keep]
            v0 = mem.values(t.keys) if values is None else values[i]
            resid = goal.to(dtype) - mem.value_rows(v0)[keep].to(dtype)
            out.append((a, resid, w.to(dtype)))
    return out


def _check_targets(targets: Sequence[Target]) -> None:
    if not targets:
        raise RewriteError("There is nothing to solve for (no target).",
                           "set a copy and a paste, or an erase region.")
    for t in targets:
        check_finite("the target keys", t.keys, "the generator produced NaN/Inf; check its latents.")
        check_finite("the goal values", t.goal)


def normal_equations(mem: LinearMemory, directions: torch.Tensor, targets: Sequence[Target],
                     values: Sequence[torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """AᵀWA (q, q) and AᵀW(v* − v₀) (q, C_out) in float64: all an exact solve needs (any ridge).
    A's columns are rank-major (direction j owns q/r consecutive ones), so the equations of
    D's first r' columns are the leading (q r'/r) block. ``values``: each target's v₀, if known."""
    _check_targets(targets)
    gram = rhs = None
    for a, resid, w in _design_rows(mem, directions, targets, torch.float64, values):
        aw = a * w[:, None]
        g, b = aw.T @ a, aw.T @ resid  # (q, q), (q, C_out)
        gram, rhs = (g, b) if gram is None else (gram + g, rhs + b)
    return gram, rhs


def solve_exact(mem: LinearMemory, directions: torch.Tensor, targets: Sequence[Target],
                ridge: float = DEFAULT_OPTIONS["exact"]["ridge"],
                normal: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, dict]:
    """Least-squares Λ (float64) for Conv2d, ConvTranspose2d and Linear layers.

    ``normal`` = normal_equations(mem, directions, targets), when already at hand (the same
    equations serve every ridge)."""
    t0 = time.perf_counter()
    ridge = check_solver_options("exact", {"ridge": ridge})["ridge"]
    rank = directions.shape[1]
    gram, rhs = normal if normal is not None else normal_equations(mem, directions, targets)
    q = gram.shape[0]
    scale = float(torch.diagonal(gram).mean())
    if scale <= 0:
        raise RewriteError(
            "The paste region's keys have no component along the context directions, so no "
            "rank-limited change of this layer can affect it.",
            "include the paste location in the context (paint context there too), or use erase.")
    lam = ridge * scale
    with serial():
        sol = torch.linalg.solve(gram + lam * torch.eye(q, dtype=gram.dtype, device=gram.device),
                                 rhs)
        if q <= 4096:  # gram is symmetric PSD: its condition number from its eigenvalues
            ev = torch.linalg.eigvalsh(gram).abs()
            cond = float(ev.max() / ev.min()) if float(ev.min()) > 0 else math.inf
        else:
            cond = math.nan
    factor = mem.factor_from_flat(sol.T.contiguous(), rank)
    check_finite("the solved update", factor)
    return factor, {"solver": "exact", "ridge": lam, "unknowns_per_channel": q,
                    "normal_matrix_condition": cond, "seconds": time.perf_counter() - t0}


def solve_iterative(mem: LinearMemory, directions: torch.Tensor, targets: Sequence[Target],
                    steps: int = DEFAULT_OPTIONS["iterative"]["steps"],
                    lr: float = DEFAULT_OPTIONS["iterative"]["lr"],
                    progress: ProgressFn | None = None,
                    cancel: CancelToken | None = None) -> tuple[torch.Tensor, dict]:
    """The paper's solver, run in the edit's own coordinates: Adam with an L1 loss on Λ.

    The paper runs Adam on the full weight and projects ΔW onto span(D) after every step. Adam's
    per-element step is not a gradient step, and its projection can point uphill: on the faces
    model's last layer every projected step increased the loss, so that solver returned no
    update at all. Optimising Λ (ΔW = ΛDᵀ) directly reaches only the same rank-r updates and
    each Adam step is a descent step in those coordinates; it is also r/C_in of the cost. The
    layer's output is linear in Λ (memory.py), so each step is two products with the design
    matrix that the exact solver uses.
    """
    opts = check_solver_options("iterative", {"steps": steps, "lr": lr})
    steps, lr = opts["steps"], opts["lr"]
    _check_targets(targets)
    t0 = time.perf_counter()
    w0 = mem.weight.detach()
    rank = directions.shape[1]
    scale = float(w0.pow(2).mean().sqrt()) or 1.0
    step_size = lr * scale
    rows = _design_rows(mem, directions, targets, w0.dtype)
    a, resid, w = (torch.cat(x) for x in zip(*rows, strict=True))
    gscale = (w / (w.sum() * resid.shape[1]))[:, None]  # weighted mean over rows and channels
    # Adam ignores a constant gradient scale; O(1) gradients keep v = E[g²] out of the float32
    # denormal range, which made every step ~100× slower on CPU
    gnorm = gscale / gscale.max()
    q, c_out = a.shape[1], resid.shape[1]
    x = torch.zeros(q, c_out, dtype=w0.dtype, device=w0.device)  # Λ, one column per channel
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    every = max(1, steps // 50)
    b1, b2, eps = 0.9, 0.999, 1e-8
    best, best_loss = x.clone(), float("inf")
    # Adam's moments decay geometrically wherever a gradient entry stays 0 and pass through the
    # float32 denormal range, where CPU arithmetic is ~100× slower: flush them during the loop
    flushing = torch.set_flush_denormal(True)
    try:
        for step in range(1, steps + 1):
            check_cancel(cancel, "The iterative solve")  # every step: Cancel acts at once
            if step % every == 1 or every == 1:
                report(progress, step - 1, steps, "iterative solve")
            err = a @ x - resid
            loss = float((err.abs() * gscale).sum())
            if step == 1:
                start_loss = loss  # x = 0: the weights as they are
            if loss < best_loss:
                best, best_loss = x.clone(), loss
            grad = a.T @ (torch.sign(err) * gnorm)  # ∝ d(weighted mean L1)/dΛ
            m.mul_(b1).add_(grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (v / (1 - b2**step)).sqrt_().add_(eps)
            # linear decay to 0: constant-lr Adam on an L1 loss ends up oscillating
            x.addcdiv_(m, denom, value=-step_size * (1 - (step - 1) / steps) / (1 - b1**step))
    finally:
        if flushing:
            torch.set_flush_denormal(False)
    final = float(((a @ x - resid).abs() * gscale).sum())
    if final < best_loss:
        best, best_loss = x, final
    report(progress, steps, steps, "iterative solve")
    factor = mem.factor_from_flat(best.T.contiguous(), rank)
    check_finite("the solved update", factor,
                 "lower the iterative solver's lr, or use the exact solver.")
    if not best_loss < (1 - MIN_IMPROVEMENT) * start_loss:
        raise RewriteError(f"The iterative solve ({steps} steps, lr {lr:g}) never improved on "
                           f"no change at all by more than {MIN_IMPROVEMENT:.0e} of the goal "
                           "error, so it would install an empty edit.",
                           "raise the steps or the lr (defaults: "
                           f"{DEFAULT_OPTIONS['iterative']}), or use the exact solver.")
    return factor, {"solver": "iterative", "steps": steps, "lr": step_size,
                    "seconds": time.perf_counter() - t0}
