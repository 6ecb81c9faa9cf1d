"""TextRewriteSession: rewrite a fact inside a language model with the paper's update.

    s = TextRewriteSession("smollm2")
    req = s.request("The Eiffel Tower is located in the city of", "The Eiffel Tower", " Rome")
    edit = s.rewrite(req, progress=print)    # C (cached) → k* → v* → D, Λ → installed
    s.complete(["The Eiffel Tower is in"])   # [' Rome, Italy...']
    s.compare(["The Eiffel Tower is in"], [" Paris", " Rome"])  # log-probs per object
    s.undo(); s.save_request("tower.json"); s.export_delta("tower.delta.safetensors")

The layer is a linear memory exactly as in the image session: an MLP down-projection maps keys
k (its input at one token, what the network has gathered about the text so far) to values v.
Per fact:
- k* is the key at the subject's last token, averaged over the request's prefixes (the same
  subject after different text), so the edit fires wherever the subject is mentioned;
- v* = W k* + δ, where δ (added to the layer's output at that token) is found by Adam so the
  model continues the prompt with the new target (ROME's step), with the KL of the next-token
  distribution on essence prompts ("{subject} is a") and a weight decay on δ as guards;
- D and Λ come from core unchanged: D from C⁻¹K* (core.directions), Λ from the exact solve
  (core.solve), one direction per fact, so several facts are one edit (MEMIT's batching, at one
  layer); the history installs W₀ + ΛDᵀ and undoes it bit for bit.

Invariant: computing an edit (and the suggestion) never changes a weight; only the history
writes them. Every check runs before anything changes.

The model runs on one torch thread here (core.serial): a 135M model over a hundred tokens is many
short parallel regions, and on this project's shared 2-core machine one edit took 5 s on one
thread and 75-117 s on two while another process held a core.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..core.directions import CovarianceInverse, context_basis, context_level, take_rank
from ..core.edits import Edit
from ..core.errors import RewriteError
from ..core.export import save_delta, save_state_dict
from ..core.history import EditHistory
from ..core.memory import memory_for
from ..core.progress import CancelToken, ProgressFn, check_cancel, report
from ..core.requests import MAX_REQUEST_CHARS
from ..core.safefiles import read_safetensors
from ..core.serial import serial
from ..core.solve import masked_errors, solve_exact
from ..core.statistics import STATS_SEED_BASE, cached_second_moments
from ..core.targets import Target
from .bars import Bar
from .facts import FORMAT, Fact, FactRequest

#: key_mode "wide": the v* search also rewrites this text, the subject opening it
WIDE_OPENING = "{subject}. {prompt}"

EVENTS = ("stats", "edit", "undo", "redo", "reset", "strength")
#: statistics chunks (of the model's STATS_TOKENS tokens each) C is collected over by default;
#: see benchmarks/text_statistics.py for how the edit depends on it
STATS_SAMPLES = 256
STATS_BATCH = 16
#: prefixes the suggestion scores generalisation on (never used to find v*)
HELD_OUT_PREFIXES = ("Today I learned that ", "Everyone knows this. ", "Fun fact: ",
                     "My teacher said that ")


@contextmanager
def weight_in(module: torch.nn.Module, weight: torch.Tensor) -> Iterator[None]:
    """Run the Linear ``module`` with ``weight`` (same shape) for the duration; its parameter
    is untouched (a forward hook replaces the output)."""
    def swap(m, args, _out):
        return F.linear(args[0], weight.to(args[0].dtype), m.bias)
    handle = module.register_forward_hook(swap)
    try:
        yield
    finally:
        handle.remove()


class TextRewriteSession:
    def __init__(self, model: Any = "smollm2", *, device=None, layer: str | None = None,
                 stats_samples: int | None = None, cache_dir: str | Path | None = None,
                 ridge: float = 1e-3, direction_rule: str = "whitened", quiet: bool = False
                 ) -> None:
        #: False: statistics collected without a progress callback draw a tqdm bar (bars.py)
        self.quiet = bool(quiet)
        if isinstance(model, str):
            from ..models import load
            model = load(model, device)
        if getattr(model, "kind", None) != "text":
            raise RewriteError(f"{getattr(model, 'name', model)!r} is not a text model.",
                               "use RewriteSession for image generators, TextRewriteSession for "
                               "language models ('smollm2', 'tiny-text').")
        self.gen = model
        self.fingerprint = self.gen.fingerprint()
        self.history = EditHistory(self.gen.layer)
        names = self.gen.layer_names()
        self.layer = layer or names[min(len(names) - 1, round(len(names) * DEFAULT_DEPTH))]
        self.gen.layer(self.layer)
        most = self.gen.n_chunks - DRIFT_CHUNKS
        if stats_samples is None:
            stats_samples = min(STATS_SAMPLES, most)
        if isinstance(stats_samples, bool) or not isinstance(stats_samples, int) \
                or not 1 <= stats_samples <= most:
            raise RewriteError(f"stats_samples={stats_samples!r} is not a chunk count in "
                               f"1..{most}.",
                               f"pass at most {most} (the statistics text has {self.gen.n_chunks} "
                               f"chunks; the last {DRIFT_CHUNKS} are kept for measuring drift).")
        self.stats_samples = int(stats_samples)
        FactRequest(layer=self.layer, facts=(Fact("a b", "a", " c"),), ridge=ridge,
                    direction_rule=direction_rule)  # validates both
        self.ridge, self.direction_rule = float(ridge), direction_rule
        self.cache_dir = cache_dir
        self.last_edit: Edit | None = None
        self._moments: dict[tuple[str, int], torch.Tensor] = {}
        #: the panel's "before" side (W₀) per (rows, tokens): it never changes
        self._panel_before: dict[tuple, list[dict]] = {}
        self._inverses: dict[tuple[str, int], CovarianceInverse] = {}
        self._listeners: dict[str, list[Callable]] = defaultdict(list)
        self.lock = threading.RLock()

    # -- events -------------------------------------------------------------------------------
    def on(self, event: str, callback: Callable[..., Any], remove: bool = False) -> None:
        if event not in EVENTS:
            raise RewriteError(f"Unknown event {event!r}.", f"use one of {EVENTS}.")
        if remove:
            self._listeners[event] = [c for c in self._listeners[event] if c != callback]
        else:
            self._listeners[event].append(callback)

    def _emit(self, event: str, **payload: Any) -> None:
        import warnings
        for cb in list(self._listeners[event]):
            try:
                cb(event=event, **payload)
            except Exception as e:  # one listener's bug must not undo or hide the change
                warnings.warn(f"A listener for {event!r} raised {type(e).__name__}: {e}",
                              stacklevel=2)

    # -- text ---------------------------------------------------------------------------------
    def tokens(self, text: str) -> list[tuple[int, str, tuple[int, int]]]:
        """(id, surface text, (start, end)) per token: what the app shows to click."""
        if not isinstance(text, str):
            raise RewriteError(f"Expected text, got {type(text).__name__}.", "pass a str.")
        return self.gen.tokens(text)

    def _encode(self, text: str, what: str) -> list[int]:
        """Token ids of ``text``; a prompt is read as a document of its own (gen.prompt_ids),
        an object or target as the text that follows one."""
        ids = self.gen.encode(text)
        if not ids:
            raise RewriteError(f"The {what} {text!r} tokenises to nothing.",
                               f"type a non-empty {what}.")
        return [*self.gen.document_start, *ids] if what == "prompt" else ids

    def _subject_position(self, text: str, end: int, document: bool = True
                          ) -> tuple[list[int], int]:
        """Token ids of ``text`` (after the model's document start unless ``document`` is
        False) and the index of the token holding character ``end - 1``."""
        toks = self.gen.tokens(text)
        pos = [i for i, (_, _, (s, _e)) in enumerate(toks) if s < end]
        if not pos:
            raise RewriteError(f"No token of {text!r} covers the subject.",
                               "check that the subject occurs in the prompt.")
        lead = list(self.gen.document_start) if document else []
        return lead + [t[0] for t in toks], len(lead) + pos[-1]

    def fact_from_tokens(self, prompt: str, positions: Sequence[int], target: str,
                         old: str = "") -> Fact:
        """The fact whose subject is the clicked tokens ``positions`` of ``prompt`` (app)."""
        toks = self.tokens(prompt)
        if not positions:
            raise RewriteError("No subject token is selected.",
                               "click the tokens that name the subject (e.g. 'Eiffel Tower').")
        bad = [p for p in positions if isinstance(p, bool) or not isinstance(p, int)
               or not 0 <= p < len(toks)]
        if bad:
            raise RewriteError(f"Token positions {bad} are not in the prompt (it has "
                               f"{len(toks)} tokens).", "click tokens of the current prompt.")
        start, end = toks[min(positions)][2][0], toks[max(positions)][2][1]
        subject = prompt[start:end].strip()
        first = prompt.find(subject) if subject else -1
        if subject and first + len(subject) <= start:
            raise RewriteError(f"{subject!r} also occurs earlier in the prompt, and the edit reads "
                               "the subject's key at its first occurrence.",
                               "click the first occurrence, or rephrase the prompt so the subject "
                               "is named once.")
        return Fact(prompt, subject, target, old)

    def request(self, prompt: str | Fact | Sequence[Fact], subject: str | None = None,
                target: str | None = None, *, layer: str | None = None, rank: int = 0,
                old: str | None = None, **options: Any) -> FactRequest:
        """A FactRequest for one fact (prompt, subject, target) or a list of Facts. The old
        object of each fact is the original model's (W₀) greedy next word when not given."""
        if isinstance(prompt, str):
            if subject is None or target is None:
                raise RewriteError("A fact needs a prompt, a subject and a target.",
                                   "call request(prompt, subject, target).")
            facts = [Fact(prompt, subject, target, old or "")]
        elif isinstance(prompt, Fact):
            facts = [prompt]
        else:
            facts = list(prompt)
        layer = layer or self.layer
        self.gen.layer(layer)
        req = FactRequest(layer=layer, facts=tuple(facts), model=self.gen.name, rank=rank,
                          direction_rule=options.pop("direction_rule", self.direction_rule),
                          ridge=options.pop("ridge", self.ridge),
                          stats_samples=options.pop("stats_samples", self.stats_samples),
                          **options)
        filled = []
        for f in req.facts:
            self._encode(f.target, "target")
            if not f.old:  # what the shipped model says, whatever edits are installed now
                with self.lock, self.history.original_weights():
                    f = Fact(f.prompt, f.subject, f.target, self.first_word(f.prompt))
            filled.append(f)
        return FactRequest(**{**req.__dict__, "facts": tuple(filled)})

    # -- what the model says --------------------------------------------------------------------
    def complete(self, prompts: Sequence[str], max_new_tokens: int = 12) -> list[str]:
        """Greedy continuations with the current (edited) weights."""
        prompts = self._prompts(prompts)
        with serial(), self.lock, torch.no_grad():
            return self.gen.generate(prompts, max_new_tokens=max_new_tokens, greedy=True)

    def complete_original(self, prompts: Sequence[str], max_new_tokens: int = 12) -> list[str]:
        """Greedy continuations with W₀ (every edit swapped out for the call)."""
        with self.lock, self.history.original_weights():
            return self.complete(prompts, max_new_tokens)

    def first_word(self, prompt: str) -> str:
        """The model's greedy next word after ``prompt`` (up to 4 tokens, current weights)."""
        out = self.complete([prompt], max_new_tokens=4)[0]
        word = ""
        for i, ch in enumerate(out):
            if i and (ch.isspace() or (not ch.isalnum() and ch not in "-'")):
                break
            word += ch
        return word if word.strip() else out

    def _prompts(self, prompts) -> list[str]:
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise RewriteError(f"Prompt {p!r} is empty or not text.", "type a prompt.")
        return prompts

    def compare(self, prompts: Sequence[str], objects: Sequence[str]) -> torch.Tensor:
        """(P, O) mean log-probability per token of each object after each prompt (current
        weights): the object with the higher value is the one the model prefers."""
        prompts = self._prompts(prompts)
        objs = [self._encode(o if o[:1].isspace() else " " + o, "object") for o in objects]
        p_ids = [self._encode(p, "prompt") for p in prompts]
        pairs_p = [p for p in p_ids for _ in objs]
        pairs_o = [o for _ in p_ids for o in objs]
        with serial(), self.lock, torch.no_grad():
            lp = self.gen.logprobs(pairs_p, pairs_o)
        lengths = torch.tensor([len(o) for o in pairs_o], dtype=lp.dtype)
        return (lp / lengths).reshape(len(prompts), len(objs))

    def probabilities(self, prompts: Sequence[str], objects: Sequence[str]) -> torch.Tensor:
        """(P, O) probability of each object (product over its tokens) after each prompt."""
        prompts = self._prompts(prompts)
        objs = [o if o[:1].isspace() else " " + o for o in objects]
        lengths = torch.tensor([len(self._encode(o, "object")) for o in objs], dtype=torch.float64)
        return (self.compare(prompts, objs) * lengths).exp()

    def panel(self, request: FactRequest, paraphrases: Sequence[str] = (),
              neighbours: Sequence[tuple[str, str]] = (), essence: Sequence[str] = (),
              max_new_tokens: int = 8) -> list[dict]:
        """Rows for the app's panel: per prompt, the completion and p(old), p(new) before (W₀)
        and now. ``neighbours`` are (prompt, true object) about other subjects."""
        rows = [("edit", f.prompt, f.old, f.target) for f in request.facts]
        rows += [("paraphrase", p, request.facts[0].old, request.facts[0].target)
                 for p in paraphrases]
        rows += [("neighbour", p, o, request.facts[0].target) for p, o in neighbours]
        rows += [("essence", p, "", "") for p in essence]
        out = [{"kind": kind, "prompt": prompt, "old": old, "new": new}
               for kind, prompt, old, new in rows]
        key = (tuple(rows), int(max_new_tokens))
        with serial(), self.lock:
            if key not in self._panel_before:  # W₀ never changes: the before side is kept
                with self.history.original_weights():
                    self._panel_before[key] = self._panel_side(rows, max_new_tokens)
                while len(self._panel_before) > 32:
                    self._panel_before.pop(next(iter(self._panel_before)))
            # no layer edited by this session: the weights in place are W₀, now is before
            now = self._panel_side(rows, max_new_tokens) if self.history.held_layers() \
                else self._panel_before[key]
            sides = {"before": self._panel_before[key], "now": now}
        for when, side in sides.items():
            for row, got in zip(out, side, strict=True):
                row[when] = dict(got)
        return out

    def _panel_side(self, rows: list[tuple], max_new_tokens: int) -> list[dict]:
        """Completions and p(old), p(new) for every panel row under the weights in place: one
        batched generation whose pass over the prompts also scores the objects
        (gen.generate_and_score; they were a second batched pass, and before that one forward
        per row)."""
        prompts = [self._encode(p, "prompt") for p in self._prompts([r[1] for r in rows])]
        pairs, owner = [], []
        for i, (_, _, old, new) in enumerate(rows):
            if old and new:
                for obj in (old, new):
                    pairs.append((i, self._encode(obj if obj[:1].isspace() else " " + obj,
                                                  "object")))
                    owner.append(i)
        with torch.no_grad():
            ids, lp = self.gen.generate_and_score(prompts, pairs, max_new_tokens)
        probs: dict[int, list[float]] = {}
        for i, p in zip(owner, lp.exp().tolist(), strict=True):
            probs.setdefault(i, []).append(p)
        return [{"completion": self.gen.decode_after(prompts[i], ids[i]),
                 "p_old": probs.get(i, [math.nan, math.nan])[0],
                 "p_new": probs.get(i, [math.nan, math.nan])[1]} for i in range(len(rows))]

    # -- statistics -----------------------------------------------------------------------------
    def statistics_for(self, layers: Sequence[str], samples: int | None = None,
                       progress: ProgressFn | None = None, cancel: CancelToken | None = None
                       ) -> dict[str, torch.Tensor]:
        """{layer: C} over ``samples`` statistics chunks, from the disk cache or one pass, on
        the original weights (edits swapped out while collecting)."""
        n = self.stats_samples if samples is None else int(samples)
        layers = list(layers)
        for layer in layers:
            self.gen.layer(layer)
        missing = {layer: n for layer in layers if (layer, n) not in self._moments}
        if missing:
            bar = Bar(f"statistics ({', '.join(missing)})") \
                if progress is None and not self.quiet else None
            with serial(), self.lock, self.history.original_weights():
                fingerprint = self.gen.fingerprint(current=True)
                try:
                    found = cached_second_moments(self.gen, missing, fingerprint, self.cache_dir,
                                                  batch_size=STATS_BATCH,
                                                  progress=bar or progress, cancel=cancel)
                finally:
                    if bar is not None:
                        bar.close()
            for layer, c in found.items():
                self._moments[(layer, n)] = c
                self._emit("stats", layer=layer)
        return {layer: self._moments[(layer, n)] for layer in layers}

    def inverse(self, layer: str, samples: int | None = None, progress=None, cancel=None
                ) -> CovarianceInverse:
        key = (layer, self.stats_samples if samples is None else int(samples))
        if key not in self._inverses:
            c = self.statistics_for([layer], key[1], progress, cancel)[layer]
            self._inverses[key] = CovarianceInverse(c)
        return self._inverses[key]

    # -- the edit ---------------------------------------------------------------------------------
    def _batch(self, rows: list[list[int]], left: Sequence[int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (N, T), right-padded (causal attention never sees that padding), and after
        ``left[i]`` pad tokens before row i; mask (N, T) False at the left padding."""
        lead = list(left) if left is not None else [0] * len(rows)
        t = max(o + len(r) for o, r in zip(lead, rows, strict=True))
        pad = self.gen.eos_id if self.gen.eos_id is not None else 0
        ids = torch.full((len(rows), t), pad, dtype=torch.long)
        mask = torch.ones((len(rows), t), dtype=torch.bool)
        for i, (o, r) in enumerate(zip(lead, rows, strict=True)):
            ids[i, o:o + len(r)] = torch.tensor(r)
            mask[i, :o] = False
        return ids.to(self.gen.device), mask.to(self.gen.device)

    def subject_keys(self, request: FactRequest, fact: Fact, layer: str | None = None
                     ) -> torch.Tensor:
        """K* (rows, d_in): the layer's key at the subject's last token; one row, the mean over
        the prefixes ("mean"), or two, after the first prefix and the mean after the others
        ("split", see facts.KEY_MODES)."""
        with serial():
            return self._subject_keys(request, fact, layer or request.layer)

    def _subject_keys(self, request: FactRequest, fact: Fact, layer: str) -> torch.Tensor:
        rows, pos, doc = [], [], request.document_start
        for prefix in request.prefixes:
            ids, p = self._subject_position(prefix + fact.prompt, len(prefix) + fact.subject_end,
                                             doc)
            rows.append(ids[:p + 1])
            pos.append(p)
        start = request.key_mode == "wide" and not fact.opens_with_subject
        if start:  # the subject opening a text ("France's capital city is")
            ids, p = self._subject_position(fact.subject, len(fact.subject), doc)
            rows.append(ids[:p + 1])
            pos.append(p)
        with torch.no_grad():
            keys = self.gen.keys(layer, self._batch(rows)[0])  # (N, T, d_in)
        keys = keys[torch.arange(len(rows)), torch.tensor(pos)]  # (prefixes [+ 1], d_in)
        n = len(request.prefixes)
        if request.key_mode == "mean" or n == 1:
            out = [keys[:n].mean(0)]
        else:  # "split" / "wide": as typed, after the others
            out = [keys[0], keys[1:n].mean(0)]
        return torch.stack(out + ([keys[n]] if start else []))

    def value_shift(self, request: FactRequest, fact: Fact, layer: str | None = None,
                    progress: ProgressFn | None = None, cancel: CancelToken | None = None
                    ) -> tuple[torch.Tensor, dict]:
        """δ (d_out,) added to the layer's output at the subject's last token that makes the
        model continue every prefixed prompt with the target (ROME's v* step); the model's
        weights are not touched (a forward hook adds δ)."""
        with serial():
            return self._value_shift(request, fact, layer or request.layer, progress, cancel)

    def _value_shift(self, request: FactRequest, fact: Fact, layer: str,
                     progress: ProgressFn | None, cancel: CancelToken | None
                     ) -> tuple[torch.Tensor, dict]:
        opts, doc = request.value_options, request.document_start
        module = self.gen.layer(layer)
        target = self._encode(fact.target, "target")
        rows, pos, starts = [], [], []
        for prefix in request.prefixes:
            ids, p = self._subject_position(prefix + fact.prompt, len(prefix) + fact.subject_end,
                                             doc)
            rows.append(ids + target)
            pos.append(p)
            starts.append(len(ids))
        if request.key_mode == "wide" and opts["opening"] and not fact.opens_with_subject:
            # the subject opening the text, the prompt after it ("France. The capital of France
            # is"): δ at the first mention must carry the new object to the end, as it must in
            # a paraphrase that opens with the subject
            text = WIDE_OPENING.format(subject=fact.subject, prompt=fact.prompt)
            ids, p = self._subject_position(text, len(fact.subject), doc)
            rows.append(ids + target)
            pos.append(p)
            starts.append(len(ids))
        n_rewrite = len(rows)
        essence = []
        for template in request.essence:
            text = template.format(fact.subject)
            essence.append(self._subject_position(text, text.index(fact.subject) + len(fact.subject),
                                                 doc))
        # the guard covers the model's own continuation of each essence prompt, token by token
        # (teacher-forced): a year is " ", "1", "8", "8", "9", and a guard on the next token
        # alone kept the space and let the digits drift (1889 → 1930)
        follow = self.gen.generate_ids([e[0] for e in essence], int(opts["essence_tokens"])) \
            if essence and opts["essence_tokens"] > 0 else [[] for _ in essence]
        e_pairs = []
        for (ids, p), more in zip(essence, follow, strict=True):
            e_pairs += [(len(rows), len(ids) - 1 + j) for j in range(len(more) + 1)]
            rows.append(ids + more)
            pos.append(p)
            starts.append(len(ids))
        # an MLP down-projection's output is added to the residual stream and nothing else: the
        # blocks up to it run once, each step resumes after it with δ added to that stream (the
        # same sum, 7 of 30 blocks fewer per step at layer 6); another layer goes the long way.
        # Resuming, the rows are left-padded so that every subject ends at one column: the
        # columns before it cannot see δ (attention is causal) and run once too, with their keys
        # and values kept (the Eiffel Tower fact: 7 rows × 9 columns a step instead of 7 × 19)
        block = self.gen.block_after(layer) if hasattr(self.gen, "block_after") else None
        split = max(pos) if block is not None and hasattr(self.gen, "head_past") else 0
        offs = [split - p for p in pos] if split else [0] * len(rows)
        ids, mask = self._batch(rows, offs)
        dev = ids.device
        row_idx = torch.arange(len(rows), device=dev)
        pos = [p + o for p, o in zip(pos, offs, strict=True)]
        starts = [st + o for st, o in zip(starts, offs, strict=True)]
        e_pairs = [(r, c + offs[r]) for r, c in e_pairs]
        pos_t = torch.tensor(pos, device=dev) - split  # in the columns each step computes
        # the target tokens' positions: logits at position j predict token j + 1
        tr = [(i, starts[i] - 1 + j, t) for i in range(n_rewrite) for j, t in enumerate(target)]
        t_rows = torch.tensor([r for r, _, _ in tr], device=dev)
        t_cols = torch.tensor([c for _, c, _ in tr], device=dev)
        t_ids = torch.tensor([t for _, _, t in tr], device=dev)
        e_rows = torch.tensor([r for r, _ in e_pairs], dtype=torch.long, device=dev)
        e_cols = torch.tensor([c for _, c in e_pairs], dtype=torch.long, device=dev)
        captured = {}

        def grab(_m, _a, out):
            captured["v"] = out[row_idx, pos_t].detach()

        all_rows, all_cols = torch.cat([t_rows, e_rows]), torch.cat([t_cols, e_cols]) - split
        n_t = len(t_rows)
        tail, past, base_logp = ids[:, split:], None, None
        with torch.no_grad():
            if split:
                past = self.gen.head_past(ids[:, :split], mask[:, :split])
            h = module.register_forward_hook(grab)
            try:
                if block is None:
                    logits0 = self.gen.logits_at(ids, all_rows, all_cols)  # (K, V)
                    if len(e_rows):
                        base_logp = F.log_softmax(logits0[n_t:].float(), -1)
                else:  # the unedited logits come from the first step (δ = 0 there)
                    stream0 = self.gen.stream_before(tail, block, past)
            finally:
                h.remove()
        v_norm = float(captured["v"][:n_rewrite].norm(dim=-1).mean())
        delta = torch.zeros(captured["v"].shape[-1], device=dev, dtype=captured["v"].dtype,
                            requires_grad=True)

        def add(_m, _a, out):
            out = out.clone()
            out[row_idx, pos_t] = out[row_idx, pos_t] + delta
            return out

        def step_logits() -> torch.Tensor:
            if block is None:
                return self.gen.logits_at(ids, all_rows, all_cols)  # (K, V), via the hook
            stream = stream0.clone()
            stream[row_idx, pos_t] = stream[row_idx, pos_t] + delta
            return self.gen.logits_from(tail, block, stream, all_rows, all_cols, past)

        opt = torch.optim.Adam([delta], lr=opts["lr"])
        trace, t0 = [], time.perf_counter()
        h = module.register_forward_hook(add) if block is None else None
        try:
            with torch.enable_grad():
                for step in range(int(opts["steps"])):
                    check_cancel(cancel, "Finding the new value")
                    logits = step_logits()
                    if step == 0 and base_logp is None and len(e_rows):
                        base_logp = F.log_softmax(logits[n_t:].detach().float(), -1)
                    logp = F.log_softmax(logits[:n_t].float(), -1)
                    nll = -logp.gather(1, t_ids[:, None]).mean()
                    loss = nll + opts["decay"] * delta.pow(2).sum() / v_norm ** 2
                    kl = torch.zeros((), device=dev)
                    if base_logp is not None and opts["kl"] > 0:
                        lp = F.log_softmax(logits[n_t:].float(), -1)
                        kl = F.kl_div(lp, base_logp, log_target=True, reduction="batchmean")
                        loss = loss + opts["kl"] * kl
                    trace.append({"nll": nll.item(), "kl": kl.item(),
                                  "norm": delta.detach().norm().item() / v_norm})
                    report(progress, step + 1, int(opts["steps"]), f"new value for {fact.subject!r}")
                    if trace[-1]["nll"] < opts["stop_loss"]:
                        break
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    with torch.no_grad():  # ROME's clamp: ‖δ‖ ≤ clamp·‖v‖
                        limit = opts["clamp"] * v_norm
                        norm = float(delta.norm())
                        if norm > limit:
                            delta.mul_(limit / norm)
        finally:
            if h is not None:
                h.remove()
        if not bool(torch.isfinite(delta).all()):
            raise RewriteError("Finding the new value diverged (NaN/Inf).",
                               "lower value_options['lr'] (e.g. 0.1) and try again.")
        return delta.detach(), {"trace": trace, "seconds": time.perf_counter() - t0,
                                "p_target": math.exp(-trace[-1]["nll"]) if trace else math.nan}

    def compute_edit(self, request: FactRequest, progress: ProgressFn | None = None,
                     cancel: CancelToken | None = None) -> Edit:
        """The Edit for ``request`` (nothing installed)."""
        if not isinstance(request, FactRequest):
            raise RewriteError(f"Expected a FactRequest, got {type(request).__name__}.",
                               "build one with session.request(prompt, subject, target).")
        if request.model and request.model != self.gen.name:
            raise RewriteError(f"The request was made for model {request.model!r}, this session "
                               f"holds {self.gen.name!r}.", "replay it in a session on that model.")
        with serial(), self.lock:  # the panel swaps W₀ in under the lock: never mid-search
            return self._compute_edit(request, progress, cancel)

    def _compute_edit(self, request: FactRequest, progress: ProgressFn | None,
                      cancel: CancelToken | None) -> Edit:
        layer = request.layer
        module = self.gen.layer(layer)
        mem = memory_for(module, layer)
        t0 = time.perf_counter()
        samples = request.stats_samples or self.stats_samples
        inv = self.inverse(layer, samples, progress, cancel)
        t_stats = time.perf_counter()
        keys, shifts, reports = [], [], []
        for f in request.facts:
            check_cancel(cancel, "The edit")
            keys.append(self.subject_keys(request, f, layer))
            d, rep = self.value_shift(request, f, layer, progress, cancel)
            shifts.append(d)
            reports.append(rep)
        k = torch.cat(keys)  # (rows, d_in)
        shift = torch.cat([d.expand(len(kf), -1) for d, kf in zip(shifts, keys, strict=True)])
        with torch.no_grad():
            goal = mem.values(k) + shift  # (rows, d_out): v* = W k* + δ of its fact
        weights = torch.ones(len(k), device=k.device)
        target = Target(k, goal, weights)
        rank = request.effective_rank
        basis = context_basis(inv, k, weights, rank, request.direction_rule)
        if not request.rank:  # auto: one direction per distinct key row (two phrasings of one
            rank = min(rank, basis.shape[1])  # subject share the key of the subject opening a text)
        d = take_rank(basis, rank)
        level = context_level(d, k, weights)
        factor, rep = solve_exact(mem, d, [target], ridge=request.ridge)
        delta = mem.delta_weight(d, factor)
        w = module.weight.detach()
        rep = {**rep, "before": masked_errors(mem, [target]),
               "installed": masked_errors(mem, [target], w + delta),
               "values": reports, "notes": list(inv.notes),
               "seconds": {"statistics": t_stats - t0,
                           "value": sum(r["seconds"] for r in reports),
                           "total": time.perf_counter() - t0}}
        return Edit(layer, d.detach(), factor.detach(), request, rep, level, (target,))

    def rewrite(self, request: FactRequest | None = None, strength: float = 1.0,
                progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Edit:
        """Compute the edit for ``request`` and install it (one step of the history)."""
        if request is None:
            raise RewriteError("There is no request to rewrite.",
                               "build one with session.request(prompt, subject, target).")
        edit = self.compute_edit(request, progress, cancel)
        return self.apply(edit, strength)

    def replay(self, request: FactRequest | str | Path, **kw: Any) -> Edit:
        if not isinstance(request, FactRequest):
            request = self.load_request(request)
        return self.rewrite(request, **kw)

    # -- which layer ----------------------------------------------------------------------------
    def score_edit(self, edit: Edit, paraphrases: Sequence[str] = (),
                   neighbours: Sequence[tuple[str, str]] = ()) -> dict:
        """How ``edit`` would do, with its weight swapped in for the call only: generalisation
        (held-out prefixes and ``paraphrases``: σ of the new object's minus the old object's mean
        log-prob per token), specificity on ``neighbours`` (prompt, true object) (σ of true minus
        new), and drift (KL of the next token on held-out statistics text, in nats)."""
        req = edit.request
        module = self.gen.layer(edit.layer)
        weight = module.weight.detach() + edit.delta(module)
        gen_rows = [(p + f.prompt, f.old, f.target) for f in req.facts for p in HELD_OUT_PREFIXES]
        gen_rows += [(p, req.facts[0].old, req.facts[0].target) for p in paraphrases]
        chunks = self.gen.latents(_drift_seeds(self.gen.n_chunks))
        with serial(), self.lock, torch.no_grad():
            base = F.log_softmax(self.gen.forward(chunks).float(), -1)
            with weight_in(module, weight):
                new = F.log_softmax(self.gen.forward(chunks).float(), -1)
                g = [float(torch.sigmoid(self.compare([p], [o, n])[0] @ torch.tensor(
                    [-1.0, 1.0], dtype=torch.float64))) for p, o, n in gen_rows if o and n]
                s = [float(torch.sigmoid(self.compare([p], [t, req.facts[0].target])[0]
                                         @ torch.tensor([1.0, -1.0], dtype=torch.float64)))
                     for p, t in neighbours]
        drift = float((base.exp() * (base - new)).sum(-1).mean())
        generalisation = sum(g) / len(g) if g else math.nan
        specificity = sum(s) / len(s) if s else 1.0
        score = generalisation * specificity - drift / DRIFT_SCALE
        return {"layer": edit.layer, "generalisation": generalisation,
                "specificity": specificity if s else math.nan, "drift": drift, "score": score,
                "update": float(edit.delta(module).norm() / module.weight.norm())}

    def suggest(self, request: FactRequest, layers: Sequence[str] | None = None,
                paraphrases: Sequence[str] = (), neighbours: Sequence[tuple[str, str]] = (),
                progress: ProgressFn | None = None, cancel: CancelToken | None = None
                ) -> list[dict]:
        """Solve ``request`` at each of ``layers`` (default: every other layer in the first two
        thirds of the network) without installing anything, score each (score_edit) and return
        the rows best first; row["edit"] can be applied with session.apply(row["edit"])."""
        names = self.gen.layer_names()
        layers = list(layers) if layers is not None else names[: max(1, 2 * len(names) // 3): 2]
        n = request.stats_samples or self.stats_samples
        self.statistics_for(layers, n, progress, cancel)  # one pass for all of them
        rows = []
        for i, layer in enumerate(layers):
            check_cancel(cancel, "The suggestion")
            report(progress, i, len(layers), f"trying {layer}")
            req = FactRequest(**{**request.__dict__, "layer": layer})
            edit = self.compute_edit(req, cancel=cancel)
            rows.append({**self.score_edit(edit, paraphrases, neighbours), "edit": edit})
        report(progress, len(layers), len(layers), "suggestion done")
        return sorted(rows, key=lambda r: -r["score"])

    # -- history ---------------------------------------------------------------------------------
    def apply(self, edit: Edit, strength: float = 1.0) -> Edit:
        with self.lock:
            self.history.apply(edit, strength)
            self.last_edit = edit
        self._emit("edit", edit=edit)
        return edit

    def undo(self) -> Edit | None:
        with self.lock:
            e = self.history.undo()
        self._emit("undo", edit=e)
        return e

    def redo(self) -> Edit | None:
        with self.lock:
            e = self.history.redo()
        self._emit("redo", edit=e)
        return e

    def reset(self) -> None:
        with self.lock:
            self.history.reset()
        self._emit("reset")

    def set_strength(self, index: int, strength: float) -> None:
        with self.lock:
            self.history.set_strength(index, strength)
        self._emit("strength", index=index, strength=strength)

    # -- persistence ------------------------------------------------------------------------------
    def save_request(self, path: str | Path, request: FactRequest | None = None) -> Path:
        req = request or (self.last_edit.request if self.last_edit else None)
        if not isinstance(req, FactRequest):
            raise RewriteError("There is no request to save.", "make an edit first, or pass one.")
        path = Path(path).expanduser()
        _atomic_text(path, req.to_json())
        return path

    def load_request(self, path: str | Path) -> FactRequest:
        path = Path(path).expanduser()
        try:
            if path.stat().st_size > MAX_REQUEST_CHARS:
                raise RewriteError(f"{path} is {path.stat().st_size:,} bytes, more than a request "
                                   f"can be ({MAX_REQUEST_CHARS:,}).",
                                   "load a file written by save_request().")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RewriteError(f"Cannot read {path} as a text request ({e}).",
                               "check the path; load a file written by save_request().") from e
        req = FactRequest.from_json(text)
        self.gen.layer(req.layer)
        return req

    def export_weights(self, path: str | Path) -> Path:
        with self.lock:
            return save_state_dict(self.gen.module, Path(path).expanduser(),
                                   {"model": self.gen.name, "edits": len(self.history)})

    def export_delta(self, path: str | Path) -> Path:
        with self.lock:
            return save_delta(self.history, Path(path).expanduser(), self.gen.name,
                              self.fingerprint)

    def load_delta(self, path: str | Path) -> list[Edit]:
        """Install the edits of a delta file exported from this model (all or nothing)."""
        import json

        from ..core.export import DELTA_FORMAT
        try:
            tensors, meta = read_safetensors(Path(path).expanduser())
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise RewriteError(f"{path} is not a readable delta file ({e}).",
                               "export it again with session.export_delta().") from e
        if meta.get("format") != DELTA_FORMAT or meta.get("fingerprint") != self.fingerprint:
            raise RewriteError(f"{path} is not a delta of this model's weights.",
                               "load it into a session on the model it was exported from.")
        loaded = []
        for i, info in enumerate(json.loads(meta.get("edits", "[]"))):
            req = info.get("request")
            req = FactRequest.from_json(req) if req and req.get("format") == FORMAT else None
            d, lam = tensors.get(f"{i}.directions"), tensors.get(f"{i}.factor")
            module = self.gen.layer(info["layer"])
            if d is None or lam is None or not (torch.isfinite(d).all() and torch.isfinite(lam).all()):
                raise RewriteError(f"Edit {i} of {path} is missing or has non-finite factors.",
                                   "export the delta again.")
            edit = Edit(info["layer"], d.to(module.weight.device), lam.to(module.weight.device),
                        req, {"loaded_from": str(path)}, float(info.get("context_level", 1.0)))
            if edit.delta(module).shape != module.weight.shape:
                raise RewriteError(f"Edit {i} of {path} does not fit layer {info['layer']!r}.",
                                   "load it into the model it was exported from.")
            loaded.append((edit, float(info.get("strength", 1.0))))
        for edit, strength in loaded:
            self.apply(edit, strength)
        return [e for e, _ in loaded]

    def __repr__(self) -> str:
        return (f"TextRewriteSession({self.gen.name!r}, layer={self.layer!r}, "
                f"edits={len(self.history)})")


#: the suggestion measures drift on the statistics text's last DRIFT_CHUNKS chunks, which C
#: never uses (stats_samples is at most n_chunks - DRIFT_CHUNKS)
DRIFT_CHUNKS = 8


def _drift_seeds(n_chunks: int) -> list[int]:
    return [STATS_SEED_BASE + n_chunks - DRIFT_CHUNKS + i for i in range(DRIFT_CHUNKS)]
#: drift (nats per token) that costs a candidate as much as a full failure to generalise
DRIFT_SCALE = 0.5

#: default layer as a fraction of the depth: layer 6 of SmolLM2's 30. In a sweep of layers 0-22
#: on 6 facts (benchmarks/text_edits.py, ROME's single mean key) 0, 6 and 8 scored best (83);
#: 6 is the layer the 36-fact figures in the README were measured at
DEFAULT_DEPTH = 0.2


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _atomic_text(path: Path, text: str) -> None:
    import os
    import tempfile
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise RewriteError(f"Cannot write into {path.parent} ({e}).",
                           "save into an existing folder you can write to.") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise RewriteError(f"Cannot write {path} ({e}).", "free space or pick another folder.") from e
