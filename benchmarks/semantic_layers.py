"""What makes an edit at a layer with ≤ 16×16 keys change a shape? Roofs → tree crowns, scenes.

    python benchmarks/semantic_layers.py              # 300 held-out seeds, ~5 min on 2 cores
    python benchmarks/semantic_layers.py --seeds 100  # quicker

Scored against the counterfactual render (towers wear crowns instead of roofs; rule_scoring.
shape_scores): shape efficacy = per-pixel class agreement with the counterfactual inside the
region the rule changes, collateral = class change outside it, trunk = share of trunk pixels
outside it whose class changed. Variants, each at main.6 (8×8 keys) and main.9 (16×16 keys):
- the direction rule (whitened, the paper's; cinv, rewidget's old one), ranks and ridges;
- one paste vs the crown pasted on six roofs of three samples;
- dilated masks: copy and paste regions grown by 2-4 px at image resolution (a wider goal),
  also with rank 20;
- two layers (MEMIT-style spreading): the edit solved at main.6, then solved again at main.9
  against the edited model, so main.9 only adds what main.6 left undone;
- keep: the trunks of three samples painted as regions that must not change;
- goals defined after the later layers: the output solver (core/through.py) draws the paste in
  the generator's output and fits Λ through the layers that follow (grow: the copy mask grown by
  that many output pixels), with six pastes and with one.
Writes results/semantic_layers.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rule_scoring as RS  # noqa: E402
from rule_edits import HELD_OUT0, load_request  # noqa: E402

from rewidget import RewriteError, RewriteSession  # noqa: E402
from rewidget.core.requests import EditRequest, Selection  # noqa: E402
from rewidget.models import scenes as S  # noqa: E402


def dilated(request: EditRequest, px: int = 2) -> EditRequest:
    """Copy masks grown by ``px`` pixels (the pastes move the grown copy)."""
    def grow(sel: Selection) -> Selection:
        return Selection(sel.sample, (RS.dilate(sel.mask > 127, px) * 255).astype(np.uint8))
    return dataclasses.replace(request, copy=grow(request.copy),
                               more_pastes=tuple((grow(c), p) for c, p in request.more_pastes))


def trunk_keep(s: RewriteSession, n: int = 3) -> tuple[Selection, ...]:
    rgb = s.render(list(range(80)))
    cm = S.segment(rgb)
    out = []
    for i in range(len(cm)):
        m = cm[i] == S.CLASS_NAMES.index("trunk")
        if m.sum() > 10:
            out.append(Selection(i, (RS.dilate(m, 1) * 255).astype(np.uint8)))
        if len(out) == n:
            break
    return tuple(out)


class Scorer:
    """Held-out seeds rendered with edits installed (then undone), scored against the
    roofs → crowns counterfactual world (also used by flagship.py)."""

    def __init__(self, s: RewriteSession, seeds: list[int]) -> None:
        self.s = s
        self.z = s.gen.latents(seeds)
        with torch.no_grad():
            self.before = s.gen.to_rgb(s.gen.forward(self.z))
        self.before_maps = RS.segment_both(self.before)
        self.world = RS.counterfactual_world(self.z.cpu().numpy(), "roof_to_tree")
        self.ceiling = RS.world_ceiling(self.before_maps, self.world, "tree")

    def after(self, edits) -> np.ndarray:
        for e in edits:
            self.s.apply(e)
        try:
            with torch.no_grad():
                return self.s.gen.to_rgb(self.s.gen.forward(self.z))
        finally:
            for _ in edits:
                self.s.undo()

    def __call__(self, edits) -> dict:
        sc = RS.shape_scores(self.before_maps, RS.segment_both(self.after(edits)), self.world,
                             "tree")
        return {k: sc[k] for k in ("shape_efficacy", "target_iou", "shape_collateral",
                                   "shape_trunk")}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=300)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    s = RewriteSession("scenes")
    score = Scorer(s, list(range(HELD_OUT0, HELD_OUT0 + args.seeds)))
    six, one = load_request("roof_to_tree"), load_request("roof_to_tree_one_paste")
    keep = trunk_keep(s)
    rows = []

    def run(name: str, layer: str, rank: int, rule: str, ridge: float, request: EditRequest,
            two_layers: bool = False, solver: str = "exact", grow: int | None = None) -> None:
        options = {"ridge": ridge} if grow is None else {"ridge": ridge, "grow": grow}
        req = dataclasses.replace(request, layer=layer, rank=rank, direction_rule=rule,
                                  solver=solver, solver_options=options,
                                  stats_samples=s.samples_for(layer))
        try:
            if two_layers:
                first = s.compute_edit(dataclasses.replace(
                    req, layer="main.6", stats_samples=s.samples_for("main.6")))
                s.apply(first)
                try:
                    second = s.compute_edit(req)
                finally:
                    s.undo()
                edits = [first, second]
            else:
                edits = [s.compute_edit(req)]
        except RewriteError as e:
            rows.append({"variant": name, "layer": layer, "rank": rank, "rule": rule,
                         "ridge": ridge, "error": e.problem})
            return
        r = {"variant": name, "layer": layer, "rank": rank, "rule": rule, "ridge": ridge,
             **score(edits)}
        rows.append(r)
        print(f"{name:24s} {layer} r{rank:<2d} {rule:8s} ridge {ridge:<4g} efficacy "
              f"{r['shape_efficacy']:.3f} iou {r['target_iou']:.3f} collateral "
              f"{r['shape_collateral']:.3f} trunk {r['shape_trunk']:.3f}", flush=True)

    for layer in ("main.6", "main.9"):
        for rule in ("whitened", "cinv"):
            for rank in (3, 6, 10):
                for ridge in (0.1, 1.0):
                    run("six pastes", layer, rank, rule, ridge, six)
        for rank in (6, 10):
            run("one paste", layer, rank, "whitened", 0.1, one)
            run("six pastes, dilated 2px", layer, rank, "whitened", 0.1, dilated(six))
            run("six pastes, keep trunks", layer, rank, "whitened", 0.1,
                dataclasses.replace(six, keep=keep))
    for rank in (6, 10):
        run("main.6 then main.9", "main.9", rank, "whitened", 0.1, six, two_layers=True)
    for px in (3, 4):  # the strongest lever found: a wider goal, more directions
        run(f"six pastes, dilated {px}px", "main.9", 20, "whitened", 0.1, dilated(six, px))
        run(f"six pastes, dilated {px}px, keep trunks", "main.9", 20, "whitened", 0.1,
            dataclasses.replace(dilated(six, px), keep=keep))

    for layer in ("main.6", "main.9"):  # the goal in the image, solved through later layers
        for rank in (10, 20):
            for grow in (0, 2):
                run(f"six pastes, output solver, grow {grow}", layer, rank, "whitened", 0.1, six,
                    solver="output", grow=grow)
        run("one paste, output solver, grow 2", layer, 20, "whitened", 0.1, one,
            solver="output", grow=2)
        run("six pastes, output solver, grow 2, keep trunks", layer, 20, "whitened", 0.1,
            dataclasses.replace(six, keep=keep), solver="output", grow=2)

    ok = [r for r in rows if "error" not in r]
    lines = ["# What makes a ≤ 16×16-key layer change shape (roofs → tree crowns)", "",
             f"`python benchmarks/semantic_layers.py --seeds {args.seeds}` — held-out seeds from "
             f"{HELD_OUT0}, {time.perf_counter() - t0:.0f} s, load average "
             f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.", "",
             "| variant | layer | rank | rule | ridge | shape efficacy | target IoU | collateral "
             "| trunk changed |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['layer']} | {r['rank']} | {r['rule']} | "
                         f"{r['ridge']:g} | — ({r['error']}) | | | |")
            continue
        lines.append(f"| {r['variant']} | {r['layer']} | {r['rank']} | {r['rule']} | "
                     f"{r['ridge']:g} | {r['shape_efficacy']:.1%} | {r['target_iou']:.2f} | "
                     f"{r['shape_collateral']:.1%} | {r['shape_trunk']:.1%} |")
    best = max(ok, key=lambda r: r["shape_efficacy"] - r["shape_collateral"])
    lines += ["", f"Best (efficacy − collateral): {best['variant']}, {best['layer']}, rank "
              f"{best['rank']}, {best['rule']}, ridge {best['ridge']:g}: shape efficacy "
              f"{best['shape_efficacy']:.1%}, collateral {best['shape_collateral']:.1%}, trunk "
              f"{best['shape_trunk']:.1%}."]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "semantic_layers.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
