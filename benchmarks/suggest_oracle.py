"""Is a missed suggestion a ranking miss or a candidate miss? The suggestion's own finalists, each
scored by the ground truth the suggestion never sees.

    python benchmarks/suggest_oracle.py                  # faces and scenes, ~10 min on 2 cores
    python benchmarks/suggest_oracle.py --models faces --seeds 200
    python benchmarks/suggest_oracle.py --realism-weight 0.1 --name suggest_oracle_realism0.1

For each request of benchmarks/suggest.py (faces: band ratio on 64 held-out faces, as there) and
of benchmarks/suggest_scenes.py (scenes: shape efficacy − shape collateral against the
counterfactual render on --seeds held-out seeds, as there), `session.suggest()` runs as the app
runs it; then every finalist (the candidates scored on all 12 preview samples, not only the
screening six) is installed, rendered on the held-out seeds, scored by that ground truth and
undone. Reported per request: the pick, the ground truth's best finalist and where the
suggestion ranked it, and their score components (effect, generalisation, realism), so a miss
reads as "the right setting was solved and ranked lower" (the score) or "it was never solved"
(the candidate ladder); ``--realism-weight`` replaces the score's REALISM_WEIGHT for the run.
A face counts in the band only if it changes it by ≥ 0.05, as in suggest.py. Writes results/<name>.md and results/<name>_faces_glasses.png
(12 held-out faces: before, the pick, the ground truth's best finalist).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rule_scoring as RS  # noqa: E402
from rule_edits import EDITS, HELD_OUT0, load_request  # noqa: E402
from suggest import HELD_OUT, band_of, band_ratio, glasses_b, glasses_b_on_all  # noqa: E402
from suggest_scenes import ground_truth  # noqa: E402

import rewidget.session.suggest as SG  # noqa: E402
from rewidget import RewriteSession  # noqa: E402

MIN_INSIDE = 0.05  # suggest.best_by_hand's: a band change anyone sees
FIGURE_SEEDS = list(range(700_008, 700_020))  # held out, and not suggest.py's figure faces


def after_of(s: RewriteSession, edit, z: torch.Tensor) -> torch.Tensor:
    s.apply(edit)
    try:
        with torch.no_grad():
            return s.gen.forward(z)
    finally:
        s.undo()


def finalists(sug) -> list[tuple[int, object]]:
    """(place in the suggestion's order, candidate) of every candidate scored on all samples."""
    return [(i, c) for i, c in enumerate(sug.candidates) if not c.screened]


def parts(c) -> str:
    penalty = SG.REALISM_WEIGHT * c.realism / SG.REALISM_AMBER
    return (f"effect {c.effect:.2f} × general. {c.generalisation:.2f} − realism {penalty:.3f} = "
            f"{c.score:.3f}{'' if c.usable else ', gated or effect red'}")


def faces(lines: list[str], figure: Path) -> None:
    s = RewriteSession("dcgan-faces")
    requests = {"faces_glasses": load_request("faces_glasses"), "faces_glasses_b": glasses_b(),
                "faces_close_mouths": load_request("faces_close_mouths"),
                "faces_glasses_b_on_all": glasses_b_on_all(s)}
    s.prepare_statistics()
    z = s.gen.latents(HELD_OUT)
    with torch.no_grad():
        before = s.gen.forward(z)
    lines += ["## Faces (band ratio on 64 held-out faces; a setting counts when it changes the "
              f"band by ≥ {MIN_INSIDE})", "",
              "| request | finalists | pick: band ratio | ground truth's best finalist | its place "
              "in the suggestion | pick's score | best's score |", "|---|---|---|---|---|---|---|"]
    for name, request in requests.items():
        s.use_request(request)
        sug = s.suggest()
        band = band_of(request)
        scored = []
        for i, c in finalists(sug):
            scored.append((i, c, band_ratio(before, after_of(s, c.edit, z), band)))
        pick = scored[0]
        assert pick[0] == 0, "the pick is a finalist"
        ok = [x for x in scored if x[2]["inside"] >= MIN_INSIDE] or scored
        best = max(ok, key=lambda x: x[2]["ratio"])
        lines.append(f"| {name} | {len(scored)} | {pick[1].label()}: {pick[2]['ratio']:.2f} "
                     f"(inside {pick[2]['inside']:.3f}) | {best[1].label()}: "
                     f"{best[2]['ratio']:.2f} (inside {best[2]['inside']:.3f}) | {best[0] + 1} "
                     f"| {parts(pick[1])} | {parts(best[1])} |")
        print(lines[-1], flush=True)
        if name == "faces_glasses":
            rows = [s.render(FIGURE_SEEDS)] + [s.preview(x[1], FIGURE_SEEDS) for x in (pick, best)]
            strips = [np.concatenate(list(r), 1) for r in rows]
            grid = np.concatenate(strips, 0)
            Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2),
                                         Image.NEAREST).save(figure)
    lines.append("")


def scenes(lines: list[str], n: int) -> None:
    seeds = list(range(HELD_OUT0, HELD_OUT0 + n))
    s = RewriteSession("scenes")
    z = s.gen.latents(seeds).cpu().numpy()
    lines += [f"## Scenes (shape efficacy − shape collateral on {n} held-out seeds)", "",
              "| edit | finalists | pick: ground truth | ground truth's best finalist | its place in "
              "the suggestion | pick's score | best's score |", "|---|---|---|---|---|---|---|"]
    for name, spec in EDITS.items():
        if spec.model != "scenes":
            continue
        s.use_request(load_request(name))
        sug = s.suggest()
        world = RS.counterfactual_world(z, spec.world)
        scored = [(i, c, ground_truth(s, spec, c.edit, seeds, world)) for i, c in finalists(sug)]
        pick, best = scored[0], max(scored, key=lambda x: x[2]["score"])
        lines.append(f"| {name} | {len(scored)} | {pick[1].label()}: {pick[2]['score']:.3f} "
                     f"(trunk {pick[2]['shape_trunk']:.0%}) | {best[1].label()}: "
                     f"{best[2]['score']:.3f} (trunk {best[2]['shape_trunk']:.0%}) | "
                     f"{best[0] + 1} | {parts(pick[1])} | {parts(best[1])} |")
        print(lines[-1], flush=True)
    lines.append("")


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["faces", "scenes"],
                    choices=["faces", "scenes"])
    ap.add_argument("--seeds", type=int, default=500, help="scenes held-out seeds")
    ap.add_argument("--realism-weight", type=float, default=None,
                    help="the score's REALISM_WEIGHT for this run (default: the package's)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--name", default="suggest_oracle", help="writes <out>/<name>.md")
    args = ap.parse_args(argv)
    if args.realism_weight is not None:
        SG.REALISM_WEIGHT = args.realism_weight
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lines = ["# The suggestion's finalists against the ground truth", "",
             f"`python benchmarks/suggest_oracle.py` — REALISM_WEIGHT {SG.REALISM_WEIGHT:g}; "
             f"load average before "
             f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.", ""]
    if "faces" in args.models:
        faces(lines, args.out / f"{args.name}_faces_glasses.png")
    if "scenes" in args.models:
        scenes(lines, args.seeds)
    lines.append(f"{time.perf_counter() - t0:.0f} s in all; load average after "
                 f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    text = "\n".join(lines) + "\n"
    (args.out / f"{args.name}.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
