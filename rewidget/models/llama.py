"""A Llama decoder in plain torch (SmolLM2's architecture), with the module names of HF Llama.

    cfg = LlamaConfig(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3,
                      hidden_dim=1536)
    net = Llama(cfg)                                  # load_state_dict(...) with HF names
    logits = net(ids)                                 # ids (N, T) long → (N, T, V) float32
    cache = KVCache()
    logits = net(prompt_ids, cache=cache)             # prefill, then one token at a time:
    logits = net(next_ids[:, None], cache=cache)      # (N, 1) → (N, 1, V)

Every MLP runs ``down(silu(gate(x)) * up(x))`` through ``layers.{i}.mlp.down_proj``, a real
nn.Linear call, so forward pre-hooks there read the layer's keys (N, T, hidden_dim) and forward
hooks may replace its values. Rotary embeddings follow the HF ``rotate_half`` convention (GGUF
files hold Q and K permuted for llama.cpp's adjacent-pair rotation; ``unpermute_qk`` undoes
that). Device and dtype come from the weights; logits are always float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    norm_eps: float = 1e-5
    rope_base: float = 100000.0
    max_seq_len: int = 2048
    tie_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's convert permute of a Q or K weight (out, in): adjacent rotary pairs
    (2i, 2i+1) per head back to HF's halves (i, i + head_dim/2)."""
    out = w.shape[0]
    return (w.reshape(n_heads, out // n_heads // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def permute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's convert permute (HF layout → GGUF layout); the inverse of ``unpermute_qk``."""
    out = w.shape[0]
    return (w.reshape(n_heads, 2, out // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()  # normalise in float32 like HF, then back to the input dtype
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


@dataclass
class KVCache:
    """Keys and values of the positions seen so far, per layer: (N, n_kv_heads, T, head_dim),
    in buffers that grow by doubling (no copy of the whole past per token).

    ``mask`` (N, T) bool marks real (not padding) positions, for left-padded batches."""

    k: list[torch.Tensor] = field(default_factory=list)  # buffers (N, KV, capacity, hd)
    v: list[torch.Tensor] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return self.lengths[0] if self.lengths else 0

    def update(self, i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's (N, KV, T, hd) to layer i; return all of it so far."""
        if i == len(self.k):
            self.k.append(k[:, :, :0])
            self.v.append(v[:, :, :0])
            self.lengths.append(0)
        t0, t = self.lengths[i], k.shape[2]
        if t0 + t > self.k[i].shape[2]:
            grow = max(2 * self.k[i].shape[2], t0 + t, 64)
            for buf in (self.k, self.v):
                new = k.new_empty(k.shape[0], k.shape[1], grow, k.shape[3])
                new[:, :, :t0] = buf[i][:, :, :t0]
                buf[i] = new
        self.k[i][:, :, t0:t0 + t] = k
        self.v[i][:, :, t0:t0 + t] = v
        self.lengths[i] = t0 + t
        return self.k[i][:, :, :t0 + t], self.v[i][:, :, :t0 + t]


def rotary(positions: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (N, 1, T, head_dim) for integer positions (N, T); HF's cat(freqs, freqs)."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, device=positions.device,
                                      dtype=torch.float32) / head_dim)
    freqs = positions.float()[..., None] * inv  # (N, T, head_dim/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (N, 1, T, head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
           ) -> torch.Tensor:
    """Grouped-query attention: query head h reads kv head h // (H / KV). ``mask`` None: causal
    for a first pass (no past), none needed for a single new token."""
    causal = mask is None and q.shape[2] > 1
    try:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              enable_gqa=True)
    except TypeError:  # torch < 2.5 has no enable_gqa: repeat the kv heads instead
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * self.hd, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * self.hd, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * self.hd, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * self.hd, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, cache: KVCache | None, index: int) -> torch.Tensor:
        n, t, _ = x.shape
        q = self.q_proj(x).view(n, t, self.n_heads, self.hd).transpose(1, 2)  # (N, H, T, hd)
        k = self.k_proj(x).view(n, t, self.n_kv, self.hd).transpose(1, 2)  # (N, KV, T, hd)
        v = self.v_proj(x).view(n, t, self.n_kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(index, k, v)  # (N, KV, T_past + T, hd)
        y = attend(q, k, v, mask)  # (N, H, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(n, t, self.n_heads * self.hd))


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the keys of the rewritable memory: (N, T, hidden_dim), seen by down_proj's hooks
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache, index):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, index)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def hidden(self, ids: torch.Tensor, cache: KVCache | None = None,
               attention_mask: torch.Tensor | None = None, start: int = 0,
               x_start: torch.Tensor | None = None, stop: int | None = None) -> torch.Tensor:
        """Final normed hidden states (N, T, dim), before the output head.

        Without ``attention_mask`` the batch is causal from position 0 (right padding then
        cannot affect earlier real tokens). With it (N, T_past + T) bool, False at left
        padding, positions count real tokens only and padding is never attended to.
        ``stop``: return the residual stream entering block ``stop`` instead (not normed);
        ``start`` with ``x_start``: resume from that stream at block ``start`` (the blocks
        before it are not run), e.g. to try many changes made after them; with a ``cache``,
        it must hold the past of the blocks from ``start`` on (those before are not read)."""
        n, t = ids.shape
        past = cache.length if cache is not None else 0
        if attention_mask is None and cache is not None and cache.mask is not None:
            attention_mask = torch.cat([cache.mask, cache.mask.new_ones(n, t)], dim=1)
        if start and x_start is None:
            raise ValueError("resuming at a block needs x_start (the stream entering it)")
        x = self.embed_tokens(ids) if x_start is None else x_start  # (N, T, dim)
        mask = None
        if attention_mask is None:
            pos = torch.arange(past, past + t, device=ids.device).expand(n, t)
            if past and t > 1:  # causal within the new tokens, all of the past visible
                mask = torch.ones(t, past + t, dtype=torch.bool, device=ids.device).tril(past)
        else:
            am = attention_mask.to(device=ids.device, dtype=torch.bool)  # (N, T_past + T)
            pos = (am.long().cumsum(1) - 1).clamp(min=0)[:, past:]  # (N, T)
            causal = torch.ones(t, past + t, dtype=torch.bool, device=ids.device).tril(past)
            mask = causal & am[:, None, :]  # (N, T, T_k)
            # a padding query sees itself, so no softmax row is empty (its output is unused)
            own = torch.arange(t, device=ids.device)[:, None] + past == \
                torch.arange(past + t, device=ids.device)  # (T, T_k): query i at key past + i
            mask = mask | own
            mask = mask[:, None]  # (N, 1, T, T_k)
            if cache is not None:
                cache.mask = am
        cos, sin = rotary(pos, self.cfg.head_dim, self.cfg.rope_base, x.dtype)
        for i, block in enumerate(self.layers):
            if i < start:
                continue
            if i == stop:
                return x
            x = block(x, cos, sin, mask, cache, i)
        return self.norm(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Output head on hidden states (..., dim) → (..., V) float32."""
        return self.lm_head(h).float()

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids (N, T) long → logits (N, T, V) float32."""
        return self.logits(self.hidden(ids, cache, attention_mask))
