"""A procedural world of small scenes with explicit rules, and a conv generator trained on it.

    z = np.random.default_rng(0).standard_normal((8, SCENES_NZ))
    rgb, classmap = render_latents(z)                  # (8, 64, 64, 3) uint8, (8, 64, 64) int
    counts = check_rules(classmap[0])                  # {"roof_on_tower": (held, total), ...}
    _, treetops = render_latents(z, change="roof_to_tree")   # the same scenes, one rule changed
    changed = treetops != classmap                     # (8, 64, 64) bool: where that rule acts

    net = load_scenes_network()                        # eval mode, trained weights
    img = net(torch.from_numpy(z).float()[..., None, None])  # (8, 3, 64, 64) in [-1, 1]
    report = evaluate_generator(net, n=500)            # palette share, rule adherence, counts

The world (64x64, flat colours, one class per colour): sky above a horizon and grass below;
0-3 towers standing on the horizon, each wearing a pointed red roof and carrying 4x4 windows;
0-3 trees on the grass, each a round crown on a 4-px brown trunk; sometimes a sun in the sky.
Towers and trees each have three lanes (at most one per lane, jittered inside it by 1-7 px), so
nothing overlaps; the sun may hide behind a tower.

The scene is a deterministic function of a latent z ~ N(0, I): each coordinate is mapped through
the normal CDF to a uniform, then to an existence flag, a position or a size (see LATENT_LAYOUT).
That makes the generator trainable by plain regression on z -> render(params(z)) with endless
fresh data. Every detail is large enough to survive a generator whose finest hidden layer is
16x16 (roofs >= 9 rows, windows 4x4, trunks 4 px wide, sun radius >= 5).

Counterfactual worlds (COUNTERFACTUALS): the same latent rendered with one rule changed, the
ground truth of the rule-edit benchmark. A change touches only the pixels of the rule it names;
everything else in the scene is drawn exactly as before.

Rules are checked on class maps, so they apply equally to rendered images and to generated ones
segmented by nearest palette colour. Pixels farther than `tol` from every palette colour segment
to UNKNOWN (-1); the palette is chosen so that a blend of two colours that meet in a scene never
comes within 58 of a third one, hence never gets mislabelled as a third class at tol <= 58.
The rules look through up to EDGE UNKNOWN pixels (a blurred edge) to see what touches an object,
and ignore components smaller than MIN_AREA (specks, faint ghosts).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import seeded_normal, to_uint8
from .dcgan import DCGANGenerator

SIZE = 64
SCENES_NZ = 35

CLASS_NAMES: tuple[str, ...] = ("sky", "grass", "tower", "roof", "window", "tree", "trunk", "sun")
SKY, GRASS, TOWER, ROOF, WINDOW, TREE, TRUNK, SUN = range(len(CLASS_NAMES))
UNKNOWN = -1

PALETTE: dict[str, tuple[int, int, int]] = {
    "sky": (90, 190, 245),
    "grass": (95, 200, 35),
    "tower": (180, 160, 140),
    "roof": (215, 15, 70),
    "window": (70, 15, 130),
    "tree": (10, 110, 75),
    "trunk": (110, 65, 10),
    "sun": (245, 240, 70),
}
PALETTE_ARRAY = np.array([PALETTE[n] for n in CLASS_NAMES], dtype=np.uint8)  # (K, 3)

#: Euclidean RGB distance (0-255 units) under which a pixel counts as a palette colour.
DEFAULT_TOL = 40.0

N_TOWERS = 3
N_TREES = 3
P_TOWER = 0.5
P_TREE = 0.5
P_SUN = 0.6

#: Which latent coordinate drives which parameter (all through u = Phi(z)).
LATENT_LAYOUT: dict[str, int | tuple[int, ...]] = {
    "horizon": 0,
    "sun": (1, 2, 3, 4),  # exists, x, y, radius
    **{f"tower{i}": tuple(range(5 + 5 * i, 10 + 5 * i)) for i in range(N_TOWERS)},
    # tower: exists, x, body width, body top, roof height
    **{f"tree{i}": tuple(range(20 + 5 * i, 25 + 5 * i)) for i in range(N_TREES)},
    # tree: exists, x, y, crown radius, visible trunk height
}
LANE = SIZE / 3  # towers and trees each live in three lanes, so nothing overlaps


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Sun:
    cx: float
    cy: float
    r: float


@dataclass(frozen=True)
class Tower:
    cx: float
    width: float  # body width; the roof overhangs it by 1.5 px on each side
    top: int  # first body row; the roof sits on rows [top - roof_h, top)
    base: int  # first row below the body (2 rows into the grass)
    roof_h: float
    windows: tuple[tuple[int, int], ...]  # (row, col) of each 4x4 window's top-left pixel


@dataclass(frozen=True)
class Tree:
    cx: float
    cy: float
    r: float  # crown radius
    trunk_bottom: int  # last trunk row; the row below it is grass


@dataclass(frozen=True)
class SceneParams:
    horizon: int  # first grass row
    sun: Sun | None
    towers: tuple[Tower, ...]
    trees: tuple[Tree, ...]


def normal_cdf(z: np.ndarray) -> np.ndarray:
    """Phi(z), elementwise, float64."""
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(z / math.sqrt(2.0)))


def _lerp(u: float, lo: float, hi: float) -> float:
    return lo + float(u) * (hi - lo)


def _int_in(u: float, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] from u in [0, 1]."""
    return min(hi, lo + int(float(u) * (hi - lo + 1)))


