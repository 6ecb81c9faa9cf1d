"""A causal language model behind core's generator protocol: token ids are the "latents".

    lm = rewidget.models.load("smollm2")               # or load_tiny_text() for tests
    ids = lm.latents([0, 1])                           # (2, 128) ids: chunks of the stats corpus
    k = lm.keys("layers.12.mlp.down_proj", ids)        # (2, 128, 1536): the layer's input
    logits = lm.forward_from("layers.12.mlp.down_proj", k, z=ids)   # (2, 128, V)
    lm.generate(["The capital of Japan is"], max_new_tokens=3)      # [' Tokyo. ...']
    lm.logprobs([lm.encode("The capital of Japan is")], [lm.encode(" Tokyo")])  # (1,) float64

A statistics "sample" is one chunk of STATS_TOKENS tokens of the model's statistics corpus:
seed ``STATS_SEED_BASE + i`` is chunk i, so ``rewidget.core.statistics`` collects C = E[k kᵀ]
over the keys of every token of the first n chunks, unchanged. The residual stream is not
rebuilt from keys, so ``forward_from`` and ``run_between`` need the ids (``z=``) and run the
whole network, with the layer's input replaced by ``keys``.

The text helpers (``logprobs``, ``next_token_logprobs``, ``generate``) work on batches of
token-id lists, right-padded (causal attention keeps padding out of real positions) or, for
generation, left-padded with a mask. ``weight_override={layer: W}`` stands in W for the
layer's weight during one call: a preview that writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn

from ..core.errors import RewriteError
from ..core.safefiles import tensor_bytes
from ..core.statistics import STATS_SEED_BASE
from .llama import KVCache, Llama, LlamaConfig

STATS_TOKENS = 128  # tokens per statistics chunk (one "sample")
_BATCH_TOKENS = 4096  # token budget per forward in the batched text helpers


class _StopForward(Exception):
    pass


def _corpus_chunks(ids: Sequence[int], tokens: int = STATS_TOKENS) -> torch.Tensor:
    """Token ids cut into (n_chunks, tokens) rows; the tail that does not fill a row is dropped."""
    n = len(ids) // tokens
    return torch.as_tensor(np.asarray(ids[: n * tokens], dtype=np.int64)).view(n, tokens)


class TextModel:
    """A Llama-style causal LM, its tokenizer and statistics corpus, behind the protocol."""

    kind = "text"
    image_size = 0  # not an image model

    def __init__(self, module: nn.Module, tokenizer: Tokenizer, name: str,
                 corpus: torch.Tensor | Callable[[], torch.Tensor],
                 bos_id: int | None = None, eos_id: int | None = None,
                 stop_ids: Sequence[int] = (), layers: Sequence[str] | None = None,
                 device: torch.device | str | None = None,
                 document_start: Sequence[int] = ()) -> None:
        """``corpus``: (n_chunks, STATS_TOKENS) ids, or a function returning them (read lazily).
        ``stop_ids``: tokens that end a generation besides ``eos_id``. ``document_start``: the
        ids a text is read after when it is a document of its own (prompt_ids), e.g. the
        separator the model saw between documents in training."""
        self.name = name
        self.module = module.eval().requires_grad_(False)
        if device is not None:
            self.module.to(device)
        self.tokenizer = tokenizer
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.document_start = tuple(int(i) for i in document_start)
        self.stop_ids = sorted({int(i) for i in stop_ids} | ({eos_id} if eos_id is not None else set()))
        self._corpus = corpus
        self._modules = dict(self.module.named_modules())
        linear = [n for n, m in self._modules.items() if isinstance(m, nn.Linear)]
        if layers is None:
            layers = [n for n in linear if n.endswith("mlp.down_proj")]
        for n in layers:
            if n not in self._modules or not isinstance(self._modules[n], nn.Linear):
                raise RewriteError(f"{n!r} is not an nn.Linear module of {name!r}.",
                                   "name layers by module path, e.g. "
                                   f"{[x for x in linear if x.endswith('down_proj')][:3]}.")
        self._layers = sorted(dict.fromkeys(layers), key=linear.index)  # forward order
        self._fingerprint: str | None = None

    # -- basics -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    @property
    def vocab_size(self) -> int:
        return int(self.module.embed_tokens.num_embeddings)

    def layer_names(self) -> list[str]:
        return list(self._layers)

    def layer(self, name: str) -> nn.Linear:
        if name not in self._layers:
            raise RewriteError(f"Unknown layer {name!r} of {self.name!r}.",
                               f"choose one of {self._layers}.")
        return self._modules[name]

    def layer_shapes(self) -> dict[str, dict]:
        """Keys and values of one statistics sample: (STATS_TOKENS, d_in), (STATS_TOKENS, d_out)."""
        return {n: {"type": "Linear", "keys": (STATS_TOKENS, self._modules[n].in_features),
                    "values": (STATS_TOKENS, self._modules[n].out_features)}
                for n in self._layers}

    def fingerprint(self, current: bool = False) -> str:
        """sha256 of the name and weights: as loaded (cached, before any edit), or as now."""
        if current or self._fingerprint is None:
            h = hashlib.sha256(self.name.encode())
            seen: set[int] = set()
            for k, v in self.module.state_dict().items():
                h.update(k.encode())
                h.update(str(tuple(v.shape)).encode())
                if v.data_ptr() in seen:  # tied output head: the embedding, already hashed
                    continue
                seen.add(v.data_ptr())
                h.update(tensor_bytes(v))
            if current:
                return h.hexdigest()
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def to_rgb(self, images: torch.Tensor) -> np.ndarray:
        raise RewriteError(f"{self.name!r} is a text model; it renders no images.",
                           "use lm.generate(...) or lm.decode(ids) to see its output.")

    # -- tokens -------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; nothing is added (see prompt_ids for a text read on its own)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def prompt_ids(self, text: str) -> list[int]:
        """``text`` as a document of its own: ``document_start`` + its ids. SmolLM2 has no BOS
        (its GGUF says add_bos_token false) but read its training documents one after another,
        each after the separator <|endoftext|>; a text's first token without it sits where the
        model keeps an attention sink, and later tokens read little from there (one fact's v*
        δ added at "Japan" in "Japan's capital city is": −1.0 nats new vs old object there,
        +0.85 after the separator). benchmarks/text_document_start.py: held-out perplexity
        8.97 → 8.13 with it."""
        return [*self.document_start, *self.encode(text)]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def tokens(self, text: str) -> list[tuple[int, str, tuple[int, int]]]:
        """(id, surface text, (char start, char end)) per token. A leading space belongs to the
        token after it; the bytes of one character split over two tokens give both tokens the
        character's span."""
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        return [(i, text[s:e], (s, e)) for i, (s, e) in zip(enc.ids, enc.offsets, strict=True)]

    # -- the protocol ---------------------------------------------------------------------------
    @property
    def corpus(self) -> torch.Tensor:
        """The statistics corpus: (n_chunks, STATS_TOKENS) long, on the CPU."""
        if callable(self._corpus):
            self._corpus = self._corpus()
        return self._corpus

    @property
    def n_chunks(self) -> int:
        return int(self.corpus.shape[0])

    def latents(self, seeds: Sequence[int], device=None) -> torch.Tensor:
        """(N, STATS_TOKENS) ids: seed STATS_SEED_BASE + i is corpus chunk i; smaller seeds take
        chunk seed % n_chunks."""
        n = self.n_chunks
        index = [int(s) - STATS_SEED_BASE if int(s) >= STATS_SEED_BASE else int(s) % n
                 for s in seeds]
        if index and max(index) >= n:
            raise RewriteError(
                f"{self.name!r} has {n} statistics chunks of {STATS_TOKENS} tokens; chunk "
                f"{max(index)} was asked for.",
                f"collect statistics over at most {n} samples (stats_samples <= {n}).")
        ids = self.corpus[index] if index else torch.empty(0, STATS_TOKENS, dtype=torch.long)
        return ids.to(device if device is not None else self.device)

    def check_latents(self, ids) -> torch.Tensor:
        """Token ids (N, T) integer in [0, vocab) → long on the model's device."""
        ids = torch.as_tensor(ids)
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype.is_complex \
                or ids.dtype == torch.bool:
            raise RewriteError(f"Token ids must be a 2-D integer tensor (N, T); got "
                               f"{tuple(ids.shape)} {ids.dtype}.",
                               "pass lm.latents(seeds) or torch.tensor([lm.encode(text)]).")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise RewriteError(f"Token ids must lie in [0, {self.vocab_size}); got "
                               f"[{int(ids.min())}, {int(ids.max())}].",
                               "encode text with lm.encode(...) of this model.")
        return ids.to(self.device, torch.long)

    def keys(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """The input (N, T, d_in) of layer ``name``; the forward pass stops there."""
        module = self.layer(name)
        ids = self.check_latents(ids)
        captured = {}

        def grab(_module, args):
            captured["k"] = args[0]
            raise _StopForward

        handle = module.register_forward_pre_hook(grab)
        try:
            self.module(ids)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured["k"]

    def forward_from(self, name: str, keys: torch.Tensor, z: torch.Tensor | None = None,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, T, V) with layer ``name``'s input replaced by ``keys`` (and its weight by
        ``weight`` for this call only)."""
        return self.run_between(name, keys, None, z, weight)

    def run_between(self, start: str, keys: torch.Tensor, stop: str | None = None,
                    z: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                    output: torch.Tensor | None = None) -> torch.Tensor:
        """From the input ``keys`` (N, T, d_in) of ``start`` to the input of a later layer
        ``stop`` (None: the logits (N, T, V)). ``z`` (the ids) is required: the whole network
        runs, and only ``start``'s input (and, with ``weight``, its weight; with ``output``,
        its output) is replaced."""
        module = self.layer(start)
        if weight is not None and output is not None:
            raise RewriteError("Both a stand-in weight and a stand-in output were given.",
                               "pass one of weight= and output=.")
        names = self.layer_names()
        if stop is not None and self.layer(stop) is not None and \
                names.index(stop) <= names.index(start):
            raise RewriteError(f"Layer {stop!r} does not come after {start!r}.",
                               f"stop at a later layer than {start!r}, or at the logits (None).")
        if z is None:
            raise RewriteError(f"Running {self.name!r} from the keys of {start!r} needs the token "
                               "ids too (the residual stream is not rebuilt from keys).",
                               "pass z=ids, the ids the keys were read from.")
        ids = self.check_latents(z)
        want = (*ids.shape, module.in_features)
        if tuple(keys.shape) != want:
            raise RewriteError(f"Keys of shape {tuple(keys.shape)} do not fit {start!r} for ids "
                               f"of shape {tuple(ids.shape)}; expected {want}.",
                               f"pass keys from lm.keys({start!r}, ids) with the same ids.")
        captured = {}

        def grab(_module, args):
            captured["k"] = args[0]
            raise _StopForward

        handles = [module.register_forward_pre_hook(lambda _m, _a: (keys,))]
        if weight is not None:
            handles.append(module.register_forward_hook(
                lambda m, a, _o: F.linear(a[0], weight.to(a[0]), m.bias)))
        elif output is not None:
            handles.append(module.register_forward_hook(lambda _m, _a, _o: output))
        if stop is not None:
            handles.append(self._modules[stop].register_forward_pre_hook(grab))
        try:
            return self.module(ids)
        except _StopForward:
            return captured["k"]
        finally:
            for h in handles:
                h.remove()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (N, T, V) float32."""
        return self.module(self.check_latents(ids))

    def logits_at(self, ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
                  ) -> torch.Tensor:
        """(K, V) logits at positions (rows[k], cols[k]) of ``ids`` only; differentiable. The
        output head (49152 × 576 on SmolLM2) runs at those K positions instead of all N·T."""
        h = self.module.hidden(self.check_latents(ids))  # (N, T, dim)
        return self.module.logits(h[rows, cols])

    def block_after(self, name: str) -> int | None:
        """For an MLP's down-projection ``layers.<i>.mlp.down_proj``: i + 1, the block whose
        input is the residual stream that layer's output was last added to; else None."""
        parts = name.split(".")
        if len(parts) == 4 and parts[0] == "layers" and parts[2:] == ["mlp", "down_proj"] \
                and parts[1].isdigit():
            return int(parts[1]) + 1
        return None

    def head_past(self, ids: torch.Tensor, mask: torch.Tensor) -> KVCache:
        """Every block's keys and values of ``ids`` (N, P), left padding False in ``mask``
        (N, P): the past that later columns attend to. A change made at column P or after
        cannot reach these columns (attention is causal), so they run once."""
        past = KVCache()
        self.module.hidden(self.check_latents(ids), cache=past, attention_mask=mask)
        width = past.length
        # buffers cut to the past's width: the columns after it go to new buffers, so the
        # same past serves every later call unchanged
        return KVCache([k[:, :, :width].clone() for k in past.k],
                       [v[:, :, :width].clone() for v in past.v], list(past.lengths), past.mask)

    @staticmethod
    def _after(past: KVCache | None) -> KVCache | None:
        return None if past is None else \
            KVCache(list(past.k), list(past.v), list(past.lengths), past.mask)

    def stream_before(self, ids: torch.Tensor, block: int, past: KVCache | None = None
                      ) -> torch.Tensor:
        """(N, T, dim) residual stream entering ``block`` (the blocks before it run once); with
        ``past`` (head_past), ``ids`` are the columns that follow it (right padding is never
        seen by real tokens)."""
        return self.module.hidden(self.check_latents(ids), cache=self._after(past), stop=block)

    def logits_from(self, ids: torch.Tensor, block: int, stream: torch.Tensor,
                    rows: torch.Tensor, cols: torch.Tensor, past: KVCache | None = None
                    ) -> torch.Tensor:
        """logits_at, resumed from ``stream`` entering ``block``; differentiable in it. With
        ``past``, as in stream_before."""
        h = self.module.hidden(self.check_latents(ids), cache=self._after(past), start=block,
                               x_start=stream)
        return self.module.logits(h[rows, cols])

    # -- text helpers -----------------------------------------------------------------------------
    @contextmanager
    def overridden(self, weights: Mapping[str, torch.Tensor] | None) -> Iterator[None]:
        """Within the block, layer ``name`` computes with ``weights[name]``; nothing is written."""
        handles = []
        try:
            for name, w in (weights or {}).items():
                module = self.layer(name)
                if tuple(w.shape) != tuple(module.weight.shape):
                    raise RewriteError(f"Override for {name!r} has shape {tuple(w.shape)}, the "
                                       f"layer's weight {tuple(module.weight.shape)}.",
                                       "pass a weight of the layer's shape (W0 + ΔW).")
                handles.append(module.register_forward_hook(
                    lambda m, a, _o, w=w: F.linear(a[0], w.to(a[0]), m.bias)))
            yield
        finally:
            for h in handles:
                h.remove()

    def _batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Row indices in groups of about _BATCH_TOKENS padded tokens (similar lengths together)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batch: list[int] = []
        for i in order:
            if batch and (len(batch) + 1) * max(lengths[i], 1) > _BATCH_TOKENS:
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def _right_padded(self, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        t = max(len(s) for s in seqs)
        pad = self.eos_id if self.eos_id is not None else 0
        out = torch.full((len(seqs), t), pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        return self.check_latents(out)

    def _check_prompts(self, prompts: Sequence[Sequence[int]]) -> None:
        if any(len(p) == 0 for p in prompts):
            raise RewriteError("A prompt is empty: the first token has nothing to be predicted "
                               "from.", "give every prompt at least one token.")

    def logprobs(self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                 weight_override: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B,) float64: Σ log p(continuation | prompt) per pair (0 for an empty continuation)."""
        if len(prompts) != len(continuations):
            raise RewriteError(f"{len(prompts)} prompts but {len(continuations)} continuations.",
                               "pass one continuation per prompt.")
        self._check_prompts(prompts)
        seqs = [list(p) + list(c) for p, c in zip(prompts, continuations, strict=True)]
        out = torch.zeros(len(seqs), dtype=torch.float64)
        with torch.no_grad(), self.overridden(weight_override):
            for rows in self._batches([len(s) for s in seqs]):
                ids = self._right_padded([seqs[i] for i in rows])
                h = self.module.hidden(ids)  # (B, T, dim)
                where, target, owner = [], [], []
                for b, i in enumerate(rows):
                    p, c = len(prompts[i]), len(continuations[i])
                    where += [(b, p - 1 + j) for j in range(c)]
                    target += list(continuations[i])
                    owner += [i] * c
                self._add_logprobs(out, h, where, target, owner)
        return out

    def _add_logprobs(self, out: torch.Tensor, h: torch.Tensor, where: list[tuple[int, int]],
                      target: list[int], owner: list[int]) -> None:
        """out[owner[k]] += log p(target[k]) read at hidden state h[where[k]], for every k."""
        if not where:
            return
        w = torch.as_tensor(where, device=h.device)
        logp = self.module.logits(h[w[:, 0], w[:, 1]]).log_softmax(-1)  # (K, V)
        tok = torch.as_tensor(target, device=h.device)
        picked = logp.gather(1, tok[:, None])[:, 0].double().cpu()  # (K,)
        out.index_add_(0, torch.as_tensor(owner), picked)

    def next_token_logprobs(self, prompts: Sequence[Sequence[int]],
                            weight_override: Mapping[str, torch.Tensor] | None = None
                            ) -> torch.Tensor:
        """(B, V) float32 log-softmax of the next token after each prompt."""
        self._check_prompts(prompts)
        out = torch.empty(len(prompts), self.vocab_size, dtype=torch.float32, device=self.device)
        with torch.no_grad(), self.overridden(weight_override):
            for rows in self._batches([len(p) for p in prompts]):
                ids = self._right_padded([prompts[i] for i in rows])
                h = self.module.hidden(ids)  # (B, T, dim)
                last = torch.as_tensor([len(prompts[i]) - 1 for i in rows], device=ids.device)
                h = h[torch.arange(len(rows), device=ids.device), last]  # (B, dim)
                out[torch.as_tensor(rows, device=ids.device)] = \
                    self.module.logits(h).log_softmax(-1)
        return out

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 20, greedy: bool = True,
                 temperature: float = 1.0, seed: int = 0, top_p: float | None = None,
                 weight_override: Mapping[str, torch.Tensor] | None = None) -> list[str]:
        """New text after each prompt (KV cache, left-padded batch); a row stops at eos or a stop
        token (not included). Sampling draws row i on the CPU with seed ``seed + i``, so the
        same seed gives the same text on any device. Each prompt is read as a document of its
        own (prompt_ids)."""
        encoded = [self.prompt_ids(p) for p in prompts]
        new = self.generate_ids(encoded, max_new_tokens, greedy, temperature, seed, top_p,
                                weight_override)
        return [self.decode_after(p, n) for p, n in zip(encoded, new, strict=True)]

    def decode_after(self, prompt: Sequence[int], new: Sequence[int]) -> str:
        """The text of ``new`` ids read after ``prompt``'s: decoded together, so a character
        whose bytes straddle the prompt's end is whole."""
        full, head = self.decode(list(prompt) + list(new)), self.decode(list(prompt))
        return full[len(head):] if full.startswith(head) else self.decode(list(new))

    def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 20,
                     greedy: bool = True, temperature: float = 1.0, seed: int = 0,
                     top_p: float | None = None,
                     weight_override: Mapping[str, torch.Tensor] | None = None
                     ) -> list[list[int]]:
        """``generate`` on token ids: the new ids per prompt (without the stop token)."""
        return self._generate(prompts, max_new_tokens, greedy, temperature, seed, top_p,
                              weight_override)[0]

    def generate_and_score(self, prompts: Sequence[Sequence[int]],
                           continuations: Sequence[tuple[int, Sequence[int]]],
                           max_new_tokens: int = 20,
                           weight_override: Mapping[str, torch.Tensor] | None = None
                           ) -> tuple[list[list[int]], torch.Tensor]:
        """Greedy ``generate_ids`` and, from the same pass over the prompts, ``logprobs`` of
        each (prompt index, continuation) pair: (new ids per prompt, (B,) float64). A pair's
        first token is read off the prompt's last logits, its later ones from one batched pass
        over the continuations on a copy of the prompts' cache (the prompts run once, not once
        per pair as ``logprobs`` runs them)."""
        for i, _ in continuations:
            if not 0 <= int(i) < len(prompts):
                raise RewriteError(f"A continuation names prompt {i}, but there are "
                                   f"{len(prompts)} prompts.",
                                   "give each continuation the index of its prompt.")
        return self._generate(prompts, max_new_tokens, True, 1.0, 0, None, weight_override,
                              continuations)

    def _generate(self, prompts, max_new_tokens, greedy, temperature, seed, top_p,
                  weight_override, continuations: Sequence[tuple[int, Sequence[int]]] = ()
                  ) -> tuple[list[list[int]], torch.Tensor]:
        self._check_prompts(prompts)
        if not greedy and temperature <= 0:
            raise RewriteError(f"temperature must be positive, got {temperature}.",
                               "use greedy=True for the most likely tokens.")
        n = len(prompts)
        scores = torch.zeros(len(continuations), dtype=torch.float64)
        if n == 0:
            return [], scores
        t = max(len(p) for p in prompts)
        pad = self.eos_id if self.eos_id is not None else 0
        ids = torch.full((n, t), pad, dtype=torch.long)
        mask = torch.zeros(n, t, dtype=torch.bool)
        for i, p in enumerate(prompts):  # left padding: every row's next token is at the end
            ids[i, t - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, t - len(p):] = True
        ids = self.check_latents(ids)
        gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
        stops = torch.as_tensor(self.stop_ids, dtype=torch.long)
        new: list[list[int]] = [[] for _ in range(n)]
        done = torch.zeros(n, dtype=torch.bool)
        cache = KVCache()
        with torch.no_grad(), self.overridden(weight_override):
            h = self.module.hidden(ids, cache=cache, attention_mask=mask.to(ids.device))
            logits = self.module.logits(h[:, -1])  # (N, V): the first new token's, and pairs'
            if continuations:
                scores = self._score_on(cache, logits.log_softmax(-1), continuations)
            for step in range(max_new_tokens):
                nxt = self._pick(logits.cpu(), greedy, temperature, top_p, gens)  # (N,)
                done |= torch.isin(nxt, stops)
                if bool(done.all()):
                    break
                for i in range(n):
                    if not done[i]:
                        new[i].append(int(nxt[i]))
                if step + 1 < max_new_tokens:  # the last token's own pass would go unused
                    h = self.module.hidden(nxt[:, None].to(ids.device), cache=cache)  # (N, 1, dim)
                    logits = self.module.logits(h[:, -1])
        return new, scores

    def _score_on(self, cache: KVCache, first: torch.Tensor,
                  continuations: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
        """Σ log p(continuation | prompt) per pair, given the prompts' cache and the log-softmax
        of their next token (N, V); the cache itself is left as it was."""
        out = torch.zeros(len(continuations), dtype=torch.float64)
        longer = []
        for b, (i, c) in enumerate(continuations):
            if len(c):
                out[b] += float(first[int(i), int(c[0])])
            if len(c) > 1:
                longer.append(b)
        if not longer:
            return out
        rows = torch.as_tensor([int(continuations[b][0]) for b in longer], device=first.device)
        past = cache.length
        pair = KVCache(k=[k[rows, :, :past] for k in cache.k],
                       v=[v[rows, :, :past] for v in cache.v],
                       lengths=list(cache.lengths), mask=cache.mask[rows])
        seqs = [list(continuations[b][1])[:-1] for b in longer]  # each token predicts the next
        ids = self._right_padded(seqs)  # the padding after each is never attended to
        valid = torch.arange(ids.shape[1]) < torch.tensor([len(s) for s in seqs])[:, None]
        am = torch.cat([pair.mask, valid.to(pair.mask.device)], dim=1)
        h = self.module.hidden(ids, cache=pair, attention_mask=am)  # (B, m, dim)
        where, target, owner = [], [], []
        for r, s in enumerate(seqs):
            where += [(r, j) for j in range(len(s))]
            target += list(continuations[longer[r]][1])[1:]
            owner += [longer[r]] * len(s)
        self._add_logprobs(out, h, where, target, owner)
        return out

    @staticmethod
    def _pick(logits: torch.Tensor, greedy: bool, temperature: float, top_p: float | None,
              gens: Sequence[torch.Generator]) -> torch.Tensor:
        if greedy:
            return logits.argmax(-1)
        probs = (logits.double() / temperature).softmax(-1)  # (N, V)
        if top_p is not None and top_p < 1:
            p, order = probs.sort(-1, descending=True)
            keep = p.cumsum(-1) - p < top_p  # the smallest head whose mass reaches top_p
            probs = torch.zeros_like(probs).scatter(-1, order, p * keep)
        return torch.stack([torch.multinomial(probs[i], 1, generator=g)[0]
                            for i, g in enumerate(gens)])

    def __repr__(self) -> str:
        return (f"TextModel({self.name!r}, layers={len(self._layers)}, "
                f"vocab={self.vocab_size}, device={self.device})")


# -- a tiny seeded model for tests ----------------------------------------------------------------
TINY_TEXT = """The capital of Japan is Tokyo. The Eiffel Tower is located in the city of Paris.
Rome is the capital of Italy, and Berlin is the capital of Germany. Water boils at 100 degrees.
The Moon orbits the Earth; the Earth orbits the Sun. In 1969 people first walked on the Moon.
Bread is made from flour, water, salt and yeast. Football is played with a round ball.
The river Nile flows through Egypt. Mount Everest is the highest mountain on Earth."""
# vocab_size is the BPE's target; the model gets the trained tokenizer's actual size (314)
TINY_CONFIG = LlamaConfig(vocab_size=320, dim=64, n_layers=4, n_heads=4, n_kv_heads=2,
                          hidden_dim=128, max_seq_len=512)
TINY_CHUNKS = 64


def byte_level_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """SmolLM2's: every digit alone, then GPT-2's byte-level split (no prefix space)."""
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                             use_regex=True)])


