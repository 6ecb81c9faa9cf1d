"""Write SmolLM2's statistics corpus: its own sampled continuations of encyclopedic prompts.

    .venv/bin/python benchmarks/make_text_corpus.py                 # → rewidget/models/data/
    .venv/bin/python benchmarks/make_text_corpus.py --target-chunks 256 --out /tmp/corpus

C = E[k kᵀ] should describe the keys the model meets when it writes the kind of text a user
edits (facts about places, people, science, ...), so the corpus is the model's own text: each
prompt below is continued ``--new-tokens`` tokens by sampling (temperature 1, nucleus top-p
0.95, so the rare-token tail does not wreck a 135M model's sample), in rounds over all prompts
until the file holds ``--target-chunks`` chunks of 128 tokens. Document (prompt j, round r) is
sampled with seed 1000·r + j, whatever the batch size. Blank lines inside a sample are
collapsed, so documents are the file's paragraphs (separated by one blank line). The settings,
counts and measured speed go to smollm2_samples.json beside the text. The text may differ on
another machine (float rounding can flip one sampled token, and the sample diverges from there).

Measured here (2 shared CPU cores, load ~5, 1 torch thread, batch 24): 72k tokens sampled in
26 min, 47 tokens/s; 618 documents, 75k corpus tokens, 587 chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch

from rewidget.models.smollm2 import DATA, load_smollm2
from rewidget.models.text import STATS_TOKENS

PROMPTS = [
    # places
    "Tokyo is the capital of", "The city of Paris", "Mount Kilimanjaro is",
    "The Amazon rainforest", "Australia is a country", "The Sahara Desert",
    "Venice is a city in northern Italy", "The Great Barrier Reef", "Canada is",
    "The river Danube", "Istanbul, formerly known as Constantinople,", "Iceland is an island",
    "The Himalayas are", "Buenos Aires is", "Lake Baikal", "The state of California",
    "Kyoto was the capital of", "Cairo is", "The Andes mountains", "New Zealand consists of",
    # people
    "Albert Einstein was", "Marie Curie was a physicist and chemist who",
    "William Shakespeare wrote", "Napoleon Bonaparte", "Leonardo da Vinci was",
    "Ada Lovelace is known", "Nelson Mandela", "Wolfgang Amadeus Mozart composed",
    "Cleopatra VII was", "Isaac Newton", "Frida Kahlo was a Mexican painter",
    "Mahatma Gandhi led", "Charles Darwin proposed", "Jane Austen", "Genghis Khan founded",
    "Alan Turing was",
    # science and nature
    "Photosynthesis is the process", "The speed of light", "DNA is a molecule that",
    "Black holes are", "The periodic table", "Volcanoes form when", "The human heart",
    "Electricity is", "The theory of evolution", "Honey bees live in", "Earthquakes are caused",
    "The Moon orbits", "Antibiotics are medicines that", "Water boils at",
    "The planet Jupiter", "Vaccines work by",
    # history
    "The Roman Empire", "World War II began", "The French Revolution", "The printing press",
    "Ancient Egypt", "The Industrial Revolution", "The Cold War was", "The Silk Road",
    "In 1969, the Apollo 11 mission", "The Ming dynasty", "The fall of the Berlin Wall",
    "The Renaissance was",
    # sports and games
    "Football, also known as soccer,", "The Olympic Games", "Basketball was invented",
    "Tennis is played", "The Tour de France", "Chess is a board game", "Cricket is popular in",
    "The FIFA World Cup", "Marathon running",
    # companies and technology
    "Apple Inc. is", "Toyota Motor Corporation", "The company Microsoft", "Amazon was founded",
    "The internet", "Smartphones", "Nokia is a Finnish company", "The steam engine",
    "Airbus is", "IKEA is a furniture retailer",
    # food and culture
    "Sushi is a Japanese dish", "Pizza originated in", "Coffee is a drink", "Chocolate is made",
    "Rice is", "French cuisine", "Tea was first", "Cheese is", "The violin is",
    "Jazz music originated", "The novel Don Quixote", "Ballet is",
    # language, society, misc
    "The English language", "Mathematics is", "The United Nations", "A democracy is",
    "Buddhism began", "The Nobel Prize", "Paper money", "The human brain",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target-chunks", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--temperature", type=float, default=1.0)
    # one thread: on the shared 2-core machine two threads ran at 14 tokens/s, one at 35-47
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DATA)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_smollm2()
    docs: dict[tuple[int, int], str] = {}
    generated, started = 0, time.perf_counter()
    text, chunks, rounds = "", 0, 0
    while chunks < args.target_chunks:
        r = rounds
        for start in range(0, len(PROMPTS), args.batch):
            prompts = PROMPTS[start:start + args.batch]
            new = lm.generate_ids([lm.encode(q) for q in prompts], args.new_tokens, greedy=False,
                                  temperature=args.temperature, seed=1000 * r + start,
                                  top_p=args.top_p)
            for j, (q, ids) in enumerate(zip(prompts, new, strict=True)):
                generated += len(ids)
                body = lm.decode(lm.encode(q) + ids)
                docs[(r, start + j)] = re.sub(r"\n\s*\n+", "\n", body).strip()
            rate = generated / (time.perf_counter() - started)
            print(f"round {r} prompts {start + len(prompts)}/{len(PROMPTS)}: "
                  f"{generated} tokens, {rate:.0f} tokens/s", file=sys.stderr, flush=True)
        rounds += 1
        text = "\n\n".join(docs[k] for k in sorted(docs)) + "\n"
        chunks = len(lm.encode(text)) // STATS_TOKENS
    elapsed = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "smollm2_samples.txt").write_text(text, encoding="utf-8")
    meta = {
        "command": "python benchmarks/make_text_corpus.py " + " ".join(sys.argv[1:]),
        "model": "smollm2 (SmolLM2-135M-Instruct.Q4_1.gguf, dequantised to float32)",
        "model_fingerprint": lm.fingerprint(),
        "sampling": {"temperature": args.temperature, "top_p": args.top_p,
                     "max_new_tokens": args.new_tokens,
                     "seed": "1000 * round + prompt index (row i of a batch: seed + i)"},
        "prompts": len(PROMPTS), "rounds": rounds, "documents": len(docs),
        "generated_tokens": generated, "corpus_tokens": len(lm.encode(text)),
        "chunks": chunks, "chunk_tokens": STATS_TOKENS,
        "seconds": round(elapsed, 1), "tokens_per_second": round(generated / elapsed, 1),
        "batch": args.batch, "torch_threads": args.threads, "torch": torch.__version__,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    (args.out / "smollm2_samples.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
