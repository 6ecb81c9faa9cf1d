"""How much an edit changed the images, inside vs outside where the context fires.

    r = change_inside_outside(before, after, match, threshold=0.5)
    r["inside"], r["outside"], r["ratio"]     # mean |Δpixel| in each region, and their ratio
    sums = change_sums(before, after, match)  # the same in parts that add up over batches
    closer = paste_closeness(copy_src, target_before, target_after, copy_mask, offset)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .masks import shift


def match_region(match: torch.Tensor, image_size: int, threshold: float = 0.5) -> torch.Tensor:
    """(N, h, w) context-match scores → (N, S, S) bool: where the match reaches ``threshold``."""
    up = F.interpolate(match[:, None].float(), size=(image_size, image_size), mode="bilinear",
                       align_corners=False)[:, 0]
    return up >= threshold


def change_sums(before: torch.Tensor, after: torch.Tensor, match: torch.Tensor,
                threshold: float = 0.5) -> dict[str, float]:
    """Summed |Δpixel| (mean over channels) and pixel counts inside/outside the match: the
    parts of change_inside_outside, which add up over batches of samples (change_from_sums)."""
    diff = (after - before).abs().mean(1)  # (N, S, S)
    region = match_region(match, diff.shape[-1], threshold)
    n_in = int(region.sum())
    return {"inside_sum": float(diff[region].sum()), "inside_n": n_in,
            "outside_sum": float(diff[~region].sum()), "outside_n": int(region.numel()) - n_in}


def change_from_sums(sums: dict[str, float]) -> dict[str, float]:
    """change_inside_outside's means from (possibly added-up) change_sums."""
    n_in, n_out = sums["inside_n"], sums["outside_n"]
    inside = sums["inside_sum"] / n_in if n_in else float("nan")
    outside = sums["outside_sum"] / n_out if n_out else float("nan")
    return {"inside": inside, "outside": outside, "ratio": inside / max(outside, 1e-12),
            "inside_share": n_in / max(n_in + n_out, 1)}


def change_inside_outside(before: torch.Tensor, after: torch.Tensor, match: torch.Tensor,
                          threshold: float = 0.5) -> dict[str, float]:
    """Mean absolute pixel change (images in [-1, 1], (N, 3, S, S)) inside/outside the match."""
    return change_from_sums(change_sums(before, after, match, threshold))


def paste_closeness(source: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
                    mask: np.ndarray, offset: tuple[float, float]) -> float:
    """1 − |after − copy| / |before − copy| over the pasted region of a paste target: how far
    the target moved toward the copied content (1 = it shows the copy; NaN when the target
    already did). ``source``, ``before``, ``after``: (3, S, S) images in [-1, 1]; ``mask``: the
    copy's uint8 mask on ``source``; ``offset``: the paste's (dx, dy)."""
    size = source.shape[-1]
    m = torch.from_numpy(np.asarray(mask, np.float32) / 255.0).to(source.device)[None, None]
    region = shift(m, offset, size)[0, 0]  # (S, S)
    moved = shift(source[None].float(), offset, size)[0]  # (3, S, S)
    w = region / region.sum().clamp_min(1e-12)
    d0 = float(((before.float() - moved).abs().mean(0) * w).sum())
    d1 = float(((after.float() - moved).abs().mean(0) * w).sum())
    return 1 - d1 / d0 if d0 > 0 else float("nan")
