"""How fast the key statistics are collected cold, and how many samples C needs per layer.

    .venv/bin/python benchmarks/statistics_speed.py              # speed: old way vs one pass
    .venv/bin/python benchmarks/statistics_speed.py --study      # sample-count study table
    .venv/bin/python benchmarks/statistics_speed.py --batch-sizes 64 125 250 500

Speed: every faces layer cold, in a fresh temporary cache directory each time, (a) the old
way, one collection per layer over 10,000 samples each, and (b) one pass with the per-layer
``auto_samples`` counts. The two are interleaved and repeated; medians and the ratio are
printed with the load average, since this machine is shared.

Study: C over N = 500 … 10,000 statistics samples against a 20,000-sample reference, per layer
of faces and scenes: the relative Frobenius error of C, and the cosine between the top
whitened context direction (D = Z·u, u the top left singular vector of Z·K*ᵀ, Z = C^-1/2)
from C_N and from C_ref, for the contexts of saved requests. The seeds are nested (C_N's
samples are part of C_ref's), which makes the error against C_ref smaller than the error
against the truth by sqrt(1 - N/N_ref); the table also prints the corrected estimate.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics as pystats
import tempfile
import time
from pathlib import Path

import torch

from rewidget.core.directions import context_keys
from rewidget.core.edits import sample_latents
from rewidget.core.memory import memory_for
from rewidget.core.requests import EditRequest
from rewidget.core.statistics import (
    MAX_SAMPLES,
    SecondMoment,
    accumulate_moments,
    auto_samples,
    cached_second_moment,
    cached_second_moments,
    rows_per_sample,
)
from rewidget.models import load

REQUESTS = Path(__file__).resolve().parents[1] / "rewidget" / "examples" / "requests"
CONTEXTS = {"dcgan-faces": ["faces_glasses.json", "faces_close_mouths.json"],
            "scenes": ["roof_to_tree.json", "sun_erase.json"]}
STUDY_N = (500, 1_000, 2_000, 4_000, 5_000, 10_000)
REFERENCE_N = 20_000


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# -- speed ---------------------------------------------------------------------------------------
def old_way(gen, fp: str, layers, n: int = MAX_SAMPLES) -> None:
    with tempfile.TemporaryDirectory() as d:
        for layer in layers:
            cached_second_moment(gen, layer, n, fp, d)


def one_pass(gen, fp: str, counts: dict[str, int], batch_size: int | None = None) -> None:
    kw = {} if batch_size is None else {"batch_size": batch_size}
    with tempfile.TemporaryDirectory() as d:
        cached_second_moments(gen, counts, fp, d, **kw)


def speed(repeats: int) -> None:
    gen = load("dcgan-faces")
    fp = gen.fingerprint()
    layers = gen.layer_names()
    counts = auto_samples(gen)
    print(f"faces, all layers cold; auto counts {counts}; torch threads "
          f"{torch.get_num_threads()}; {load_average()}")
    old, new, same_n = [], [], []
    for i in range(repeats):
        old.append(timed(lambda: old_way(gen, fp, layers)))
        same_n.append(timed(lambda: one_pass(gen, fp, dict.fromkeys(layers, MAX_SAMPLES))))
        new.append(timed(lambda: one_pass(gen, fp, counts)))
        print(f"  repeat {i + 1}: old (per layer, 10k each) {old[-1]:.2f} s | one pass 10k each "
              f"{same_n[-1]:.2f} s | one pass auto {new[-1]:.2f} s | {load_average()}",
              flush=True)
    mo, ms, mn = (pystats.median(x) for x in (old, same_n, new))
    ratios = [n / o for n, o in zip(new, old, strict=True)]
    print(f"median of {repeats}: old {mo:.2f} s, one pass 10k {ms:.2f} s, one pass auto "
          f"{mn:.2f} s (target <= 20 s); auto/old per repeat median {pystats.median(ratios):.3f}; "
          f"{load_average()}")


def batch_sizes(sizes: list[int], repeats: int) -> None:
    gen = load("dcgan-faces")
    fp = gen.fingerprint()
    counts = auto_samples(gen)
    times: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(repeats):
        for b in sizes:  # interleaved, so load changes hit every size alike
            times[b].append(timed(lambda b=b: one_pass(gen, fp, counts, b)))
    base = sizes[0]
    for b in sizes:
        ratio = pystats.median(t / t0 for t, t0 in zip(times[b], times[base], strict=True))
        print(f"batch {b:4d}: median {pystats.median(times[b]):.2f} s, ratio to batch {base} "
              f"{ratio:.3f}")
    print(load_average())


# -- how many samples ----------------------------------------------------------------------------
def moments_at(gen, layers, ns, n_ref) -> dict[int, dict[str, torch.Tensor]]:
    """{N: {layer: C_N}} for every N in ``ns`` and n_ref, from one nested pass."""
    stats = {layer: SecondMoment() for layer in layers}
    out: dict[int, dict[str, torch.Tensor]] = {}
    wanted = set(ns) | {n_ref}
    # batches end at every N (they divide it), so each C_N is the running moment at that point
    for done in accumulate_moments(gen, stats, dict.fromkeys(layers, n_ref), batch_size=250):
        if done in wanted:
            out[done] = {layer: s.moment() for layer, s in stats.items()}
    return out


def whitener(c: torch.Tensor) -> torch.Tensor:
    """Z = C^-1/2 (symmetric; ridge 1e-6 × mean diagonal against singular C)."""
    evals, evecs = torch.linalg.eigh(c)
    ridge = 1e-6 * float(torch.diagonal(c).mean())
    return (evecs * (evals.clamp_min(0) + ridge).rsqrt()) @ evecs.T


def whitened_directions(c: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor,
                        rank: int) -> torch.Tensor:
    """(C_in, rank) orthonormal basis of Z·U, U the top left singular vectors of Z·K*ᵀ."""
    z = whitener(c)
    mapped = (keys.double() @ z) * weights.double().sqrt()[:, None]  # (n, C_in), Z symmetric
    u = torch.linalg.svd(mapped.T, full_matrices=False)[0][:, :rank]
    return torch.linalg.qr(z @ u)[0]


def whitened_error(c_n: torch.Tensor, ref: torch.Tensor) -> float:
    """|Z C_N Z - I|_2 with Z = C_ref^-1/2: the worst relative error over all key directions,
    rare ones included (what whitening and C⁻¹ feel; the Frobenius error sees the big ones)."""
    z = whitener(ref)
    return float(torch.linalg.matrix_norm(z @ c_n @ z - torch.eye(len(z), dtype=z.dtype), 2))


def subspace_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Smallest principal cosine between the column spans (1.0 = the same subspace)."""
    return float(torch.linalg.svdvals(a.T @ b).min())


