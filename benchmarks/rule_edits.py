"""Rule-edit benchmark: named edits replayed at every layer, rank and solver, scored on held-out seeds.

    python benchmarks/make_requests.py                   # (re)writes benchmarks/requests/*.json
    python benchmarks/rule_edits.py                      # full run: 500 held-out seeds, C over 10k
    python benchmarks/rule_edits.py --quick              # smoke run: 60 seeds, C over 1k, 501 steps
    python benchmarks/rule_edits.py --edits roof_to_tree --layers main.12

Scenes edits are scored against the world's ground truth (rule_scoring.py): efficacy = share of
the rule's pixels (clearly showing the source class in the unedited generated image) that clearly
show the target class after the edit; collateral = share of the pixels outside the source region
whose (nearest-palette) class changed, and their mean RGB change. Faces edits have no ground
truth: the pixel change inside vs outside where the edit's context fires (core/metrics.py), and
how much closer the paste target moved to the copied content.

Each edit is one saved request; only its layer, rank, solver (and the statistics' sample count)
are replaced. "exact" and "iterative" use the engine's default options (ridge 0.1; 2001 Adam
steps, lr 0.2); "exact, ridge 1e-6" is the nearly unregularised least squares, for comparison.
The best setting of a scenes edit is the highest
efficacy − collateral; the flagship target (efficacy ≥ 80% with collateral ≤ 3%) is met if any
setting reaches both, and the verdict also names the highest efficacy within the collateral bound.
The best setting of a faces edit is the highest inside/outside ratio among settings that change
the matched region by ≥ 0.05 and the rest by ≤ 0.05 (mean |Δpixel|, images in [-1, 1]).
Writes results/rule_edits.{md,json,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
from rewidget.core.solve import DEFAULT_OPTIONS  # noqa: E402
from rewidget.models import load  # noqa: E402

HELD_OUT0 = 700_000  # scored seeds: far from the request seeds (0-399) and the statistics' (1e6+)
FLAGSHIP = "roof_to_tree"
TARGET_EFFICACY, TARGET_COLLATERAL = 0.80, 0.03
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


EDITS = {e.name: e for e in [
    EditSpec("roof_to_tree", "scenes", "roofs turn into tree crowns (crown pasted on 6 roofs)",
             "roof", "tree", "roof_on_tower"),
    EditSpec("roof_to_tree_one_paste", "scenes", "roofs turn into tree crowns (one paste)",
             "roof", "tree", "roof_on_tower"),
    EditSpec("windows_erase", "scenes", "towers lose their windows (erase)", "window", "tower",
             "tower_has_windows"),
    EditSpec("sun_erase", "scenes", "the sun turns into sky (erase; no clouds in this world)",
             "sun", "sky", "suns"),
    EditSpec("roof_flat", "scenes", "roofs lose their points (sky pasted over the tip)",
             "roof_tip", "sky", "roof_pointed"),
    EditSpec("faces_glasses", "dcgan-faces", "faces: add glasses"),
    EditSpec("faces_close_mouths", "dcgan-faces", "faces: close open mouths"),
]}

SOLVERS = {  # column name -> (solver, solver_options); options recorded explicitly in each request
    "exact": ("exact", dict(DEFAULT_OPTIONS["exact"])),
    "exact, ridge 1e-6": ("exact", {**DEFAULT_OPTIONS["exact"], "ridge": 1e-6}),
    "iterative": ("iterative", dict(DEFAULT_OPTIONS["iterative"])),
}


def load_request(name: str, requests_dir: Path = HERE / "requests") -> EditRequest:
    return EditRequest.from_json((requests_dir / f"{name}.json").read_text())


def variant(request: EditRequest, layer: str, rank: int, solver: str, options: dict,
            stats_samples: int) -> EditRequest:
    """The same selections at another layer / rank / solver."""
    return dataclasses.replace(request, layer=layer, rank=rank, solver=solver,
                               solver_options=dict(options), stats_samples=stats_samples)


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
    def __init__(self, spec: EditSpec, session: RewriteSession, seeds: list[int],
                 layers: list[str], ranks: list[int], solvers: dict, log=print) -> None:
        self.spec, self.s, self.seeds = spec, session, seeds
        self.layers, self.ranks, self.solvers, self.log = layers, ranks, solvers, log
        self.request = load_request(spec.name)
        gen = session.gen
        with torch.no_grad():
            self.before = torch.cat([gen.forward(gen.latents(seeds[i:i + 100]))
                                     for i in range(0, len(seeds), 100)])
        self.before_rgb = gen.to_rgb(self.before)
        if spec.model == "scenes":
            self.source = RS.source_region(self.before_rgb, spec.source)
            self.before_maps = RS.segment_both(self.before_rgb)  # the same for every setting
        self.rows: list[dict] = []
        self.stats_seconds: dict[str, float] = {}

    def run(self) -> list[dict]:
        for layer in self.layers:
            t = time.perf_counter()
            self.s.inverse(layer)  # collects (or reloads) the statistics
            self.stats_seconds[layer] = time.perf_counter() - t
            keys = layer_keys(self.s.gen, layer, self.seeds)
            for rank in self.ranks:
                for col, (solver, opts) in self.solvers.items():
                    row = self.one(layer, rank, col, solver, opts, keys)
                    self.rows.append(row)
                    self.log(_row_line(self.spec, row))
            del keys
        return self.rows

    def one(self, layer, rank, col, solver, opts, keys) -> dict:
        row = {"edit": self.spec.name, "layer": layer, "rank": rank, "solver": col}
        req = variant(self.request, layer, rank, solver, opts, self.s.stats_samples)
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
            return RS.scene_scores(self.before_rgb, self.s.gen.to_rgb(after), self.source,
                                   self.spec.target, before_maps=self.before_maps)
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


def best_row(spec: EditSpec, rows: list[dict]) -> dict | None:
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return None
    if spec.model == "scenes":
        return max(ok, key=lambda r: (r["efficacy"] - r["collateral"], -r["collateral"]))
    ok = [r for r in ok if r["ratio"] == r["ratio"]]  # NaN: the match covers no pixel
    strong = [r for r in ok if r["inside"] >= FACES_MIN_CHANGE] or ok
    quiet = [r for r in strong if r["outside"] <= FACES_MAX_OUTSIDE] or strong
    return max(quiet, key=lambda r: r["ratio"]) if quiet else None


def rule_effect(bench: EditBench, best: dict) -> tuple[np.ndarray, dict]:
    """Re-install the best setting; the broken rule's adherence before vs after."""
    spec, session, seeds, before_rgb = bench.spec, bench.s, bench.seeds, bench.before_rgb
    solver, opts = SOLVERS[best["solver"]]
    req = variant(load_request(spec.name), best["layer"], best["rank"], solver, opts,
                  session.stats_samples)
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
               "collateral_by_class": RS.collateral_by_class(before_rgb, after, bench.source)}
    return after, out


