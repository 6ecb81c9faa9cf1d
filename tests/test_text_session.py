"""The text session on the tiny seeded Llama: the math against closed forms, the history, the
requests and bad input. The real SmolLM2 edits are in test_text_real.py."""

from __future__ import annotations

import threading

import pytest
import torch

from rewidget.core.errors import Cancelled, RewriteError
from rewidget.session.facts import SIX_PREFIXES, Fact, FactRequest
from rewidget.session.text import TextRewriteSession, weight_in

PROMPT = "The capital of Japan is"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return TextRewriteSession("tiny-text", cache_dir=tmp_path_factory.mktemp("stats"))


@pytest.fixture()
def s(session):
    yield session
    session.reset()
    session.history.redo_stack.clear()


def weights(s):
    return {n: p.detach().clone() for n, p in s.gen.module.named_parameters()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def quick(s, **kw):
    return s.request(PROMPT, "Japan", " Paris", value_options={"steps": 8}, **kw)


def test_request_json_round_trip(s):
    req = quick(s, rank=1)
    again = FactRequest.from_json(req.to_json())
    assert again == req
    assert again.facts[0].old  # filled from the model's own continuation
    assert again.value_options["steps"] == 8 and again.value_options["kl"] == 0.0625


@pytest.mark.parametrize("fact, message", [
    (("", "x", " y"), "prompt is empty"),
    (("The tower is tall", "Tower", " y"), "does not occur"),
    (("The tower is ", "tower", " y"), "ends with whitespace"),
    (("The tower is", "tower", "  "), "target is empty"),
    (("The tower is", "", " y"), "subject is empty"),
    ((3, "tower", " y"), "not text"),
])
def test_bad_facts_are_refused_clearly(fact, message):
    with pytest.raises(RewriteError, match=message):
        Fact(*fact)


@pytest.mark.parametrize("options, message", [
    ({"value_options": {"steps": 10**9}}, "outside"),
    ({"value_options": {"lr": float("nan")}}, "not a finite"),
    ({"value_options": {"momentum": 1}}, "Unknown value option"),
    ({"rank": 4}, "needs at least 4 key rows"),
    ({"key_mode": "median"}, "Unknown key_mode"),
    ({"direction_rule": "magic"}, "Unknown direction rule"),
    ({"ridge": -1}, "outside"),
    ({"essence": ("no placeholder",)}, "exactly one"),
])
def test_bad_options_are_refused_clearly(options, message):
    with pytest.raises(RewriteError, match=message):
        FactRequest(layer="layers.0.mlp.down_proj", facts=(Fact(PROMPT, "Japan", " Paris"),),
                    **options)


def test_target_gets_its_space():
    f = FactRequest(layer="x", facts=(Fact(PROMPT, "Japan", "Paris"),)).facts[0]
    assert f.target == " Paris"


def test_compute_edit_changes_no_weight_and_meets_its_goal(s):
    before = weights(s)
    edit = s.compute_edit(quick(s))
    assert same(before, weights(s))
    (t,) = edit.targets
    module = s.gen.layer(edit.layer)
    with torch.no_grad():
        out = torch.nn.functional.linear(t.keys, module.weight + edit.delta(module))
    # ridge 1e-3: the goal is met to 0.1% of the shift δ
    shift = (t.goal - module(t.keys)).norm()
    assert (out - t.goal).norm() <= 2e-3 * shift


def test_rank_one_edit_is_the_closed_form(s):
    """One fact: ΔW = r (C⁻¹k)ᵀ / ((C⁻¹k)ᵀk (1 + ridge)), r = v* − Wk (ROME's update)."""
    req = quick(s, direction_rule="cinv", key_mode="mean")
    edit = s.compute_edit(req)
    (t,) = edit.targets
    module = s.gen.layer(edit.layer)
    c = s.statistics_for([edit.layer])[edit.layer]
    k = t.keys[0].double()
    u = torch.linalg.solve(c + 1e-6 * c.diagonal().mean() * torch.eye(len(c), dtype=c.dtype), k)
    r = (t.goal[0] - module(t.keys)[0]).double()
    expected = torch.outer(r, u) / ((u @ k) * (1 + req.ridge))
    got = edit.delta(module).double()
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.abs().max())


