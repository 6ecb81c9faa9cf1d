"""Scores for rule edits on the `scenes` world, read off the generator's own segmented images.

    before, after = session.render(seeds, original=True), session.render(seeds)   # (N, 64, 64, 3)
    src = source_region(before, "roof")                 # (N, 64, 64) bool: the rule's pixels
    r = scene_scores(before, after, src, target="tree")
    r["efficacy"]       # share of the source pixels that now show the target class
    r["collateral"]     # share of the pixels outside the source region whose class changed
    r["colour_change"]  # mean RGB distance (0-255) between before and after outside the region

Definitions (the benchmark's table uses exactly these):
- class maps come from `scenes.segment` (nearest palette colour) of the *generated* images, never
  from the renderer, because a user paints on generated images;
- efficacy counts the source pixels that clearly show the source class before (within `tol` =
  DEFAULT_TOL = 40, the palette-share tolerance) and clearly show the target class after: a
  muddy half-way colour does not count, and blurred boundary pixels are left out of the count;
- collateral counts nearest-class changes, so a boundary pixel whose colour drifts a little stays
  unchanged; ``collateral_rim`` is the same share outside the region grown by ``rim`` px (the
  blurred boundary band, where a shape change of the edited object shows up, is left out).

An unchanged image scores 0 efficacy (unless a source pixel already shows the target, which the
source definitions here never allow) and 0 collateral.

Shape-aware scores (``shape_scores``) judge against a *counterfactual render* instead: the same
latents drawn by the renderer in a world where the rule is changed (scenes.COUNTERFACTUALS), so a
roof repainted green but still pointed does not count as a crown:

    world = counterfactual_world(z, "roof_to_tree")  # orig, cf class maps (N, 64, 64); R = cf != orig
    r = shape_scores(before_maps, segment_both(after), world, target="tree")
    r["shape_efficacy"]    # inside R: share of pixels whose class (within tol) is the counterfactual's
    r["target_iou"]        # IoU of the target class, edited image vs counterfactual, inside R + 2 px
    r["shape_collateral"]  # outside R: share of pixels whose nearest class changed (1 - preservation)
    r["shape_trunk"]       # outside R: share of trunk pixels whose class changed
    world_ceiling(before_maps, world, "tree")    # the *unedited* generator against the original
                                                 # render: how exactly it draws what R held
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rewidget.models import scenes as S
from rewidget.models.scenes import segment_both  # (nearest, strict) class maps in one pass


def class_index(name: str | int) -> int:
    return name if isinstance(name, int) else S.CLASS_NAMES.index(name)


def classes(rgb: np.ndarray) -> np.ndarray:
    """(N, H, W) nearest-palette class of each pixel (no UNKNOWN)."""
    return S.segment(rgb)


def dilate(mask: np.ndarray, px: int = 1) -> np.ndarray:
    """Grow a bool mask (H, W) or (N, H, W) by ``px`` pixels (8-neighbourhood)."""
    if px <= 0:
        return np.asarray(mask, bool).copy()
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))
    squeeze = t.dim() == 2
    t = t[None, None] if squeeze else t[:, None]
    t = F.max_pool2d(t, 2 * px + 1, 1, px)
    return (t[0, 0] if squeeze else t[:, 0]).numpy() > 0


def components(mask: np.ndarray, min_area: int = 1) -> list[np.ndarray]:
    """4-connected components of a bool (H, W) mask, largest first, as bool masks."""
    out = []
    for rows, cols in S._components(np.asarray(mask, bool)):
        if len(rows) >= min_area:
            m = np.zeros(mask.shape, bool)
            m[rows, cols] = True
            out.append(m)
    return sorted(out, key=lambda m: -int(m.sum()))


def roof_tips(classmap: np.ndarray, share: float = 0.5, min_area: int = 8) -> np.ndarray:
    """The upper ``share`` of each roof's rows in one class map (H, W): the point of the roof."""
    out = np.zeros(classmap.shape, bool)
    for comp in components(classmap == S.ROOF, min_area):
        rows = np.nonzero(comp.any(1))[0]
        cut = rows[0] + max(1, int(round(share * (rows[-1] - rows[0] + 1))))
        comp[cut:] = False
        out |= comp
    return out