def contexts(gen, name: str, layer: str):
    """(K, w) of each saved request's context at ``layer``."""
    mem = memory_for(gen.layer(layer), layer)
    out = []
    for file in CONTEXTS[name]:
        req = EditRequest.from_json((REQUESTS / file).read_text())
        with torch.no_grad():
            entries = [(gen.keys(layer, sample_latents(gen, [c.sample])), c.mask)
                       for c in req.context]
        out.append((file.removesuffix(".json"), *context_keys(mem, entries)))
    return out


def study(models: list[str], ns: tuple[int, ...], n_ref: int) -> None:
    print(f"C_N vs C_ref (N_ref = {n_ref:,}, nested seeds). err = |C_N - C_ref|_F / |C_ref|_F; "
          "err~truth = err / sqrt(1 - N/N_ref); white = |Z C_N Z - I|_2, Z = C_ref^-1/2; "
          "cos1 = |cos| of the top whitened direction, "
          "cos3 = smallest principal cosine of the rank-3 span, worst over the contexts "
          f"{CONTEXTS}. {load_average()}")
    for name in models:
        gen = load(name)
        shapes = gen.layer_shapes()
        layers = gen.layer_names()
        t = time.perf_counter()
        moments = moments_at(gen, layers, ns, n_ref)
        auto = auto_samples(gen, shapes=shapes)
        print(f"\n{name}: {time.perf_counter() - t:.1f} s for the nested pass; "
              f"auto counts {auto} (* in the table)")
        print("| layer | key dim | rows/sample | N | rows/key dim | err C | err~truth | white | "
              "cos1 | cos3 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for layer in layers:
            dim = memory_for(gen.layer(layer), layer).key_dim
            rps = rows_per_sample(shapes[layer]["keys"], dim)
            ref = moments[n_ref][layer]
            ctx = contexts(gen, name, layer)
            d_ref = {c: (whitened_directions(ref, k, w, 1), whitened_directions(ref, k, w, 3))
                     for c, k, w in ctx}
            for n in ns:
                c_n = moments[n][layer]
                err = float(torch.linalg.norm(c_n - ref) / torch.linalg.norm(ref))
                cos1 = min(abs(float(whitened_directions(c_n, k, w, 1)[:, 0] @ d_ref[c][0][:, 0]))
                           for c, k, w in ctx)
                cos3 = min(subspace_cosine(whitened_directions(c_n, k, w, 3), d_ref[c][1])
                           for c, k, w in ctx)
                print(f"| {layer} | {dim} | {rps} | {n:,}{'*' if n == auto[layer] else ''} | "
                      f"{n * rps / dim:,.0f} | "
                      f"{100 * err:.2f}% | {100 * err / math.sqrt(1 - n / n_ref):.2f}% | "
                      f"{whitened_error(c_n, ref):.3f} | "
                      f"{cos1:.4f} | {cos3:.4f} |", flush=True)
    print(load_average())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", action="store_true", help="print the sample-count study")
    ap.add_argument("--models", nargs="+", default=["dcgan-faces", "scenes"])
    ap.add_argument("--reference", type=int, default=REFERENCE_N)
    ap.add_argument("--batch-sizes", nargs="+", type=int, help="compare one-pass batch sizes")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"{load_average()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.study:
        study(args.models, STUDY_N, args.reference)
    elif args.batch_sizes:
        batch_sizes(args.batch_sizes, args.repeats)
    else:
        speed(args.repeats)


if __name__ == "__main__":
    main()
