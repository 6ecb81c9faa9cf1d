"""Checkpoints users bring: ProGAN state dicts in the paper's layout load and edit; files that
are not plain tensors are refused without running anything in them."""

import os
import pickle

import numpy as np
import pytest
import torch

from rewidget import RewriteError, RewriteSession
from rewidget.core.memory import memory_for
from rewidget.models import from_checkpoint
from rewidget.models.progan import ProGANGenerator

from .conftest import edit_then_undo

SIZES = [32, 32, 32, 16]  # z, 4×4, 8×8, 16×16


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = ProGANGenerator(SIZES)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.25)
    path = tmp_path_factory.mktemp("ckpt") / "proggan_toy.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_the_papers_layout_loads_and_renders_like_the_network(checkpoint):
    path, net = checkpoint
    state = torch.load(path, weights_only=True)
    assert {"layer1.conv.weight", "layer1.wscale.b", "layer6.conv.weight",
            "output_16x16.conv.weight", "output_16x16.wscale.b"} <= set(state)
    gen = from_checkpoint(path)
    assert gen.name == "proggan_toy" and gen.image_size == 16
    assert gen.layer_names() == [f"layer{i}.conv" for i in range(1, 7)] + ["output_16x16.conv"]
    z = gen.latents([0, 1, 2])
    with torch.no_grad():
        assert torch.allclose(gen.forward(z), net(z), atol=1e-6)
    wrapped = path.with_name("wrapped.pth")
    torch.save({"state_dict": state}, wrapped)
    assert torch.equal(from_checkpoint(wrapped).forward(z), gen.forward(z))


def test_a_progan_checkpoint_edits_and_undoes_exactly(checkpoint, tmp_path):
    gen = from_checkpoint(checkpoint[0])
    s = RewriteSession(gen, stats_samples=300, cache_dir=tmp_path, quiet=True)
    m = np.zeros((16, 16), np.uint8)
    m[4:10, 4:10] = 255
    s.add_context(1, m)
    s.set_copy(2, m)
    s.set_paste(1, (0, 0))
    edit_then_undo(s, s.request(layer="layer5.conv", rank=2))
    # a preview renders with the edited weight, as installing it does (off the trunk, the
    # stand-in weight's hook once recursed without end)
    edit = s.compute_edit(s.request(layer="layer5.conv", rank=2))
    preview = s.preview(edit, [1, 3])
    s.apply(edit)
    assert np.abs(preview.astype(int) - s.render([1, 3]).astype(int)).max() <= 1
    s.undo()
    # off the trunk too, the layer's output given (W₀k plus the low-rank change, as the
    # suggestion renders) draws what the edited weight does
    module = gen.layer("layer5.conv")
    mem = memory_for(module, "layer5.conv")
    assert mem.plain
    z = gen.latents([1, 3])
    with torch.no_grad():
        keys = gen.keys("layer5.conv", z)
        edited = module.weight + edit.delta(module)
        by_weight = gen.forward_from("layer5.conv", keys, z=z, weight=edited)
        out = mem.edited_values(keys, edit.directions, edit.factor)
        by_output = gen.run_between("layer5.conv", keys, None, z=z, output=out)
    assert torch.allclose(by_output, by_weight, atol=1e-5)
    assert not torch.allclose(by_output, gen.forward(z), atol=1e-3)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_files_that_are_not_plain_tensors_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    payload = _Payload()
    payload.marker = marker
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"layer1.conv.weight": payload}, f)
    with pytest.raises(RewriteError, match="refused, nothing in it ran"):
        from_checkpoint(evil)
    torch.save({"w": payload}, tmp_path / "evil2.pt")
    with pytest.raises(RewriteError, match="refused"):
        from_checkpoint(tmp_path / "evil2.pt")
    nvidia = tmp_path / "network-snapshot.pkl"
    with open(nvidia, "wb") as f:
        pickle.dump({"G_ema": payload}, f)
    with pytest.raises(RewriteError, match=r"refused: the file asks for posix.system|"
                                           r"refused: the file asks for os.system"):
        from_checkpoint(nvidia)
    assert not marker.exists()  # no payload ran


