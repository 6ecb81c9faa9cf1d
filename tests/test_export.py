"""Exported weights and compact deltas reproduce the edited model; safe formats only."""

import pytest
import torch
from safetensors.torch import load_file

from rewidget import RewriteError, RewriteSession
from rewidget.models.tiny import build_tiny

from .conftest import box


def edited(s):
    s.set_layer("main.9")
    s.add_context(1, box(32, 8, 20, 8, 20))
    s.set_copy(2, box(32, 8, 20, 8, 20))
    s.set_paste(1, (2, 2))
    s.rewrite()
    s.set_layer("main.7")
    s.rewrite()
    s.set_strength(0, 0.6)
    return s


def test_exported_state_dict_loads_into_a_fresh_network(tiny_session, tmp_path):
    s = edited(tiny_session)
    path = s.export_weights(tmp_path / "edited.safetensors")
    net = build_tiny()
    net.load_state_dict(load_file(str(path)))
    for name, p in net.state_dict().items():
        assert torch.equal(p, s.gen.module.state_dict()[name]), name


def test_delta_file_reproduces_the_edits(tiny_session, tmp_path):
    s = edited(tiny_session)
    path = s.export_delta(tmp_path / "edits.delta.safetensors")
    assert path.stat().st_size < 50_000  # factors, not weights
    fresh = RewriteSession("tiny", stats_samples=400)
    fresh.load_delta(path)
    assert [e.strength for e in fresh.history.entries] == [0.6, 1.0]
    for n in s.gen.layer_names():
        assert torch.equal(fresh.gen.layer(n).weight, s.gen.layer(n).weight), n
    fresh.reset()
    assert torch.equal(fresh.gen.layer("main.9").weight, build_tiny().main[9].weight)


def test_delta_for_another_model_is_refused(tiny_session, tmp_path):
    path = edited(tiny_session).export_delta(tmp_path / "d.safetensors")
    other = RewriteSession(__import__("rewidget").models.load_tiny(seed=1), stats_samples=400)
    with pytest.raises(RewriteError, match="other weights"):
        other.load_delta(path)
    assert len(other.history) == 0


def test_garbage_delta_file(tmp_path, tiny_session):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(RewriteError, match="not a readable delta"):
        tiny_session.load_delta(p)
