"""Scores of an edit that need no model: feature-statistics distance, update size, Pareto front.

    mu, cov = feature_moments(rows)                  # rows (n, C) → (C,), (C, C), float64
    fd = frechet_distance(mu0, cov0, mu1, cov1)      # ‖μ₀−μ₁‖² + tr(Σ₀+Σ₁−2(Σ₀^½Σ₁Σ₀^½)^½)
    ref = Reference.of(rows_of_many_samples)         # the generator's own distribution there
    loss = realism_loss(ref, rows_before, rows_after)  # extra distance from it, per channel
    m = Moments.of(rows_a).merge(Moments.of(rows_b))  # = Moments.of(both); ref.distance(m)
    size = relative_update(delta, weight)            # ‖ΔW‖ / ‖W₀‖
    front = pareto_front([(effect, -collateral, -loss), ...])  # [True, False, ...]

The suggestion (session/suggest.py) renders the candidate edits and scores them with these.
A Fréchet distance between the statistics of a generator's own features on edited and unedited
samples is the FID idea without an external network: an edit that leaves the images the
generator could draw keeps later-layer statistics close; one that breaks them does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .serial import serial


def feature_moments(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (C,) and covariance (C, C) of feature rows (n, C), in float64 (the centred product
    in the rows' dtype: float32 features give float32 sums of ≤ a few 10⁴ rows, ample here)."""
    m = Moments.of(rows)
    return m.mean, m.cov


@dataclass(frozen=True)
class Moments:
    """Count, mean (C,) and centred sum of squares (C, C) of feature rows, float64; two of them
    merge into those of all their rows (Chan et al.'s pairwise update), so a distance over many
    samples can be built from batches scored at different times."""

    n: int
    mean: torch.Tensor
    m2: torch.Tensor

    @classmethod
    def of(cls, rows: torch.Tensor) -> Moments:
        """From rows (n, C), rows per sample (N, P, C), or feature maps (N, C, H, W) whose
        every location is a row (read in place, never permuted into a copy)."""
        if rows.dim() == 3:
            rows = rows.flatten(0, 1)
        if rows.dim() == 2:
            mu = rows.mean(0)
            xc = rows - mu
            return cls(int(rows.shape[0]), mu.to(torch.float64), (xc.T @ xc).to(torch.float64))
        x = rows.flatten(2)  # (N, C, HW)
        mu = x.mean((0, 2))
        xc = x - mu[:, None]
        return cls(int(x.shape[0] * x.shape[2]), mu.to(torch.float64),
                   (xc @ xc.transpose(1, 2)).sum(0).to(torch.float64))

    def merge(self, other: Moments) -> Moments:
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * (other.n / n),
                       self.m2 + other.m2 + torch.outer(delta, delta) * (self.n * other.n / n))

    @property
    def cov(self) -> torch.Tensor:
        return self.m2 / max(self.n - 1, 1)


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    with serial():
        evals, evecs = torch.linalg.eigh((a + a.T) / 2)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def frechet_distance(mu0: torch.Tensor, cov0: torch.Tensor, mu1: torch.Tensor,
                     cov1: torch.Tensor) -> float:
    """Fréchet distance between Gaussians N(μ₀, Σ₀) and N(μ₁, Σ₁) (float64, never negative)."""
    root0 = _sqrtm_psd(cov0)
    cross = _sqrtm_psd(root0 @ cov1 @ root0)
    fd = float((mu0 - mu1).pow(2).sum() + torch.trace(cov0) + torch.trace(cov1)
               - 2 * torch.trace(cross))
    return max(fd, 0.0)


@dataclass(frozen=True)
class Reference:
    """The generator's own feature distribution at one place: mean and whitener Σ^-1/2."""

    mean: torch.Tensor  # (C,) float64
    whitener: torch.Tensor  # (C, C) float64, symmetric

    @classmethod
    def of(cls, rows: torch.Tensor, floor: float = 1e-3) -> Reference:
        """From feature rows (n, C); eigenvalues below floor·max are raised to it.

        The floor matters: the scenes world's flat colours make its patch covariance nearly
        singular, and at 1e-6 every visible last-layer change read as unrealistic; at 1e-2 an
        edit that wrecks every face (faces, main.12, rank 6) read as realistic. 1e-3 keeps both
        apart (benchmarks/suggest.py, suggest_scenes.py)."""
        mu, cov = feature_moments(rows)
        with serial():
            evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(floor * float(evals.max()))
        return cls(mu, (evecs * evals.rsqrt()) @ evecs.T)

    def distance(self, rows: torch.Tensor | Moments) -> float:
        """Fréchet distance of rows (n, C) (or their Moments) to the reference, in its whitened
        units, per channel.

        In whitened units the reference is N(0, I) and the rows' Gaussian is N(Z(μ − μ_ref),
        ZΣZ): only their moments are transformed, never the rows."""
        mom = rows if isinstance(rows, Moments) else Moments.of(rows)
        mu, cov = mom.mean, mom.cov
        z = self.whitener
        # frechet_distance(0, I, m, S) = ‖m‖² + C + tr S − 2 tr S^½, tr S^½ = Σ √eig(S)
        m, cov_w = (mu - self.mean) @ z, z @ cov @ z
        with serial():
            evals = torch.linalg.eigvalsh((cov_w + cov_w.T) / 2)
        fd = float(m.pow(2).sum() + cov.shape[0] + torch.trace(cov_w)
                   - 2 * evals.clamp_min(0).sqrt().sum())
        return max(fd, 0.0) / cov.shape[0]


def realism_loss(reference: Reference, before: torch.Tensor | float,
                 after: torch.Tensor | Moments) -> float:
    """How much further from the generator's own feature distribution the edited samples are
    than the same samples unedited (≥ 0; an edit that draws things the generator draws
    elsewhere — a crown where a roof was — costs little, one that breaks the image a lot).
    ``before`` may be its distance, already computed; ``after`` its rows' Moments."""
    base = before if isinstance(before, float) else reference.distance(before)
    return max(0.0, reference.distance(after) - base)


def relative_update(delta: torch.Tensor, weight: torch.Tensor) -> float:
    """‖ΔW‖_F / ‖W‖_F."""
    return float(delta.norm() / weight.norm().clamp_min(1e-30))


def pareto_front(points: Sequence[Sequence[float]]) -> list[bool]:
    """Which points no other point dominates (every coordinate is to be maximised)."""
    out = []
    for i, p in enumerate(points):
        dominated = any(all(q_k >= p_k for q_k, p_k in zip(q, p, strict=True))
                        and any(q_k > p_k for q_k, p_k in zip(q, p, strict=True))
                        for j, q in enumerate(points) if j != i)
        out.append(not dominated)
    return out