def test_other_checkpoints_are_named_in_the_refusal(tmp_path):
    style = tmp_path / "stylegan2.pt"
    torch.save({"g_ema": {"w": torch.zeros(1)}, "latent_avg": torch.zeros(512)}, style)
    with pytest.raises(RewriteError, match="StyleGAN2 checkpoint.*no style.1.weight"):
        from_checkpoint(style)  # a g_ema without rosinality's tensors (see test_stylegan2.py)
    other = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(RewriteError, match="not a generator checkpoint"):
        from_checkpoint(other)
    with pytest.raises(RewriteError, match="No checkpoint file"):
        from_checkpoint(tmp_path / "missing.pth")


def _nvidia_snapshot(path, marker, load_with_pickle: bool = False):
    """A pickle in NVIDIA's persistence layout (network records carrying their class source),
    written against a stand-in torch_utils.persistence whose loader would run that source."""
    import collections
    import sys
    import types

    def _reconstruct_persistent_obj(meta):  # what NVIDIA's loader does: run the stored source
        exec(meta["module_src"])  # noqa: S102 - the payload the reader must never run

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mods = {"torch_utils": types.ModuleType("torch_utils"),
            "torch_utils.persistence": types.ModuleType("torch_utils.persistence")}
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class Record:
        def __init__(self, meta):
            self.meta = meta

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    src = f"import os; os.system('touch {marker}')"
    fc = Record({"type": "class", "class_name": "FullyConnectedLayer", "module_src": src,
                 "state": {"_parameters": collections.OrderedDict(
                     weight=torch.nn.Parameter(torch.arange(12.0).reshape(4, 3))),
                     "_buffers": collections.OrderedDict(), "_modules": {}}})
    g = Record({"type": "class", "class_name": "Generator", "module_src": src,
                "state": {"_parameters": collections.OrderedDict(),
                          "_buffers": collections.OrderedDict(w_avg=torch.ones(5)),
                          "_modules": collections.OrderedDict(fc0=fc), "_init_args": (),
                          "_init_kwargs": {"z_dim": 512, "w_dim": 512, "img_resolution": 256}}})
    sys.modules.update(mods)
    try:
        if load_with_pickle:  # the control: NVIDIA's own loader runs the stored source
            pickle.loads(path.read_bytes())
        else:
            path.write_bytes(pickle.dumps({"G_ema": g, "cur_nimg": 1000}, protocol=4))
    finally:
        for k in mods:
            sys.modules.pop(k, None)


def test_an_nvidia_snapshot_is_read_without_running_its_stored_code(tmp_path):
    from rewidget.models.safepickle import read_nvidia_pickle

    marker = tmp_path / "ran"
    path = tmp_path / "network-snapshot-000100.pkl"
    _nvidia_snapshot(path, marker)
    snap = read_nvidia_pickle(path)
    g = snap.networks["G_ema"]
    assert g.class_name == "Generator" and g.init_kwargs["img_resolution"] == 256
    sd = g.state_dict()
    assert torch.equal(sd["fc0.weight"], torch.arange(12.0).reshape(4, 3))
    assert torch.equal(sd["w_avg"], torch.ones(5)) and snap.other == {"cur_nimg": 1000}
    with pytest.raises(RewriteError, match="read safely.*Generator.*without synthesis.b4.const"):
        from_checkpoint(path)  # no StyleGAN2 synthesis in this stand-in (see test_stylegan2.py)
    assert not marker.exists()  # the stored source never ran
    _nvidia_snapshot(path, marker, load_with_pickle=True)
    assert marker.exists()  # ... and it is live: plain pickle with NVIDIA's loader runs it
