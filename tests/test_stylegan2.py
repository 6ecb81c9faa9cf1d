"""StyleGAN2: tiny checkpoints written here in rosinality's and NVIDIA's layouts load, render
deterministically and edit; the modulated conv matches a naive per-sample-weight reference;
previews equal installs; live and frozen demodulation behave as documented; NVIDIA pickles never
run their stored code."""

import argparse
import collections
import math
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rewidget import RewriteError, RewriteSession
from rewidget.models import from_checkpoint
from rewidget.models.stylegan2 import random_stylegan2, stylegan2_adapter, upfirdn2d

from .conftest import box, edit_then_undo

RES, CH, ZD, NMLP = 16, 8, 16, 2  # 16×16 images, 8 channels, z = w = 16, 2 mapping layers
BLOCKS = [8, 16]  # resolutions after 4×4


def _rosinality_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A g_ema state dict with rosinality's names and raw (gain-free) tensors, written from its
    layout; random values, nonzero biases and noise strengths so every term shows."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, shift=0.0):
        return torch.randn(shape, generator=g) * scale + shift

    sd = {}
    for i in range(1, NMLP + 1):
        sd[f"style.{i}.weight"] = r(ZD, ZD, scale=100.0)  # raw weights are randn / lr_mul
        sd[f"style.{i}.bias"] = r(ZD, scale=5.0)
    sd["input.input"] = r(1, CH, 4, 4)

    def styled(name, cin, cout, up):
        sd[f"{name}.conv.weight"] = r(1, cout, cin, 3, 3)
        sd[f"{name}.conv.modulation.weight"] = r(cin, ZD)
        sd[f"{name}.conv.modulation.bias"] = r(cin, scale=0.1, shift=1.0)
        if up:
            sd[f"{name}.conv.blur.kernel"] = torch.ones(4, 4)
        sd[f"{name}.noise.weight"] = r(1, scale=0.2)
        sd[f"{name}.activate.bias"] = r(cout, scale=0.1)

    def rgb(name, cin):
        sd[f"{name}.conv.weight"] = r(1, 3, cin, 1, 1)
        sd[f"{name}.conv.modulation.weight"] = r(cin, ZD)
        sd[f"{name}.conv.modulation.bias"] = r(cin, scale=0.1, shift=1.0)
        sd[f"{name}.bias"] = r(1, 3, 1, 1, scale=0.1)

    styled("conv1", CH, CH, False)
    rgb("to_rgb1", CH)
    for j, _res in enumerate(BLOCKS):
        styled(f"convs.{2 * j}", CH, CH, True)
        styled(f"convs.{2 * j + 1}", CH, CH, False)
        rgb(f"to_rgbs.{j}", CH)
        sd[f"to_rgbs.{j}.upsample.kernel"] = torch.ones(4, 4)
    for i in range(1 + 2 * len(BLOCKS)):
        res = 2 ** ((i + 5) // 2)
        sd[f"noises.noise_{i}"] = r(1, 1, res, res)
    return sd


def _nvidia_tensors(ros: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same generator in stylegan2-ada-pytorch's names (its 3×3 weights carry no gain:
    with demodulation the result is the same up to the 1e-8 epsilon)."""
    nv = {"mapping.w_avg": torch.zeros(ZD), "synthesis.b4.const": ros["input.input"][0]}
    for i in range(NMLP):
        nv[f"mapping.fc{i}.weight"] = ros[f"style.{i + 1}.weight"]
        nv[f"mapping.fc{i}.bias"] = ros[f"style.{i + 1}.bias"]
    pairs = [("conv1", "synthesis.b4.conv1", 0), ("to_rgb1", "synthesis.b4.torgb", None)]
    for j, res in enumerate(BLOCKS):
        pairs += [(f"convs.{2 * j}", f"synthesis.b{res}.conv0", 2 * j + 1),
                  (f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1", 2 * j + 2),
                  (f"to_rgbs.{j}", f"synthesis.b{res}.torgb", None)]
    for src, dst, noise in pairs:
        nv[f"{dst}.weight"] = ros[f"{src}.conv.weight"][0]
        nv[f"{dst}.affine.weight"] = ros[f"{src}.conv.modulation.weight"]
        nv[f"{dst}.affine.bias"] = ros[f"{src}.conv.modulation.bias"]
        if noise is None:
            nv[f"{dst}.bias"] = ros[f"{src}.bias"].reshape(3)
        else:
            nv[f"{dst}.bias"] = ros[f"{src}.activate.bias"]
            nv[f"{dst}.noise_strength"] = ros[f"{src}.noise.weight"].reshape(())
            nv[f"{dst}.noise_const"] = ros[f"noises.noise_{noise}"][0, 0]
    return nv


class _Persistence:
    """A stand-in torch_utils.persistence: records reduce to its _reconstruct_persistent_obj,
    which (like NVIDIA's) would run the record's stored module source."""

    def __init__(self):
        def _reconstruct_persistent_obj(meta):
            exec(meta["module_src"])  # noqa: S102 - the payload the reader must never run

        _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
        _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
        self.fn = _reconstruct_persistent_obj
        self.mods = {"torch_utils": types.ModuleType("torch_utils"),
                     "torch_utils.persistence": types.ModuleType("torch_utils.persistence")}
        self.mods["torch_utils.persistence"]._reconstruct_persistent_obj = self.fn

    def __enter__(self):
        sys.modules.update(self.mods)
        return self

    def __exit__(self, *exc):
        for k in self.mods:
            sys.modules.pop(k, None)


def _record(fn, class_name: str, src: str, tensors: dict, kwargs: dict | None = None,
            children: dict | None = None):
    class Record:
        def __reduce__(self):
            params = collections.OrderedDict(
                (k, torch.nn.Parameter(v.clone())) for k, v in tensors.items()
                if not k.startswith("buf:"))
            bufs = collections.OrderedDict(
                (k[4:], v.clone()) for k, v in tensors.items() if k.startswith("buf:"))
            state = {"_parameters": params, "_buffers": bufs, "training": False,
                     "_modules": collections.OrderedDict(children or {}),
                     "weight_gain": np.float64(0.25)}  # NVIDIA stores numpy gains
            if kwargs is not None:
                state.update(_init_args=(), _init_kwargs=kwargs)
            return (fn, ({"type": "class", "version": 4, "class_name": class_name,
                          "module_src": src, "state": state},))

    return Record()


def _nvidia_pickle(path, tensors: dict, marker, kwargs: dict | None = None) -> None:
    """Write ``tensors`` (dotted names) as a tree of NVIDIA network records whose stored
    source would touch ``marker``."""
    src = f"import os; os.system('touch {marker}')"
    with _Persistence() as p:
        tree: dict = {}
        for name, v in tensors.items():
            *mods, leaf = name.split(".")
            node = tree
            for m in mods:
                node = node.setdefault(m, {})
            node[leaf] = v

        def build(node, cls):
            own = {(("buf:" + k) if k in ("w_avg", "noise_const") else k): v
                   for k, v in node.items() if isinstance(v, torch.Tensor)}
            kids = {k: build(v, "Layer") for k, v in node.items() if isinstance(v, dict)}
            return _record(p.fn, cls, src, own, children=kids)

        if kwargs is None:
            kwargs = {"z_dim": ZD, "w_dim": ZD, "c_dim": 0, "img_resolution": RES,
                      "img_channels": 3, "mapping_kwargs": {"num_layers": NMLP},
                      "synthesis_kwargs": {"channel_base": CH * RES * 4, "channel_max": CH,
                                           "num_fp16_res": 0, "conv_clamp": None}}
        g = _record(p.fn, "Generator", src, {}, kwargs,
                    {k: build(v, "Network") for k, v in tree.items()})
        path.write_bytes(pickle.dumps({"G_ema": g, "augment_pipe": None}, protocol=4))


@pytest.fixture(scope="module")
def ros_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sg2") / "stylegan2-toy.pt"
    torch.save({"g_ema": _rosinality_state(), "latent_avg": torch.randn(ZD)}, path)
    return path


def test_a_rosinality_checkpoint_loads_and_renders_deterministically(ros_file):
    gen = from_checkpoint(ros_file)
    assert gen.name == "stylegan2-toy" and gen.image_size == RES
    assert gen.layer_names() == ["synthesis.b4.conv1.conv", "synthesis.b8.conv0.conv",
                                 "synthesis.b8.conv1.conv", "synthesis.b16.conv0.conv",
                                 "synthesis.b16.conv1.conv"]
    z = gen.latents([0, 1, 2])
    assert z.shape == (3, ZD)
    with torch.no_grad():
        x = gen.forward(z)
        assert x.shape == (3, 3, RES, RES) and bool(torch.isfinite(x).all())
        assert torch.equal(x, from_checkpoint(ros_file).forward(z))  # fixed noise buffers
        assert torch.equal(gen.forward(z[1:2]), x[1:2]) or torch.allclose(
            gen.forward(z[1:2]), x[1:2], atol=1e-6)  # samples do not depend on the batch
        assert not torch.allclose(x[0], x[1])
        quiet = from_checkpoint(ros_file, noise="none").forward(z)
        assert not torch.allclose(quiet, x)  # the noise buffers count
        flat = from_checkpoint(ros_file, truncation=0.0).forward(z)  # ψ = 0: every w = w_avg
        assert torch.allclose(flat[0], flat[2], atol=1e-5)
    shapes = gen.layer_shapes()
    assert shapes["synthesis.b8.conv0.conv"] == {"type": "ModulatedUpConv", "keys": (CH, 4, 4),
                                                 "values": (CH, 9, 9)}
    assert shapes["synthesis.b16.conv1.conv"]["keys"] == (CH, 16, 16)


def test_a_rosinality_training_checkpoint_with_its_args_loads(tmp_path, ros_file):
    sd = _rosinality_state()
    args = argparse.Namespace(size=RES, latent=ZD, n_mlp=NMLP, channel_multiplier=2, lr=0.002,
                              path="/data/lmdb", arch="stylegan2")
    train = tmp_path / "060000.pt"
    torch.save({"g": sd, "d": {"convs.0.0.weight": torch.zeros(1)}, "g_ema": sd,
                "g_optim": {"state": {}, "param_groups": [{"lr": 0.002}]}, "args": args,
                "ada_aug_p": 0.0}, train)
    gen = from_checkpoint(train)
    z = gen.latents([5])
    with torch.no_grad():  # no latent_avg: same image as the converted file at ψ = 1
        assert torch.allclose(gen.forward(z), from_checkpoint(ros_file).forward(z), atol=1e-6)
    torch.save({"g_ema": sd, "args": argparse.Namespace(size=32, latent=ZD, n_mlp=NMLP)},
               tmp_path / "liar.pt")
    with pytest.raises(RewriteError, match="args and its tensors disagree.*size"):
        from_checkpoint(tmp_path / "liar.pt")
    torch.save({"g_ema": sd, "args": types.SimpleNamespace(size=RES)}, tmp_path / "other.pt")
    with pytest.raises(RewriteError, match="refused, nothing in it ran"):
        from_checkpoint(tmp_path / "other.pt")  # only argparse.Namespace is allowed
    broken = {k: v for k, v in sd.items() if not k.startswith("to_rgbs.1.")}
    torch.save({"g_ema": broken}, tmp_path / "broken.pt")
    with pytest.raises(RewriteError, match="StyleGAN2 checkpoint.*4 convs.N for 1 to_rgbs"):
        from_checkpoint(tmp_path / "broken.pt")
    with pytest.raises(RewriteError, match="Unknown StyleGAN2 options"):
        from_checkpoint(ros_file, truncaton=0.5)
    with pytest.raises(RewriteError, match="Unknown demodulation"):
        from_checkpoint(ros_file, demodulation="sometimes")


def test_an_nvidia_pickle_loads_without_running_its_code_and_matches(tmp_path, ros_file):
    marker = tmp_path / "ran"
    path = tmp_path / "network-snapshot-000200.pkl"
    _nvidia_pickle(path, _nvidia_tensors(_rosinality_state()), marker)
    gen = from_checkpoint(path)
    assert not marker.exists()  # the stored source never ran
    assert gen.layer_names() == from_checkpoint(ros_file).layer_names()
    z = gen.latents([0, 1])
    with torch.no_grad():  # the same weights in the other layout: the same images
        assert torch.allclose(gen.forward(z), from_checkpoint(ros_file).forward(z), atol=1e-5)
    with _Persistence():  # the control: NVIDIA's own loader would have run it
        pickle.loads(path.read_bytes())
    assert marker.exists()


def test_nvidia_files_that_are_not_stylegan2_skip_are_refused_by_name(tmp_path):
    marker = tmp_path / "ran"
    tensors = _nvidia_tensors(_rosinality_state())
    kwargs = {"z_dim": ZD, "w_dim": ZD, "c_dim": 0, "img_resolution": RES, "img_channels": 3,
              "mapping_kwargs": {"num_layers": NMLP},
              "synthesis_kwargs": {"channel_base": CH * RES * 4, "channel_max": CH,
                                   "architecture": "resnet"}}
    _nvidia_pickle(tmp_path / "resnet.pkl", tensors, marker, kwargs)
    with pytest.raises(RewriteError, match="'resnet' synthesis architecture"):
        from_checkpoint(tmp_path / "resnet.pkl")
    sg3 = {"mapping.fc0.weight": torch.zeros(4, 4), "synthesis.input.freqs": torch.zeros(4, 2),
           "synthesis.L0_36_512.weight": torch.zeros(1)}
    _nvidia_pickle(tmp_path / "sg3.pkl", sg3, marker)
    with pytest.raises(RewriteError, match="StyleGAN3 .*not supported"):
        from_checkpoint(tmp_path / "sg3.pkl")

    class Payload:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": Payload()}))
    with pytest.raises(RewriteError, match="refused: the file asks for (posix|os).system"):
        from_checkpoint(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_the_modulated_conv_matches_per_sample_weights():
    """The split (key x·s → plain conv → blur → demodulation) against the fused form: one
    modulated, demodulated weight per sample, as the papers write it."""
    net = random_stylegan2(16, channels=6, z_dim=8, w_dim=8, mapping_layers=1, seed=3,
                           noise_strength=0.3)
    for layer in (net.synthesis.b8.conv0, net.synthesis.b8.conv1):
        x = torch.randn(2, 6, 4 if layer.up else 8, 4 if layer.up else 8)
        w = torch.randn(2, 8)
        s = layer.affine(w)
        weight = layer.conv.weight.transpose(0, 1) if layer.up else layer.conv.weight
        outs = []
        for n in range(2):
            wn = weight * s[n][None, :, None, None]  # (C_out, C_in, 3, 3)
            wn = wn * torch.rsqrt(wn.pow(2).sum((1, 2, 3), keepdim=True) + 1e-8)
            if layer.up:  # zero-insertion upsampling, then conv, then the [1,3,3,1] blur
                y = F.conv_transpose2d(x[n:n + 1], wn.transpose(0, 1), stride=2)
                taps = torch.tensor([1.0, 3, 3, 1])
                k = torch.outer(taps, taps) / 64 * 4
                y = F.conv2d(F.pad(y, [1, 1, 1, 1]), k.expand(6, 1, 4, 4), groups=6)
            else:
                y = F.conv2d(x[n:n + 1], wn, padding=1)
            y = y + layer.noise_strength * layer.noise
            outs.append(F.leaky_relu(y + layer.bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2))
        with torch.no_grad():
            assert torch.allclose(layer(x, w), torch.cat(outs), atol=1e-5)
    flat = upfirdn2d(torch.ones(1, 1, 4, 4), torch.tensor([1.0, 3, 3, 1]), up=2, pad=(2, 1),
                     gain=4.0)  # upsampling keeps a constant image constant (off the border)
    assert flat.shape == (1, 1, 8, 8) and torch.allclose(flat[..., 2:6, 2:6], torch.ones(4, 4))


def test_a_preview_renders_what_installing_renders_in_both_modes():
    for mode in ("live", "frozen"):
        net = random_stylegan2(16, channels=8, z_dim=16, w_dim=16, mapping_layers=2, seed=1,
                               noise_strength=0.2)
        gen = stylegan2_adapter(net, demodulation=mode)
        z = gen.latents([0, 1])
        base = gen.forward(z)
        for layer in ("synthesis.b8.conv0.conv", "synthesis.b16.conv1.conv"):
            module = gen.layer(layer)
            w0 = module.weight.detach().clone()
            w1 = w0 + 0.5 * torch.randn(w0.shape, generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                keys = gen.keys(layer, z)
                previewed = gen.forward_from(layer, keys, z=z, weight=w1)
                with gen.weights_in_this_thread({layer: w1}):
                    threaded = gen.forward(z)
                module.weight.copy_(w1)
                installed = gen.forward(z)
                module.weight.copy_(w0)
                assert torch.equal(gen.forward(z), base)
            assert torch.allclose(previewed, installed, atol=1e-6)
            assert torch.allclose(threaded, installed, atol=1e-6)
            assert not torch.allclose(installed, base, atol=1e-3)


def test_frozen_demodulation_keeps_w0s_coefficients_and_live_follows_the_weight():
    nets = {m: random_stylegan2(16, channels=8, z_dim=16, w_dim=16, mapping_layers=2, seed=4)
            for m in ("live", "frozen")}
    gens = {m: stylegan2_adapter(n, demodulation=m) for m, n in nets.items()}
    z = gens["live"].latents([0, 1])
    with torch.no_grad():
        assert torch.equal(gens["live"].forward(z), gens["frozen"].forward(z))  # same at W₀
    layer = "synthesis.b8.conv1"
    outs = {}
    for m, net in nets.items():
        styled = dict(net.styled_layers())[layer]
        with torch.no_grad():
            styled.conv.weight.mul_(3.0)  # a weight change demodulation would undo
        got = {}
        handles = [styled.conv.register_forward_hook(
                       lambda _m, _a, o, got=got: got.__setitem__("v", o)),
                   styled.register_forward_hook(
                       lambda _m, _a, o, got=got: got.__setitem__("out", o))]
        with torch.no_grad():
            gens[m].forward(z)
        for h in handles:
            h.remove()
        outs[m] = got
    # the conv's value (what the solvers fit) is the same in both modes ...
    assert torch.equal(outs["live"]["v"], outs["frozen"]["v"])
    # ... live demodulation divides the ×3 out again; frozen passes it on (before the ReLU)
    live, frozen = outs["live"]["out"], outs["frozen"]["out"]
    assert not torch.allclose(live, frozen, atol=1e-3)
    fresh = random_stylegan2(16, channels=8, z_dim=16, w_dim=16, mapping_layers=2, seed=4)
    ref = {}
    h = dict(fresh.styled_layers())[layer].register_forward_hook(
        lambda _m, _a, o: ref.__setitem__("out", o))
    with torch.no_grad():
        fresh(z)
    h.remove()
    assert torch.allclose(live, ref["out"], atol=1e-5)  # ×3 is invisible to live demodulation
    bias = dict(fresh.styled_layers())[layer].bias.view(1, -1, 1, 1)
    pre = F.leaky_relu(ref["out"] / math.sqrt(2), 5.0) - bias  # undo the lrelu ×√2 and bias
    assert torch.allclose(F.leaky_relu(3 * pre + bias, 0.2) * math.sqrt(2), frozen, atol=1e-4)


@pytest.mark.parametrize("layer,solver,mode", [("synthesis.b8.conv1.conv", "exact", "frozen"),
                                               ("synthesis.b16.conv0.conv", "iterative", "frozen"),
                                               ("synthesis.b8.conv1.conv", "output", "live")])
def test_an_edit_at_a_modulated_conv_fits_its_goal_and_undoes_exactly(tmp_path, layer, solver,
                                                                       mode):
    net = random_stylegan2(RES, channels=CH, z_dim=ZD, w_dim=ZD, mapping_layers=NMLP, seed=5,
                           noise_strength=0.1)
    gen = stylegan2_adapter(net, name="sg2-edit", demodulation=mode)
    s = RewriteSession(gen, stats_samples=200, cache_dir=tmp_path, quiet=True)
    m = box(RES, 4, 10, 4, 10)
    s.add_context(1, m)
    s.set_copy(2, m)
    s.set_paste(1, (0, 0))
    w0 = gen.layer(layer).weight.detach().clone()
    request = s.request(layer=layer, rank=2, solver=solver,
                        **({"steps": 300} if solver == "iterative" else {}))  # output: Adam
    # through the live demodulation (forward_from with a stand-in weight that carries grad)
    edit = s.compute_edit(request)
    assert edit.report["installed"]["l1"] < 0.9 * edit.report["before"]["l1"]
    edit_then_undo(s, request)
    assert torch.equal(gen.layer(layer).weight, w0)  # undo is bit-exact


def test_gradients_through_a_previewed_weight_see_live_demodulation():
    """Live demodulation makes the image invariant to scaling a layer's weight, so the gradient
    along the weight itself vanishes — only if demodulation is differentiated too."""
    net = random_stylegan2(16, channels=8, z_dim=16, w_dim=16, mapping_layers=2, seed=6)
    grads = {}
    for mode in ("live", "frozen"):
        gen = stylegan2_adapter(net, demodulation=mode)
        layer = "synthesis.b8.conv1.conv"
        z = gen.latents([0, 1])
        keys = gen.keys(layer, z)
        w = gen.layer(layer).weight.detach().clone().requires_grad_(True)
        gen.forward_from(layer, keys, z=z, weight=w).pow(2).sum().backward()
        g, w = w.grad, w.detach()
        grads[mode] = float((g * w).sum() / (g.norm() * w.norm()))
    assert abs(grads["live"]) < 1e-4 < abs(grads["frozen"])
