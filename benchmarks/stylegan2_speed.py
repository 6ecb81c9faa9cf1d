"""StyleGAN2 speed at 256 px, and how far an edit lands under live vs frozen demodulation.

    python benchmarks/stylegan2_speed.py                        # CPU, config-f channels
    python benchmarks/stylegan2_speed.py --device cuda --repeats 7
    python benchmarks/stylegan2_speed.py --resolution 64 --quick  # a smoke run

A randomly initialised StyleGAN2 (rewidget.models.stylegan2.random_stylegan2; config-f channels
512 up to 64 px, 256 at 128, 128 at 256, z = w = 512, 8 mapping layers, noise strength 0.1):
a full forward of 1 image (the baseline every figure is divided by), a 16-image render,
key statistics per 1,000 samples at one editable layer (RewriteSession.statistics), and the
edit latency (compute_edit: keys, directions, solve) for the exact solver under frozen
demodulation and for the iterative solver, in the same run. Then the exact edit's ΔW is
installed in a copy with live demodulation and both renders are compared. Medians over
--repeats; the load average is printed because the machine may be shared. Random weights draw
no faces: the figures are speed and the size of the live/frozen gap, not edit quality.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics as st
import tempfile
import time

import numpy as np
import torch

from rewidget import RewriteSession
from rewidget.models.stylegan2 import random_stylegan2, stylegan2_adapter


def timed(fn, repeats: int):
    out, times = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, st.median(times)


def box(size: int, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[int(y0 * size):int(y1 * size), int(x0 * size):int(x1 * size)] = 255
    return m


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ over the whole batch."""
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--layer", default="synthesis.b32.conv1.conv")
    ap.add_argument("--samples", type=int, default=1000, help="statistics samples")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2001, help="iterative solver steps")
    ap.add_argument("--quick", action="store_true", help="4-image grid, 1 repeat, 200 samples")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.samples = 1, 200
    grid = list(range(4 if args.quick else 16))
    torch.manual_seed(0)
    t = time.perf_counter()
    net = random_stylegan2(args.resolution, seed=0, noise_strength=0.1)
    live_net = copy.deepcopy(net)
    gen = stylegan2_adapter(net, name=f"sg2-random-{args.resolution}", device=args.device,
                            demodulation="frozen")
    live = stylegan2_adapter(live_net, name=f"sg2-random-{args.resolution}-live",
                             device=args.device, demodulation="live")
    build = time.perf_counter() - t
    params = sum(p.numel() for p in net.parameters())
    print(f"# StyleGAN2 {args.resolution} px (random init, config-f channels "
          f"{net.channels}), {params / 1e6:.1f} M parameters, device {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average before "
          f"{load()}\n")
    print(f"- build (random init, frozen and live copies): {build:.2f} s")
    z1 = gen.latents([0])
    with torch.no_grad():
        _, full = timed(lambda: gen.forward(z1), args.repeats)
        zg = gen.latents(grid)
        _, render = timed(lambda: gen.forward(zg), max(1, args.repeats // 2))
    print(f"- full forward, 1 image: {full:.3f} s (baseline)")
    print(f"- render {len(grid)} images: {render:.2f} s ({render / full:.1f}× the forward)")

    with tempfile.TemporaryDirectory() as cache:
        s = RewriteSession(gen, layer=args.layer, stats_samples=args.samples, cache_dir=cache,
                           quiet=True, grid=grid[:4], rank=4)
        t = time.perf_counter()
        s.statistics(args.layer)
        stats = time.perf_counter() - t
        keys = gen.layer_shapes()[args.layer]["keys"]
        print(f"- statistics at {args.layer} (keys {keys}), {args.samples} samples: "
              f"{stats:.2f} s → {stats * 1000 / args.samples:.2f} s per 1,000 samples "
              f"({stats * 1000 / args.samples / full:.1f}× the forward)")
        r = args.resolution
        s.add_context(1, box(r, 0.25, 0.6, 0.25, 0.75))
        s.add_context(2, box(r, 0.25, 0.6, 0.25, 0.75))
        s.set_copy(3, box(r, 0.3, 0.55, 0.3, 0.7))
        s.set_paste(1, (0, 0))
        exact_req = s.request(layer=args.layer, solver="exact")
        edit, exact = timed(lambda: s.compute_edit(exact_req), args.repeats)
        print(f"- edit latency, exact solver (frozen demodulation, rank 4): {exact:.2f} s "
              f"({exact / full:.1f}× the forward); goal l1 {edit.report['before']['l1']:.4f} "
              f"→ {edit.report['installed']['l1']:.4f}")
        it_req = s.request(layer=args.layer, solver="iterative", steps=args.steps)
        it_edit, iterative = timed(lambda: s.compute_edit(it_req), 1)
        print(f"- edit latency, iterative solver ({args.steps} steps): {iterative:.2f} s "
              f"({iterative / full:.1f}× the forward); goal l1 "
              f"{it_edit.report['before']['l1']:.4f} → {it_edit.report['installed']['l1']:.4f}")

        # live vs frozen: the same ΔW installed in both, rendered on context and held-out seeds
        ctx, held = [1, 2], list(range(100, 104 if args.quick else 108))
        module = gen.layer(args.layer)
        delta = s.history.checked_delta(edit)  # what apply() would add (nothing installed)
        styled = args.layer[: -len(".conv")]

        def render_both(seeds):
            outs = {}
            for name, g in (("frozen", gen), ("live", live)):
                got = {}
                h = dict(g.module.named_modules())[styled].register_forward_hook(
                    lambda _m, _a, o, got=got: got.__setitem__("out", o))
                with torch.no_grad():
                    img = g.forward(g.latents(seeds))
                h.remove()
                outs[name] = (img, got["out"])
            return outs

        base = {"context": render_both(ctx), "held-out": render_both(held)}
        with torch.no_grad():
            module.weight.add_(delta)
            live.layer(args.layer).weight.add_(delta)
        after = {"context": render_both(ctx), "held-out": render_both(held)}
        with torch.no_grad():
            module.weight.sub_(delta)
            live.layer(args.layer).weight.sub_(delta)
        print(f"\n## Live vs frozen demodulation: the exact edit's ΔW (‖ΔW‖/‖W₀‖ = "
              f"{float(delta.norm() / module.weight.norm()):.3f}) installed in both\n")
        print("| seeds | layer output change: ‖Δlive − Δfrozen‖/‖Δfrozen‖ | image change: "
              "‖Δlive − Δfrozen‖/‖Δfrozen‖ | max \\|img live − img frozen\\| (raw output) | "
              "edit's image change ‖Δfrozen‖/‖img₀‖ |")
        print("|---|---|---|---|---|")
        for k in base:
            (i0, o0), (i1, o1) = base[k]["frozen"], after[k]["frozen"]
            (j0, p0), (j1, p1) = base[k]["live"], after[k]["live"]
            assert torch.equal(i0, j0)  # at W₀ both modes render the same
            print(f"| {k} {ctx if k == 'context' else held} | {rel(p1 - p0, o1 - o0):.3f} | "
                  f"{rel(j1 - j0, i1 - i0):.3f} | {float((j1 - i1).abs().max()):.3f} | "
                  f"{rel(i1, i0):.3f} |")
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
