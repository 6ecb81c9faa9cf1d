"""An edit is data: the layer, the low-rank factors (D, Λ) and the request that produced it.

    edit = compute_edit(gen, request, inv)      # pure: the model is the same afterwards
    edit.delta(gen.layer(edit.layer))           # weight-shaped ΔW = ΛDᵀ
    edit.report["installed"]["l1"]              # masked error of W + ΔW on the goal region

Invariant: compute_edit never writes a weight; EditHistory (history.py) is the only writer.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .directions import (
    CovarianceInverse,
    check_rank,
    context_basis,
    context_keys,
    context_level,
    match_map,
    take_rank,
)
from .errors import RewriteError
from .memory import LinearMemory, memory_for
from .progress import CancelToken, ProgressFn, check_cancel, report
from .protocol import Generator
from .requests import EditRequest, Sample
from .solve import (
    DEFAULT_OPTIONS,
    masked_errors,
    normal_equations,
    solve_exact,
    solve_iterative,
)
from .targets import Target, erase_target, paste_target, replace_fills
from .through import output_errors, output_goals, solve_output

_ids = itertools.count(1)


@dataclass(frozen=True, eq=False)
class Edit:
    layer: str
    directions: torch.Tensor  # D (C_in, r), orthonormal columns
    factor: torch.Tensor  # Λ in the layer's weight layout with r on the key axis
    request: EditRequest | None
    report: dict = field(default_factory=dict)
    context_level: float = 1.0  # mean ⟨k*, d⟩ over the context: match score 1.0
    targets: tuple[Target, ...] = field(default=(), repr=False)  # goals it was solved for
    id: int = field(default_factory=lambda: next(_ids))
    created: float = field(default_factory=time.time)

    @property
    def rank(self) -> int:
        return int(self.directions.shape[1])

    def delta(self, module: torch.nn.Module) -> torch.Tensor:
        return memory_for(module, self.layer).delta_weight(self.directions, self.factor)

    def summary(self) -> str:
        kind = self.request.kind if self.request else "loaded"
        return f"#{self.id} {kind} @ {self.layer}, rank {self.rank}"


def sample_latents(gen: Generator, samples: list[Sample]) -> torch.Tensor:
    """Stack the latents of seeds and explicit latents, on the generator's device."""
    batch_dims = gen.latents([]).dim()  # (0, *latent_shape): costs no sampling
    zs = []
    for s in samples:
        if s.seed is not None:
            zs.append(gen.latents([s.seed]))
        else:
            z = s.latent.to(gen.device)
            zs.append(z[None] if z.dim() == batch_dims - 1 else z)
    return torch.cat(zs)


def build_targets(gen: Generator, mem: LinearMemory, request: EditRequest,
                  keys_of) -> list[Target]:
    if request.kind == "paste":
        fills = replace_fills(mem, request.pastes, keys_of, request.context_on,
                              gen.image_size) if request.replace else {}
        return [paste_target(mem, keys_of(copy.sample), copy.mask, keys_of(paste.sample),
                             paste.offset, gen.image_size,
                             request.context_on(paste.sample) if request.replace else None,
                             fills.get(paste.sample))
                for copy, paste in request.pastes]
    return [erase_target(mem, keys_of(sel.sample), sel.mask) for sel in request.context]


MIN_TARGET_MATCH = 0.02


def _check_targets_match(mem: LinearMemory, d: torch.Tensor, targets: list[Target],
                         level: float) -> None:
    """A rank-r edit only acts where keys project onto D: refuse goals it cannot reach."""
    for i, t in enumerate(targets):
        with torch.no_grad():
            s = match_map(mem, t.keys, d).abs()[0]
        if mem.spatial:
            w = F.interpolate(t.weight[None, None].float(), size=s.shape, mode="area")[0, 0]
            strength = float((s * w).sum() / w.sum().clamp_min(1e-12))
        else:
            strength = float(s.mean())
        if strength < MIN_TARGET_MATCH * level:
            which = f" (goal {i + 1} of {len(targets)})" if len(targets) > 1 else ""
            raise RewriteError(
                f"The paste region's{which} keys have no component along the context directions "
                f"({strength / level:.1%} of the context's level), so no rank-limited change of "
                "this layer can affect it.",
                "include the paste location in the context (paint context there too), or choose "
                "a paste target where the context appears.")


