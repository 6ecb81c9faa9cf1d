"""Engine speed and quality on the real face generator (prints a markdown report).

    python benchmarks/engine.py                     # CPU, layers main.3 / main.6 / main.9
    python benchmarks/engine.py --device cuda --repeats 11

Per layer (keys 4×4, 8×8, 16×16): statistics over 10,000 samples (cold, then a cached reload in
a new session), the "add glasses" edit end to end (masks → directions → solve → apply →
re-rendered 16-image grid; median of --repeats), the exact solve alone, the paper-style
iterative solver (2001 steps) in the same run as a ratio, both solvers' installed error on the
paste target and their pixel change on 24 held-out seeds inside vs outside where the context
fires, re-render from cached features vs a full forward, search over 1,000 samples, and the
process's peak memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics as st
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rewidget import RewriteSession
from rewidget.core.metrics import change_inside_outside
from rewidget.core.requests import EditRequest
from rewidget.models import load_dcgan_faces

GLASSES_REQUEST = Path(__file__).resolve().parents[1] / "rewidget" / "examples" / "requests" / "faces_glasses.json"
GRID, HELD_OUT = list(range(16)), list(range(100, 124))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats):
    out, times = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, times


def select(s):
    """The saved "add glasses" selections (context: eye band of seeds 1, 7, 0; copy: seed 4's
    glasses; paste on seed 1), at the session's layer."""
    req = EditRequest.from_json(GLASSES_REQUEST.read_text())
    s.use_request(dataclasses.replace(req, layer=s.layer))


def quality(s, edit_fn):
    before = s.images(HELD_OUT).clone()
    edit = edit_fn()
    after = s.images(HELD_OUT)
    r = change_inside_outside(before, after, s.context_match(HELD_OUT), 0.5)
    s.undo()
    return edit, r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", default="main.3,main.6,main.9")
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2001)
    args = ap.parse_args()
    torch.manual_seed(0)
    cache = tempfile.mkdtemp(prefix="rewidget-bench-")
    gen = load_dcgan_faces(args.device)
    print(f"# rewidget engine benchmark\n\ndevice {args.device} ({torch.get_num_threads()} threads), "
          f"torch {torch.__version__}, python {sys.version.split()[0]}, statistics over "
          f"{args.samples} samples, {args.repeats} repeats (median)\n")
    rows = []
    for layer in args.layers.split(","):
        s = RewriteSession(gen, layer=layer, stats_samples=args.samples, cache_dir=cache)
        t = time.perf_counter()
        s.statistics()
        stats_cold = time.perf_counter() - t
        s2 = RewriteSession(gen, layer=layer, stats_samples=args.samples, cache_dir=cache)
        _, reload = timed(lambda s2=s2: (s2._moments.clear(), s2.statistics()), 5)
        s.inverse()
        select(s)
        s.render(GRID)  # warm: grid features cached before the edited layer

        def exact_edit(s=s):
            edit = s.rewrite(s.request())
            s.render(GRID)
            return edit

        latencies, solves = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            edit = exact_edit()
            latencies.append(time.perf_counter() - t)
            solves.append(edit.report["seconds"])
            s.undo()
        e_exact, q_exact = quality(s, lambda s=s: s.rewrite(s.request()))
        t = time.perf_counter()
        e_iter, q_iter = quality(s, lambda s=s: s.rewrite(s.request(solver="iterative",
                                                                     steps=args.steps)))
        iter_total = time.perf_counter() - t
        # re-render: cached features before the layer vs the whole generator
        s.rewrite(s.request())
        _, cached = timed(lambda s=s: s.render(GRID), args.repeats)
        z = gen.latents(GRID)
        with torch.no_grad():
            _, full = timed(lambda z=z: gen.forward(z), args.repeats)
            same = np.array_equal(s.render(GRID), gen.to_rgb(gen.forward(z)))
        s.undo()
        s._pool.clear()
        t = time.perf_counter()
        s.search(1000)
        search_cold = time.perf_counter() - t
        _, search_warm = timed(lambda s=s: s.search(1000), args.repeats)
        rows.append({
            "layer": layer, "keys": "×".join(map(str, s.shapes[layer]["keys"][1:])),
            "stats_cold": stats_cold, "stats_reload": st.median(reload),
            "latency": st.median(latencies), "solve": st.median(solves),
            "iter_solve": e_iter.report["seconds"], "iter_total": iter_total,
            "exact": (e_exact.report["installed_measured"], q_exact),
            "iter": (e_iter.report["installed_measured"], q_iter),
            "before": e_exact.report["before"],
            "render_cached": st.median(cached), "render_full": st.median(full), "same": same,
            "search_cold": search_cold, "search_warm": st.median(search_warm),
        })
        print(f"<!-- {layer} done, peak RSS {peak_rss_mb():.0f} MB -->", flush=True)

    print("| layer (keys) | stats 10k cold | cached reload | edit latency (exact, grid of 16) "
          "| exact solve | iterative solve (2001 steps) | iterative / exact solve |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} ({r['keys']}) | {r['stats_cold']:.1f} s | {r['stats_reload'] * 1e3:.0f} ms "
              f"| {r['latency'] * 1e3:.0f} ms | {r['solve'] * 1e3:.1f} ms | {r['iter_solve']:.1f} s "
              f"| {r['iter_solve'] / r['solve']:.0f}× |")
    print("\nQuality on the same request (installed weights; L1/L2 per value element on the paste "
          "target; mean |Δpixel| on 24 held-out seeds inside vs outside where the context fires):\n")
    print("| layer | before L1 / L2 | exact L1 / L2 | iterative L1 / L2 | exact Δ in / out (ratio) "
          "| iterative Δ in / out (ratio) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        (ee, qe), (ei, qi), b = r["exact"], r["iter"], r["before"]
        print(f"| {r['layer']} | {b['l1']:.3f} / {b['l2']:.3f} | {ee['l1']:.3g} / {ee['l2']:.3g} "
              f"| {ei['l1']:.3g} / {ei['l2']:.3g} | {qe['inside']:.3f} / {qe['outside']:.3f} "
              f"({qe['ratio']:.1f}) | {qi['inside']:.3f} / {qi['outside']:.3f} ({qi['ratio']:.1f}) |")
    print("\n| layer | re-render 16 from cached features | full forward 16 | speed-up | identical "
          "| search 1,000 (cold: features) | search 1,000 (warm) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['render_cached'] * 1e3:.1f} ms | {r['render_full'] * 1e3:.1f} ms "
              f"| {r['render_full'] / r['render_cached']:.1f}× | {r['same']} "
              f"| {r['search_cold']:.2f} s | {r['search_warm'] * 1e3:.0f} ms |")
    print(f"\npeak RSS of the process: {peak_rss_mb():.0f} MB")
    if args.device.startswith("cuda"):
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
