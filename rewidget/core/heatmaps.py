"""Which feature channels of a layer respond to a painted region.

    top = top_channels(keys[0], mask, k=4)     # keys (C, H, W) of one sample
    top[0]["channel"], top[0]["score"]         # channel index, contrast inside vs outside
    top[0]["map"]                              # (H, W) float32 in [0, 1], for a heatmap

Score: (mean inside − mean outside) / (channel std + ε): high where a channel fires on the
region and not elsewhere. Channels that never fire score 0.
"""

from __future__ import annotations

import numpy as np
import torch

from .masks import mask_at


def channel_contrast(keys: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """(C, H, W) features, uint8 mask at any size → (C,) contrast scores."""
    h, w = keys.shape[-2:]
    m = mask_at(mask, (h, w), keys.device).to(keys.dtype)
    inside_w, outside_w = m.sum(), (1 - m).sum()
    flat = keys.flatten(1)  # (C, H*W)
    mf = m.reshape(-1)
    inside = (flat * mf).sum(1) / inside_w.clamp_min(1e-6)
    outside = (flat * (1 - mf)).sum(1) / outside_w.clamp_min(1e-6)
    return (inside - outside) / (flat.std(1) + 1e-6)


def top_channels(keys: torch.Tensor, mask: np.ndarray, k: int = 4) -> list[dict]:
    with torch.no_grad():
        scores = channel_contrast(keys, mask)
        order = torch.argsort(scores, descending=True)[:k]
        out = []
        for c in order.tolist():
            fmap = keys[c].float()
            lo, hi = float(fmap.min()), float(fmap.max())
            norm = (fmap - lo) / (hi - lo) if hi > lo else torch.zeros_like(fmap)
            out.append({"channel": c, "score": float(scores[c]),
                        "map": norm.cpu().numpy().astype(np.float32)})
    return out