def test_the_edit_raises_the_target(s):
    # the random tiny model hardly listens to one MLP: no guards, so δ can grow until it does.
    # How far the installed edit moves it depends on the prefixes the keys are averaged over
    # (0.80 nats with these six, 0.43 with the four defaults, -0.15 with '' alone); the real
    # model's edits are measured in test_text_real.py and benchmarks/text_edits.py
    req = s.request(PROMPT, "Japan", " Paris", prefixes=SIX_PREFIXES,
                    value_options={"steps": 60, "lr": 1.0, "decay": 0, "kl": 0, "clamp": 50})
    before = s.compare([PROMPT], [" Paris"])[0, 0]
    edit = s.rewrite(req)
    after = s.compare([PROMPT], [" Paris"])[0, 0]
    assert edit.report["values"][0]["trace"][-1]["nll"] < edit.report["values"][0]["trace"][0]["nll"]
    assert after > before + 0.5  # nats per token


def test_undo_redo_reset_are_bit_exact(s):
    w0 = weights(s)
    edit = s.rewrite(quick(s))
    w1 = weights(s)
    assert not same(w0, w1)
    s.undo()
    assert same(w0, weights(s))
    s.redo()
    assert same(w1, weights(s))
    s.reset()
    assert same(w0, weights(s))
    assert edit.request.facts[0].target == " Paris"


def test_replay_is_identical(s, tmp_path):
    req = quick(s)
    a = s.compute_edit(req)
    path = s.save_request(tmp_path / "fact.json", req)
    b = s.compute_edit(s.load_request(path))
    assert torch.equal(a.directions, b.directions) and torch.equal(a.factor, b.factor)


def test_texts_are_read_after_the_document_start(s):
    lead = list(s.gen.document_start)
    assert lead == [0]  # tiny-text's <|endoftext|>
    assert s.gen.prompt_ids(PROMPT) == lead + s.gen.encode(PROMPT)
    ids = s.gen.prompt_ids(PROMPT)
    new = s.gen.generate_ids([ids], 5)[0]
    assert s.gen.generate([PROMPT], 5)[0] == s.gen.decode(ids + new)[len(s.gen.decode(ids)):]
    # compare scores the object after the document start and the prompt
    obj = s.gen.encode(" Paris")
    lp = s.gen.logprobs([ids], [obj])[0] / len(obj)
    assert float(s.compare([PROMPT], [" Paris"])[0, 0]) == pytest.approx(float(lp), abs=1e-6)
    # the subject's key as typed: at its token after the document start, not at the text's start
    req, old = quick(s), quick(s, document_start=False)
    at = len(s.gen.encode("The capital of Japan"))  # "Japan" is the last of these tokens
    keys = s.gen.keys(req.layer, torch.tensor([ids]))[0]
    assert torch.allclose(s.subject_keys(req, req.facts[0])[0], keys[at], atol=1e-6)
    plain = s.gen.keys(req.layer, torch.tensor([s.gen.encode(PROMPT)]))[0]
    assert torch.allclose(s.subject_keys(old, old.facts[0])[0], plain[at - 1], atol=1e-6)
    assert not torch.allclose(keys[at], plain[at - 1], atol=1e-3)


def test_a_request_saved_before_document_start_replays_without_it(s, tmp_path):
    old = quick(s, document_start=False)
    legacy = old.to_dict()
    del legacy["document_start"]  # as written before the field existed
    again = FactRequest.from_json(legacy)
    assert again == old and again.document_start is False
    a, b = s.compute_edit(old), s.compute_edit(again)
    assert torch.equal(a.directions, b.directions) and torch.equal(a.factor, b.factor)
    assert not torch.equal(a.factor, s.compute_edit(quick(s)).factor)
    with pytest.raises(RewriteError, match="document_start"):
        quick(s, document_start="yes")


def test_several_facts_in_one_edit(s):
    facts = (Fact(PROMPT, "Japan", " Paris"),
             Fact("The Eiffel Tower is located in the city of", "The Eiffel Tower", " Rome"))
    edit = s.compute_edit(s.request(facts, value_options={"steps": 5}, ridge=0.0))
    assert edit.rank == 5  # "wide": three key rows, two for the fact whose prompt opens with it
    t = edit.targets[0]
    module = s.gen.layer(edit.layer)
    with torch.no_grad():
        out = torch.nn.functional.linear(t.keys, module.weight + edit.delta(module))
    shift = (t.goal - module(t.keys)).norm(dim=1)
    assert ((out - t.goal).norm(dim=1) <= 1e-3 * shift).all()  # no ridge: exact


