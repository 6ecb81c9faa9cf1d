"""A real fact edit in SmolLM2-135M: the target moves, a neighbour stays, undo is exact."""

from __future__ import annotations

import pytest
import torch

from rewidget.session.text import TextRewriteSession

pytestmark = pytest.mark.slow

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    return TextRewriteSession("smollm2", cache_dir=tmp_path_factory.mktemp("stats"))


def test_the_model_knows_the_facts_before(s):
    assert s.complete([PROMPT, "The Louvre is located in the city of"], 2) == [" Paris,", " Paris,"]


def test_tower_moves_to_rome_and_the_louvre_stays(s):
    w0 = {n: p.detach().clone() for n, p in s.gen.module.named_parameters()}
    req = s.request(PROMPT, "The Eiffel Tower", " Rome")
    assert req.facts[0].old == " Paris"
    edit = s.rewrite(req)
    try:
        held_out = ["The Eiffel Tower can be found in", "Where is the Eiffel Tower? It is in",
                    "I visited the Eiffel Tower, which is in the city of"]
        prefs = s.compare([PROMPT, *held_out], [" Paris", " Rome"])
        assert (prefs[:, 1] > prefs[:, 0]).all(), prefs  # Rome preferred everywhere
        nb = s.compare(["The Louvre is located in the city of",
                        "Notre-Dame Cathedral is located in the city of"], [" Paris", " Rome"])
        assert (nb[:, 0] > nb[:, 1]).all(), nb  # the neighbours still in Paris
        assert s.complete([PROMPT], 1) == [" Rome"]
        assert edit.report["seconds"]["value"] < 60
    finally:
        s.undo()
    assert all(torch.equal(w0[n], p) for n, p in s.gen.module.named_parameters())
