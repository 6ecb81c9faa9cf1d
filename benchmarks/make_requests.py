"""Write the rule-edit benchmark's named edits as saved requests (rewidget/examples/requests/*.json).

    python benchmarks/make_requests.py            # rewrites every file; same files every time

Scenes masks come from the generator's own images segmented by nearest palette colour (what a
user would paint on), never from the renderer. Samples are picked deterministically from seeds
0-399 ("request seeds"); the benchmark scores on held-out seeds far from these. Each request is
saved with a placeholder layer / rank / solver: the benchmark replays it at every layer, rank
and solver. The faces masks are boxes on seeds chosen by eye (the faces model has no ground
truth), the same ones as tests/test_faces.py for "add glasses".
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rule_scoring import components, dilate, roof_tips  # noqa: E402

from rewidget.core.masks import bounding_box, shift  # noqa: E402
from rewidget.core.placement import place_on_parts  # noqa: E402
from rewidget.core.requests import EditRequest, Paste, Sample, Selection  # noqa: E402
from rewidget.core.solve import DEFAULT_OPTIONS  # noqa: E402
from rewidget.models import load  # noqa: E402
from rewidget.models import scenes as S  # noqa: E402

REQUESTS = HERE.parent / "rewidget" / "examples" / "requests"
POOL = range(400)  # request seeds; held-out seeds (rule_edits.py) start at 700,000
N_CONTEXT = 10  # samples painted as context
N_PASTED = 3  # roof_to_tree: context samples whose every roof gets the crown pasted on it
STATS_SAMPLES = 10_000  # what the benchmark's full run uses
PLACEHOLDER = {"layer": "main.12", "rank": 1, "solver": "exact",
               "solver_options": dict(DEFAULT_OPTIONS["exact"])}


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((64, 64), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


# faces: aligned 64×64 crops; seeds picked by eye from the first 48 samples
EYES, GLASSES = box(24, 38, 12, 52), box(24, 38, 14, 54)
MOUTH = box(42, 54, 20, 44)
OPEN_MOUTHS = (0, 11, 42, 45)  # teeth showing
CLOSED_MOUTH = 1


def _shifted(mask: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return shift(t, offset, 64)[0, 0].numpy() > 0.5


def _centre(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


class ScenesPool:
    """The request seeds' generated images, their class maps, and which obey every rule."""

    def __init__(self, gen) -> None:
        self.seeds = list(POOL)
        self.rgb = gen.render(self.seeds)
        self.cm, strict = S.segment_both(self.rgb, S.DEFAULT_TOL)
        self.clean = [all(h == t for h, t in S.check_rules(c).values()) for c in strict]

    def pick(self, want, n: int = N_CONTEXT) -> list[int]:
        """The first ``n`` clean seeds whose class map satisfies ``want(cm)``."""
        out = [s for s, c, ok in zip(self.seeds, self.cm, self.clean, strict=True) if ok and want(c)]
        if len(out) < n:
            raise RuntimeError(f"only {len(out)} samples qualify; widen POOL")
        return out[:n]


def _request(kind: str, model: str, context, copy=None, paste=None) -> EditRequest:
    return EditRequest(model=model, kind=kind, context=tuple(context), copy=copy, paste=paste,
                       stats_samples=STATS_SAMPLES, **PLACEHOLDER)


def _crown_on(p: ScenesPool, crown: np.ndarray, src: int, dst: int, roof: np.ndarray
              ) -> tuple[Selection, Paste]:
    """The crown moved centre onto ``roof``'s centre, cut to what lands on the roof."""
    (ry, rx), (cy, cx) = _centre(roof), _centre(crown)
    offset = (round(rx - cx), round(ry - cy))
    copy = crown & _shifted(roof, (-offset[0], -offset[1]))
    return Selection(Sample(src), copy), Paste(Sample(dst), offset)


def roof_to_tree(p: ScenesPool, every_roof_on: int = N_PASTED) -> EditRequest:
    """Roofs become tree crowns: context = every roof on 10 samples; one crown pasted on every
    roof of the first ``every_roof_on`` of them (the app's "Paste again"), all solved together.
    ``every_roof_on=0``: the paper's single paste, on the smallest roof of the first sample."""
    ctx = p.pick(lambda c: len(components(c == S.ROOF, 30)) >= 2)
    crowns = [(comp, s) for s, c, ok in zip(p.seeds, p.cm, p.clean, strict=True) if ok
              for comp in components(c == S.TREE, 60)[:1]]
    crown, src = max(crowns, key=lambda x: (int(x[0].sum()), -x[1]))
    if every_roof_on:
        pairs = [_crown_on(p, crown, src, dst, roof) for dst in ctx[:every_roof_on]
                 for roof in components(p.cm[dst] == S.ROOF, 30)]
    else:  # the smallest whole roof on the first sample
        pairs = [_crown_on(p, crown, src, ctx[0], components(p.cm[ctx[0]] == S.ROOF, 30)[-1])]
    (copy, paste), more = pairs[0], tuple(pairs[1:])
    req = _request("paste", "scenes", [Selection(Sample(s), p.cm[s] == S.ROOF) for s in ctx],
                   copy, paste)
    return dataclasses.replace(req, more_pastes=more)


#: roof_to_tree_all: samples whose every roof is context and gets a crown (found by "Paste on all")
N_ALL = 30


