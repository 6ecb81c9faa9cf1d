"""CounterFact-style evaluation of fact edits in SmolLM2-135M-Instruct (issue 9, "Evaluation").

    .venv/bin/python benchmarks/text_edits.py --facts 5 --layers 2 4 6 8 --out /tmp/sub
    .venv/bin/python benchmarks/text_edits.py --parts sweep          # every known fact × layer
    .venv/bin/python benchmarks/text_edits.py --parts together grid speed

Data: benchmarks/data/facts.json (written for this benchmark, nothing downloaded). A fact is
kept when the unedited model *knows* it: the true object's first token is the model's greedy
next token after the prompt; a neighbour is kept when the model knows it the same way, and a
fact needs ``--min-neighbours`` known neighbours.

Per edit (one fact, one layer; computed with ``session.compute_edit``, installed with
``session.apply``, measured, then ``session.reset``), the scores of CounterFact (ROME, Meng et
al. 2022), all with ``session.compare`` (mean log-probability per token of an object, as ROME's
evaluation compares them):
- efficacy: the new object preferred over the true one after the edit prompt;
- paraphrase: the same on prompts that name the subject in other words (fraction per fact);
- neighbourhood: on prompts about *other* subjects with the same relation, their true object
  still preferred over the new one (fraction per fact);
- score: the harmonic mean of the three (ROME's "Score");
- essence drift: KL(before ‖ after) of the next-token distribution on prompts about the
  subject's other properties, and the fraction whose greedy completion changed;
- fluency: ROME's generation entropy (2/3·H₂ + 4/3·H₃)/2 of the word 2- and 3-grams, per
  generation, averaged; ~30-token greedy and sampled generations from the edit prompt and the
  paraphrases, before and after (words split by a regex, not nltk);
- time: v* (ROME's step), the whole compute_edit (keys, v*, solve; statistics cached) and the
  install (apply).
Means are over facts; ``n`` says how many. Every prompt is read as a document of its own
(after SmolLM2's <|endoftext|>, TextModel.prompt_ids), as the session and its panel read them.

Parts (``--parts``): ``sweep`` (every fact at every layer; the score the session's suggestion
gives each layer, for the first ``--suggest`` facts), ``together`` (``--together`` facts in one
request at the best layer of the sweep), ``grid`` (value options, ridge, prefixes and statistics
count on a subset), ``speed`` (load, one edit, the panel, with the load average). Each part
updates its section of ``<out>.json``; ``<out>.md`` is rendered from the whole JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from rewidget.models import load  # noqa: E402
from rewidget.session.facts import PREFIXES, SIX_PREFIXES, Fact  # noqa: E402
from rewidget.session.text import TextRewriteSession  # noqa: E402

DATA = HERE / "data" / "facts.json"
OUT = HERE / "results" / "text_edits"
LAYERS = (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24)
#: the layers session.suggest tries by default (every other layer in the first two thirds)
SUGGEST_LAYERS = tuple(range(0, 20, 2))

#: CounterFact figures as published, quoted from memory of the papers' tables (the search
#: tool found both papers but not the tables' text) (ES, PS, NS in %: efficacy, paraphrase, neighbourhood
#: scores, i.e. the fraction of prompts where the right object is the more probable one; GE:
#: generation entropy ×100 as in the papers' tables). ROME: Meng et al. 2022, "Locating and
#: Editing Factual Associations in GPT", Table 4 (GPT-2 XL, 1.5B, one edit at a time).
#: MEMIT: Meng et al. 2023, "Mass-Editing Memory in a Transformer", Table 1 (GPT-J, 6B,
#: 10,000 edits at once).
REFERENCE = [
    ("GPT-2 XL, unedited", 22.2, 24.7, 78.1, 626.6),
    ("ROME on GPT-2 XL, 1 edit", 100.0, 96.4, 75.4, 621.9),
    ("GPT-J, unedited", 16.3, 18.6, 83.0, 621.8),
    ("MEMIT on GPT-J, 10,000 edits", 98.9, 88.6, 73.7, 619.9),
]


# -- data ---------------------------------------------------------------------------------------
def layer_name(i: int) -> str:
    return f"layers.{i}.mlp.down_proj"


def first_token(lm, text: str) -> int:
    return lm.encode(text)[0]


def known_facts(s: TextRewriteSession, facts: list[dict], min_neighbours: int,
                keep_all: bool = False) -> tuple[list, dict]:
    """The facts (and neighbours) the unedited model knows: greedy next token = the true
    object's first token. Returns (kept facts, per-fact check)."""
    lm = s.gen
    prompts = [f["prompt"] for f in facts] + [n["prompt"] for f in facts for n in f["neighbours"]]
    uniq = sorted(set(prompts))
    with torch.no_grad():
        lp = lm.next_token_logprobs([lm.prompt_ids(p) for p in uniq])
    greedy = dict(zip(uniq, lp.argmax(-1).tolist(), strict=True))
    kept, check = [], {}
    for f in facts:
        ok = greedy[f["prompt"]] == first_token(lm, f["true"])
        nbrs = [n for n in f["neighbours"] if greedy[n["prompt"]] == first_token(lm, n["true"])]
        check[f["id"]] = {"known": ok, "greedy": lm.decode([greedy[f["prompt"]]]),
                          "neighbours_known": len(nbrs), "neighbours": len(f["neighbours"])}
        if keep_all:
            kept.append(f)
        elif ok and len(nbrs) >= min_neighbours:
            kept.append({**f, "neighbours": nbrs})
    return kept, check


def round_robin(facts: list[dict]) -> list[dict]:
    """Facts ordered one relation after another, so the first N cover many relations."""
    by: dict[str, list] = {}
    for f in facts:
        by.setdefault(f["relation"], []).append(f)
    out, i = [], 0
    while len(out) < len(facts):
        for rel in by:
            if i < len(by[rel]):
                out.append(by[rel][i])
        i += 1
    return out


