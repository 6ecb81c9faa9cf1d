"""Every bad input gets a clear error, and the session is exactly as before."""

import json

import numpy as np
import pytest
import torch

from rewidget import RewriteError, RewriteSession
from rewidget.core.requests import EditRequest, from_paper_json

from .conftest import box


def snapshot(s):
    return ({n: s.gen.layer(n).weight.detach().clone() for n in s.gen.layer_names()},
            len(s.history), [(c.sample, c.mask.copy()) for c in s.context],
            s.copy, s.paste, s.layer)


def unchanged(s, snap):
    w, n, ctx, copy, paste, layer = snap
    assert all(torch.equal(w[k], s.gen.layer(k).weight) for k in w)
    assert len(s.history) == n and s.copy is copy and s.paste is paste and s.layer == layer
    assert len(s.context) == len(ctx)
    assert all(c.sample == a and np.array_equal(c.mask, b) for c, (a, b) in zip(s.context, ctx, strict=True))


@pytest.fixture
def s(tiny_session):
    tiny_session.set_layer("main.9")
    tiny_session.add_context(1, box(32, 8, 20, 8, 20))
    tiny_session.set_copy(2, box(32, 8, 20, 8, 20))
    tiny_session.set_paste(1, (2, 2))
    tiny_session.rewrite()  # an edit in the history that must survive failures
    return tiny_session


BAD_SELECTIONS = [
    ("add_context", (3, np.zeros((32, 32))), "empty"),
    ("add_context", (3, np.ones((32,))), "2-D"),
    ("add_context", (3, np.full((32, 32), np.nan)), "NaN"),
    ("add_context", (3, np.full((32, 32), 2.0)), r"\[0, 1\]"),
    ("set_copy", (3, np.zeros((8, 8), bool)), "empty"),
    ("set_paste", (3, (np.inf, 0)), "NaN or Inf"),
    ("add_context", (torch.full((16,), float("nan")), box(32, 0, 4, 0, 4)), "NaN or Inf"),
    ("set_layer", ("nope",), "Unknown layer"),
]


@pytest.mark.parametrize("method,args,msg", BAD_SELECTIONS)
def test_bad_selection_is_refused_and_nothing_changes(s, method, args, msg):
    snap = snapshot(s)
    with pytest.raises(RewriteError, match=msg) as info:
        getattr(s, method)(*args)
    assert "Fix:" in str(info.value) or info.value.fix
    unchanged(s, snap)


BAD_EDITS = [
    (lambda s: s.set_paste(1, (200, 0)), "outside the image"),
    (lambda s: setattr(s, "rank", 10_000), "Rank 10000 is outside"),
    (lambda s: setattr(s, "rank", 0), "positive integer"),
    (lambda s: setattr(s, "solver", "magic"), "Unknown solver"),
    (lambda s: s.clear_context(), "No context"),
]


@pytest.mark.parametrize("options,msg", [({"steps": 5}, "does not apply"),
                                         ({"ridge": -1.0}, "non-negative"),
                                         ({"ridge": float("nan")}, "non-negative")])
def test_bad_solver_options(s, options, msg):
    snap = snapshot(s)
    with pytest.raises(RewriteError, match=msg):
        s.rewrite(s.request(**options))
    unchanged(s, snap)


@pytest.mark.parametrize("spoil,msg", BAD_EDITS)
def test_bad_edit_is_refused_and_nothing_changes(s, spoil, msg):
    spoil(s)
    snap = snapshot(s)
    with pytest.raises(RewriteError, match=msg):
        s.rewrite()
    unchanged(s, snap)


def test_missing_copy_or_paste(tiny_session):
    s = tiny_session
    s.add_context(1, box(32, 8, 20, 8, 20))
    with pytest.raises(RewriteError, match="Nothing is copied"):
        s.rewrite()
    s.set_copy(2, box(32, 8, 20, 8, 20))
    with pytest.raises(RewriteError, match="not been pasted"):
        s.rewrite()
    assert len(s.history) == 0