def roof_to_tree_all(p: ScenesPool, n: int = N_ALL) -> EditRequest:
    """Roofs become tree crowns, taught as a user would with "replace" and "Paste on all":
    context = every roof on ``n`` samples; the copy = one whole crown (the pool's median-sized
    one, none of the grass around it); one paste placed by hand on the first roof — centred on
    it, its lowest row on the roof's lowest row (a crown resting on the tower) — and repeated on
    every other roof by the session's placement (core/placement.py); replace=True, so what the
    crown does not cover of each roof is filled from its surroundings (sky)."""
    ctx = p.pick(lambda c: len(components(c == S.ROOF, 30)) >= 2, n)
    crowns = sorted(((comp, s) for s, c, ok in zip(p.seeds, p.cm, p.clean, strict=True) if ok
                     for comp in components(c == S.TREE, 60)[:1]),
                    key=lambda x: (int(x[0].sum()), x[1]))
    crown, src = crowns[len(crowns) // 2]
    roof = components(p.cm[ctx[0]] == S.ROOF, 30)[0]
    rx0, _, rx1, ry1 = bounding_box(roof)
    cx0, _, cx1, cy1 = bounding_box(crown)
    first = (Selection(Sample(src), crown),
             Paste(Sample(ctx[0]), (round((rx0 + rx1 - cx0 - cx1) / 2), ry1 - cy1)))
    context = [Selection(Sample(s), p.cm[s] == S.ROOF) for s in ctx]
    more = place_on_parts(context, first, [first], 64)
    req = _request("paste", "scenes", context, *first)
    return dataclasses.replace(req, more_pastes=tuple(more), replace=True)


def roof_to_tree_one_paste(p: ScenesPool) -> EditRequest:
    """The same edit taught the paper's way: the crown pasted on one roof only."""
    return roof_to_tree(p, every_roof_on=0)


def windows_erase(p: ScenesPool) -> EditRequest:
    """Towers lose their windows: erase every window (grown 1 px) on 10 samples."""
    ctx = p.pick(lambda c: len(components(c == S.WINDOW, 8)) >= 3)
    return _request("erase", "scenes",
                    [Selection(Sample(s), dilate(p.cm[s] == S.WINDOW, 1)) for s in ctx])


def sun_erase(p: ScenesPool) -> EditRequest:
    """The sun goes away (the world has no cloud to turn it into): erase suns on 10 samples."""
    ctx = p.pick(lambda c: len(components(c == S.SUN, 40)) == 1)
    return _request("erase", "scenes",
                    [Selection(Sample(s), dilate(p.cm[s] == S.SUN, 1)) for s in ctx])


def roof_flat(p: ScenesPool) -> EditRequest:
    """Pointed roofs lose their points: sky pasted over the upper half of a roof.

    Context = the upper half of every roof on 10 samples; the copy is the patch of sky right
    above one roof's tip, moved down onto the tip.
    """
    def tip_below_sky(c):
        """A roof tip with a patch of pure sky of its own shape just above it, or None."""
        for t in components(roof_tips(c), 8):
            h = int(t.any(1).sum()) + 2
            above = _shifted(t, (0, -h))
            if above.sum() == t.sum() and np.all(c[above] == S.SKY):
                return t, h
        return None

    ctx = p.pick(lambda c: len(components(c == S.ROOF, 30)) >= 1)
    dst = next(s for s in ctx if tip_below_sky(p.cm[s]) is not None)
    tip, h = tip_below_sky(p.cm[dst])
    sky = _shifted(tip, (0, -h))  # same shape, just above the tip
    return _request("paste", "scenes", [Selection(Sample(s), roof_tips(p.cm[s])) for s in ctx],
                    Selection(Sample(dst), sky), Paste(Sample(dst), (0, h)))


def faces_glasses() -> EditRequest:
    """The paper's classic: dark glasses from seed 4 onto the eye band of seeds 1, 7, 0."""
    return _request("paste", "dcgan-faces", [Selection(Sample(s), EYES) for s in (1, 7, 0)],
                    Selection(Sample(4), GLASSES), Paste(Sample(1), (0, 0)))


def faces_close_mouths() -> EditRequest:
    """Open mouths (teeth showing) close: seed 1's closed mouth pasted on seed 0's smile."""
    return _request("paste", "dcgan-faces", [Selection(Sample(s), MOUTH) for s in OPEN_MOUTHS],
                    Selection(Sample(CLOSED_MOUTH), MOUTH), Paste(Sample(OPEN_MOUTHS[0]), (0, 0)))


SCENES_EDITS = {"roof_to_tree": roof_to_tree, "roof_to_tree_one_paste": roof_to_tree_one_paste,
                "roof_to_tree_all": roof_to_tree_all,
                "windows_erase": windows_erase,
                "sun_erase": sun_erase, "roof_flat": roof_flat}
FACES_EDITS = {"faces_glasses": faces_glasses, "faces_close_mouths": faces_close_mouths}


def make_all(out: Path = REQUESTS, scenes_gen=None) -> dict[str, Path]:
    """Write every request; ``scenes_gen``: an already loaded ``scenes`` generator (optional)."""
    out.mkdir(parents=True, exist_ok=True)
    pool = ScenesPool(scenes_gen or load("scenes"))
    requests = {name: fn(pool) for name, fn in SCENES_EDITS.items()}
    requests |= {name: fn() for name, fn in FACES_EDITS.items()}  # masks only: no model needed
    paths = {}
    for name, req in requests.items():
        paths[name] = out / f"{name}.json"
        paths[name].write_text(req.to_json())
    return paths


if __name__ == "__main__":
    for name, path in make_all().items():
        print(f"{name}: {path.relative_to(HERE.parent)}")