def verdict(entry: dict) -> dict:
    """Whether any setting of the flagship edit reaches the target, and the closest ones."""
    ok = [r for r in entry["rows"] if "error" not in r]
    meets = [r for r in ok if r["efficacy"] >= TARGET_EFFICACY
             and r["collateral"] <= TARGET_COLLATERAL]
    within = [r for r in ok if r["collateral"] <= TARGET_COLLATERAL]
    b = entry["best"]

    def where(r):
        return f"{r['layer']}, rank {r['rank']}, {r['solver']}"

    text = (f"best setting ({where(b)}): efficacy {_pct(b['efficacy'])} with collateral "
            f"{_pct(b['collateral'])}")
    def same(r, other) -> bool:
        return other is not None and all(r[k] == other[k] for k in ("layer", "rank", "solver"))

    w = max(within, key=lambda r: r["efficacy"]) if within else None
    if w is not None and not same(w, b):
        text += (f"; the highest efficacy with collateral ≤ {TARGET_COLLATERAL:.0%} is "
                 f"{_pct(w['efficacy'])} ({where(w)}, collateral {_pct(w['collateral'])})")
    top = max(ok, key=lambda r: r["efficacy"])
    if not same(top, b) and not same(top, w):
        text += (f"; the highest efficacy at any collateral is {_pct(top['efficacy'])} "
                 f"({where(top)}, collateral {_pct(top['collateral'])})")
    text += "."
    out = {"met": bool(meets), "efficacy": b["efficacy"], "collateral": b["collateral"],
           "setting": {k: b[k] for k in ("layer", "rank", "solver")}, "text": text}
    if meets:
        m = max(meets, key=lambda r: r["efficacy"] - r["collateral"])
        out["meeting"] = {k: m[k] for k in ("layer", "rank", "solver", "efficacy", "collateral")}
        out["text"] = (f"{where(m)} reaches efficacy {_pct(m['efficacy'])} with collateral "
                       f"{_pct(m['collateral'])}" + ("." if same(m, b) else "; " + text))
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
    head = f"{r['edit']:<19} {r['layer']:<8} r{r['rank']} {r['solver']:<17}"
    if "error" in r:
        return f"{head} n/a: {r['error']}"
    if spec.model == "scenes":
        return (f"{head} efficacy {_pct(r['efficacy'])} collateral {_pct(r['collateral'])} "
                f"(rim {_pct(r['collateral_rim'])}, ΔRGB {r['colour_change']:.1f}) {r['seconds']:.2f}s")
    return (f"{head} in {r['inside']:.3f} out {r['outside']:.3f} ratio {r['ratio']:.1f} "
            f"closer {_pct(r.get('target_closer', float('nan')))} {r['seconds']:.2f}s")