@pytest.mark.parametrize("text,msg", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"format": "other"}), "Unknown request format"),
    (json.dumps({"key": [], "object": [], "paste": []}), "paper's tool"),
    (json.dumps({"format": "rewidget.edit-request/1", "layer": 5}), "layer"),
    (json.dumps({"format": "rewidget.edit-request/1", "layer": "main.9",
                 "context": [{"sample": {"seed": 1}, "mask": "data:image/png;base64,AAAA"}]}),
     "could not be decoded"),
    (json.dumps({"format": "rewidget.edit-request/1", "layer": "main.9",
                 "context": [{"sample": {"seed": "x"}, "mask": "x"}]}), "seed"),
])
def test_malformed_request_json(s, text, msg):
    snap = snapshot(s)
    with pytest.raises(RewriteError, match=msg):
        EditRequest.from_json(text)
    unchanged(s, snap)


def test_request_for_another_model_is_refused(s):
    req = EditRequest.from_json(s.request().to_dict() | {"model": "dcgan-faces"})
    snap = snapshot(s)
    with pytest.raises(RewriteError, match="made for model 'dcgan-faces'"):
        s.rewrite(req)
    unchanged(s, snap)


def test_paper_json_with_bad_image_number(s):
    with pytest.raises(RewriteError, match="refers to image 7"):
        from_paper_json({"key": [[7, "data:image/png;base64,"]], "object": [0, ""], "paste": [0, ""]},
                        latents=torch.zeros(2, 16), layer="main.9")


def test_wrong_latent_shape(s):
    snap = snapshot(s)
    with pytest.raises(RewriteError, match="do not fit"):
        s.render([torch.zeros(7)])
    unchanged(s, snap)


def test_paste_region_outside_context_span_is_explained():
    """A context that never fires where the paste lands cannot move it: say so."""
    s = RewriteSession("tiny", stats_samples=400)
    s.set_layer("main.0")  # Linear: keys are the latent itself
    s.add_context(torch.eye(16)[0], box(32, 0, 4, 0, 4))
    s.set_copy(2, box(32, 0, 32, 0, 32))
    s.set_paste(torch.zeros(16), (0, 0))  # its keys are zero: nothing along D
    with pytest.raises(RewriteError, match="no component along the context"):
        s.rewrite()
    assert len(s.history) == 0


def test_singular_statistics_are_regularised_and_reported():
    from rewidget.core.directions import CovarianceInverse

    c = torch.diag(torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64))
    inv = CovarianceInverse(c)
    assert inv.notes and "singular" in inv.notes[0] and "2 of 4" in inv.notes[0]
    assert torch.isfinite(inv.solve(torch.ones(1, 4))).all()
    with pytest.raises(RewriteError, match="NaN or Inf"):
        CovarianceInverse(torch.full((3, 3), float("nan"), dtype=torch.float64))


def test_a_bfloat16_generator_edits_and_its_module_state_can_be_restored():
    from torch import nn

    from rewidget.models import from_module

    net = nn.Sequential(nn.ConvTranspose2d(8, 16, 4, 1, 0), nn.ReLU(),
                        nn.ConvTranspose2d(16, 3, 4, 2, 1), nn.Tanh()).to(torch.bfloat16)
    net.train()
    gen = from_module(net, (8, 1, 1))
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    s = RewriteSession(gen, stats_samples=200, quiet=True)  # crashed: no numpy bfloat16
    full = np.full((8, 8), 255, np.uint8)
    s.add_context(0, full)
    s.set_copy(1, full)
    s.set_paste(0, (0, 0))
    before = s.render().copy()
    s.rewrite(s.request(layer="2", rank=1))
    assert net[2].weight.dtype == torch.bfloat16 and not np.array_equal(before, s.render())
    s.undo()
    assert np.array_equal(before, s.render())
    assert gen.restore_module() is net and net.training
    assert all(p.requires_grad for p in net.parameters())
