"""How SmolLM2 reads a text with and without its document start (<|endoftext|> before it).

    .venv/bin/python benchmarks/text_document_start.py     # ~1 min; writes results/text_document_start.md

SmolLM2's GGUF adds no BOS; its training documents follow one another, each after
<|endoftext|>. rewidget reads every prompt as a document of its own (TextModel.prompt_ids).
Printed: perplexity of the tests' held-out paragraph and the mean NLL per token of the facts'
prompts and paraphrases (with the true object), both over the tokens after the first, and how
many of the benchmark's 99 fact prompts have the true object as the greedy next token.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_text_model import HELD_OUT  # noqa: E402

from rewidget.models import load  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "text_document_start.md"


def main() -> int:
    torch.set_num_threads(1)
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    lm = load("smollm2")
    lead = list(lm.document_start)
    facts = json.loads((ROOT / "benchmarks/data/facts.json").read_text())["facts"]

    def nll(ids: list[int], start: int) -> float:  # mean NLL of ids[start:] given the rest
        return -float(lm.logprobs([ids[:start]], [ids[start:]])[0]) / (len(ids) - start)

    with torch.no_grad():
        ids = lm.encode(HELD_OUT)
        ppl = (math.exp(nll(ids, 1)), math.exp(nll(lead + ids, 1 + len(lead))))
        texts = [lm.encode(p + f["true"]) for f in facts for p in [f["prompt"], *f["paraphrases"]]]
        fact_nll = (sum(nll(i, 1) for i in texts) / len(texts),
                    sum(nll(lead + i, 1 + len(lead)) for i in texts) / len(texts))
        known = [0, 0]
        for f in facts:
            t = lm.encode(f["true"])[0]
            for j, pre in enumerate(([], lead)):
                known[j] += int(lm.next_token_logprobs([pre + lm.encode(f["prompt"])])[0]
                                .argmax()) == t
    lines = ["# SmolLM2 with and without its document start", "",
             f"`python benchmarks/text_document_start.py` — {os.cpu_count()} CPUs, load average "
             f"{load_before}; document start = {lead} (<|endoftext|>).", "",
             "| | without | with the document start |", "|---|---|---|",
             f"| perplexity, held-out paragraph ({len(ids) - 1} tokens after the first) "
             f"| {ppl[0]:.2f} | {ppl[1]:.2f} |",
             f"| mean NLL per token, {len(texts)} fact prompts and paraphrases with the true "
             f"object | {fact_nll[0]:.3f} | {fact_nll[1]:.3f} |",
             f"| fact prompts whose greedy next token is the true object's first (of "
             f"{len(facts)}) | {known[0]} | {known[1]} |", ""]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