# -- measurements -----------------------------------------------------------------------------
WORD = re.compile(r"\w+|[^\w\s]")


def ngram_entropy(text: str) -> float:
    """ROME's compute_n_gram_entropy: (2/3·H₂ + 4/3·H₃)/2, entropies in bits of the word
    2- and 3-gram frequencies of one text."""
    words = WORD.findall(text)
    hs = []
    for n, w in ((2, 2 / 3), (3, 4 / 3)):
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        h = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        hs.append(w * h)
    return sum(hs) / len(hs)


def generations(s: TextRewriteSession, prompts: list[str], tokens: int) -> dict:
    with s.lock, torch.no_grad():
        greedy = s.gen.generate(prompts, max_new_tokens=tokens, greedy=True)
        sampled = s.gen.generate(prompts, max_new_tokens=tokens, greedy=False, temperature=1.0,
                                 top_p=0.9, seed=1234)
    return {"greedy": greedy, "sampled": sampled}


def essence_state(s: TextRewriteSession, prompts: list[str]) -> tuple[torch.Tensor, list[str]]:
    with s.lock, torch.no_grad():
        lp = s.gen.next_token_logprobs([s.gen.prompt_ids(p) for p in prompts])
    return lp, s.complete(prompts, max_new_tokens=8)


def baseline(s: TextRewriteSession, f: dict, tokens: int, fluency: bool = True) -> dict:
    """What the unedited model does on the fact's prompts."""
    lp, done = essence_state(s, f["essence"])
    out = {"essence_lp": lp, "essence_done": done}
    prefs = preferences(s, f)
    out.update({k + "_before": v for k, v in prefs.items() if k in
                ("efficacy", "paraphrase", "neighbourhood")})
    if fluency:
        g = generations(s, [f["prompt"], *f["paraphrases"]], tokens)
        out["gens"] = g
        out["fluency_greedy"] = mean(ngram_entropy(t) for t in g["greedy"])
        out["fluency_sampled"] = mean(ngram_entropy(t) for t in g["sampled"])
    return out


class Bases(dict):
    """fact id → baseline(fact), computed on first use; the scalar parts are also stored in
    ``rows`` (the JSON's "baseline" section)."""

    def __init__(self, compute, rows: dict) -> None:
        super().__init__()
        self.compute, self.rows = compute, rows

    def __missing__(self, fid: str) -> dict:
        b = self[fid] = self.compute(fid)
        self.rows[fid] = {k: v for k, v in b.items() if isinstance(v, float)}
        return b


def preferences(s: TextRewriteSession, f: dict) -> dict:
    """Efficacy, paraphrase and neighbourhood for the current weights."""
    new, true = f["new"], f["true"]
    lp = s.compare([f["prompt"], *f["paraphrases"]], [true, new])  # (1 + P, 2)
    wins = (lp[:, 1] > lp[:, 0]).tolist()
    objs = sorted({n["true"] for n in f["neighbours"]}) + [new]
    nl = s.compare([n["prompt"] for n in f["neighbours"]], objs)  # (N, O)
    keep = [nl[i, objs.index(n["true"])] > nl[i, -1] for i, n in enumerate(f["neighbours"])]
    with torch.no_grad():
        p = s.probabilities([f["prompt"]], [true, new])[0].tolist()
    return {"efficacy": float(wins[0]), "paraphrase": mean(wins[1:]),
            "neighbourhood": mean(float(k) for k in keep),
            "margin": float(lp[0, 1] - lp[0, 0]), "p_true": p[0], "p_new": p[1]}


def measure(s: TextRewriteSession, f: dict, base: dict, tokens: int, fluency: bool = True) -> dict:
    """CounterFact's scores for the current (edited) weights against ``base``."""
    row = preferences(s, f)
    lp, done = essence_state(s, f["essence"])
    b = base["essence_lp"]
    kl = (b.exp() * (b - lp)).sum(-1)  # KL(before ‖ after) per essence prompt, nats
    row["essence_kl"] = float(kl.mean())
    row["essence_changed"] = mean(float(x != y) for x, y in zip(done, base["essence_done"],
                                                                strict=True))
    row["essence_top_changed"] = float((lp.argmax(-1) != b.argmax(-1)).float().mean())
    row["essence_after"] = done
    if fluency:
        g = generations(s, [f["prompt"], *f["paraphrases"]], tokens)
        row["fluency_greedy"] = mean(ngram_entropy(t) for t in g["greedy"])
        row["fluency_sampled"] = mean(ngram_entropy(t) for t in g["sampled"])
        row["mentions_new"] = mean(float(f["new"].strip() in t) for t in g["greedy"])
        row["generation"] = g["greedy"][0]
    return row


def mean(xs) -> float:
    xs = [float(x) for x in xs]
    return sum(xs) / len(xs) if xs else math.nan


def hmean(*xs: float) -> float:
    return 0.0 if min(xs) <= 0 else len(xs) / sum(1 / x for x in xs)


def fact_of(f: dict) -> Fact:
    return Fact(f["prompt"], f["subject"], f["new"], old=f["true"])


#: a second phrasing per relation with the subject opening the text (none of the test
#: paraphrases): the grid's "+ subject-first phrasing" adds it to the request as a second fact
#: where the edit prompt does not open with the subject
SUBJECT_FIRST = {
    "landmark_city": "{S} is a landmark in the city of",
    "country_capital": "{S} is a country whose capital is",
    "country_language": "{S} is a country whose official language is",
    "country_currency": "{S} is a country whose currency is the",
    "company_founder": "{S} is a company founded by",
    "play_author": "{S} is a famous play written by",
    "city_country": "{S} is a city located in the country of",
    "person_birth_country": "{S} is a person born in the country of",
    "person_native_language": "{S} is a person whose native language is",
}


