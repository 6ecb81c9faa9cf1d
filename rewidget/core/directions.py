"""Context directions D from the context keys K* and C, and where a context fires.

    inv = CovarianceInverse(C)                          # Cholesky (and C^-1/2) once per layer
    K, w = context_keys(mem, [(keys_a, mask_a), ...])   # (n, C_in) keys, (n,) mask weights
    D = context_directions(inv, K, w, rank=1)           # (C_in, r), orthonormal columns
    D, level = context_rule(mem, inv, entries, rank=1)  # both of the above, and D's "1.0" level
    s = match_map(mem, keys, D) / level                 # (N, H, W): 1.0 = as strong as the context

A rank-r update W₀ + ΛDᵀ only changes the output for keys with a component along D, and
choosing D from C⁻¹k* makes the update the one that disturbs other keys least (paper, eq. 6).
With several context keys there are two ways to pick the r directions (``RULES``):

- ``"whitened"`` (the paper's code, the default): whiten the keys with Z = C^-1/2, take the top-r
  left singular vectors U of Z·K*ᵀ, map them back with Z: D = span(Z·U). Each column is C⁻¹k for
  a key k = Z⁻¹u in the span of K*, and U ranks directions by how much of the context they carry
  *relative to how common they are* among all keys (Z makes every key direction unit-variance).
- ``"cinv"`` (rewidget ≤ 0.1): top-r left singular vectors of C⁻¹K*ᵀ. C⁻¹ squares the
  whitening, so rare key directions dominate; its top singular values are often close and its D
  swings with the statistics' sample count (faces, 8×8 keys: cosine -0.42 between D from 1k and
  10k samples; whitened ≥ 0.98). Kept so requests saved before the switch replay identically.

For one key both give D ∝ C⁻¹k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .errors import RewriteError, check_finite
from .masks import MIN_MASK_WEIGHT, mask_at
from .memory import LinearMemory
from .serial import serial


@dataclass
class CovarianceInverse:
    """Solves C x = k with a Cholesky factor; regularises a singular C and says so."""

    moment: torch.Tensor  # (C_in, C_in) float64
    relative_ridge: float = 1e-6
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.moment.to(torch.float64)
        check_finite("the key second moment C", c,
                     "rebuild the statistics (session.statistics(refresh=True)).")
        dim = c.shape[0]
        scale = float(torch.diagonal(c).mean()) or 1.0
        with serial():
            evals = torch.linalg.eigvalsh(c)
        dead = int((torch.diagonal(c) <= 1e-12 * scale).sum())
        ridge = self.relative_ridge * scale
        if float(evals[0]) < 1e-9 * float(evals[-1]):
            self.notes.append(
                f"C is singular or nearly so (smallest/largest eigenvalue "
                f"{float(evals[0]):.2e}/{float(evals[-1]):.2e}, {dead} of {dim} channels never "
                f"fire); regularised with ridge {ridge:.2e} (= {self.relative_ridge:g} x mean "
                "diagonal).")
        with serial():
            self.chol = torch.linalg.cholesky(c + ridge * torch.eye(dim, dtype=c.dtype,
                                                                     device=c.device))

        self._whitener: torch.Tensor | None = None
        self._ridge = ridge

    def _roots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(C^-1/2, C^1/2), symmetric, with the same ridge as solve; computed once."""
        if self._whitener is None:
            c = self.moment.to(torch.float64)
            with serial():
                evals, evecs = torch.linalg.eigh(c)  # C = Q diag(e) Qᵀ
            root = (evals.clamp_min(0) + self._ridge).sqrt()
            self._whitener = (evecs / root) @ evecs.T
            self._root = (evecs * root) @ evecs.T
        return self._whitener, self._root

    def whiten(self, rows: torch.Tensor) -> torch.Tensor:
        """Z kᵢ = C^-1/2 kᵢ for rows (n, C_in), float64 (Z symmetric: (Z kᵢ)ᵀ = kᵢᵀ Z)."""
        z = self._roots()[0]
        return rows.to(device=z.device, dtype=torch.float64) @ z

    def unwhiten(self, rows: torch.Tensor) -> torch.Tensor:
        """C^1/2 kᵢ for rows (n, C_in), float64: the inverse of whiten."""
        r = self._roots()[1]
        return rows.to(device=r.device, dtype=torch.float64) @ r

    def solve(self, rows: torch.Tensor) -> torch.Tensor:
        """C⁻¹ kᵢ for rows (n, C_in) → (n, C_in), float64."""
        k = rows.to(device=self.chol.device, dtype=torch.float64)
        with serial():
            return torch.cholesky_solve(k.T, self.chol).T