def test_edits_compose_and_export(s, tmp_path):
    s.rewrite(quick(s))
    s.rewrite(s.request("The Eiffel Tower is located in the city of", "The Eiffel Tower",
                        " Rome", value_options={"steps": 5}, layer="layers.2.mlp.down_proj"))
    edited = weights(s)
    path = s.export_delta(tmp_path / "e.delta.safetensors")
    s.reset()
    s.history.redo_stack.clear()
    s.load_delta(path)
    assert same(edited, weights(s))


def test_bad_input_keeps_state(s):
    s.rewrite(quick(s))
    w, n = weights(s), len(s.history)
    for call in (lambda: s.request(PROMPT, "Tokyo", " Paris"),
                 lambda: s.request("", "x", " y"),
                 lambda: s.request(PROMPT, "Japan", ""),
                 lambda: s.request(PROMPT, "Japan", " Paris", layer="layers.99.mlp.down_proj"),
                 lambda: s.fact_from_tokens(PROMPT, [99], " Paris"),
                 lambda: s.fact_from_tokens(PROMPT, [], " Paris"),
                 lambda: s.rewrite(None),
                 lambda: s.compare([""], [" Paris"]),
                 lambda: s.load_request(__file__)):
        with pytest.raises(RewriteError):
            call()
        assert same(w, weights(s)) and len(s.history) == n


def test_request_of_another_model_is_refused(s):
    req = FactRequest(**{**quick(s).__dict__, "model": "smollm2"})
    with pytest.raises(RewriteError, match="made for model 'smollm2'"):
        s.compute_edit(req)


def test_cancel_changes_nothing(s):
    w = weights(s)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        s.rewrite(quick(s), cancel=stop)
    assert same(w, weights(s)) and len(s.history) == 0


def test_tokens_select_the_subject(s):
    toks = s.tokens(PROMPT)
    picks = [i for i, (_, text, _) in enumerate(toks) if text.strip() in ("J", "Japan")
             or "Jap" in text or "apan" in text]
    fact = s.fact_from_tokens(PROMPT, picks or [len(toks) - 2], " Paris")
    assert fact.subject in PROMPT and fact.subject


def test_weight_in_leaves_the_parameter(s):
    module = s.gen.layer(s.layer)
    w = module.weight.detach().clone()
    x = torch.randn(2, 3, module.in_features)
    with weight_in(module, torch.zeros_like(w)):
        assert torch.equal(module(x), torch.zeros(2, 3, module.out_features))
    assert torch.equal(module.weight, w) and not torch.equal(module(x), torch.zeros(2, 3, module.out_features))


def test_suggest_installs_nothing_and_ranks(s):
    w = weights(s)
    rows = s.suggest(quick(s), layers=["layers.0.mlp.down_proj", "layers.2.mlp.down_proj"])
    assert same(w, weights(s))
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert {r["layer"] for r in rows} == {"layers.0.mlp.down_proj", "layers.2.mlp.down_proj"}


def test_the_value_search_resumes_after_the_edited_block_with_the_same_result(s, monkeypatch):
    """At an MLP down-projection the blocks before it run once and each step resumes after it,
    on the columns from the subject's end on (rows left-padded to align it; the columns before
    run once); the δ found is the one the full forward with a hook finds, and the one the
    resumed forward over every column finds."""
    req = quick(s)
    fact = req.facts[0]
    assert s.gen.block_after(req.layer) == int(req.layer.split(".")[1]) + 1
    assert s.gen.block_after("layers.1.self_attn.o_proj") is None
    ends = {s._subject_position(p + fact.prompt, len(p) + fact.subject_end)[1]
            for p in req.prefixes}
    assert len(ends) > 1  # the prefixes put the subject's end at different columns
    fast, rep_fast = s.value_shift(req, fact)
    with monkeypatch.context() as m:
        m.delattr(type(s.gen), "head_past")
        whole, rep_whole = s.value_shift(req, fact)
    monkeypatch.setattr(s.gen, "block_after", lambda name: None)
    slow, rep_slow = s.value_shift(req, fact)
    for other, rep in ((slow, rep_slow), (whole, rep_whole)):
        assert torch.allclose(fast, other, rtol=1e-4, atol=1e-5 * float(other.norm()))
        assert [round(t["nll"], 4) for t in rep_fast["trace"]] == \
            [round(t["nll"], 4) for t in rep["trace"]]
        # the resumed search takes the unedited essence logits from its first step (δ = 0), the
        # long way from a pass of its own: the same drift guard
        assert [round(t["kl"], 5) for t in rep_fast["trace"]] == \
            [round(t["kl"], 5) for t in rep["trace"]]


