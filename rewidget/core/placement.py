"""Repeating one paste on every context object: the same rule taught on all the examples marked.

    parts = mask_parts(ctx_mask)                        # [(H, W) bool, ...] connected regions
    new = place_on_parts(context, (copy, paste), placed, image_size=64)
    # [(copy, Paste(sample, offset)), ...]: one per context part no paste covers yet

The user places the copy once, on one context object (a crown on a roof). On each axis the
placed copy's bounding box sits nearest to the start, the centre or the end of that object's
bounding box; every other object gets the copy at the same distance from the same anchor. A
crown resting on a roof's base and centred on it therefore rests on the base of every roof,
whatever the roof's height. Measured on scenes "roofs → tree crowns" (benchmarks/
semantic_layers.py): one paste on each of 20 samples' roofs (42 pastes) at main.9 with the output
solver reaches 79–80% shape efficacy where 6 pastes reach 61%.

Invariant: nothing here changes a selection; it returns new pastes for the session to add.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import RewriteError
from .masks import bounding_box, mask_at, shift
from .requests import Paste, Selection

#: context parts smaller than this share of the template's part are specks, not objects
MIN_PART_SHARE = 0.25
#: a copy placed with less than this share of it inside the image is not placed
MIN_INSIDE = 0.5


def mask_parts(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected parts of a mask (non-zero pixels), largest first, as bool arrays."""
    todo = torch.from_numpy(np.asarray(mask) > 0)
    parts = []
    while bool(todo.any()):
        seed = torch.zeros_like(todo)
        seed.view(-1)[int(torch.nonzero(todo.view(-1))[0])] = True
        while True:  # grow the seed inside the mask until it stops
            step = F.max_pool2d(seed[None, None].float(), 3, 1, 1)[0, 0].bool() & todo
            if torch.equal(step, seed):
                break
            seed = step
        parts.append(seed.numpy())
        todo &= ~seed
    return sorted(parts, key=lambda p: -int(p.sum()))


def footprint(copy: Selection, paste: Paste, image_size: int) -> np.ndarray:
    """(H, W) bool at the copy mask's size: where the copy lands after the paste's offset."""
    m = mask_at(copy.mask, copy.mask.shape)[None, None]
    return shift(m, paste.offset, image_size)[0, 0].numpy() > 0.5


def _anchor(placed: tuple[int, int], part: tuple[int, int]) -> tuple[str, float]:
    """Which of the part's start / centre / end the placed interval sits nearest, and how far."""
    (b0, b1), (p0, p1) = placed, part
    gaps = {"start": b0 - p0, "centre": (b0 + b1 - p0 - p1) / 2, "end": b1 - p1}
    mode = min(gaps, key=lambda k: (abs(gaps[k]), k != "centre"))
    return mode, gaps[mode]


def _at(mode: str, part: tuple[int, int]) -> float:
    return {"start": part[0], "centre": (part[0] + part[1]) / 2, "end": part[1]}[mode]


def place_on_parts(context: list[Selection] | tuple[Selection, ...],
                   template: tuple[Selection, Paste],
                   placed: list[tuple[Selection, Paste]], image_size: int
                   ) -> list[tuple[Selection, Paste]]:
    """New (copy, paste) pairs: ``template``'s copy on every context part that no paste in
    ``placed`` (the template included) touches, anchored as the template sits on its own part."""
    copy, paste = template
    spot = footprint(copy, paste, image_size)
    own = [c for c in context if c.sample == paste.sample]
    overlaps = [(int((p & spot).sum()), p) for c in own for p in mask_parts(c.mask)]
    overlaps = [o for o in overlaps if o[0] > 0]
    if not overlaps:
        raise RewriteError("The paste does not land on the context, so there is no object to "
                           "repeat it on.",
                           "place the copy on one of the painted context objects first (or "
                           "paint context where it lands).")
    base = max(overlaps, key=lambda o: o[0])[1]
    bx0, by0, bx1, by1 = bounding_box(spot)
    px0, py0, px1, py1 = bounding_box(base)
    (mx, _), (my, _) = _anchor((bx0, bx1), (px0, px1)), _anchor((by0, by1), (py0, py1))
    covered: dict = {}
    for c, p in placed:
        covered.setdefault(p.sample, []).append(footprint(c, p, image_size))
    area = int((copy.mask > 0).sum())
    out = []
    for sel in context:
        for part in mask_parts(sel.mask):
            if part.sum() < MIN_PART_SHARE * base.sum():
                continue
            if any((part & f).any() for f in covered.get(sel.sample, [])):
                continue
            qx0, qy0, qx1, qy1 = bounding_box(part)
            dx = _at(mx, (qx0, qx1)) - _at(mx, (px0, px1))
            dy = _at(my, (qy0, qy1)) - _at(my, (py0, py1))
            new = Paste(sel.sample, (float(round(paste.offset[0] + dx)),
                                     float(round(paste.offset[1] + dy))))
            lands = footprint(copy, new, image_size)
            if lands.sum() < MIN_INSIDE * area:
                continue
            out.append((copy, new))
            covered.setdefault(sel.sample, []).append(lands)
    return out
