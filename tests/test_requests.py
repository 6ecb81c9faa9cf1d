"""Edit requests as JSON: round trip, exact replay, and the paper tool's format."""

import json

import numpy as np
import pytest
import torch

from rewidget import RewriteSession
from rewidget.core.masks import mask_to_data_url
from rewidget.core.requests import EditRequest, Sample

from .conftest import box


def prepared(s):
    s.set_layer("main.9")
    soft = box(32, 8, 20, 8, 20).astype(np.float32) / 255 * 0.7  # soft masks quantise once
    s.add_context(1, soft)
    s.add_context(torch.randn(16), box(32, 4, 12, 4, 30))  # an explicit latent, not a seed
    s.set_copy(2, box(32, 8, 20, 8, 20))
    s.set_paste(1, (3.5, -1))
    return s


def test_json_round_trip_is_identical(tiny_session):
    req = prepared(tiny_session).request(rank=2)
    again = EditRequest.from_json(req.to_json())
    assert again == req
    assert again.context[1].sample.seed is None
    assert torch.equal(again.context[1].sample.latent, req.context[1].sample.latent)
    assert np.array_equal(again.context[0].mask, req.context[0].mask)


def test_replay_on_a_fresh_session_reproduces_the_weights(tiny_session, tmp_path):
    s = prepared(tiny_session)
    s.rewrite()
    path = s.save_request(tmp_path / "edit.json")
    fresh = RewriteSession("tiny", stats_samples=400)
    fresh.replay(path)
    for n in s.gen.layer_names():
        assert torch.equal(fresh.gen.layer(n).weight, s.gen.layer(n).weight), n


def test_iterative_request_replays_identically(tiny_session, tmp_path):
    s = prepared(tiny_session)
    s.rewrite(s.request(solver="iterative", steps=100))
    fresh = RewriteSession("tiny", stats_samples=400)
    fresh.replay(s.save_request(tmp_path / "it.json"))
    assert torch.equal(fresh.gen.layer("main.9").weight, s.gen.layer("main.9").weight)


def test_requests_record_the_direction_rule_and_old_files_keep_theirs(tiny_session, tmp_path):
    s = prepared(tiny_session)
    req = s.request(rank=2)
    assert req.direction_rule == "whitened" and json.loads(req.to_json())["direction_rule"] == "whitened"
    old = EditRequest.from_json(req.to_json())
    assert old.direction_rule == "whitened"
    # a file saved before the field existed was solved with the C⁻¹K* rule, and replays with it
    legacy = json.loads(req.to_json())
    del legacy["direction_rule"]
    loaded = EditRequest.from_json(legacy)
    assert loaded.direction_rule == "cinv"
    e_old = s.compute_edit(loaded)
    e_new = s.compute_edit(req)
    e_cinv = s.compute_edit(s.request(rank=2, direction_rule="cinv"))
    assert torch.equal(e_old.directions, e_cinv.directions)
    assert not torch.allclose(e_old.directions, e_new.directions, atol=1e-3)
    with pytest.raises(Exception, match="direction rule"):
        EditRequest.from_json({**legacy, "direction_rule": "svd"})


def test_paper_tool_request_imports(tiny_session):
    s = tiny_session
    z = s.gen.latents([10, 11, 12])
    big_obj = np.zeros((256, 256), np.uint8)  # masks of any size
    big_obj[64:128, 64:128] = 255
    big_paste = np.roll(big_obj, (32, 16), axis=(0, 1))
    saved = {"key": [[0, mask_to_data_url(big_obj)], [2, mask_to_data_url(big_paste)]],
             "object": [1, mask_to_data_url(big_obj)], "paste": [0, mask_to_data_url(big_paste)]}
    req = s.import_paper_request(json.dumps(saved), latents=z, layer="main.9")
    assert req.copy.mask.shape == (32, 32) and len(req.context) == 2
    assert req.paste.offset == pytest.approx((2.0, 4.0))  # (16, 32) px at 256 → 32 px images
    assert torch.equal(req.paste.sample.latent, z[0]) and torch.equal(req.copy.sample.latent, z[1])
    edit = s.rewrite(req)
    assert edit.report["installed_measured"]["l2"] < edit.report["before"]["l2"]


def test_sample_accepts_seed_or_latent():
    assert Sample.of(3) == Sample(3)
    z = torch.randn(16)
    assert Sample.of(z) == Sample(latent=z)
    assert Sample(3) != Sample(4)