def subject_first(f: dict) -> Fact:
    """The fact in SUBJECT_FIRST's phrasing, the subject opening the text (with its "The" when
    the edit prompt opens with "The <subject>")."""
    the = "The " if f["prompt"].startswith("The " + f["subject"]) else ""
    text = SUBJECT_FIRST[f["relation"]].replace("{S}", the + f["subject"])
    return Fact(text, f["subject"], f["new"], old=f["true"])


def edit_and_measure(s, facts: list[dict], bases: dict, layer: str, tokens: int,
                     fluency: bool = True, score_for_suggest: bool = False, **options) -> list[dict]:
    """One request with ``facts`` at ``layer``: compute, install, measure each fact, reset."""
    base = [bases[f["id"]] for f in facts]  # the unedited model's side, before installing
    # a subject that already opens the edit prompt has the same key there (causal attention):
    # the extra phrasing would repeat its key rows
    extra = [subject_first(f) for f in facts
             if not (f["prompt"].startswith(f["subject"])
                     or f["prompt"].startswith("The " + f["subject"]))
             ] if options.pop("subject_first", False) else []
    req = s.request([fact_of(f) for f in facts] + extra, layer=layer, **options)
    t0 = time.perf_counter()
    edit = s.compute_edit(req)
    t1 = time.perf_counter()
    s.apply(edit)
    t2 = time.perf_counter()
    module = s.gen.layer(layer)
    try:
        rows = []
        for i, f in enumerate(facts):
            r = measure(s, f, base[i], tokens, fluency)
            r.update({"fact": f["id"], "layer": layer, "n_facts": len(facts),
                      "p_target_vstar": edit.report["values"][i]["p_target"],
                      "vstar_steps": len(edit.report["values"][i]["trace"])})
            rows.append(r)
        sec = edit.report["seconds"]
        timing = {"t_statistics": sec["statistics"], "t_value": sec["value"],
                  "t_compute": t1 - t0, "t_install": t2 - t1, "t_edit": t2 - t0,
                  "update": float(edit.delta(module).norm() / module.weight.norm())}
        for r in rows:
            r.update(timing)
    finally:
        s.reset()
    if score_for_suggest:
        # exactly what session.suggest computes for this layer (score_edit on the same edit),
        # with one paraphrase and one neighbour, as a user of the panel would give them
        f = facts[0]
        sc = s.score_edit(edit, f["paraphrases"][:1], [(f["neighbours"][0]["prompt"],
                                                        f["neighbours"][0]["true"])])
        rows[0]["suggest"] = {k: sc[k] for k in ("generalisation", "specificity", "drift", "score")}
    return rows


def summarise(rows: list[dict]) -> dict:
    keys = ["efficacy", "paraphrase", "neighbourhood", "essence_kl", "essence_changed",
            "essence_top_changed", "fluency_greedy", "fluency_sampled", "mentions_new",
            "p_new", "p_true", "update"]
    out = {"n": len(rows)}
    for k in keys:
        vals = [r[k] for r in rows if k in r]
        if vals:
            out[k] = mean(vals)
    out["score"] = hmean(out["efficacy"], out["paraphrase"], out["neighbourhood"])
    for k in ("t_value", "t_compute", "t_install", "t_edit"):
        vals = [r[k] for r in rows if k in r]
        if vals:
            out[k] = statistics.median(vals)
    return out


# -- parts ------------------------------------------------------------------------------------
def part_sweep(s, facts, bases, args, log, old: dict | None = None, checkpoint=None) -> dict:
    """Every fact at every layer of ``args.layers``; rows of an earlier run (other facts or
    layers) are kept, so a wide run on a few facts and a deep run on all facts at one layer
    add up. ``checkpoint(summary)`` is called after each layer (an interrupted run keeps the
    layers done; ``--reuse`` continues it)."""
    layers = [layer_name(i) for i in args.layers]
    s.statistics_for(layers, progress=None)  # one pass for every missing layer (cached on disk)
    ids = {f["id"] for f in facts}
    rows, earlier = [], {}
    for r in (old or {}).get("rows", []):
        if r["fact"] in ids and r["layer"] in layers:
            earlier[(r["fact"], r["layer"])] = r
        else:
            rows.append(r)
    for li, layer in enumerate(layers):
        t0 = time.perf_counter()
        for fi, f in enumerate(facts):
            suggest = fi < args.suggest and int(layer.split(".")[1]) in SUGGEST_LAYERS
            prev = earlier.get((f["id"], layer))
            if args.reuse and prev and ("suggest" in prev or not suggest):
                rows.append(prev)  # measured by an earlier run of the same code
                continue
            got = strip(edit_and_measure(s, [f], bases, layer, args.gen_tokens,
                                         score_for_suggest=suggest))
            prev = prev or {}
            if "suggest" in prev and "suggest" not in got[0]:
                got[0]["suggest"] = prev["suggest"]  # same request, same edit: keep its score
            rows += got
        summ = summarise([r for r in rows if r["layer"] == layer and r["fact"] in ids])
        log(f"  {layer}: {fmt_row(summ)}  ({time.perf_counter() - t0:.0f} s, "
            f"{li + 1}/{len(layers)})")
        if checkpoint is not None:
            checkpoint(sweep_summary(rows + [r for k, r in earlier.items()
                                             if k[1] not in layers[:li + 1]], s.layer))
    return sweep_summary(rows, s.layer)