def _cell(spec: EditSpec, r: dict | None) -> str:
    if r is None:
        return ""
    if "error" in r:
        return "n/a"
    if spec.model == "scenes":
        return (f"{_pct(r['efficacy'])} / {_pct(r['collateral'])} / {r['colour_change']:.0f}"
                f" · {_secs(r['seconds'])}")
    if r["inside"] != r["inside"]:
        return f"no pixel matched / {r['outside']:.3f} · {_secs(r['seconds'])}"
    return f"{r['inside']:.3f} / {r['outside']:.3f} ({r['ratio']:.1f}×) · {_secs(r['seconds'])}"


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = ["# Rule-edit benchmark", "",
             f"Generated by `python benchmarks/rule_edits.py{' --quick' if meta['quick'] else ''}`"
             f" on {meta['machine']} ({meta['threads']} torch threads, torch {meta['torch']}); "
             f"{meta['n_seeds']} held-out seeds from {HELD_OUT0}, key statistics over "
             f"{meta['stats_samples']} samples, iterative solver {meta['steps']} steps; "
             f"total wall time {meta['wall_s'] / 60:.1f} min.", "",
             "Scenes cells: **efficacy / collateral / mean ΔRGB outside · solve time**. Efficacy: "
             "share of the rule's pixels (clearly the source class before, within palette "
             "tolerance 40) that clearly show the target class after. Collateral: share of pixels "
             "outside the source region whose nearest-palette class changed; ΔRGB: their mean "
             "colour change (0-255 units). Faces cells: **mean |Δpixel| inside / outside where "
             "the context fires (ratio)** (images in [-1, 1], match ≥ 0.5). Solve time = "
             "directions + solve + install (statistics cached). n/a = the engine refused the "
             "request (reason in rule_edits.json).", ""]
    lines += ["## Best setting per edit", "",
              "| edit | best layer / rank / solver | result | rule before → after |",
              "|---|---|---|---|"]
    for name, e in results["edits"].items():
        spec, b = EDITS[name], e["best"]
        if b is None:
            lines.append(f"| {spec.title} | — | every setting failed | |")
            continue
        if spec.model == "scenes":
            res = (f"efficacy {_pct(b['efficacy'])}, collateral {_pct(b['collateral'])} "
                   f"(outside a 2-px rim {_pct(b['collateral_rim'])}), ΔRGB outside "
                   f"{b['colour_change']:.1f}")
            rtxt = _rule_text(spec, e.get("rule", {}))
        else:
            res = (f"inside {b['inside']:.3f} vs outside {b['outside']:.3f} ({b['ratio']:.1f}×), "
                   f"paste target {_pct(b.get('target_closer', float('nan')))} closer")
            rtxt = "no ground truth"
        lines.append(f"| {spec.title} | {b['layer']} / {b['rank']} / {b['solver']} | {res} "
                     f"| {rtxt} |")
    v = results.get("verdict")
    if v:
        lines += ["", f"**Flagship target** ({EDITS[FLAGSHIP].title}: efficacy ≥ "
                  f"{TARGET_EFFICACY:.0%} with collateral ≤ {TARGET_COLLATERAL:.0%} at some "
                  f"setting): **{'met' if v['met'] else 'not met'}** — {v['text']}"]
    for name, e in results["edits"].items():
        spec = EDITS[name]
        cols = list(e["solvers"])
        lines += ["", f"## {spec.title} (`{name}`, {e['wall_s']:.0f} s for the whole sweep)", "",
                  "| layer | rank | " + " | ".join(cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        by = {(r["layer"], r["rank"], r["solver"]): r for r in e["rows"]}
        for layer in meta["layers"]:
            for rank in meta["ranks"]:
                cells = [_cell(spec, by.get((layer, rank, c))) for c in cols]
                if any(cells):
                    lines.append(f"| {layer} | {rank} | " + " | ".join(cells) + " |")
        by_class = (e.get("rule") or {}).get("collateral_by_class")
        if by_class:
            lines += ["", "Where the best setting's collateral falls (share of each class's pixels "
                      "outside the source region whose class changed): " + ", ".join(
                          f"{k} {_pct(v)}" for k, v in sorted(by_class.items(),
                                                               key=lambda kv: -kv[1]))]
        st = e.get("stats_seconds", {})
        if st:
            lines += ["", "statistics (collect or cached reload): " + ", ".join(
                f"{k} {v:.1f}s" for k, v in st.items())]
    return "\n".join(lines) + "\n"


def figure(path: Path, panels: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """Rows of before / after images per edit at its best setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(b) for _, b, _ in panels)
    fig, axes = plt.subplots(2 * len(panels), 1, figsize=(n * 1.1, 2.3 * len(panels)))
    for i, (title, before, after) in enumerate(panels):
        for j, (imgs, label) in enumerate(((before, "before"), (after, "after"))):
            ax = axes[2 * i + j]
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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 seeds, C over 1,000, 501 steps")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--edits", default=",".join(EDITS))
    ap.add_argument("--layers", default="main.0,main.3,main.6,main.9,main.12")
    ap.add_argument("--ranks", default="1,2,3,6,10")
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = {"meta": {"quick": args.quick, "n_seeds": n, "stats_samples": stats, "steps": steps,
                        "layers": layers, "ranks": ranks, "torch": torch.__version__,
                        "threads": torch.get_num_threads(),
                        "machine": f"{platform.machine()} CPU, {platform.python_version()}"},
               "edits": {}}
    sessions: dict[str, RewriteSession] = {}
    panels = []
    for name in args.edits.split(","):
        spec = EDITS[name]
        if spec.model not in sessions:
            sessions[spec.model] = RewriteSession(load(spec.model), stats_samples=stats)
        s = sessions[spec.model]
        t = time.perf_counter()
        bench = EditBench(spec, s, seeds, [ly for ly in layers if ly in s.gen.layer_names()],
                          ranks, solvers, log=lambda line: print(line, flush=True))
        rows = bench.run()
        best = best_row(spec, rows)
        entry = {"title": spec.title, "rows": rows, "best": best, "solvers": list(solvers),
                 "stats_seconds": bench.stats_seconds}
        if best is not None:
            after, rule = rule_effect(bench, best)
            entry["rule"] = rule
            show = figure_seeds(spec, bench)
            label = (f"{spec.title} — {best['layer']}, rank {best['rank']}, {best['solver']}")
            panels.append((label, bench.before_rgb[show], after[show]))
        entry["wall_s"] = time.perf_counter() - t
        results["edits"][name] = entry
        print(f"== {name}: best {_row_line(spec, best) if best else 'none'} "
              f"({entry['wall_s']:.0f}s)", flush=True)
    if FLAGSHIP in results["edits"] and results["edits"][FLAGSHIP]["best"]:
        results["verdict"] = verdict(results["edits"][FLAGSHIP])
    results["meta"]["wall_s"] = time.perf_counter() - t0
    (out / "rule_edits.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "rule_edits.md").write_text(markdown(results))
    if panels:
        figure(out / "rule_edits.png", panels)
    print(f"wrote {out}/rule_edits.{{md,json,png}} in {results['meta']['wall_s'] / 60:.1f} min")
    return results


if __name__ == "__main__":
    main()