def _tower_windows(cx: float, width: float, top: int, base: int) -> tuple[tuple[int, int], ...]:
    cols = [round(cx) - 2] if width < 13.5 else [round(cx) - 5, round(cx) + 1]
    n_rows = max(1, 1 + (base - 4 - (top + 7)) // 7)  # 3 rows above, >= 4 rows below, step 7
    return tuple((top + 3 + 7 * k, c) for k in range(n_rows) for c in cols)


def params_from_latent(z: np.ndarray) -> SceneParams:
    """Scene parameters of one latent z (SCENES_NZ,); a deterministic function."""
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    if z.shape[0] != SCENES_NZ:
        raise ValueError(f"expected a latent of {SCENES_NZ} coordinates, got {z.shape[0]}")
    u = normal_cdf(z)
    horizon = _int_in(u[0], 30, 38)

    sun = None
    if u[1] < P_SUN:
        r = _lerp(u[4], 5.0, 6.5)
        sun = Sun(cx=_lerp(u[2], 8.0, 56.0), cy=_lerp(u[3], 8.0, horizon - 4.0 - r), r=r)

    towers = []
    for i in range(N_TOWERS):
        e, ux, uw, ut, ur = u[5 + 5 * i : 10 + 5 * i]
        if e >= P_TOWER:
            continue
        width = _lerp(uw, 10.0, 15.0)
        half = width / 2 + 1.5 + 1.0  # roof overhang, then a 1-px gap to the lane edge
        cx = _lerp(ux, i * LANE + half, (i + 1) * LANE - half)
        roof_h = _lerp(ur, 9.0, 12.0)
        base = horizon + 2
        top = _int_in(ut, 3 + math.ceil(roof_h), base - 14)
        towers.append(Tower(cx, width, top, base, roof_h, _tower_windows(cx, width, top, base)))

    trees = []
    for i in range(N_TREES):
        e, ux, uy, ur, uh = u[20 + 5 * i : 25 + 5 * i]
        if e >= P_TREE:
            continue
        r = _lerp(ur, 5.0, 7.0)
        trunk_h = _int_in(uh, 5, 7)
        cx = _lerp(ux, i * LANE + r + 1.0, (i + 1) * LANE - r - 1.0)
        cy_lo = horizon + 4 + r  # crown top at least 4 rows into the grass
        cy_hi = SIZE - 2 - trunk_h - r  # trunk ends above the last row, so grass is under it
        cy = _lerp(uy, cy_lo, cy_hi)
        trunk_bottom = int(math.floor(cy + r)) + trunk_h - 1
        trees.append(Tree(cx, cy, r, trunk_bottom))
    return SceneParams(horizon, sun, tuple(towers), tuple(trees))


def sample_params(source: np.random.Generator | np.ndarray | int | None = None) -> SceneParams:
    """Scene parameters from a latent (array of SCENES_NZ), a numpy Generator, or a seed."""
    if isinstance(source, np.ndarray):
        return params_from_latent(source)
    rng = source if isinstance(source, np.random.Generator) else np.random.default_rng(source)
    return params_from_latent(rng.standard_normal(SCENES_NZ))


# --------------------------------------------------------------------------- rendering

_YC, _XC = np.mgrid[0:SIZE, 0:SIZE] + 0.5  # pixel centres, (64, 64) each


#: One counterfactual world per named benchmark edit: name -> the rule it changes.
COUNTERFACTUALS: dict[str, str] = {
    "roof_to_tree": "towers wear a round tree crown (radius roof_h/2 + 0.5, resting on the tower "
                    "top) instead of their pointed roof",
    "no_windows": "towers have no windows: window pixels are tower wall",
    "no_sun": "the sun is not drawn: its pixels are sky",
    "flat_roofs": "roofs lose their points: the upper FLAT_SHARE of each roof's rows is not drawn "
                  "(what lies behind shows: sky, or the sun)",
}

#: flat_roofs cuts the same rows as the benchmark's roof_flat request paints (its `roof_tips`).
FLAT_SHARE = 0.5


def _check_change(change: str | None) -> None:
    if change is not None and change not in COUNTERFACTUALS:
        raise ValueError(f"unknown counterfactual {change!r}; use one of {sorted(COUNTERFACTUALS)}")


def _roof_mask(t: Tower) -> np.ndarray:
    """(64, 64) bool: a tower's pointed roof, a triangle on rows [top - roof_h, top)."""
    half_base = t.width / 2 + 1.5
    depth = (_YC - (t.top - t.roof_h)) / t.roof_h  # 0 at the tip, 1 at the roof's base
    return (depth > 0) & (_YC < t.top) & (np.abs(_XC - t.cx) < depth * half_base)


def _flat_roof(roof: np.ndarray) -> np.ndarray:
    """The roof without its upper FLAT_SHARE of rows (at least one row goes)."""
    rows = np.nonzero(roof.any(1))[0]  # contiguous: a triangle
    cut = rows[0] + max(1, int(round(FLAT_SHARE * len(rows))))
    out = roof.copy()
    out[:cut] = False
    return out


def crown_for_roof(t: Tower) -> tuple[float, float, float]:
    """(cx, cy, r) of the crown that replaces a tower's roof in the roof_to_tree world.

    Radius roof_h / 2 + 0.5 (5-6.5 px, inside the world's crown range 5-7), centred on the tower's
    axis so that it rests on the tower top (its lowest pixel row is top - 1) and rises one row
    above where the roof's tip was; it stays inside the roof's overhang, hence inside its lane.
    """
    r = t.roof_h / 2 + 0.5
    return t.cx, t.top - r, r


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    return (_XC - cx) ** 2 + (_YC - cy) ** 2 <= r**2


def _draw_tower(cm: np.ndarray, t: Tower, change: str | None) -> None:
    """Paint one tower (body, windows, roof) into cm (64, 64) in place."""
    cm[t.top : t.base][np.abs(_XC[t.top : t.base] - t.cx) < t.width / 2] = TOWER
    if change != "no_windows":
        for row, col in t.windows:
            cm[row : row + 4, col : col + 4] = WINDOW
    roof = _roof_mask(t)
    if change == "roof_to_tree":
        cm[_disc(*crown_for_roof(t))] = TREE
    elif change == "flat_roofs":
        cm[_flat_roof(roof)] = ROOF
    else:
        cm[roof] = ROOF


def render_classmap(params: SceneParams, change: str | None = None) -> np.ndarray:
    """Class map (64, 64) int64 of a scene; painter's order: sky/grass, sun, towers, trees.

    ``change``: one of COUNTERFACTUALS to render that counterfactual world (None: the world).
    """
    _check_change(change)
    cm = np.full((SIZE, SIZE), SKY, dtype=np.int64)
    cm[params.horizon :] = GRASS
    if params.sun is not None and change != "no_sun":
        s = params.sun
        cm[_disc(s.cx, s.cy, s.r)] = SUN
    for t in params.towers:
        _draw_tower(cm, t, change)
    for tr in params.trees:
        trunk = (np.abs(_XC - tr.cx) < 2.0) & (_YC > tr.cy) & (_YC < tr.trunk_bottom + 1)
        cm[trunk] = TRUNK
        cm[_disc(tr.cx, tr.cy, tr.r)] = TREE
    return cm


def classmap_to_rgb(classmap: np.ndarray) -> np.ndarray:
    """Palette colours (..., 3) uint8 of a class map; UNKNOWN pixels come out black."""
    lut = np.concatenate([PALETTE_ARRAY, np.zeros((1, 3), np.uint8)])  # index -1 -> black
    return lut[np.asarray(classmap)]


def render_latents(z: np.ndarray, change: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render latents z (N, SCENES_NZ) (or (N, nz, 1, 1)): rgb (N, 64, 64, 3), classmap (N, 64, 64).

    ``change``: one of COUNTERFACTUALS to render those latents in that counterfactual world.
    """
    _check_change(change)
    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    cms = np.zeros((len(z), SIZE, SIZE), np.int64)
    for i, zi in enumerate(z):
        cms[i] = render_classmap(params_from_latent(zi), change)
    return classmap_to_rgb(cms), cms


# --------------------------------------------------------------------------- segmentation


_PAL_F = PALETTE_ARRAY.astype(np.float32)  # (K, 3)


def _palette_distances(rgb: np.ndarray) -> np.ndarray:
    """Euclidean distances (..., K) from each pixel to each palette colour (float32)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).reshape(-1, 3).float()
    d = torch.cdist(x, torch.from_numpy(_PAL_F))  # (M, K)
    return d.reshape(*np.shape(rgb)[:-1], len(_PAL_F)).numpy()


def segment(rgb: np.ndarray, tol: float | None = None) -> np.ndarray:
    """Class map of an image (..., 3) uint8 by nearest palette colour.

    With `tol`, pixels farther than tol from every palette colour become UNKNOWN (-1).
    Exact on rendered images.
    """
    d = _palette_distances(rgb)
    cm = d.argmin(-1).astype(np.int64)
    if tol is not None:
        cm[d.min(-1) > tol] = UNKNOWN
    return cm


def segment_both(rgb: np.ndarray, tol: float = DEFAULT_TOL) -> tuple[np.ndarray, np.ndarray]:
    """(``segment(rgb)``, ``segment(rgb, tol)``) from one pass over the palette distances."""
    d = _palette_distances(rgb)
    nearest = d.argmin(-1).astype(np.int64)
    strict = nearest.copy()
    strict[d.min(-1) > tol] = UNKNOWN
    return nearest, strict


def palette_share(rgb: np.ndarray, tol: float = DEFAULT_TOL) -> float:
    """Share of pixels within `tol` (Euclidean, 0-255 units) of some palette colour."""
    return float((_palette_distances(rgb).min(-1) <= tol).mean())


# --------------------------------------------------------------------------- rules

#: Components smaller than this are specks, not objects, and are not judged.
MIN_AREA = {"tower": 20, "roof": 8, "window": 4, "tree": 20, "trunk": 6, "sun": 10}

RULES: dict[str, str] = {
    "roof_on_tower": "each tower has roof directly on top of it",
    "roof_pointed": "each roof is a triangle: >= 6 rows, its top rows at most 0.4 of its width",
    "roof_only_on_tower": "each roof sits on a tower",
    "tower_has_windows": "each tower carries at least one window",
    "window_on_tower": "each window is surrounded by tower (>= 75% of its outline)",
    "trunk_under_tree": "each tree crown has a trunk directly under it",
    "tree_on_grass": "each tree's trunk stands on grass, and its crown is below the horizon",
    "trunk_has_tree": "each trunk carries a crown",
    "sun_in_sky": "each sun lies above the horizon and touches no grass, tree or trunk",
}


def _components(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """4-connected components of a boolean (H, W) mask, as (rows, cols) index arrays."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    flat = mask.ravel()
    for start in np.flatnonzero(flat):
        if seen.flat[start]:
            continue
        seen.flat[start] = True
        queue, members = deque([int(start)]), []
        while queue:
            p = queue.popleft()
            members.append(p)
            r, c = divmod(p, w)
            for q, ok in ((p - w, r > 0), (p + w, r < h - 1), (p - 1, c > 0), (p + 1, c < w - 1)):
                if ok and flat[q] and not seen.flat[q]:
                    seen.flat[q] = True
                    queue.append(q)
        idx = np.array(members)
        comps.append((idx // w, idx % w))
    return comps


#: How many pixels of UNKNOWN (a blurred edge) the rules look through to see what is beyond.
EDGE = 2


def _grow(mask: np.ndarray) -> np.ndarray:
    """mask plus its 4-neighbours."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _mask(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[rows, cols] = True
    return m


def _surroundings(cm: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Classes of the known pixels just outside a component, looking through up to EDGE
    pixels of UNKNOWN that hug it."""
    inside = _mask(rows, cols, cm.shape)
    for _ in range(EDGE):
        inside |= _grow(inside) & (cm == UNKNOWN)
    ring = cm[_grow(inside) & ~inside]
    return ring[ring != UNKNOWN]


def _step_off(cm: np.ndarray, rows: np.ndarray, cols: np.ndarray, up: bool) -> np.ndarray:
    """Per column of a component: the class met just above its top (or below its bottom),
    skipping up to EDGE UNKNOWN pixels; UNKNOWN where the image ends."""
    out = []
    step = -1 if up else 1
    for c in np.unique(cols):
        r = rows[cols == c].min() - 1 if up else rows[cols == c].max() + 1
        for _ in range(EDGE):
            if 0 <= r < cm.shape[0] and cm[r, c] == UNKNOWN:
                r += step
        out.append(cm[r, c] if 0 <= r < cm.shape[0] else UNKNOWN)
    return np.array(out, dtype=np.int64)


def _near(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], shape) -> bool:
    """Whether two components come within EDGE + 1 pixels (4-steps) of each other."""
    m = _mask(*a, shape)
    for _ in range(EDGE + 1):
        m = _grow(m)
    return bool(m[b].any())


def horizon_row(classmap: np.ndarray) -> int:
    """First grass row, taken over the columns where grass starts highest (10th percentile)."""
    is_grass = np.asarray(classmap) == GRASS
    has = is_grass.any(0)
    if not has.any():
        return classmap.shape[0]
    first = is_grass.argmax(0)[has]
    return int(np.floor(np.percentile(first, 10)))


def _objects(cm: np.ndarray) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    def big(mask: np.ndarray, kind: str, area_of: np.ndarray | None = None):
        comps = _components(mask)
        ref = mask if area_of is None else area_of
        return [(r, c) for r, c in comps if ref[r, c].sum() >= MIN_AREA[kind]]

    return {
        # a tower is its wall and its windows together
        "tower": big((cm == TOWER) | (cm == WINDOW), "tower", area_of=cm == TOWER),
        "roof": big(cm == ROOF, "roof"),
        "window": big(cm == WINDOW, "window"),
        "tree": big(cm == TREE, "tree"),
        "trunk": big(cm == TRUNK, "trunk"),
        "sun": big(cm == SUN, "sun"),
    }


def check_rules(classmap: np.ndarray) -> dict[str, tuple[int, int]]:
    """Per-rule (held, total) counts on one class map (64, 64); see RULES.

    Adherence of a rule over many images is sum(held) / sum(total). Works on rendered class maps
    and on segmented generated images (UNKNOWN pixels allowed).
    """
    cm = np.asarray(classmap, dtype=np.int64)
    return _rule_counts(cm, _objects(cm))


def _rule_counts(cm: np.ndarray, objs: dict) -> dict[str, tuple[int, int]]:
    horizon = horizon_row(cm)
    res = {name: [0, 0] for name in RULES}

    def tally(rule: str, held: bool) -> None:
        res[rule][0] += int(held)
        res[rule][1] += 1

    for rows, cols in objs["tower"]:
        above = _step_off(cm, rows, cols, up=True)
        tally("roof_on_tower", (above == ROOF).mean() >= 0.5)
        inside = [
            w
            for w in objs["window"]
            if cols.min() <= w[1].mean() <= cols.max()
            and rows.min() <= w[0].mean() <= rows.max()
            and _near(w, (rows, cols), cm.shape)
        ]
        tally("tower_has_windows", len(inside) > 0)
    for rows, cols in objs["roof"]:
        top = rows.min()
        height = rows.max() - top + 1
        widths = np.bincount(rows - top, minlength=height)
        tip = widths[:2].mean()
        tally("roof_pointed", height >= 6 and tip <= 0.4 * widths.max())
        below = _step_off(cm, rows, cols, up=False)
        tally("roof_only_on_tower", np.isin(below, (TOWER, WINDOW)).sum() >= 3)
    for rows, cols in objs["window"]:
        ring = _surroundings(cm, rows, cols)
        tally("window_on_tower", ring.size > 0 and (ring == TOWER).mean() >= 0.75)
    for rows, cols in objs["tree"]:
        below = _step_off(cm, rows, cols, up=False)
        has_trunk = (below == TRUNK).sum() >= 2
        tally("trunk_under_tree", has_trunk)
        # the trunk(s) touching this crown from below
        touching = [t for t in objs["trunk"] if _near(t, (rows, cols), cm.shape)]
        stands = False
        if touching:
            feet = np.concatenate([_step_off(cm, r, c, up=False) for r, c in touching])
            feet = feet[(feet != TREE) & (feet != UNKNOWN)]
            stands = feet.size > 0 and (feet == GRASS).mean() >= 0.75
        tally("tree_on_grass", stands and rows.min() >= horizon)
    for rows, cols in objs["trunk"]:
        above = _step_off(cm, rows, cols, up=True)
        tally("trunk_has_tree", (above == TREE).any())
    for rows, cols in objs["sun"]:
        ring = _surroundings(cm, rows, cols)
        tally("sun_in_sky", rows.max() < horizon and not np.isin(ring, (GRASS, TREE, TRUNK)).any())
    return {k: (v[0], v[1]) for k, v in res.items()}


def object_counts(classmap: np.ndarray) -> dict[str, object]:
    """Number of towers, trees and suns in a class map, and the towers' centre columns."""
    return _count_objects(_objects(np.asarray(classmap, dtype=np.int64)))


def _count_objects(objs: dict) -> dict[str, object]:
    return {
        "towers": len(objs["tower"]),
        "trees": len(objs["tree"]),
        "suns": len(objs["sun"]),
        "tower_x": sorted(float(c.mean()) for _, c in objs["tower"]),
    }


def sum_rule_counts(counts: list[dict[str, tuple[int, int]]]) -> dict[str, dict[str, float]]:
    """Aggregate check_rules outputs: {rule: {"held", "total", "rate"}} (rate 1.0 if total 0)."""
    out = {}
    for rule in RULES:
        held = sum(c[rule][0] for c in counts)
        total = sum(c[rule][1] for c in counts)
        out[rule] = {"held": held, "total": total, "rate": held / total if total else 1.0}
    return out


# --------------------------------------------------------------------------- generator

WIDTHS = (256, 128, 64, 32)  # DCGANGenerator's ngf * (8, 4, 2, 1) with ngf = 32
WEIGHTS_PATH = Path(__file__).parent / "weights" / "scenes.safetensors"


def build_scenes_network() -> nn.Module:
    """An untrained scenes generator (train mode): the DCGAN layout with WIDTHS channels.

    z (N, SCENES_NZ, 1, 1) -> image (N, 3, 64, 64) in [-1, 1]; main.0 -> 4x4, main.3 -> 8x8,
    main.6 -> 16x16, main.9 -> 32x32, main.12 -> 64x64, so the keys of main.3 / main.6 / main.9
    live at 4x4 / 8x8 / 16x16.
    """
    return DCGANGenerator(nz=SCENES_NZ, ngf=WIDTHS[-1])


def load_scenes_network(
    device: str | torch.device = "cpu", path: str | Path | None = None
) -> nn.Module:
    """The trained scenes generator, in eval mode, weights loaded with safetensors."""
    from safetensors.torch import load_file

    net = build_scenes_network()
    net.load_state_dict(load_file(str(path or WEIGHTS_PATH)))
    return net.to(device).eval()


def scenes_latents(seeds, nz: int = SCENES_NZ) -> torch.Tensor:
    """Latents (N, nz, 1, 1), one per seed: the same ones as the zoo's ``scenes`` adapter."""
    return seeded_normal(seeds, (nz, 1, 1))


def _hist(values: list[int], n: int = 4) -> list[float]:
    h = np.bincount(np.clip(values, 0, n - 1), minlength=n)
    return (h / max(1, len(values))).round(4).tolist()


@torch.no_grad()
def evaluate_generator(
    net: nn.Module,
    n: int = 500,
    seed0: int = 1_000_000,
    tol: float = DEFAULT_TOL,
    batch_size: int = 100,
) -> dict:
    """Judge a generator on n seeded latents against the renderer on the same latents.

    Reports the palette share, each rule's adherence on the segmented images, object counts
    (generator vs renderer, and how often they agree per latent), and the pixel accuracy of
    the segmented class maps against the rendered ones. Leaves `net`'s mode unchanged.
    """
    was_training = net.training
    net.eval()
    param = next(net.parameters())
    shares, gen_rules, ren_rules, gen_obj, ren_obj, acc = [], [], [], [], [], []
    for start in range(seed0, seed0 + n, batch_size):
        seeds = range(start, min(start + batch_size, seed0 + n))
        z = scenes_latents(seeds)
        rgb = to_uint8(net(z.to(device=param.device, dtype=param.dtype)))
        _, ren_cm = render_latents(z.numpy())
        gen_cm = segment_both(rgb, tol)[1]
        shares.append((gen_cm != UNKNOWN).mean() * len(rgb))  # = palette_share(rgb, tol)
        acc.append((gen_cm == ren_cm).mean() * len(rgb))
        for cms, rules, counts in ((gen_cm, gen_rules, gen_obj), (ren_cm, ren_rules, ren_obj)):
            for cm in cms:
                objs = _objects(cm)  # once per map, for both the rules and the counts
                rules.append(_rule_counts(cm, objs))
                counts.append(_count_objects(objs))
    net.train(was_training)

    def compare(key: str, bins: int) -> dict:
        gen, ren = [o[key] for o in gen_obj], [o[key] for o in ren_obj]
        return {
            "generator": _hist(gen, bins),
            "renderer": _hist(ren, bins),
            "agree": float(np.mean([g == r for g, r in zip(gen, ren, strict=True)])),
        }

    def x_hist(objs: list[dict]) -> list[float]:
        xs = [x for o in objs for x in o["tower_x"]]
        return (np.histogram(xs, bins=8, range=(0, SIZE))[0] / max(1, len(xs))).round(4).tolist()

    rules = sum_rule_counts(gen_rules)
    return {
        "n": n,
        "seed0": seed0,
        "tol": tol,
        "palette_share": sum(shares) / n,
        "pixel_accuracy": sum(acc) / n,
        "rules": rules,
        "min_rule_rate": min(v["rate"] for v in rules.values()),
        "renderer_rules": sum_rule_counts(ren_rules),
        "towers": compare("towers", 4),
        "trees": compare("trees", 4),
        "suns": compare("suns", 3),
        "tower_x_hist8": {"generator": x_hist(gen_obj), "renderer": x_hist(ren_obj)},
    }