def sweep_summary(rows: list[dict], default_layer: str) -> dict:
    """Per layer: the mean over every fact measured there, and over the facts measured at
    every layer (the fair comparison between layers; the best layer is picked on it)."""
    layers = sorted({r["layer"] for r in rows}, key=lambda x: int(x.split(".")[1]))
    facts_at = {layer: {r["fact"] for r in rows if r["layer"] == layer} for layer in layers}
    common = set.intersection(*facts_at.values()) if facts_at else set()
    per_layer = {layer: summarise([r for r in rows if r["layer"] == layer]) for layer in layers}
    per_common = {layer: summarise([r for r in rows if r["layer"] == layer and r["fact"] in common])
                  for layer in layers} if common else {}
    # the best score; among equal scores the smaller essence drift
    ranked = per_common or per_layer
    best = max(ranked, key=lambda k: (round(ranked[k]["score"], 9), -ranked[k]["essence_kl"]))
    picks = {}
    for fid in sorted({r["fact"] for r in rows if "suggest" in r}):
        cand = [r for r in rows if r["fact"] == fid and "suggest" in r]
        top = max(cand, key=lambda r: r["suggest"]["score"])
        picks[fid] = {"layer": top["layer"], "score": top["suggest"],
                      "ranking": [r["layer"] for r in sorted(cand, key=lambda r: -r["suggest"]["score"])]}
    return {"layers": layers, "common_facts": sorted(common), "per_layer": per_layer,
            "per_layer_common": per_common, "best": best, "suggest": picks, "rows": rows,
            "default_layer": default_layer}


def check_suggest(s, facts, picks: dict, layers: list[str], log) -> dict:
    """session.suggest itself on one fact (over the sweep's layers among its defaults): does
    it pick what the sweep's scores say?"""
    f = facts[0]
    req = s.request(fact_of(f))
    t0 = time.perf_counter()
    ranked = s.suggest(req, layers=layers, paraphrases=f["paraphrases"][:1],
                       neighbours=[(f["neighbours"][0]["prompt"], f["neighbours"][0]["true"])])
    sec = time.perf_counter() - t0
    got = [r["layer"] for r in ranked]
    log(f"  session.suggest on {f['id']}: {got[0]} in {sec:.0f} s (sweep's scores: "
        f"{picks.get(f['id'], {}).get('layer')})")
    return {"fact": f["id"], "ranking": got, "seconds": sec, "layers": layers,
            "same_as_sweep": picks.get(f["id"], {}).get("ranking", [])[:len(got)] == got}


def pick_together(facts: list[dict], n: int) -> list[dict]:
    """n facts with distinct subjects, none a neighbour of another (so one edit's neighbours
    are not also edited)."""
    chosen: list[dict] = []
    for f in round_robin(facts):
        subjects = {c["subject"] for c in chosen} | {n["subject"] for c in chosen
                                                     for n in c["neighbours"]}
        mine = {f["subject"]} | {n["subject"] for n in f["neighbours"]}
        if f["subject"] in subjects or any(c["subject"] in mine for c in chosen):
            continue
        chosen.append(f)
        if len(chosen) == n:
            break
    return chosen


def part_together(s, facts, bases, args, layer: str, log, done: list[dict]) -> dict:
    """``args.together`` facts in one request at ``layer``, against the same facts edited one
    at a time (rows of the sweep reused where it measured them)."""
    chosen = pick_together(facts, args.together)
    rows = strip(edit_and_measure(s, chosen, bases, layer, args.gen_tokens))
    known = {(r["fact"], r["layer"]): r for r in done}
    single = []
    for f in chosen:
        single += ([known[(f["id"], layer)]] if (f["id"], layer) in known
                   else strip(edit_and_measure(s, [f], bases, layer, args.gen_tokens)))
    out = {"layer": layer, "facts": [f["id"] for f in chosen], "together": summarise(rows),
           "single": summarise(single), "rows": rows, "single_rows": single}
    log(f"  {len(chosen)} together at {layer}: {fmt_row(out['together'])}")
    log(f"  the same one at a time:        {fmt_row(out['single'])}")
    return out


#: settings tried by the grid (name → request options); --grid picks some by name
GRID = [
    ("defaults", {}),
    ("steps 40", {"value_options": {"steps": 40}}),
    ("lr 0.1", {"value_options": {"lr": 0.1}}),
    ("lr 0.5", {"value_options": {"lr": 0.5}}),
    ("lr 1", {"value_options": {"lr": 1.0}}),
    ("six prefixes", {"prefixes": SIX_PREFIXES}),
    ("six prefixes, lr 1", {"prefixes": SIX_PREFIXES, "value_options": {"lr": 1.0}}),
    ("six prefixes, lr 0.5 (the defaults before)",
     {"prefixes": SIX_PREFIXES, "value_options": {"lr": 0.5}}),
    ("kl 0", {"value_options": {"kl": 0.0}}),
    ("kl 1", {"value_options": {"kl": 1.0}}),
    ("decay 0", {"value_options": {"decay": 0.0}}),
    ("decay 2", {"value_options": {"decay": 2.0}}),
    ("clamp 1", {"value_options": {"clamp": 1.0}}),
    ("stop_loss 0.01", {"value_options": {"stop_loss": 0.01}}),
    ("ridge 1e-1", {"ridge": 1e-1}),
    ("ridge 1e-5", {"ridge": 1e-5}),
    ("prefixes: '' only", {"prefixes": ("",)}),
    ("prefixes: '' ×5 + the others", {"prefixes": ("",) * 5 + PREFIXES[1:]}),
    ("stats_samples 64", {"stats_samples": 64}),
    ("key_mode mean", {"key_mode": "mean"}),
    ("essence_tokens 0", {"value_options": {"essence_tokens": 0}}),
    ("+ subject-first phrasing", {"subject_first": True}),
    ("key_mode split", {"key_mode": "split"}),
    ("no document start", {"document_start": False}),
    ("key_mode split, no document start (the old defaults)",
     {"key_mode": "split", "document_start": False}),
    ("+ opening", {"value_options": {"opening": 1}}),
    ("rank 1 per fact", {"rank": 1}),
    ("key_mode split, rank 1 per fact", {"key_mode": "split", "rank": 1}),
]
GRID_DEFAULT = ("defaults", "steps 40", "kl 1", "clamp 1", "ridge 1e-1", "prefixes: '' only")