def test_key_mode_wide_adds_the_subject_opening_a_text(s):
    base = quick(s, key_mode="split")
    wide = quick(s)  # the default
    assert wide.key_mode == "wide"
    opened = s.request("Japan is a country whose capital is", "Japan", " Paris")
    assert base.key_rows == 2 and wide.key_rows == 3 and opened.key_rows == 2
    k = s.subject_keys(wide, wide.facts[0])
    assert k.shape[0] == 3
    start = s.subject_keys(opened, opened.facts[0])[0]  # the prompt as typed opens with it
    assert torch.allclose(k[2], start, atol=1e-5)
    edit = s.compute_edit(s.request(PROMPT, "Japan", " Paris",
                                    value_options={"steps": 8, "opening": 1}))
    assert edit.rank == 3


def test_two_phrasings_of_one_subject_share_a_key_row_and_the_auto_rank_counts_it_once(s):
    # "wide" keys: the first phrasing adds the subject opening a text, which is the second
    # phrasing's own subject key (it opens with the subject): 5 rows, 4 distinct
    facts = [Fact(PROMPT, "Japan", " Paris"),
             Fact("Japan is a country whose capital is", "Japan", " Paris")]
    opts = {"steps": 4}
    req = s.request(facts, value_options=opts)
    assert req.key_rows == 5 and req.rank == 0
    edit = s.compute_edit(req)
    assert edit.rank == 4
    with pytest.raises(RewriteError, match="distinct context keys"):
        s.compute_edit(s.request(facts, rank=5, value_options=opts))
    assert len(s.history) == 0


def test_the_panel_scores_match_probabilities_before_and_now(s):
    req = quick(s)
    s.rewrite(req)
    rows = s.panel(req, paraphrases=["Japan's capital is"], neighbours=[(PROMPT, " Tokyo")])
    now = s.probabilities([PROMPT], [req.facts[0].old, req.facts[0].target])[0]
    assert rows[0]["now"]["p_old"] == pytest.approx(float(now[0]), rel=1e-5)
    assert rows[0]["now"]["p_new"] == pytest.approx(float(now[1]), rel=1e-5)
    with s.history.original_weights():
        before = s.probabilities([PROMPT], [req.facts[0].old, req.facts[0].target])[0]
    assert rows[0]["before"]["p_new"] == pytest.approx(float(before[1]), rel=1e-5)
    again = s.panel(req, paraphrases=["Japan's capital is"], neighbours=[(PROMPT, " Tokyo")])
    assert again == rows  # the before side comes from the cache, the same


def test_the_panel_with_no_edit_installed_reads_now_as_before(s):
    s.reset()
    req = quick(s)
    s._panel_before.clear()
    rows = s.panel(req, paraphrases=["Japan's capital is"])
    assert not s.history.held_layers()
    p = s.probabilities([PROMPT], [req.facts[0].old, req.facts[0].target])[0]
    for row in rows:
        assert row["now"] == row["before"]
    assert rows[0]["now"]["p_new"] == pytest.approx(float(p[1]), rel=1e-5)
    assert rows[0]["now"]["completion"] == s.complete([PROMPT], 8)[0]
    s.rewrite(req)
    try:
        after = s.panel(req, paraphrases=["Japan's capital is"])
        assert after[0]["before"] == rows[0]["before"]
        assert after[0]["now"]["p_new"] != rows[0]["now"]["p_new"]  # the edit is read, not W₀
    finally:
        s.reset()