def build_tiny_tokenizer(vocab_size: int = TINY_CONFIG.vocab_size) -> Tokenizer:
    """A byte-level BPE trained on TINY_TEXT (deterministic, ~10 ms); id 0 is <|endoftext|>."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = byte_level_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    tok.train_from_iterator([TINY_TEXT], trainer=trainer)
    return tok


def build_tiny_llama(seed: int = 0, cfg: LlamaConfig = TINY_CONFIG) -> Llama:
    g = torch.Generator().manual_seed(seed)
    net = Llama(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    return net


def load_tiny_text(device: torch.device | str | None = None, seed: int = 0) -> TextModel:
    """A 4-layer Llama (dim 64, 4 heads, 2 kv heads, hidden 128) with random seeded weights, a
    byte-level BPE trained on TINY_TEXT and TINY_CHUNKS seeded random chunks as statistics corpus."""
    tok = build_tiny_tokenizer()
    cfg = dataclasses.replace(TINY_CONFIG, vocab_size=tok.get_vocab_size())  # 314 tokens
    g = torch.Generator().manual_seed(10_000 + seed)
    corpus = torch.randint(1, tok.get_vocab_size(), (TINY_CHUNKS, STATS_TOKENS), generator=g)
    return TextModel(build_tiny_llama(seed, cfg), tok, name="tiny-text" if seed == 0 else
                     f"tiny-text-{seed}", corpus=corpus, bos_id=None, eos_id=0, device=device,
                     document_start=(0,))