def part_grid(s, facts, bases, args, layer: str, log, done: list[dict],
              old: dict | None = None) -> dict:
    """Settings of the request on the first ``args.grid_facts`` facts at ``layer`` (no
    fluency); the defaults reuse the sweep's rows. Rows of an earlier grid at the same layer
    and facts are kept."""
    sub = ([f for f in facts if f["id"] in args.grid_ids] if args.grid_ids
           else facts[:args.grid_facts])
    names = list(args.grid) if args.grid else list(GRID_DEFAULT)
    out = {"layer": layer, "facts": [f["id"] for f in sub], "rows": {}}
    if old and old.get("layer") == layer and old.get("facts") == out["facts"]:
        out["rows"].update(old["rows"])
    known = {(r["fact"], r["layer"]): r for r in done}
    for name, opts in GRID:
        if name not in names:
            continue
        rows = []
        for f in sub:
            if not opts and (f["id"], layer) in known:
                rows.append(known[(f["id"], layer)])
                continue
            rows += edit_and_measure(s, [f], bases, layer, args.gen_tokens, fluency=False,
                                     **opts)
        out["rows"][name] = {"options": {k: list(v) if isinstance(v, tuple) else v
                                         for k, v in opts.items()},
                             **summarise(rows)}
        log(f"  {name:>18}: {fmt_row(out['rows'][name])}")
    return out


def code_version() -> str:
    """The commit of the rewidget code this run imports (``REWIDGET_CODE`` names a snapshot
    that is not a git checkout), with "+changes" when its rewidget/ differs from that commit."""
    import subprocess

    if os.environ.get("REWIDGET_CODE"):
        return os.environ["REWIDGET_CODE"]
    root = Path(sys.modules["rewidget"].__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "rewidget"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"unknown ({root})"
    return head + (" +changes" if dirty else "")


def uptime() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def part_speed(s, facts, args, log) -> dict:
    out: dict = {"load_before": uptime(), "threads": torch.get_num_threads(),
                 "cpus": os.cpu_count()}
    loads = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        load(args.model)
        loads.append(time.perf_counter() - t0)
    out["model_load"] = loads
    f = facts[0]
    req = s.request(fact_of(f))
    s.compute_edit(req)  # statistics into memory (from the disk cache)
    edits, values = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        e = s.compute_edit(req)
        s.apply(e)
        edits.append(time.perf_counter() - t0)
        values.append(e.report["seconds"]["value"])
        s.reset()
    out["edit"], out["edit_value"], out["edit_layer"] = edits, values, req.layer
    s.apply(s.compute_edit(req))
    nb = [(n["prompt"], n["true"]) for n in f["neighbours"][:2]]
    panels, firsts = [], []
    for _ in range(args.repeats):
        s._panel_before.clear()  # a new request: the before side (W₀) is computed too
        t0 = time.perf_counter()
        s.panel(req, f["paraphrases"][:2], nb, f["essence"][:1])
        firsts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()  # after an edit: the app's case, the before side is kept
        s.panel(req, f["paraphrases"][:2], nb, f["essence"][:1])
        panels.append(time.perf_counter() - t0)
    s.reset()
    out["panel"], out["panel_first"] = panels, firsts
    out["panel_prompts"] = 1 + 2 + len(nb) + 1
    out["load_after"] = uptime()
    log(f"  load {statistics.median(loads):.1f} s, edit {statistics.median(edits):.2f} s "
        f"(v* {statistics.median(values):.2f} s), panel {statistics.median(panels):.2f} s; "
        f"load average {out['load_before']} → {out['load_after']}")
    return out


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not isinstance(v, torch.Tensor)} for r in rows]


# -- report -------------------------------------------------------------------------------------
def pct(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}"


def fmt_row(m: dict) -> str:
    return (f"n={m['n']} eff {pct(m['efficacy'])}% para {pct(m['paraphrase'])}% "
            f"neigh {pct(m['neighbourhood'])}% score {pct(m['score'])} "
            f"KL {m.get('essence_kl', math.nan):.2f} ess.changed {pct(m.get('essence_changed'))}% "
            f"edit {m.get('t_edit', math.nan):.1f} s")


