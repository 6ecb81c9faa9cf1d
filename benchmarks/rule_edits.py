"""Rule-edit benchmark: named edits replayed at every layer, rank, direction rule and solver, scored on held-out seeds.

    python benchmarks/make_requests.py                   # (re)writes rewidget/examples/requests/*.json
    python benchmarks/rule_edits.py                      # full run: 500 held-out seeds, C over 10k
    python benchmarks/rule_edits.py --quick              # smoke run: 60 seeds, C over 1k, 501 steps
    python benchmarks/rule_edits.py --edits roof_to_tree --layers main.12 --rules whitened

Scenes edits are scored against the world's ground truth (rule_scoring.py), two ways:
- shape-aware, against the *counterfactual render* of each held-out latent (the renderer's world
  with the edit's rule changed, scenes.COUNTERFACTUALS), in the region R the changed rule redraws:
  shape efficacy = share of R whose class (within palette tolerance) is the counterfactual's;
  target IoU = IoU of the target class inside R grown by 2 px; shape collateral = share of the
  pixels outside R whose nearest class changed from the unedited generated image; trunk = the
  same share among trunk pixels. The ceiling: the unedited generator against the original render
  in the same R (the generator draws the world only ~95% right, and worst at edges, so an edit
  that draws new shapes should not expect more; an erase that fills R flat can exceed it);
- by colour counting, as before: efficacy = share of the source class's pixels (clear in the
  unedited generated image) that clearly show the target class after; collateral = share of the
  pixels outside the source region whose class changed, and their mean RGB change.
Faces edits have no ground truth: the pixel change inside vs outside where the edit's context
fires (core/metrics.py), and how much closer the paste target moved to the copied content.

Each edit is one saved request; only its layer, rank, direction rule ("whitened": the paper's
whitened SVD, "cinv": top singular vectors of C⁻¹K*), solver (and the statistics' sample count)
are replaced. "exact" and "iterative" use the engine's default options (ridge 0.1; 2001 Adam
steps, lr 0.2); "exact, ridge 1e-6" is the nearly unregularised least squares, for comparison;
"output" draws the goal in the generator's output and fits Λ through the later layers
(core/through.py: 100 Adam steps from the exact solution, copy mask grown 2 px; 0 px for
replacing pastes, as the session asks).
The best setting of a scenes edit is the highest shape efficacy − shape collateral (ties: the
lower collateral); the flagship target (shape efficacy ≥ 80% with shape collateral ≤ 3% and
trunk change ≤ 10%) is met if any setting reaches all three, and the verdict also names the
highest shape efficacy within the collateral bounds, and at a layer whose keys are ≤ 16×16.
The best setting of a faces edit is the highest inside/outside ratio among settings that change
the matched region by ≥ 0.05 and the rest by ≤ 0.05 (mean |Δpixel|, images in [-1, 1]).
Writes results/rule_edits.{md,json,png} and results/faces_glasses.png (8 held-out faces before
and after the glasses edit at its best setting).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rule_scoring as RS  # noqa: E402

from rewidget import RewriteError, RewriteSession  # noqa: E402
from rewidget.core.directions import match_map  # noqa: E402
from rewidget.core.memory import memory_for  # noqa: E402
from rewidget.core.requests import EditRequest  # noqa: E402
from rewidget.core.solve import DEFAULT_OPTIONS, default_options  # noqa: E402
from rewidget.examples import REQUESTS  # noqa: E402
from rewidget.models import load  # noqa: E402
from rewidget.models import scenes as S  # noqa: E402

HELD_OUT0 = 700_000  # scored seeds: far from the request seeds (0-399) and the statistics' (1e6+)
FLAGSHIP = "roof_to_tree_all"  # the rule taught on every roof of 30 samples (flagship.py)
TARGET_EFFICACY, TARGET_COLLATERAL, TARGET_TRUNK = 0.80, 0.03, 0.10  # shape-aware
SEMANTIC_KEYS, SEMANTIC_EFFICACY = 16, 0.60  # at a layer whose keys are ≤ 16×16
DIRECTION_RULES = ("whitened", "cinv")  # rewidget.core.directions.RULES
FACES_PICTURE = "faces_glasses"  # its best setting is drawn on 8 held-out faces
FACES_MIN_CHANGE = 0.05  # mean |Δpixel| in [-1, 1] units (= 6.4 / 255)
FACES_MAX_OUTSIDE = 0.05


@dataclass(frozen=True)
class EditSpec:
    name: str
    model: str
    title: str
    source: str | None = None  # scenes: the rule's class (or "roof_tip")
    target: str | None = None  # scenes: the class it should turn into
    rule: str | None = None  # scenes.RULES entry that the edit breaks on purpose
    world: str | None = None  # scenes.COUNTERFACTUALS entry: the world the edit should produce


EDITS = {e.name: e for e in [
    EditSpec("roof_to_tree", "scenes", "roofs turn into tree crowns (crown pasted on 6 roofs)",
             "roof", "tree", "roof_on_tower", "roof_to_tree"),
    EditSpec("roof_to_tree_one_paste", "scenes", "roofs turn into tree crowns (one paste)",
             "roof", "tree", "roof_on_tower", "roof_to_tree"),
    EditSpec("roof_to_tree_all", "scenes",
             "roofs turn into tree crowns (replacing pastes on every roof of 30 samples)",
             "roof", "tree", "roof_on_tower", "roof_to_tree"),
    EditSpec("windows_erase", "scenes", "towers lose their windows (erase)", "window", "tower",
             "tower_has_windows", "no_windows"),
    EditSpec("sun_erase", "scenes", "the sun turns into sky (erase; no clouds in this world)",
             "sun", "sky", "suns", "no_sun"),
    EditSpec("roof_flat", "scenes", "roofs lose their points (sky pasted over the tip)",
             "roof_tip", "sky", "roof_pointed", "flat_roofs"),
    EditSpec("faces_glasses", "dcgan-faces", "faces: add glasses"),
    EditSpec("faces_close_mouths", "dcgan-faces", "faces: close open mouths"),
]}

SOLVERS = {  # column name -> (solver, solver_options); options recorded explicitly in each request
    "exact": ("exact", dict(DEFAULT_OPTIONS["exact"])),
    "exact, ridge 1e-6": ("exact", {**DEFAULT_OPTIONS["exact"], "ridge": 1e-6}),
    "iterative": ("iterative", dict(DEFAULT_OPTIONS["iterative"])),
    "output": ("output", dict(DEFAULT_OPTIONS["output"])),
}


def load_request(name: str, requests_dir: Path = REQUESTS) -> EditRequest:
    return EditRequest.from_json((requests_dir / f"{name}.json").read_text())


def variant(request: EditRequest, layer: str, rank: int, solver: str, options: dict,
            stats_samples: int, direction_rule: str | None = None) -> EditRequest:
    """The same selections at another layer / rank / solver (and direction rule, if given;
    None keeps the request's own)."""
    more = {} if direction_rule is None else {"direction_rule": direction_rule}
    if solver == "output" and request.replace:  # as the session asks for replacing pastes
        options = {**options, "grow": default_options(solver, True)["grow"]}
    return dataclasses.replace(request, layer=layer, rank=rank, solver=solver,
                               solver_options=options, stats_samples=stats_samples, **more)


# -- rendering held-out seeds from cached keys -----------------------------------------------------
def layer_keys(gen, layer: str, seeds: list[int], batch: int = 100) -> list[torch.Tensor]:
    """Keys at ``layer`` for seeds, in batches (they never change when ``layer`` is edited)."""
    with torch.no_grad():
        return [gen.keys(layer, gen.latents(seeds[i:i + batch])) for i in range(0, len(seeds), batch)]


def images_from(gen, layer: str, keys: list[torch.Tensor]) -> torch.Tensor:
    """(N, 3, S, S) in [-1, 1] with the weights now installed, from cached keys."""
    with torch.no_grad():
        return torch.cat([gen.forward_from(layer, k) for k in keys])


def match_from_edit(gen, edit, keys: list[torch.Tensor]) -> torch.Tensor:
    """(N, h, w) where the edit's context fires, 1.0 = as strongly as its painted context."""
    mem = memory_for(gen.layer(edit.layer), edit.layer)
    with torch.no_grad():
        return torch.cat([match_map(mem, k, edit.directions) for k in keys]) / edit.context_level


# -- one edit at every setting ---------------------------------------------------------------------
class EditBench:
    """One saved request replayed at every layer × rank × direction rule × solver.

    ``rules``: direction rules to sweep; None replays the request's own rule only.
    """

    def __init__(self, spec: EditSpec, session: RewriteSession, seeds: list[int],
                 layers: list[str], ranks: list[int], solvers: dict, log=print,
                 rules: list[str] | None = None) -> None:
        self.spec, self.s, self.seeds = spec, session, seeds
        self.layers, self.ranks, self.solvers, self.log = layers, ranks, solvers, log
        self.request = load_request(spec.name)
        self.rules = list(rules) if rules else [self.request.direction_rule]
        gen = session.gen
        with torch.no_grad():
            z = gen.latents(seeds)  # (N, nz, 1, 1)
            self.before = torch.cat([gen.forward(z[i:i + 100]) for i in range(0, len(seeds), 100)])
        self.before_rgb = gen.to_rgb(self.before)
        if spec.model == "scenes":
            self.source = RS.source_region(self.before_rgb, spec.source)
            self.before_maps = RS.segment_both(self.before_rgb)  # the same for every setting
            self.world = RS.counterfactual_world(z.numpy(), spec.world)  # renderer's truth
            self.ceiling = RS.world_ceiling(self.before_maps, self.world, spec.target)
            self.unedited = RS.shape_scores(self.before_maps, self.before_maps, self.world,
                                            spec.target)
        self.rows: list[dict] = []
        self.stats_seconds: dict[str, float] = {}
        self.key_size: dict[str, int] = {}

    def run(self) -> list[dict]:
        for layer in self.layers:
            t = time.perf_counter()
            self.s.inverse(layer)  # collects (or reloads) the statistics
            self.stats_seconds[layer] = time.perf_counter() - t
            keys = layer_keys(self.s.gen, layer, self.seeds)
            self.key_size[layer] = int(keys[0].shape[-1])
            for rank in self.ranks:
                for rule in self.rules:
                    for col, (solver, opts) in self.solvers.items():
                        row = self.one(layer, rank, rule, col, solver, opts, keys)
                        self.rows.append(row)
                        self.log(_row_line(self.spec, row))
            del keys
        return self.rows

    def one(self, layer, rank, rule, col, solver, opts, keys) -> dict:
        row = {"edit": self.spec.name, "layer": layer, "rank": rank, "direction": rule,
               "solver": col}
        req = variant(self.request, layer, rank, solver, opts, self.s.stats_samples, rule)
        t = time.perf_counter()
        try:
            edit = self.s.compute_edit(req)
        except RewriteError as e:
            return {**row, "error": e.problem}
        self.s.apply(edit)
        row["seconds"] = time.perf_counter() - t
        try:
            after = images_from(self.s.gen, layer, keys)
            row.update(self.score(after, edit, keys))
        finally:
            self.s.undo()
        return row

    def score(self, after: torch.Tensor, edit, keys) -> dict:
        if self.spec.model == "scenes":
            after_rgb = self.s.gen.to_rgb(after)
            after_maps = RS.segment_both(after_rgb)
            return {**RS.scene_scores(self.before_rgb, after_rgb, self.source, self.spec.target,
                                      before_maps=self.before_maps, after_maps=after_maps),
                    **RS.shape_scores(self.before_maps, after_maps, self.world, self.spec.target)}
        return RS.faces_scores(self.before, after, match_from_edit(self.s.gen, edit, keys),
                               **self.paste_fidelity(edit))

    def paste_fidelity(self, edit) -> dict:
        """How much closer the request's own paste target moved to the copied content."""
        req = edit.request
        if req.kind != "paste":
            return {}
        with torch.no_grad():
            src = self.s.original_images([req.copy.sample])
            before = self.s.original_images([req.paste.sample])
            after = self.s.images([req.paste.sample])
        return {"paste": (src, before, after, req.copy.mask, req.paste.offset)}


SETTING = ("layer", "rank", "direction", "solver")


def _scenes_key(r: dict) -> tuple[float, float]:
    """Scenes ranking: shape efficacy − shape collateral, then the lower collateral."""
    return r["shape_efficacy"] - r["shape_collateral"], -r["shape_collateral"]


def best_row(spec: EditSpec, rows: list[dict]) -> dict | None:
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return None
    if spec.model == "scenes":
        ok = [r for r in ok if r["shape_efficacy"] == r["shape_efficacy"]] or ok
        return max(ok, key=_scenes_key)
    ok = [r for r in ok if r["ratio"] == r["ratio"]]  # NaN: the match covers no pixel
    strong = [r for r in ok if r["inside"] >= FACES_MIN_CHANGE] or ok
    quiet = [r for r in strong if r["outside"] <= FACES_MAX_OUTSIDE] or strong
    return max(quiet, key=lambda r: r["ratio"]) if quiet else None


def best_by_layer(spec: EditSpec, rows: list[dict]) -> dict[str, dict[str, dict | None]]:
    """{layer: {direction rule: best row}}: where each direction rule wins."""
    out: dict[str, dict[str, dict | None]] = {}
    for r in rows:
        out.setdefault(r["layer"], {}).setdefault(r["direction"], None)
    for layer, by_rule in out.items():
        for rule in by_rule:
            by_rule[rule] = best_row(spec, [r for r in rows if r["layer"] == layer
                                            and r["direction"] == rule])
    return out


def rule_effect(bench: EditBench, best: dict) -> tuple[np.ndarray, dict]:
    """Re-install the best setting; the broken rule's adherence before vs after."""
    spec, session, seeds, before_rgb = bench.spec, bench.s, bench.seeds, bench.before_rgb
    solver, opts = bench.solvers[best["solver"]]
    req = variant(load_request(spec.name), best["layer"], best["rank"], solver, opts,
                  session.stats_samples, best["direction"])
    session.rewrite(req)
    try:
        after = session.gen.to_rgb(images_from(session.gen, best["layer"],
                                               layer_keys(session.gen, best["layer"], seeds)))
    finally:
        session.undo()
    out = {}
    if spec.model == "scenes":
        out = {"before": RS.rule_counts(before_rgb, spec.rule),
               "after": RS.rule_counts(after, spec.rule),
               "collateral_by_class": RS.collateral_by_class(before_rgb, after, bench.source),
               # how many pixels each class has outside R: a share of few pixels is an edge
               "outside_pixels": RS.class_pixels(bench.before_maps[0], ~bench.world["region"])}
    return after, out


def _where(r: dict) -> str:
    return f"{r['layer']}, rank {r['rank']}, {r['direction']}, {r['solver']}"


def _shape_text(r: dict) -> str:
    return (f"shape efficacy {_pct(r['shape_efficacy'])}, collateral {_pct(r['shape_collateral'])}"
            f", trunk {_pct(r['shape_trunk'])}")


def _meets(r: dict, efficacy: float = TARGET_EFFICACY) -> bool:
    trunk = r["shape_trunk"]
    return (r["shape_efficacy"] >= efficacy and r["shape_collateral"] <= TARGET_COLLATERAL
            and not trunk > TARGET_TRUNK)  # NaN trunk (no trunk in view) passes


def verdict(entry: dict) -> dict:
    """Whether any setting of the flagship edit reaches the shape-aware target, the closest ones,
    and the best at a layer whose keys are ≤ SEMANTIC_KEYS² (entry["key_size"])."""
    ok = [r for r in entry["rows"] if "error" not in r]
    meets = [r for r in ok if _meets(r)]
    quiet = [r for r in ok if _meets(r, efficacy=0.0)]
    b = entry["best"]

    def same(r, other) -> bool:
        return other is not None and all(r[k] == other[k] for k in SETTING)

    def top(rows):
        return max(rows, key=lambda r: r["shape_efficacy"]) if rows else None

    text = f"best setting ({_where(b)}): {_shape_text(b)}"
    q = top(quiet)
    if q is not None and not same(q, b):
        text += (f"; the highest shape efficacy with collateral ≤ {TARGET_COLLATERAL:.0%} and trunk "
                 f"≤ {TARGET_TRUNK:.0%} is {_pct(q['shape_efficacy'])} ({_where(q)})")
    t = top(ok)
    if not same(t, b) and not same(t, q):
        text += (f"; the highest at any collateral is {_pct(t['shape_efficacy'])} ({_where(t)}, "
                 f"collateral {_pct(t['shape_collateral'])}, trunk {_pct(t['shape_trunk'])})")
    text += "."
    out = {"met": bool(meets), "shape_efficacy": b["shape_efficacy"],
           "shape_collateral": b["shape_collateral"], "shape_trunk": b["shape_trunk"],
           "setting": {k: b[k] for k in SETTING}, "text": text}
    if meets:
        m = max(meets, key=_scenes_key)
        out["meeting"] = {k: m[k] for k in (*SETTING, "shape_efficacy", "shape_collateral",
                                            "shape_trunk")}
        out["text"] = f"{_where(m)} reaches {_shape_text(m)}" + ("." if same(m, b) else "; " + text)
    small = [r for r in ok if entry["key_size"].get(r["layer"], 10**9) <= SEMANTIC_KEYS]
    s = top(small)
    if s is not None:
        out["semantic"] = {k: s[k] for k in (*SETTING, "shape_efficacy", "shape_collateral",
                                             "shape_trunk", "target_iou")}
        out["semantic"]["met"] = s["shape_efficacy"] >= SEMANTIC_EFFICACY
    return out


# -- output ----------------------------------------------------------------------------------------
def _secs(x: float) -> str:
    return f"{x * 1e3:.0f} ms" if x < 1 else f"{x:.1f} s"


def _pct(x: float) -> str:
    return "—" if x != x else f"{100 * x:.1f}%"


def _rule_text(spec: EditSpec, rule: dict) -> str:
    if not rule:
        return ""
    b, a = rule["before"], rule["after"]
    if spec.rule == "suns":
        return f"suns per image: {b['rate']:.2f} → {a['rate']:.2f}"
    after = (f"{_pct(a['rate'])} of {a['total']}" if a["total"] else
             f"none left to judge (0 {spec.rule.split('_')[0]}s found)")
    return f"{spec.rule}: {_pct(b['rate'])} of {b['total']} → {after}"


def _row_line(spec: EditSpec, r: dict) -> str:
    head = (f"{r['edit']:<19} {r['layer']:<8} r{r['rank']:<2} {r.get('direction', ''):<8} "
            f"{r['solver']:<17}")
    if "error" in r:
        return f"{head} n/a: {r['error']}"
    if spec.model == "scenes":
        return (f"{head} shape {_pct(r['shape_efficacy'])} iou {r['target_iou']:.2f} "
                f"coll {_pct(r['shape_collateral'])} trunk {_pct(r['shape_trunk'])} | old "
                f"{_pct(r['efficacy'])} / {_pct(r['collateral'])} {r['seconds']:.2f}s")
    return (f"{head} in {r['inside']:.3f} out {r['outside']:.3f} ratio {r['ratio']:.1f} "
            f"closer {_pct(r.get('target_closer', float('nan')))} {r['seconds']:.2f}s")


def _cell(spec: EditSpec, r: dict | None) -> str:
    if r is None:
        return ""
    if "error" in r:
        return "n/a"
    if spec.model == "scenes":
        return (f"**{_pct(r['shape_efficacy'])}** / {r['target_iou']:.2f} / "
                f"{_pct(r['shape_collateral'])} / {_pct(r['shape_trunk'])} (old "
                f"{_pct(r['efficacy'])} / {_pct(r['collateral'])}) · {_secs(r['seconds'])}")
    if r["inside"] != r["inside"]:
        return f"no pixel matched / {r['outside']:.3f} · {_secs(r['seconds'])}"
    return f"{r['inside']:.3f} / {r['outside']:.3f} ({r['ratio']:.1f}×) · {_secs(r['seconds'])}"


def _short(spec: EditSpec, r: dict | None) -> str:
    """A best row in a few words, for the per-layer table."""
    if r is None:
        return "—"
    where = f"r{r['rank']} {r['solver']}"
    if spec.model == "scenes":
        return (f"{_pct(r['shape_efficacy'])} / {r['target_iou']:.2f} / "
                f"{_pct(r['shape_collateral'])} / {_pct(r['shape_trunk'])} ({where})")
    return f"{r['inside']:.3f} / {r['outside']:.3f} ({r['ratio']:.1f}×, {where})"


HOW_TO_READ = (
    "Scenes cells: **shape efficacy** / target IoU / shape collateral / trunk changed (old "
    "efficacy / old collateral) · solve time. Shape-aware scores compare the edited generator "
    "with the renderer's *counterfactual world* (the same latent drawn with the edit's rule "
    "changed, `scenes.COUNTERFACTUALS`) in the region R that the changed rule redraws: shape "
    "efficacy = share of R whose class (within palette tolerance 40) is the counterfactual's; "
    "target IoU = IoU of the target class inside R grown by 2 px; shape collateral = share of "
    "the pixels outside R whose nearest-palette class changed; trunk = the same among trunk "
    "pixels. The ceiling (the unedited generator against the original render inside R) is "
    "given per edit: an edit that draws new shapes as well as the generator draws the world "
    "scores about that, not 100% (an erase that fills R flat can exceed it). Old efficacy: "
    "share of the "
    "source class's pixels (clear before) that clearly show the target class after; old "
    "collateral: share of the pixels outside the source class's region whose class changed. "
    "Faces cells: **mean |Δpixel| inside / outside where the context fires (ratio)** (images in "
    "[-1, 1], match ≥ 0.5). Solve time = directions + solve + install (statistics cached). "
    "n/a = the engine refused the request (reason in rule_edits.json).")


def _best_line(spec: EditSpec, e: dict) -> str:
    b = e["best"]
    if b is None:
        return f"| {spec.title} | — | every setting failed | | |"
    where = f"{b['layer']} / {b['rank']} / {b['direction']} / {b['solver']}"
    if spec.model == "scenes":
        c = e["ceiling"]
        shape = (f"efficacy {_pct(b['shape_efficacy'])} (ceiling {_pct(c['ceiling_efficacy'])}), "
                 f"IoU {b['target_iou']:.2f}, collateral {_pct(b['shape_collateral'])}, trunk "
                 f"{_pct(b['shape_trunk'])}")
        old = (f"efficacy {_pct(b['efficacy'])}, collateral {_pct(b['collateral'])} (outside a "
               f"2-px rim {_pct(b['collateral_rim'])}), ΔRGB outside {b['colour_change']:.1f}")
        return f"| {spec.title} | {where} | {shape} | {old} | {_rule_text(spec, e.get('rule', {}))} |"
    res = (f"inside {b['inside']:.3f} vs outside {b['outside']:.3f} ({b['ratio']:.1f}×), "
           f"paste target {_pct(b.get('target_closer', float('nan')))} closer")
    return f"| {spec.title} | {where} | — | {res} | no ground truth |"


def _verdict_lines(v: dict) -> list[str]:
    lines = ["", f"**Flagship target** ({EDITS[FLAGSHIP].title}: shape efficacy ≥ "
             f"{TARGET_EFFICACY:.0%} with shape collateral ≤ {TARGET_COLLATERAL:.0%} and trunk "
             f"change ≤ {TARGET_TRUNK:.0%} at some setting): **{'met' if v['met'] else 'not met'}**"
             f" — {v['text']}"]
    sem = v.get("semantic")
    if sem:
        lines += ["", f"**At a layer whose keys are ≤ {SEMANTIC_KEYS}×{SEMANTIC_KEYS}** (target "
                  f"shape efficacy ≥ {SEMANTIC_EFFICACY:.0%}): **{'met' if sem['met'] else 'not met'}"
                  f"** — best {_pct(sem['shape_efficacy'])} ({_where(sem)}; IoU "
                  f"{sem['target_iou']:.2f}, collateral {_pct(sem['shape_collateral'])}, trunk "
                  f"{_pct(sem['shape_trunk'])})."]
    return lines


def _edit_section(spec: EditSpec, name: str, e: dict, meta: dict) -> list[str]:
    cols = list(e["solvers"])
    lines = ["", f"## {spec.title} (`{name}`, {e['wall_s']:.0f} s for the whole sweep)", ""]
    if spec.model == "scenes":
        c, u = e["ceiling"], e["unedited"]
        lines += [f"Counterfactual world `{spec.world}`: {e['world_text']}. R covers "
                  f"{u['region_pixels'] / (meta['n_seeds'] * 64 * 64):.1%} of the pixels. Ceiling "
                  f"(unedited generator vs the original render): agreement inside R "
                  f"{_pct(c['ceiling_efficacy'])}, {spec.target} IoU {c['ceiling_iou']:.2f}. "
                  f"Unedited generator vs the counterfactual: shape efficacy "
                  f"{_pct(u['shape_efficacy'])}, target IoU {u['target_iou']:.2f}.", ""]
    rules = meta["rules"]
    lines += ["Best per layer and direction rule" + (" (shape efficacy / IoU / collateral / "
              "trunk)" if spec.model == "scenes" else " (inside / outside)") + ":", "",
              "| layer (keys) | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for layer, by_rule in best_by_layer(spec, e["rows"]).items():
        keys = e["key_size"].get(layer)
        lines.append(f"| {layer} ({keys}×{keys}) | "
                     + " | ".join(_short(spec, by_rule.get(r)) for r in rules) + " |")
    lines += ["", "| layer | rank | rule | " + " | ".join(cols) + " |",
              "|---|---|---|" + "---|" * len(cols)]
    by = {tuple(r[k] for k in SETTING): r for r in e["rows"]}
    for layer in meta["layers"]:
        for rank in meta["ranks"]:
            for rule in rules:
                cells = [_cell(spec, by.get((layer, rank, rule, c))) for c in cols]
                if any(cells):
                    lines.append(f"| {layer} | {rank} | {rule} | " + " | ".join(cells) + " |")
    b = e["best"]
    if b is not None and "shape_by_class" in b:
        pixels = (e.get("rule") or {}).get("outside_pixels", {})
        lines += ["", "Where the best setting's collateral falls (share of each class's pixels "
                  "outside R whose class changed, of how many pixels): "
                  + _by_class(b["shape_by_class"], pixels)]
    by_class = (e.get("rule") or {}).get("collateral_by_class")
    if by_class:
        lines += ["", "The same outside the source class's region (the old definition): "
                  + _by_class(by_class)]
    st = e.get("stats_seconds", {})
    if st:
        lines += ["", "statistics (collect or cached reload): " + ", ".join(
            f"{k} {v:.1f}s" for k, v in st.items())]
    return lines


def _by_class(d: dict, pixels: dict | None = None) -> str:
    def one(k, v):
        return f"{k} {_pct(v)}" + (f" of {pixels[k]:,}" if pixels and k in pixels else "")

    return ", ".join(one(k, v) for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = ["# Rule-edit benchmark", "",
             f"Generated by `python benchmarks/rule_edits.py{' --quick' if meta['quick'] else ''}`"
             f" on {meta['machine']} ({meta['threads']} torch threads, torch {meta['torch']}); "
             f"{meta['n_seeds']} held-out seeds from {HELD_OUT0}, key statistics over "
             f"{meta['stats_samples']} samples, iterative solver {meta['steps']} steps, direction "
             f"rules {', '.join(meta['rules'])}; total wall time {meta['wall_s'] / 60:.1f} min"
             f" (load average {meta.get('load', '?')}).", "", HOW_TO_READ, ""]
    lines += ["## Best setting per edit", "",
              "Scenes: chosen by the highest shape efficacy − shape collateral.", "",
              "| edit | best layer / rank / rule / solver | shape-aware | old | "
              "rule before → after |", "|---|---|---|---|---|"]
    lines += [_best_line(EDITS[name], e) for name, e in results["edits"].items()]
    if results.get("verdict"):
        lines += _verdict_lines(results["verdict"])
    for name, e in results["edits"].items():
        lines += _edit_section(EDITS[name], name, e, meta)
    return "\n".join(lines) + "\n"


def figure(path: Path, panels: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> None:
    """Rows of images per edit at its best setting: panels = [(title, [(label, (K, S, S, 3))])]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(imgs) for _, rows in panels for _, imgs in rows)
    n_rows = sum(len(rows) for _, rows in panels)
    fig, axes = plt.subplots(n_rows, 1, figsize=(n * 1.1, 1.15 * n_rows), squeeze=False)
    axes = iter(axes[:, 0])
    for title, rows in panels:
        for j, (label, imgs) in enumerate(rows):
            ax = next(axes)
            ax.imshow(np.concatenate(list(imgs), 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(label, fontsize=8)
            if j == 0:
                ax.set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    shrink_png(path)


def shrink_png(path: Path) -> None:
    """Re-save a figure with a 256-colour palette (~4× smaller; the images stay recognisable)."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True)


def figure_seeds(spec: EditSpec, bench: EditBench, k: int = 8) -> list[int]:
    """Held-out seeds to show: ones where the edited rule is present (scenes), else the first."""
    if spec.model != "scenes":
        return list(range(k))
    has = np.nonzero(bench.source.reshape(len(bench.seeds), -1).sum(1) >= 10)[0]
    return [int(i) for i in has[:k]]


def figure_rows(spec: EditSpec, bench: EditBench, after: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """before / after (/ the counterfactual render, on scenes) of the seeds figure_seeds picks."""
    show = figure_seeds(spec, bench)
    rows = [("before", bench.before_rgb[show]), ("after", after[show])]
    if spec.model == "scenes":
        rows.append(("counterfactual", S.classmap_to_rgb(bench.world["cf"][show])))
    return rows


def _setting_label(spec: EditSpec, best: dict) -> str:
    return f"{spec.title} — {best['layer']}, rank {best['rank']}, {best['direction']}, {best['solver']}"


def bench_edit(spec: EditSpec, session: RewriteSession, seeds: list[int], layers: list[str],
               ranks: list[int], solvers: dict, rules: list[str]) -> tuple[dict, list | None]:
    """One edit's sweep, best setting and rule effect: (JSON entry, figure rows or None)."""
    t = time.perf_counter()
    bench = EditBench(spec, session, seeds, [ly for ly in layers if ly in session.gen.layer_names()],
                      ranks, solvers, log=lambda line: print(line, flush=True), rules=rules)
    rows = bench.run()
    best = best_row(spec, rows)
    entry = {"title": spec.title, "rows": rows, "best": best, "solvers": list(solvers),
             "key_size": bench.key_size,
             "stats_seconds": bench.stats_seconds}
    if spec.model == "scenes":
        entry |= {"world_text": S.COUNTERFACTUALS[spec.world], "ceiling": bench.ceiling,
                  "unedited": bench.unedited}
    fig_rows = None
    if best is not None:
        after, entry["rule"] = rule_effect(bench, best)
        fig_rows = figure_rows(spec, bench, after)
    entry["wall_s"] = time.perf_counter() - t
    print(f"== {spec.name}: best {_row_line(spec, best) if best else 'none'} "
          f"({entry['wall_s']:.0f}s)", flush=True)
    return entry, fig_rows


def _rounded(x, digits: int = 5):
    """JSON-ready copy with floats rounded (the file stays small enough to read and diff)."""
    if isinstance(x, dict):
        return {k: _rounded(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v, digits) for v in x]
    return round(x, digits) if isinstance(x, float) else x


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 seeds, C over 1,000, 501 steps")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--edits", default=",".join(EDITS))
    ap.add_argument("--layers", default="main.0,main.3,main.6,main.9,main.12")
    ap.add_argument("--ranks", default="1,2,3,6,10")
    ap.add_argument("--rules", default=",".join(DIRECTION_RULES),
                    help="direction rules to sweep (whitened: the paper's; cinv: the old rule)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--stats-samples", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    n = args.seeds or (60 if args.quick else 500)
    stats = args.stats_samples or (1000 if args.quick else 10_000)
    steps = args.steps or (501 if args.quick else 2001)
    solvers = {k: (s, {**o, "steps": steps} if s == "iterative" else o)
               for k, (s, o) in SOLVERS.items()}
    if args.quick:
        solvers.pop("exact, ridge 1e-6")
    seeds = list(range(HELD_OUT0, HELD_OUT0 + n))
    layers, ranks = args.layers.split(","), [int(r) for r in args.ranks.split(",")]
    rules = args.rules.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = {"meta": {"quick": args.quick, "n_seeds": n, "stats_samples": stats, "steps": steps,
                        "layers": layers, "ranks": ranks, "rules": rules,
                        "torch": torch.__version__, "threads": torch.get_num_threads(),
                        "machine": f"{platform.machine()} CPU, {platform.python_version()}"},
               "edits": {}}
    sessions: dict[str, RewriteSession] = {}
    panels = []
    for name in args.edits.split(","):
        spec = EDITS[name]
        if spec.model not in sessions:
            sessions[spec.model] = RewriteSession(load(spec.model), stats_samples=stats)
        entry, fig_rows = bench_edit(spec, sessions[spec.model], seeds, layers, ranks, solvers,
                                     rules)
        results["edits"][name] = entry
        if fig_rows:
            panels.append((_setting_label(spec, entry["best"]), fig_rows))
            if name == FACES_PICTURE:
                figure(out / f"{name}.png", [(_setting_label(spec, entry["best"]), fig_rows)])
    if FLAGSHIP in results["edits"] and results["edits"][FLAGSHIP]["best"]:
        results["verdict"] = verdict(results["edits"][FLAGSHIP])
    results["meta"]["wall_s"] = time.perf_counter() - t0
    results["meta"]["load"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    (out / "rule_edits.json").write_text(json.dumps(_rounded(results), indent=1, default=float))
    (out / "rule_edits.md").write_text(markdown(results))
    if panels:
        figure(out / "rule_edits.png", panels)
    print(f"wrote {out}/rule_edits.{{md,json,png}} in {results['meta']['wall_s'] / 60:.1f} min")
    return results


if __name__ == "__main__":
    main()