@dataclass
class EditProblem:
    """What every rank and direction rule of one request at one layer share: the keys of its
    samples, the context rows and the goals (built once; ``suggest`` solves many settings)."""

    mem: LinearMemory
    context_keys: torch.Tensor  # (n, C_in) masked context keys
    context_weights: torch.Tensor  # (n,)
    targets: list[Target]
    #: [(keys (n, C_in), weights (n,), energy), ...] whose values the edit must leave alone
    protected: list = field(default_factory=list)
    _bases: dict = field(default_factory=dict, repr=False)  # rule → (nested basis, width)
    _normal: list = field(default_factory=list, repr=False)  # [(D, normal equations), ...]
    _before: dict | None = field(default=None, repr=False)  # masked error of W₀ on the goals
    _values0: list | None = field(default=None, repr=False)  # unedited_values()
    #: for the output solver: the generator, the request and each sample's keys
    gen: Generator | None = field(default=None, repr=False)
    request: EditRequest | None = field(default=None, repr=False)
    keys_of: dict = field(default_factory=dict, repr=False)
    _goals: dict = field(default_factory=dict, repr=False)  # grow → OutputGoal

    def output_goal(self, grow: int):
        """The request's goal drawn in the generator's output (through.output_goals), cached."""
        if grow not in self._goals:
            self._goals[grow] = output_goals(
                self.gen, self.request, self.keys_of.__getitem__,
                lambda s: sample_latents(self.gen, [s]), grow)
        return self._goals[grow]

    def directions(self, inv: CovarianceInverse, rank: int, rule: str,
                   max_rank: int | None = None) -> tuple[torch.Tensor, float]:
        """(D, level) for ``rank``; the nested basis is computed once per rule up to max_rank."""
        check_rank(rank, self.mem.key_dim)
        width = max(rank, max_rank or rank)
        cached = self._bases.get(rule)  # (basis, the width asked for)
        if cached is None or cached[1] < width:
            cached = (context_basis(inv, self.context_keys, self.context_weights, width, rule,
                                    self.protected), width)
            self._bases[rule] = cached
        d = take_rank(cached[0], rank, bool(self.protected))
        return d, context_level(d, self.context_keys, self.context_weights)

    def basis(self, rule: str) -> torch.Tensor | None:
        """The nested basis ``directions`` built for ``rule`` (D of every rank leads it)."""
        cached = self._bases.get(rule)
        return None if cached is None else cached[0]

    def normal(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact solver's normal equations for directions ``d`` (shared by every ridge).

        A design column belongs to one direction (rank-major, solve.normal_equations), so when
        ``d`` leads a nested basis of ``directions`` the equations of the whole basis are built
        once and every rank takes its leading block: the same sums, one pass over the goals."""
        r = d.shape[1]
        for basis, _ in self._bases.values():
            if basis.shape[1] > r and basis.shape[0] == d.shape[0] \
                    and torch.equal(basis[:, :r], d):
                gram, rhs = self.normal(basis)
                q = gram.shape[0] // basis.shape[1] * r
                return gram[:q, :q], rhs[:q]
        for known, eqs in self._normal:
            if known.shape == d.shape and torch.equal(known, d):
                return eqs
        eqs = normal_equations(self.mem, d, self.targets, self.unedited_values())
        self._normal.append((d, eqs))
        return eqs

    def unedited_values(self) -> list[torch.Tensor]:
        """Each goal's keys through the unedited layer, W₀k (+ bias), computed once."""
        if self._values0 is None:
            with torch.no_grad():
                self._values0 = [self.mem.values(t.keys) for t in self.targets]
        return self._values0

    def errors(self, d: torch.Tensor, factor: torch.Tensor) -> dict[str, float]:
        """masked_errors of W₀ + ΛDᵀ on the goals; for a ``plain`` layer from W₀k plus the
        rank-r change, without building or running the full-width weight."""
        if not self.mem.plain:
            return masked_errors(self.mem, self.targets,
                                 self.mem.weight.detach() + self.mem.delta_weight(d, factor))
        with torch.no_grad():
            values = [self.mem.edited_values(t.keys, d, factor, v0)
                      for t, v0 in zip(self.targets, self.unedited_values(), strict=True)]
        return masked_errors(self.mem, self.targets, values=values)


def edit_problem(gen: Generator, request: EditRequest) -> EditProblem:
    """Keys, context rows and goals of ``request`` at its layer (the model is not changed)."""
    request.validate_complete()
    if request.layer not in gen.layer_names():
        raise RewriteError(f"Unknown layer {request.layer!r}.",
                           f"choose one of {gen.layer_names()}.")
    mem = memory_for(gen.layer(request.layer), request.layer)
    samples = list({s: None for s in [c.sample for c in request.context]
                    + [s for c, p in request.pastes for s in (c.sample, p.sample)]})
    with torch.no_grad():
        keys = gen.keys(request.layer, sample_latents(gen, samples))
    by_sample = {s: keys[i:i + 1] for i, s in enumerate(samples)}
    k, w = context_keys(mem, [(by_sample[c.sample], c.mask) for c in request.context])
    targets = build_targets(gen, mem, request, by_sample.__getitem__)
    return EditProblem(mem, k, w, targets, protected_keys(gen, mem, request, k, w), gen=gen,
                       request=request, keys_of=by_sample)


#: automatic protection samples its keys from these seeds (far from grids, requests, statistics)
PROTECT_SEEDS = range(920_000, 920_032)
KEEP_ENERGY = 0.99  # painted keep regions: protect the directions holding 99% of their energy


def protected_keys(gen: Generator, mem: LinearMemory, request: EditRequest,
                   ctx_keys: torch.Tensor, ctx_weights: torch.Tensor) -> list:
    """[(keys, weights, energy), ...] the edit must leave alone (directions.context_basis): the
    painted keep regions' (KEEP_ENERGY of their energy) and, with request.protect = p > 0, p of
    the energy of keys sampled on PROTECT_SEEDS where the context does not fire (a sampled key
    counts as context when its cosine with the mean context key reaches half the context keys'
    own mean cosine)."""
    parts = []
    if request.keep:
        latents = sample_latents(gen, [s.sample for s in request.keep])
        with torch.no_grad():
            keys = gen.keys(request.layer, latents)
        k, w = context_keys(mem, [(keys[i:i + 1], s.mask) for i, s in enumerate(request.keep)])
        parts.append((k, w, KEEP_ENERGY))
    if request.protect > 0:
        with torch.no_grad():
            rows = mem.key_rows(gen.keys(request.layer, gen.latents(list(PROTECT_SEEDS))))
        centre = (ctx_keys * ctx_weights[:, None]).sum(0)
        centre = centre / centre.norm().clamp_min(1e-30)
        cos = (rows @ centre) / rows.norm(dim=1).clamp_min(1e-30)
        own = float(((ctx_keys @ centre) / ctx_keys.norm(dim=1).clamp_min(1e-30)).mean())
        elsewhere = rows[cos < 0.5 * own]
        if elsewhere.shape[0]:
            parts.append((elsewhere, torch.ones(elsewhere.shape[0], device=rows.device),
                          request.protect))
    return parts


def _solver_options(request: EditRequest) -> dict:
    opts = dict(request.solver_options)
    allowed = DEFAULT_OPTIONS[request.solver]
    for k, v in opts.items():
        if k not in allowed:
            raise RewriteError(f"Solver option {k!r} does not apply to the {request.solver} solver.",
                               f"use only {sorted(allowed)}.")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
            raise RewriteError(f"Solver option {k}={v!r} is not a finite non-negative number.",
                               f"pass e.g. {k}={allowed[k]}.")
    if "steps" in opts:
        opts["steps"] = int(opts["steps"])
    return opts


def solve_problem(problem: EditProblem, request: EditRequest, inv: CovarianceInverse,
                  d: torch.Tensor, level: float, progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None) -> Edit:
    """Λ for directions ``d`` with the request's solver; returns the Edit (nothing installed)."""
    mem, targets = problem.mem, problem.targets
    _check_targets_match(mem, d, targets, level)
    opts = _solver_options(request)
    if request.solver == "output":  # every option, the defaults for those not recorded
        opts = {**DEFAULT_OPTIONS["output"], **opts}
    if request.solver == "exact":
        factor, rep = solve_exact(mem, d, targets, normal=problem.normal(d), **opts)
    elif request.solver == "iterative":
        factor, rep = solve_iterative(mem, d, targets, progress=progress, cancel=cancel, **opts)
    else:  # "output": from the exact solution, through the later layers (through.py)
        init, _ = solve_exact(mem, d, targets, normal=problem.normal(d), ridge=opts["ridge"])
        factor, rep = solve_output(problem.gen, mem, request.layer, d,
                                   problem.output_goal(int(opts["grow"])), init,
                                   int(opts["steps"]), opts["lr"], opts["keep"], progress, cancel)
    if problem._before is None:
        problem._before = masked_errors(mem, targets, values=problem.unedited_values())
    rep = {**rep, "before": problem._before, "installed": problem.errors(d, factor),
           "notes": list(inv.notes)}
    if request.solver == "output":  # its goal is in the output: "before"/"installed" are there
        goal = problem.output_goal(int(opts["grow"]))
        rep["layer_before"], rep["layer_installed"] = rep["before"], rep["installed"]
        rep["before"] = output_errors(problem.gen, request.layer, goal)
        rep["installed"] = output_errors(problem.gen, request.layer, goal,
                                         mem.weight.detach() + mem.delta_weight(d, factor))
    return Edit(request.layer, d.detach(), factor.detach(), request, rep, level, tuple(targets))


def compute_edit(gen: Generator, request: EditRequest, inv: CovarianceInverse,
                 progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Edit:
    """Directions from the context, goals from copy/paste or erase, Λ from the chosen solver."""
    report(progress, 0, 3, "keys")
    problem = edit_problem(gen, request)
    check_cancel(cancel, "The edit")
    d, level = problem.directions(inv, request.rank, request.direction_rule)
    report(progress, 1, 3, "solve")
    edit = solve_problem(problem, request, inv, d, level, progress, cancel)
    report(progress, 3, 3, "done")
    return edit