def context_keys(mem: LinearMemory, entries) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the masked keys of several (keys (1, C_in, H, W), uint8 mask) context entries.

    Returns K (n, C_in) and weights w (n,) from the mask area-resampled to the key grid.
    """
    rows, weights = [], []
    for keys, mask in entries:
        r = mem.key_rows(keys)
        if mem.spatial:
            m = mask_at(mask, tuple(keys.shape[-2:]), keys.device).reshape(-1)
        else:
            m = torch.ones(r.shape[0], device=keys.device)
        keep = m > MIN_MASK_WEIGHT
        rows.append(r[keep])
        weights.append(m[keep])
    if not rows or sum(r.shape[0] for r in rows) == 0:
        raise RewriteError("The context covers no location of the layer's key grid.",
                           "paint a larger context region, or choose a finer layer.")
    return torch.cat(rows), torch.cat(weights)


RULES = ("whitened", "cinv")
DEFAULT_RULE = "whitened"


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise RewriteError(f"Unknown direction rule {rule!r}.",
                           f"use one of {RULES} ('whitened' is the paper's rule).")
    return rule


def key_subspace(rows: torch.Tensor, weights: torch.Tensor, energy: float) -> torch.Tensor:
    """U (C_in, m), orthonormal: the fewest top eigenvectors of Σ wᵢkᵢkᵢᵀ holding ``energy`` of
    its trace — the directions a set of keys (e.g. the ones to protect) mostly lives in."""
    k = rows.to(torch.float64) * weights.to(torch.float64).sqrt()[:, None]
    with serial():
        evals, evecs = torch.linalg.eigh(k.T @ k)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    total = float(evals.sum())
    if total <= 0:
        return evecs[:, :0]
    m = int((torch.cumsum(evals, 0) < energy * total).sum()) + 1
    return evecs[:, :min(m, evecs.shape[1])]


def context_basis(inv: CovarianceInverse, keys: torch.Tensor, weights: torch.Tensor,
                  max_rank: int, rule: str = DEFAULT_RULE,
                  protect: Sequence[tuple[torch.Tensor, torch.Tensor, float]] = ()
                  ) -> torch.Tensor:
    """The ``rule``'s top directions, nested: D_r = basis[:, :r] for every r ≤ its width.

    (C_in, m) with orthonormal columns, m = min(max_rank, number of distinct context keys).

    ``protect`` = [(keys (n, C_in), weights (n,), energy), ...]: keys whose values must not
    change. (W₀ + ΛDᵀ)k = W₀k needs Dᵀk = 0, and among such D the one that disturbs other keys
    least is found in whitened coordinates (where the paper's objective is Euclidean): each
    direction d̃ = C^½d loses its part along the whitened protected keys Z·k (the subspace
    holding ``energy`` of theirs), then maps back, d = Z·d̃. A Euclidean projection of D
    instead (AlphaEdit's null-space step, without the metric) kept the trunks of the scenes
    world but recoloured every tower and the sky. Directions left with under 1% of their
    whitened length are dropped: the context cannot be told from the protected keys there.
    """
    check_rule(rule)
    check_finite("the context keys", keys)
    root_w = weights.to(torch.float64).sqrt()[:, None]
    mapped = inv.whiten(keys) if rule == "whitened" else inv.solve(keys)  # (n, C_in)
    mapped = mapped * root_w
    if float(mapped.abs().max()) == 0:
        raise RewriteError("The context keys are all zero at this layer (nothing fires there).",
                           "paint the context on a region with visible content, or pick another layer.")
    with serial():
        u, s, _ = torch.linalg.svd(mapped.T, full_matrices=False)  # u: (C_in, min(n, C_in))
    distinct = int((s > 1e-12 * s[0]).sum())
    if protect:
        # every distinct direction, in whitened coordinates: later ones may survive better
        w_dirs = u[:, :distinct] if rule == "whitened" else inv.unwhiten(u[:, :distinct].T).T
        shield = torch.cat([key_subspace(inv.whiten(k), w, energy) for k, w, energy in protect],
                           1)
        with serial():
            shield = torch.linalg.qr(shield)[0] if shield.shape[1] else shield
        length = w_dirs.norm(dim=0).clamp_min(1e-30)
        w_dirs = w_dirs - shield @ (shield.T @ w_dirs)
        alive = w_dirs.norm(dim=0) > 1e-2 * length
        d = inv.whiten(w_dirs[:, alive].T).T
    else:
        d = u[:, :min(max_rank, distinct)]
        if rule == "whitened":
            d = inv.whiten(d.T).T  # back to key space with Z
    if d.shape[1] and (protect or rule == "whitened"):  # none left: take_rank says why
        # QR (Gram-Schmidt) keeps the order and nesting: column 1 ∝ the first direction
        with serial():
            q, r = torch.linalg.qr(d)
        diag = torch.diagonal(r)
        d = (q * torch.sign(diag)[None, :])[:, diag.abs() > 1e-9 * diag.abs().max()]
        d = d[:, :max_rank]
    # orient each direction so the context keys project positively (match scores read as > 0)
    sign = torch.sign((keys.to(torch.float64) @ d * weights[:, None].to(torch.float64)).sum(0))
    sign[sign == 0] = 1
    return (d * sign).to(keys.dtype)


def check_rank(rank: int, dim: int) -> None:
    if not 1 <= rank <= dim:
        raise RewriteError(f"Rank {rank} is outside 1..{dim} (the layer's key dimension).",
                           f"choose a rank between 1 and {dim}; 1-3 is typical.")


def take_rank(basis: torch.Tensor, rank: int, protected: bool = False) -> torch.Tensor:
    """D_r from a nested basis; a clear error when the context has fewer distinct keys."""
    if rank > basis.shape[1]:
        if protected:
            raise RewriteError(
                f"Rank {rank} needs {rank} context directions that the protected keys do not "
                f"share; {basis.shape[1]} are left after protection.",
                "lower the rank, keep a smaller region (or lower protect), or paint more context.")
        raise RewriteError(
            f"Rank {rank} needs at least {rank} distinct context keys; the context has "
            f"{basis.shape[1]}.",
            "lower the rank or paint more context (more samples or a larger region).")
    return basis[:, :rank]


def context_directions(inv: CovarianceInverse, keys: torch.Tensor, weights: torch.Tensor,
                       rank: int, rule: str = DEFAULT_RULE) -> torch.Tensor:
    """D (C_in, r) with orthonormal columns spanning the ``rule``'s top-r context directions."""
    check_rule(rule)
    check_rank(rank, keys.shape[1])
    return take_rank(context_basis(inv, keys, weights, rank, rule), rank)


def _strength(z: torch.Tensor, dim: int) -> torch.Tensor:
    """The signed projection for rank 1, the norm over the r projections otherwise."""
    return z.select(dim, 0) if z.shape[dim] == 1 else z.norm(dim=dim)


def match_map(mem: LinearMemory, keys: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Strength of the projection onto span(D) at every location: (N, H, W) (linear: (N, ...))."""
    return _strength(mem.project(keys, directions), 1 if mem.spatial else -1)


def context_level(directions: torch.Tensor, ctx_keys: torch.Tensor,
                  ctx_weights: torch.Tensor) -> float:
    """Mask-weighted mean projection of the context keys themselves (the level "1.0")."""
    s = _strength(ctx_keys @ directions.to(ctx_keys.dtype), 1)
    level = float((s * ctx_weights).sum() / ctx_weights.sum())
    return level if level > 0 else 1.0


def context_rule(mem: LinearMemory, inv: CovarianceInverse, entries, rank: int,
                 rule: str = DEFAULT_RULE) -> tuple[torch.Tensor, float]:
    """(D, level) for context entries [(keys, mask), ...]: what a rank-r edit acts on."""
    k, w = context_keys(mem, entries)
    d = context_directions(inv, k, w, rank, rule)
    return d, context_level(d, k, w)
