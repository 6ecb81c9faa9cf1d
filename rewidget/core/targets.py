"""What the edited layer should produce: goals v* for copy/paste and for erase.

    t = paste_target(mem, src_keys, copy_mask, dst_keys, offset=(dx, dy), image_size=64)
    t.goal      # (1, C_out, H', W'): the target's values with the copied values pasted in
    t.weight    # (H', W'): where the goal counts (the shifted copy mask, at value resolution)

    t = erase_target(mem, keys, mask)   # goal: the region filled in from its surroundings

    t = paste_target(..., replace_mask=ctx_mask)   # a replacing paste: the context object the
        # copy lands on is filled from its surroundings first, so what the copy does not cover
        # disappears too (a roof replaced by a round crown leaves sky, not roof, beside it)

A Target pairs keys with the values they should produce; the solvers fit Λ to a list of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import RewriteError
from .masks import MIN_MASK_WEIGHT, mask_at, parts_touching, shift
from .memory import LinearMemory


@dataclass(frozen=True)
class Target:
    keys: torch.Tensor  # (1, C_in, H, W)
    goal: torch.Tensor  # (1, C_out, H', W')
    weight: torch.Tensor  # (H', W') in [0, 1]

    def rows(self, mem: LinearMemory):
        """Masked (keys-independent) goal rows and weights: (P, C_out), (P,)."""
        w = self.weight.reshape(-1)
        keep = w > MIN_MASK_WEIGHT
        return mem.value_rows(self.goal)[keep], w[keep], keep


def _value_grid(values: torch.Tensor) -> tuple[int, int]:
    return tuple(values.shape[-2:])


def replaced_region(replace_mask: np.ndarray, copy_mask: np.ndarray,
                    offset: tuple[float, float], image_size: int) -> np.ndarray:
    """(H, W) uint8 at image resolution: the parts of ``replace_mask`` (the target's context)
    that the copy, moved by ``offset``, lands on."""
    moved = shift(mask_at(copy_mask, copy_mask.shape)[None, None], offset, image_size)[0, 0]
    return parts_touching(replace_mask, moved)


def paste_target(mem: LinearMemory, src_keys: torch.Tensor, copy_mask: np.ndarray,
                 dst_keys: torch.Tensor, offset: tuple[float, float], image_size: int,
                 replace_mask: np.ndarray | None = None,
                 background: torch.Tensor | None = None) -> Target:
    """Goal: the copied region's values from the source, moved by ``offset`` into the target.

    ``replace_mask`` (the target's context, image resolution): the context parts the copy lands
    on are first filled from their surroundings, and count in the goal too. ``background``
    (1, C_out, H', W'): the target's values already filled that way (replace_fills, for all of
    one sample's pastes at once); by default they are filled here. Both are ignored by layers
    without a spatial grid (there the copy's value replaces the whole value already)."""
    with torch.no_grad():
        src_vals = mem.values(src_keys)
        dst_vals = mem.values(dst_keys)
    if not mem.spatial:
        return Target(dst_keys, src_vals, torch.ones(1, 1, device=src_vals.device))
    grid = _value_grid(src_vals)
    m = mask_at(copy_mask, grid, src_vals.device)
    moved_m = shift(m[None, None], offset, image_size)[0, 0].clamp(0, 1)
    moved_v = shift(src_vals, offset, image_size)
    inside = float(moved_m.sum()) / max(float(m.sum()), 1e-12)
    if float(m.sum()) <= MIN_MASK_WEIGHT:
        raise RewriteError("The copy mask covers no location of the layer's value grid.",
                           "paint a larger copy region or choose a finer layer.")
    if inside < 0.5:
        raise RewriteError(
            f"The paste lands outside the image: only {inside:.0%} of the copied region is inside "
            f"at offset {tuple(offset)}.",
            "move the pasted patch (drag it) so most of it lies inside the target image.")
    weight = moved_m
    if replace_mask is not None:
        fill = mask_at(replaced_region(replace_mask, copy_mask, offset, image_size), grid,
                       src_vals.device)
        if background is None:
            background = fill_from_surroundings(dst_vals, (fill > MIN_MASK_WEIGHT) | (moved_m > MIN_MASK_WEIGHT))
        dst_vals = background
        weight = torch.maximum(moved_m, fill)
    goal = dst_vals * (1 - moved_m) + moved_v * moved_m
    return Target(dst_keys, goal, weight)


def fill_from_surroundings(values: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """_inpaint for replacing pastes, refusing a hole (H, W or N, H, W) that leaves no
    surroundings in some sample."""
    holes = hole if hole.dim() == 3 else hole[None]
    if bool(holes.flatten(1).all(1).any()):
        raise RewriteError("The replaced context and the pastes cover the whole image, so there "
                           "are no surroundings to fill the context from.",
                           "paint the context only on the objects the pastes replace.")
    return _inpaint(values, hole)


def replace_fills(mem: LinearMemory, pastes: list, keys_of, context_on, image_size: int
                  ) -> dict:
    """{sample: (1, C_out, H', W')} for replacing pastes: each target sample's values with every
    context part a paste lands on, and the pasted copies' places, filled from the surroundings
    (one hole per sample, all samples in one pass; as the output solver's goal does)."""
    if not mem.spatial:
        return {}
    samples, vals, holes = replace_holes(mem, pastes, keys_of, context_on, image_size)
    filled = fill_from_surroundings(vals, holes)
    return {smp: filled[i:i + 1] for i, smp in enumerate(samples)}


def replace_holes(mem: LinearMemory, pastes: list, keys_of, context_on, image_size: int
                  ) -> tuple[list, torch.Tensor, torch.Tensor]:
    """(target samples, their values (N, C_out, H', W'), holes (N, H', W')): what
    replace_fills fills — the context parts the pastes land on and the copies' places."""
    samples = list({p.sample: None for _, p in pastes})
    with torch.no_grad():
        vals = mem.values(torch.cat([keys_of(smp) for smp in samples]))
    grid = _value_grid(vals)
    holes = torch.zeros(len(samples), *grid, dtype=torch.bool, device=vals.device)
    for copy, paste in pastes:
        i = samples.index(paste.sample)
        m = shift(mask_at(copy.mask, grid, vals.device)[None, None], paste.offset, image_size)
        holes[i] |= m[0, 0] > MIN_MASK_WEIGHT
        ctx = context_on(paste.sample)
        if ctx is not None:
            fill = mask_at(replaced_region(ctx, copy.mask, paste.offset, image_size), grid,
                           vals.device)
            holes[i] |= fill > MIN_MASK_WEIGHT
    return samples, vals, holes


def _fill_start(values: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
    """A copy of ``values`` whose hole pixels start at the mean of the ring around each hole."""
    ring = F.max_pool2d(holes.to(values.dtype)[:, None], 3, 1, 1)[:, 0].bool() & ~holes
    out = values.clone()
    for i in range(values.shape[0]):
        v, hi, r = values[i:i + 1], holes[i], ring[i]
        start = v[..., r].mean(-1) if r.any() else v[..., ~hi].mean(-1)
        out[i:i + 1][..., hi] = start[..., None]
    return out


def inpaint_dense(values: torch.Tensor, hole: torch.Tensor, iterations: int = 200
                  ) -> torch.Tensor:
    """_inpaint written the slow way, kept as its reference (tests, benchmarks/fill_speed.py):
    each Jacobi iteration averages the whole tensor with a 3×3 pool and puts the known pixels
    back."""
    holes = hole[None].expand(values.shape[0], -1, -1) if hole.dim() == 2 else hole
    known = (~holes).to(values.dtype)[:, None]
    out = _fill_start(values, holes)
    for _ in range(iterations):
        avg = F.avg_pool2d(out, 3, 1, 1, count_include_pad=False)
        out = out * known + avg * (1 - known)
    return out


def _inpaint(values: torch.Tensor, hole: torch.Tensor, iterations: int = 200) -> torch.Tensor:
    """Harmonic fill of ``hole`` from the values around it (Jacobi iterations).

    ``values`` (N, C, H, W); ``hole`` (H, W) bool for every sample, or (N, H, W) one per sample
    (filled in one batched pass). Each iteration sets every hole pixel to the mean of its 3×3
    neighbourhood inside the image (itself included), all at once from the previous iterate;
    pixels outside the hole never change, so only the hole pixels are updated, each from its
    nine neighbours gathered by index — the same numbers as inpaint_dense (to float rounding),
    several times faster when the holes are a small part of the image
    (benchmarks/fill_speed.py)."""
    holes = hole[None].expand(values.shape[0], -1, -1) if hole.dim() == 2 else hole
    n, c, h, w = values.shape
    out = _fill_start(values, holes)
    where = holes.nonzero()  # (P, 3): sample, row, column of every hole pixel
    if where.shape[0] == 0 or iterations <= 0:
        return out
    flat = out.permute(1, 0, 2, 3).reshape(c, n * h * w)
    flat = torch.cat([flat, flat.new_zeros(c, 1)], 1)  # column n·h·w: outside the image
    nb, yy, xx = where[:, 0], where[:, 1], where[:, 2]
    offsets = torch.tensor([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)],
                           device=where.device)
    ny, nx = yy[:, None] + offsets[:, 0], xx[:, None] + offsets[:, 1]  # (P, 9)
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    neighbours = torch.where(inside, (nb[:, None] * h + ny) * w + nx, n * h * w).T  # (9, P)
    share = 1 / inside.sum(1).to(values.dtype)
    target = (nb * h + yy) * w + xx
    for _ in range(iterations):
        acc = flat.index_select(1, neighbours[0])
        for k in range(1, 9):
            acc += flat.index_select(1, neighbours[k])
        flat.index_copy_(1, target, acc * share)
    return flat[:, :-1].reshape(c, n, h, w).permute(1, 0, 2, 3).contiguous()


def erase_target(mem: LinearMemory, keys: torch.Tensor, mask: np.ndarray) -> Target:
    """Goal: inside the mask, what the surroundings produce (removes what the context draws)."""
    if not mem.spatial:
        raise RewriteError("Erase needs a spatial layer (Conv2d or ConvTranspose2d).",
                           "pick a convolutional layer for erase edits.")
    with torch.no_grad():
        vals = mem.values(keys)
    m = mask_at(mask, _value_grid(vals), vals.device)
    hole = m > MIN_MASK_WEIGHT
    if bool(hole.all()):
        raise RewriteError("The erase mask covers the whole image, so there are no surroundings "
                           "to fill it from.", "paint only the object to remove.")
    return Target(keys, _inpaint(vals, hole), m)
