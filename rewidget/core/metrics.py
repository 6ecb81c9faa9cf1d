"""How much an edit changed the images, inside vs outside where the context fires.

    r = change_inside_outside(before, after, match, threshold=0.5)
    r["inside"], r["outside"], r["ratio"]     # mean |Δpixel| in each region, and their ratio
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def match_region(match: torch.Tensor, image_size: int, threshold: float = 0.5) -> torch.Tensor:
    """(N, h, w) context-match scores → (N, S, S) bool: where the match reaches ``threshold``."""
    up = F.interpolate(match[:, None].float(), size=(image_size, image_size), mode="bilinear",
                       align_corners=False)[:, 0]
    return up >= threshold


def change_inside_outside(before: torch.Tensor, after: torch.Tensor, match: torch.Tensor,
                          threshold: float = 0.5) -> dict[str, float]:
    """Mean absolute pixel change (images in [-1, 1], (N, 3, S, S)) inside/outside the match."""
    diff = (after - before).abs().mean(1)  # (N, S, S)
    region = match_region(match, diff.shape[-1], threshold)
    inside = float(diff[region].mean()) if region.any() else float("nan")
    outside = float(diff[~region].mean()) if (~region).any() else float("nan")
    return {"inside": inside, "outside": outside, "ratio": inside / max(outside, 1e-12),
            "inside_share": float(region.float().mean())}