def render(res: dict) -> str:
    L = ["# Fact edits in SmolLM2-135M-Instruct: a CounterFact-style evaluation", "",
         "Written by `benchmarks/text_edits.py` from `text_edits.json`; facts from "
         "`benchmarks/data/facts.json` (our own, nothing downloaded). Scores as in CounterFact "
         "(ROME): efficacy = new object preferred over the true one after the edit prompt "
         "(mean log-prob per token, `session.compare`), paraphrase = the same on prompts that "
         "name the subject in other words, neighbourhood = other subjects of the same relation "
         "still prefer their true object over the new one, score = harmonic mean of the three. "
         "Essence: KL(before ‖ after) of the next token on prompts about the subject's other "
         "properties (nats) and the share of their 8-token greedy completions that changed. "
         "Fluency: ROME's weighted 2/3-gram entropy (bits) of 30-token generations from the "
         "edit prompt and paraphrases (greedy; sampled with top-p 0.9), before → after. Times "
         "are medians; an edit = keys + v* + solve (statistics cached) + install.", ""]
    env = res.get("env", {})
    if env:
        L += [f"Code: rewidget {res.get('code', env.get('code', '?'))}. Machine: "
              f"{env.get('cpus')} CPUs ({env.get('threads')} torch threads), shared; load "
              f"average at the start of the last run {env.get('load')}; torch "
              f"{env.get('torch')}.", ""]
    kn = res.get("known")
    if kn:
        L += ["## The facts the model knows", "",
              f"{kn['candidates']} candidate facts; {kn['known_prompt']} have the true object as "
              f"the greedy next token; {len(kn['facts'])} of those also have ≥ "
              f"{kn['min_neighbours']} known neighbours and are kept ({kn['neighbours']} known "
              f"neighbour prompts, {kn['paraphrases']} paraphrases, {kn['essence']} essence "
              "prompts)."]
        base = list(res.get("baseline", {}).values())
        if base:
            L[-1] += (f" Before editing ({len(base)} facts measured), the new object is "
                      f"preferred on {pct(mean(b['efficacy_before'] for b in base))}% of edit "
                      f"prompts and {pct(mean(b['paraphrase_before'] for b in base))}% of "
                      "paraphrases (per fact, then averaged); neighbours prefer their true object "
                      f"on {pct(mean(b['neighbourhood_before'] for b in base))}%. Fluency before: "
                      f"greedy {mean(b['fluency_greedy'] for b in base):.2f}, sampled "
                      f"{mean(b['fluency_sampled'] for b in base):.2f} bits.")
        L += ["", "| relation | kept / candidates |", "|---|---|"]
        for rel, (k, c) in kn["by_relation"].items():
            L.append(f"| {rel} | {k} / {c} |")
        L += ["", "<details><summary>Kept facts (subject: prompt → true → new)</summary>", ""]
        for f in kn["facts"]:
            L.append(f"- `{f['id']}`: {f['prompt']} →{f['true']} →{f['new']} "
                     f"({f['neighbours']} neighbours)")
        L += ["", "</details>", ""]
    sw = res.get("sweep")
    if sw:
        def table(per: dict, title: str) -> None:
            nonlocal L
            L += [title, "",
                  "| layer | n | efficacy | paraphrase | neighbourhood | score | p(new) | essence "
                  "KL | essence changed | fluency greedy | fluency sampled | mentions new | "
                  "‖ΔW‖/‖W‖ | v* s | edit s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for layer, m in per.items():
                i = layer.split(".")[1]
                mark = " **best**" if layer == sw["best"] else ""
                mark += " (default)" if layer == sw.get("default_layer") else ""
                L.append(f"| {i}{mark} | {m['n']} | {pct(m['efficacy'])}% | "
                         f"{pct(m['paraphrase'])}% | {pct(m['neighbourhood'])}% | "
                         f"{pct(m['score'])} | {m['p_new']:.2f} | {m['essence_kl']:.3f} | "
                         f"{pct(m['essence_changed'])}% | "
                         f"{m.get('fluency_greedy', math.nan):.2f} | "
                         f"{m.get('fluency_sampled', math.nan):.2f} | "
                         f"{pct(m.get('mentions_new'))}% | {m['update']:.3f} | "
                         f"{m['t_value']:.1f} | {m['t_edit']:.1f} |")
            L.append("")

        common = sw.get("per_layer_common") or {}
        if common:
            table(common, f"## Per layer, the {len(sw['common_facts'])} facts measured at every "
                          "layer (one fact per edit)")
        if any(m["n"] != len(sw.get("common_facts", [])) for m in sw["per_layer"].values()):
            table({k: m for k, m in sw["per_layer"].items()
                   if m["n"] != len(sw.get("common_facts", []))},
                  "## Layers measured on more facts (all facts measured there)")
        deep = max(sw["per_layer"], key=lambda k: sw["per_layer"][k]["n"])
        rows_deep = [r for r in sw["rows"] if r["layer"] == deep]
        rel_of = {f["id"]: f["id"].split(":")[0] for f in (kn or {}).get("facts", [])}
        rels = sorted({rel_of.get(r["fact"], r["fact"].split(":")[0]) for r in rows_deep})
        L += [f"### Per relation at layer {deep.split('.')[1]} ({len(rows_deep)} facts)", "",
              "| relation | n | efficacy | paraphrase | neighbourhood | essence KL | failed "
              "efficacy |", "|---|---|---|---|---|---|---|"]
        for rel in rels:
            rr = [r for r in rows_deep if r["fact"].split(":")[0] == rel]
            failed = [r["fact"].split(":")[1] for r in rr if r["efficacy"] < 1]
            L.append(f"| {rel} | {len(rr)} | {pct(mean(r['efficacy'] for r in rr))}% | "
                     f"{pct(mean(r['paraphrase'] for r in rr))}% | "
                     f"{pct(mean(r['neighbourhood'] for r in rr))}% | "
                     f"{mean(r['essence_kl'] for r in rr):.3f} | {', '.join(failed) or '—'} |")
        L.append("")
        if sw.get("suggest"):
            L += ["### The session's suggestion", "",
                  "`session.suggest` solves the request at each candidate layer (by default "
                  f"{', '.join(str(i) for i in SUGGEST_LAYERS)}) and ranks them by "
                  "`score_edit` (generalisation on held-out prefixes and one paraphrase × "
                  "specificity on one neighbour − drift on held-out text / 0.5). The sweep "
                  "computed the same score on its own edits, at its layers among those "
                  f"defaults ({', '.join(x.split('.')[1] for x in sw['layers'] if int(x.split('.')[1]) in SUGGEST_LAYERS)}), "
                  "for the first facts:", "",
                  "| fact | suggested layer | CounterFact scores there (this fact) | sweep's best "
                  "layer (facts at every layer) | suggestion's top 3 |", "|---|---|---|---|---|"]
            rows = {(r["fact"], r["layer"]): r for r in sw["rows"]}
            for fid, p in sw["suggest"].items():
                r = rows[(fid, p["layer"])]
                got = hmean(r["efficacy"] or 1e-9, r["paraphrase"] or 1e-9,
                            r["neighbourhood"] or 1e-9)
                L.append(f"| {fid} | {p['layer'].split('.')[1]} | eff {pct(r['efficacy'])}, "
                         f"para {pct(r['paraphrase'])}, neigh {pct(r['neighbourhood'])} "
                         f"(score {pct(got)}) | {sw['best'].split('.')[1]} | "
                         f"{', '.join(x.split('.')[1] for x in p['ranking'][:3])} |")
            chk = res.get("suggest_check")
            if chk:
                L += ["", f"`session.suggest` itself on `{chk['fact']}` ranked "
                      f"{', '.join(x.split('.')[1] for x in chk['ranking'][:5])}, … in "
                      f"{chk['seconds']:.0f} s; same ranking as the sweep's scores: "
                      f"{'yes' if chk['same_as_sweep'] else 'no'}."]
            L.append("")
    tg = res.get("together")
    if tg:
        L += [f"## {len(tg['facts'])} facts edited together (one request, layer "
              f"{tg['layer'].split('.')[1]})", "",
              "| | n | efficacy | paraphrase | neighbourhood | score | essence KL | essence "
              "changed | fluency greedy | fluency sampled | edit s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in (("together", tg["together"]), ("one at a time", tg["single"])):
            L.append(f"| {name} | {m['n']} | {pct(m['efficacy'])}% | {pct(m['paraphrase'])}% | "
                     f"{pct(m['neighbourhood'])}% | {pct(m['score'])} | {m['essence_kl']:.3f} | "
                     f"{pct(m['essence_changed'])}% | {m.get('fluency_greedy', math.nan):.2f} | "
                     f"{m.get('fluency_sampled', math.nan):.2f} | {m['t_edit']:.1f} |")
        L += ["", "Facts: " + ", ".join(f"`{x}`" for x in tg["facts"]) + ".", ""]
    for key in sorted(k for k in res if k == "grid" or k.startswith("grid_")):
        gr = res[key]
        L += [f"## Options (layer {gr['layer'].split('.')[1]}, {len(gr['facts'])} facts, one "
              f"at a time; `{key}`)", ""] + ([gr["note"], ""] if gr.get("note") else []) + [
              "Facts: " + ", ".join(f"`{x}`" for x in gr["facts"]) + ".", "",
              "| setting | efficacy | paraphrase | neighbourhood | score | p(new) | essence KL "
              "| essence changed | ‖ΔW‖/‖W‖ | edit s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in gr["rows"].items():
            L.append(f"| {name} | {pct(m['efficacy'])}% | {pct(m['paraphrase'])}% | "
                     f"{pct(m['neighbourhood'])}% | {pct(m['score'])} | {m['p_new']:.2f} | "
                     f"{m['essence_kl']:.3f} | {pct(m['essence_changed'])}% | {m['update']:.3f} "
                     f"| {m['t_edit']:.1f} |")
        L.append("")
    sp = res.get("speed")
    if sp:
        med = statistics.median
        L += ["## Speed on these CPUs", "",
              f"Medians of {len(sp['edit'])} repeats; load average {sp['load_before']} before, "
              f"{sp['load_after']} after ({sp['threads']} torch threads, {sp['cpus']} CPUs, "
              "shared with other work).", "",
              "| step | median | all | target |", "|---|---|---|---|",
              f"| model load (`load('smollm2')`, GGUF dequantised) | {med(sp['model_load']):.1f} s "
              f"| {', '.join(f'{x:.1f}' for x in sp['model_load'])} | ≤ 15 s |",
              f"| one edit at {sp['edit_layer']} (keys + v* + solve + install, statistics "
              f"cached) | {med(sp['edit']):.2f} s | {', '.join(f'{x:.2f}' for x in sp['edit'])} "
              "| ≤ 5 s |",
              f"| … of which v* | {med(sp['edit_value']):.2f} s | "
              f"{', '.join(f'{x:.2f}' for x in sp['edit_value'])} | |",
              f"| the panel after an edit ({sp['panel_prompts']} prompts: completions and "
              f"p(old), p(new) now; the before side, W₀, kept from the first) | "
              f"{med(sp['panel']):.2f} s | {', '.join(f'{x:.2f}' for x in sp['panel'])} "
              "| ≤ 2 s |",
              *([f"| … the first panel of a request (before and now) | "
                 f"{med(sp['panel_first']):.2f} s | "
                 f"{', '.join(f'{x:.2f}' for x in sp['panel_first'])} | |"]
                if "panel_first" in sp else []), ""]
    L += ["## Reference: published CounterFact figures (other, larger models)", "",
          "Not comparable one to one: GPT-2 XL has 1.5B and GPT-J 6B parameters (ours 135M, "
          "4-bit weights); CounterFact's 21,919 records have their own prompts (paraphrases "
          "preceded by generated text) and its neighbours share the true object; MEMIT's row "
          "is 10,000 edits at once over several layers. GE = generation entropy × 100.", "",
          "| model | efficacy ES | paraphrase PS | neighbourhood NS | GE |", "|---|---|---|---|---|"]
    for name, es, ps, ns, ge in REFERENCE:
        L.append(f"| {name} | {es:.1f} | {ps:.1f} | {ns:.1f} | {ge:.1f} |")
    L += ["", "Sources: Meng et al. 2022 (ROME), Table 4; Meng et al. 2023 (MEMIT), Table 1; "
          "quoted from memory of those tables (the papers were found, their tables could not be "
          "read back here), so check before citing them elsewhere.", ""]
    return "\n".join(L)


# -- main -----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=OUT, help="writes <out>.json and <out>.md")
    ap.add_argument("--parts", nargs="+", default=["sweep", "together", "grid", "speed"],
                    choices=["sweep", "together", "grid", "speed"])
    ap.add_argument("--facts", type=int, default=0, help="first N known facts (0: all)")
    ap.add_argument("--layers", type=int, nargs="+", default=list(LAYERS))
    ap.add_argument("--min-neighbours", type=int, default=3)
    ap.add_argument("--keep-unknown", action="store_true",
                    help="keep every candidate (plumbing runs on 'tiny-text')")
    ap.add_argument("--gen-tokens", type=int, default=30)
    ap.add_argument("--suggest", type=int, default=5,
                    help="score the suggestion's layers for the first N facts")
    ap.add_argument("--check-suggest", action="store_true",
                    help="also run session.suggest itself on the first fact")
    ap.add_argument("--together", type=int, default=10)
    ap.add_argument("--together-layer", type=int, default=None,
                    help="layer for the joint edit (default: the sweep's best)")
    ap.add_argument("--grid-facts", type=int, default=5)
    ap.add_argument("--grid-layer", type=int, default=None,
                    help="layer for the options grid (default: the sweep's best)")
    ap.add_argument("--grid", nargs="*", default=None,
                    help=f"names of grid rows (default {list(GRID_DEFAULT)}; all: "
                         f"{[g for g, _ in GRID]})")
    ap.add_argument("--grid-ids", nargs="*", default=None,
                    help="fact ids for the grid (instead of the first --grid-facts)")
    ap.add_argument("--grid-name", default="grid",
                    help="JSON section of this grid (several grids can sit side by side)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep rows an earlier run measured (same fact and layer) instead of "
                         "measuring them again; only for runs of the same code")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared 2-core machine 2 threads ran slower)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    res = json.loads(json_path.read_text()) if json_path.is_file() else {}
    torch.set_num_threads(args.threads)
    res["env"] = {"load": uptime(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "code": code_version()}
    if res.get("code") and res["code"] != res["env"]["code"]:
        log(f"note: {json_path} holds results of {res['code']}; this run is {res['env']['code']}")
    res["code"] = res["env"]["code"]
    log(f"loading {args.model} (load average {uptime()}, {args.threads} torch threads)")
    s = TextRewriteSession(args.model)
    log(f"loaded; default layer {s.layer}")

    data = json.loads(args.data.read_text(encoding="utf-8"))["facts"]
    kept, check = known_facts(s, data, args.min_neighbours, args.keep_unknown)
    kept = round_robin(kept)
    known_prompt = sum(c["known"] for c in check.values())
    log(f"{len(data)} candidates, {known_prompt} known, {len(kept)} kept with ≥ "
        f"{args.min_neighbours} known neighbours")
    facts = kept[:args.facts] if args.facts else kept
    by_id = {f["id"]: f for f in kept}
    baseline_rows = res.setdefault("baseline", {})
    bases = Bases(lambda fid: baseline(s, by_id[fid], args.gen_tokens), baseline_rows)
    rel_all = Counter(f["relation"] for f in data)
    rel_kept = Counter(f["relation"] for f in kept)
    res["known"] = {
        "candidates": len(data), "known_prompt": known_prompt,
        "min_neighbours": args.min_neighbours, "check": check,
        "by_relation": {r: (rel_kept[r], rel_all[r]) for r in rel_all},
        "neighbours": sum(len(f["neighbours"]) for f in kept),
        "paraphrases": sum(len(f["paraphrases"]) for f in kept),
        "essence": sum(len(f["essence"]) for f in kept),
        "facts": [{"id": f["id"], "prompt": f["prompt"], "true": f["true"], "new": f["new"],
                   "neighbours": len(f["neighbours"])} for f in kept]}

    touched = {"env", "code", "known", "baseline"}

    def save(*sections: str) -> None:
        """Write this run's sections into the JSON as it is on disk now (another run may have
        written other sections meanwhile), under a lock, and render the markdown from it."""
        import fcntl

        touched.update(sections)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        import tempfile

        with open(Path(tempfile.gettempdir()) / f"{json_path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            disk = json.loads(json_path.read_text()) if json_path.is_file() else {}
            for k in touched:
                if k == "baseline":
                    disk[k] = {**disk.get(k, {}), **res[k]}
                elif k in res:
                    disk[k] = res[k]
            tmp = json_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(disk, indent=1, ensure_ascii=False, default=str))
            tmp.replace(json_path)
            md_path.write_text(render(disk))

    if "sweep" in args.parts:
        log(f"sweep: {len(facts)} facts × layers {args.layers}")
        res["sweep"] = part_sweep(s, facts, bases, args, log, res.get("sweep"),
                                  lambda part: (res.__setitem__("sweep", part), save("sweep")))
        log(f"best layer {res['sweep']['best']}")
        if args.check_suggest:
            layers = [x for x in res["sweep"]["layers"]
                      if int(x.split(".")[1]) in SUGGEST_LAYERS]
            res["suggest_check"] = check_suggest(s, facts, res["sweep"]["suggest"], layers, log)
        save("sweep", "suggest_check")
    best = res.get("sweep", {}).get("best", s.layer)
    if "together" in args.parts:
        layer = layer_name(args.together_layer) if args.together_layer is not None else best
        log(f"together: {args.together} facts at {layer}")
        res["together"] = part_together(s, kept, bases, args, layer, log,
                                        res.get("sweep", {}).get("rows", []))
        save("together")
    if "grid" in args.parts:
        layer = layer_name(args.grid_layer) if args.grid_layer is not None else best
        log(f"grid {args.grid_name} at {layer} on "
            f"{args.grid_ids or f'the first {args.grid_facts} facts'}")
        res[args.grid_name] = part_grid(s, kept, bases, args, layer, log,
                                        res.get("sweep", {}).get("rows", []),
                                        res.get(args.grid_name))
        save(args.grid_name)
    if "speed" in args.parts:
        log("speed")
        res["speed"] = part_speed(s, facts, args, log)
        save("speed")
    save()
    log(f"wrote {md_path} and {json_path}")
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
