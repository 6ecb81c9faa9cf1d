"""One side of the text panel, one pass vs two: SmolLM2, back to back in one process.

    python benchmarks/text_panel_speed.py            # 5 repeats each, one torch thread

The panel (TextRewriteSession.panel) shows, for 6 prompts about the Eiffel Tower → Rome edit
(the edit prompt, 2 paraphrases, 2 neighbours, 1 essence prompt), the 8-token greedy
completion and p(old), p(new). Timed: the panel's side as it runs now (`_panel_side`: one
`generate_and_score`, whose pass over the prompts also scores the objects) against the same
rows as two passes (`complete`, then `logprobs` over every prompt + object pair, the code
before). Both are checked to give the same completions and probabilities (max relative
difference printed). Prints medians, all runs, and the load average before and after.
"""

from __future__ import annotations

import math
import os
import statistics as st
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rewidget.session.text import TextRewriteSession  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"
ROWS = [("edit", PROMPT, " Paris", " Rome"),
        ("paraphrase", "Where is the Eiffel Tower? It is in", " Paris", " Rome"),
        ("paraphrase", "The Eiffel Tower stands in", " Paris", " Rome"),
        ("neighbour", "The Louvre is located in the city of", " Paris", " Rome"),
        ("neighbour", "The Brandenburg Gate is located in the city of", " Berlin", " Rome"),
        ("essence", "The Eiffel Tower is a", "", "")]


def two_passes(s: TextRewriteSession, rows, tokens: int) -> tuple[list[str], list[float]]:
    done = s.complete([r[1] for r in rows], tokens)
    pairs = [(prompt, obj) for _, prompt, old, new in rows if old and new for obj in (old, new)]
    p_ids = [s._encode(prompt, "prompt") for prompt, _ in pairs]
    o_ids = [s._encode(o if o[:1].isspace() else " " + o, "object") for _, o in pairs]
    with torch.no_grad():
        return done, s.gen.logprobs(p_ids, o_ids).exp().tolist()


def main(repeats: int = 5, tokens: int = 8) -> None:
    torch.set_num_threads(1)
    print("load average before", os.getloadavg())
    s = TextRewriteSession("smollm2", quiet=True)
    old_t, new_t = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        done, probs = two_passes(s, ROWS, tokens)
        old_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        side = s._panel_side(ROWS, tokens)
        new_t.append(time.perf_counter() - t)
    assert [r["completion"] for r in side] == done
    got = [x for r in side if not math.isnan(r["p_old"]) for x in (r["p_old"], r["p_new"])]
    rel = max(abs(a - b) / max(b, 1e-30) for a, b in zip(got, probs, strict=True))
    print(f"same completions; p max relative difference {rel:.1e}")
    print(f"two passes (before): median {st.median(old_t):.3f} s, all "
          f"{', '.join(f'{x:.3f}' for x in old_t)}")
    print(f"one pass (now): median {st.median(new_t):.3f} s, all "
          f"{', '.join(f'{x:.3f}' for x in new_t)}")
    print(f"ratio {st.median(old_t) / st.median(new_t):.2f}×; load average after",
          os.getloadavg())


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
