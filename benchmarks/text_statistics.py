"""How many tokens of statistics text C needs for a fact edit in SmolLM2.

    python benchmarks/text_statistics.py                      # layer 6, 16..max chunks
    python benchmarks/text_statistics.py --layer 4 --counts 16,64,256

For each count N (chunks of 128 tokens of the model's own samples), C_N is compared with C from
every chunk the corpus has (the reference): the relative Frobenius error, and for the keys of a
few subjects (k* at the subject's last token, as the edit reads them) the cosine between the
edit direction C_N⁻¹k* and C_ref⁻¹k* (the rank-1 D of ROME's update), and the ratio of the
update's size ‖ΔW‖ (the same goal solved with C_N vs C_ref). Prints a table and the load.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from rewidget.core.directions import CovarianceInverse
from rewidget.core.statistics import SecondMoment, accumulate_moments
from rewidget.session.facts import Fact, FactRequest
from rewidget.session.text import DRIFT_CHUNKS, TextRewriteSession

SUBJECTS = [("The Eiffel Tower is located in the city of", "The Eiffel Tower"),
            ("The capital of Japan is", "Japan"),
            ("The Colosseum is located in the city of", "The Colosseum"),
            ("Microsoft was founded by", "Microsoft"),
            ("The official language of Brazil is", "Brazil"),
            ("Lionel Messi plays the sport of", "Lionel Messi"),
            ("Romeo and Juliet was written by", "Romeo and Juliet"),
            ("The Great Wall is located in the country of", "The Great Wall")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--counts", default="16,32,64,128,256")
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = TextRewriteSession("smollm2", stats_samples=1)
    layer = f"layers.{args.layer}.mlp.down_proj"
    most = s.gen.n_chunks - DRIFT_CHUNKS
    counts = sorted({min(int(c), most) for c in args.counts.split(",")} | {most})
    t0 = time.perf_counter()
    # nested: every count's C is a prefix of the same chunk sequence, read off one pass
    counts = sorted({16 * max(1, round(n / 16)) for n in counts if n < most} | {most})
    stats = {layer: SecondMoment()}
    cs = {}
    for done in accumulate_moments(s.gen, stats, {layer: most}, batch_size=16):
        if done in counts:
            cs[done] = stats[layer].moment().clone()
    seconds = time.perf_counter() - t0
    ref = cs[most]
    reqs = [FactRequest(layer=layer, facts=(Fact(p, subj, " x"),), key_mode="mean")
            for p, subj in SUBJECTS]
    keys = torch.cat([s.subject_keys(r, r.facts[0]).double() for r in reqs])
    inv_ref = CovarianceInverse(ref)
    d_ref = inv_ref.solve(keys)
    print(f"layer {layer}; reference: {most} chunks = {most * 128:,} tokens; collection of all "
          f"counts {seconds:.0f} s; load {os.getloadavg()[0]:.1f}")
    print(f"{'chunks':>7} {'tokens':>8} {'C err':>7} {'cos(C⁻¹k*) min':>15} {'mean':>6} "
          f"{'|ΔW| ratio':>10}")
    for n in counts:
        inv = CovarianceInverse(cs[n])
        d = inv.solve(keys)
        cos = torch.nn.functional.cosine_similarity(d, d_ref, dim=1)
        # ROME's rank-1 update for a fixed residual r: ΔW = r dᵀ / dᵀk, so |ΔW| ∝ |d| / dᵀk
        size = d.norm(dim=1) / (d * keys).sum(1)
        size_ref = d_ref.norm(dim=1) / (d_ref * keys).sum(1)
        err = float((cs[n] - ref).norm() / ref.norm())
        print(f"{n:>7} {n * 128:>8,} {err:>7.1%} {float(cos.min()):>15.3f} "
              f"{float(cos.mean()):>6.3f} {float((size / size_ref).mean()):>10.2f}")


if __name__ == "__main__":
    main()
