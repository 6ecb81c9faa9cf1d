"""Does the suggestion find the setting the ground truth would? The five scenes edits.

    python benchmarks/rule_edits.py          # first: the full sweep (results/rule_edits.json)
    python benchmarks/suggest_scenes.py      # then: ~3 min on 2 cores

For each named scenes edit, `session.suggest()` (every layer with a key grid × ranks 1, 2, 3,
6, 10, the best grown to 20 × direction rule × ridge 0.1 / 1 / 3, scored on 12 held-out preview
samples with no ground truth) picks a
setting; that setting is installed and scored like every row of the full sweep — shape
efficacy − shape collateral against the counterfactual render, on the sweep's 500 held-out
seeds (rule_scoring.shape_scores) — and compared with the sweep's best. The suggestion knows
nothing of the renderer; the sweep tried 5 layers × 5 ranks × 2 rules × 3 solvers per edit.
Writes results/suggest_scenes.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rule_scoring as RS  # noqa: E402
from rule_edits import EDITS, HELD_OUT0, load_request  # noqa: E402

from rewidget import RewriteSession  # noqa: E402

WITHIN = 0.05  # the suggestion's score may fall this far (absolute) below the sweep's best


def ground_truth(s: RewriteSession, spec, edit, seeds: list[int], world) -> dict:
    z = s.gen.latents(seeds)
    with torch.no_grad():
        before = s.gen.to_rgb(s.gen.forward(z))
        s.apply(edit)
        try:
            after = s.gen.to_rgb(s.gen.forward(z))
        finally:
            s.undo()
    sc = RS.shape_scores(RS.segment_both(before), RS.segment_both(after), world, spec.target)
    return {**{k: sc[k] for k in ("shape_efficacy", "shape_collateral", "shape_trunk")},
            "score": sc["shape_efficacy"] - sc["shape_collateral"]}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", type=Path, default=HERE / "results" / "rule_edits.json")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    sweep = json.loads(args.sweep.read_text())
    n = sweep["meta"]["n_seeds"]
    seeds = list(range(HELD_OUT0, HELD_OUT0 + n))
    s = RewriteSession("scenes")
    t0 = time.perf_counter()
    lines = ["# The suggestion against the full sweep (scenes, ground truth)", "",
             f"`python benchmarks/suggest_scenes.py` — {n} held-out seeds (the sweep's), load "
             f"average {', '.join(f'{x:.2f}' for x in os.getloadavg())}.", "",
             "| edit | suggested (no ground truth used) | its score | sweep's best | its score "
             "| within 5 points |", "|---|---|---|---|---|---|"]
    hits = 0
    names = [k for k, spec in EDITS.items() if spec.model == "scenes"]
    z = s.gen.latents(seeds).cpu().numpy()
    for name in names:
        spec = EDITS[name]
        s.use_request(load_request(name))
        t = time.perf_counter()
        sug = s.suggest()
        secs = time.perf_counter() - t
        world = RS.counterfactual_world(z, spec.world)
        mine = ground_truth(s, spec, sug.best.edit, seeds, world)
        ok = [r for r in sweep["edits"][name]["rows"] if "error" not in r]
        best = max(ok, key=lambda r: r["shape_efficacy"] - r["shape_collateral"])
        best_score = best["shape_efficacy"] - best["shape_collateral"]
        hit = mine["score"] >= best_score - WITHIN
        hits += hit
        lines.append(
            f"| {name} | {sug.best.label()} ({secs:.1f} s) | {mine['score']:.3f} (efficacy "
            f"{mine['shape_efficacy']:.1%}, collateral {mine['shape_collateral']:.1%}, trunk "
            f"{mine['shape_trunk']:.1%}) | {best['layer']} · rank {best['rank']} · "
            f"{best['direction']} · {best['solver']} | {best_score:.3f} | {'yes' if hit else 'no'} |")
        print(lines[-1], flush=True)
    lines += ["", f"Within {WITHIN:.2f} of the sweep's best on {hits} of {len(names)} edits "
              f"(target: ≥ 4 of 5). {time.perf_counter() - t0:.0f} s in all."]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "suggest_scenes.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