def source_region(rgb: np.ndarray, source: str) -> np.ndarray:
    """(N, H, W) bool: the pixels of the rule being edited, in the unedited images.

    ``source`` is a class name ("roof", "window", "sun", ...) or "roof_tip" (upper half of roofs).
    """
    cm = classes(rgb)
    if source == "roof_tip":
        return np.stack([roof_tips(c) for c in cm])
    return cm == class_index(source)


def scene_scores(before: np.ndarray, after: np.ndarray, source: np.ndarray, target: str | int,
                 tol: float = S.DEFAULT_TOL, rim: int = 2,
                 before_maps: tuple[np.ndarray, np.ndarray] | None = None,
                 after_maps: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """Efficacy and collateral of an edit on images (N, H, W, 3) uint8; see the module docstring.

    ``source`` (N, H, W) bool is the rule's region in ``before`` (from ``source_region``);
    ``before_maps`` = ``segment_both(before, tol)`` when scoring many edits of the same images
    (``after_maps`` likewise, when the after images are scored twice).
    """
    t = class_index(target)
    src = np.asarray(source, bool)
    cb, sb = before_maps if before_maps is not None else segment_both(before, tol)
    ca, sa = after_maps if after_maps is not None else segment_both(after, tol)
    clear = src & (sb != S.UNKNOWN)  # source pixels within tol of their (source) colour
    outside = ~src
    outside_rim = ~dilate(src, rim)
    dist = np.sqrt(((after.astype(np.float32) - before.astype(np.float32)) ** 2).sum(-1))
    nan = float("nan")
    return {
        "efficacy": float((sa[clear] == t).mean()) if clear.any() else nan,
        "efficacy_nearest": float((ca[src] == t).mean()) if src.any() else nan,
        "collateral": float((ca[outside] != cb[outside]).mean()),
        "collateral_rim": float((ca[outside_rim] != cb[outside_rim]).mean()),
        "colour_change": float(dist[outside].mean()),
        "colour_change_source": float(dist[src].mean()) if src.any() else nan,
        "source_pixels": int(src.sum()),
        "source_clear_pixels": int(clear.sum()),
        "source_share": float(src.mean()),
    }


def rule_counts(rgb: np.ndarray, rule: str, tol: float = S.DEFAULT_TOL) -> dict:
    """{"rate", "held", "total"} of one of scenes.RULES over images, as scenes.evaluate_generator
    counts it (rate NaN when no object was judged); rule "suns": suns per image."""
    strict = S.segment(rgb, tol)
    if rule == "suns":
        suns = [S.object_counts(c)["suns"] for c in strict]
        return {"rate": float(np.mean(suns)), "held": int(sum(suns)), "total": len(suns)}
    counts = [S.check_rules(c)[rule] for c in strict]
    held, total = sum(h for h, _ in counts), sum(t for _, t in counts)
    return {"rate": held / total if total else float("nan"), "held": held, "total": total}


def rule_rate(rgb: np.ndarray, rule: str, tol: float = S.DEFAULT_TOL) -> float:
    """Adherence of one of scenes.RULES over images (held / total), or "suns": suns per image."""
    return rule_counts(rgb, rule, tol)["rate"]


def faces_scores(before: torch.Tensor, after: torch.Tensor, match: torch.Tensor,
                 threshold: float = 0.5, paste=None) -> dict[str, float]:
    """Pixel change inside vs outside where the context fires (images (N, 3, S, S) in [-1, 1]).

    With ``paste`` = (copy_source, target_before, target_after, copy_mask, offset) (images
    (1, 3, S, S)), also ``target_closer``: 1 - |after - copy| / |before - copy| over the pasted
    region of the request's own target image (1 = it shows the copied content exactly).
    """
    from rewidget.core.metrics import change_inside_outside, paste_closeness

    out = change_inside_outside(before, after, match, threshold)
    if paste is not None:
        src, tb, ta, mask, offset = paste
        out["target_closer"] = paste_closeness(src[0], tb[0], ta[0], mask, offset)
    return out


def collateral_by_class(before: np.ndarray, after: np.ndarray, source: np.ndarray
                        ) -> dict[str, float]:
    """Where collateral happens: per class (before), the share of its outside pixels that changed."""
    return class_changes(classes(before), classes(after), ~np.asarray(source, bool))


def class_changes(cb: np.ndarray, ca: np.ndarray, where: np.ndarray) -> dict[str, float]:
    """Per class of ``cb`` (N, H, W), the share of its pixels in ``where`` whose class in ``ca``
    differs; classes with no pixel there are left out."""
    out = {}
    for i, name in enumerate(S.CLASS_NAMES):
        sel = where & (cb == i)
        if sel.any():
            out[name] = float((ca[sel] != i).mean())
    return out


def class_pixels(cm: np.ndarray, where: np.ndarray) -> dict[str, int]:
    """Per class, how many pixels of ``cm`` (N, H, W) in ``where`` show it (absent classes left out)."""
    counts = np.bincount(cm[where].ravel(), minlength=len(S.CLASS_NAMES))
    return {name: int(n) for name, n in zip(S.CLASS_NAMES, counts, strict=False) if n}


# -- shape-aware scores against a counterfactual render ------------------------------------------
def counterfactual_world(z: np.ndarray, change: str) -> dict[str, np.ndarray]:
    """The renderer's class maps of latents z (N, nz[, 1, 1]) in the world and in the world with
    ``change`` (scenes.COUNTERFACTUALS): {"orig", "cf"} (N, 64, 64) int64 and "region" (N, 64, 64)
    bool, the pixels the changed rule redraws."""
    _, orig = S.render_latents(z)
    _, cf = S.render_latents(z, change)
    return {"orig": orig, "cf": cf, "region": cf != orig}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else float("nan")


def _agreement(cm: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    return float((cm[where] == truth[where]).mean()) if where.any() else float("nan")


def shape_scores(before_maps: tuple[np.ndarray, np.ndarray],
                 after_maps: tuple[np.ndarray, np.ndarray], world: dict, target: str | int,
                 rim: int = 2, grow: int = 2) -> dict[str, float]:
    """Shape-aware scores of an edited generator against the counterfactual render.

    ``before_maps`` / ``after_maps``: ``segment_both`` (nearest, strict) of the unedited and the
    edited generated images (N, H, W); ``world``: ``counterfactual_world`` of the same latents.
    Efficacy uses the strict classes (a muddy colour is no class), collateral the nearest ones
    (a drifting edge pixel is no change), as ``scene_scores`` does.
    """
    cb, _ = before_maps
    ca, sa = after_maps
    cf, region = world["cf"], world["region"]
    t = class_index(target)
    near = dilate(region, grow)  # R and its blurred edge
    outside, outside_rim = ~region, ~dilate(region, rim)
    by_class = class_changes(cb, ca, outside)
    return {
        "shape_efficacy": _agreement(sa, cf, region),
        "shape_efficacy_nearest": _agreement(ca, cf, region),
        "target_iou": _iou((sa == t) & near, (cf == t) & near),
        "shape_collateral": float((ca[outside] != cb[outside]).mean()),
        "shape_collateral_rim": float((ca[outside_rim] != cb[outside_rim]).mean()),
        "shape_trunk": by_class.get("trunk", float("nan")),
        "shape_by_class": by_class,
        "region_pixels": int(region.sum()),
    }


def world_ceiling(before_maps: tuple[np.ndarray, np.ndarray], world: dict, target: str | int
                  ) -> dict[str, float]:
    """What the unedited generator reaches against the *original* render: per-pixel agreement
    (strict classes) inside the region R the rule changes, and the target class's IoU over whole
    images. An edit that draws the counterfactual as well as the generator draws the world would
    score about these; an edit that fills R with one flat class (an erase) can beat them, since
    the original shapes there have blurred edges of their own."""
    _, sb = before_maps
    t = class_index(target)
    return {"ceiling_efficacy": _agreement(sb, world["orig"], world["region"]),
            "ceiling_iou": _iou(sb == t, world["orig"] == t)}
