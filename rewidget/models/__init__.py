"""Generators behind one protocol, and the model zoo.

    gen = rewidget.models.load("dcgan-faces")          # real pretrained faces (64×64)
    gen = rewidget.models.load("tiny")                 # tiny seeded generator for tests
    gen = rewidget.models.load("scenes")               # procedural world with known rules
    gen = rewidget.models.load("eyes")                 # painted eyes by colour (128×128)
    gen = rewidget.models.from_module(net, latent_shape=(128,), layers=["blocks.2.conv"])
    lm = rewidget.models.load("smollm2")               # SmolLM2-135M (text, offline GGUF)
    lm = rewidget.models.load("tiny-text")             # tiny seeded Llama for tests
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..core.errors import RewriteError
from .base import GeneratorAdapter
from .dcgan import DCGANGenerator, load_dcgan_faces
from .stylegan2 import random_stylegan2, stylegan2_adapter
from .text import TextModel, load_tiny_text
from .tiny import load_tiny


def _load_scenes(device=None) -> GeneratorAdapter:
    from .scenes import SCENES_NZ, load_scenes_network

    net = load_scenes_network(device="cpu")
    return GeneratorAdapter(net, (SCENES_NZ, 1, 1), name="scenes", trunk=net.main, device=device,
                            image_size=64)


def _load_eyes(device=None) -> GeneratorAdapter:
    from .eyes import load_eyes

    return load_eyes(device=device)


def _load_smollm2(device=None) -> TextModel:
    from .smollm2 import load_smollm2

    return load_smollm2(device=device)


ZOO: dict[str, Callable[..., GeneratorAdapter | TextModel]] = {
    "dcgan-faces": load_dcgan_faces,
    "tiny": load_tiny,
    "scenes": _load_scenes,
    "eyes": _load_eyes,
    "smollm2": _load_smollm2,
    "tiny-text": load_tiny_text,
}


def load(name: str, device: torch.device | str | None = None) -> GeneratorAdapter | TextModel:
    if name not in ZOO:
        raise RewriteError(f"Unknown model {name!r}.", f"choose one of {sorted(ZOO)}, or wrap your "
                           "own network with rewidget.models.from_module(...).")
    return ZOO[name](device=device)


def from_checkpoint(path, device=None, **options) -> GeneratorAdapter:
    """A generator from a checkpoint file users bring, recognised by its contents; nothing in
    the file can run code.

    Read:
    - ProGAN state dicts in the paper's layout (``layer1.conv.weight``, ``layer1.wscale.b``, …,
      ``output_RxR.*``; also wrapped as {"state_dict": ...}), with ``torch.load(weights_only=True)``;
    - StyleGAN2 ``.pt`` files in the paper's / rosinality's layout: a dict with ``g_ema``
      (``style.1.weight``, ``conv1.conv.weight``, ``convs.N.*``, ``to_rgbs.N.*``, …) and
      optionally ``latent_avg``; rosinality's training checkpoints also carry ``args`` (an
      argparse.Namespace, the one class allowed besides tensors), whose size and channel
      settings are checked against the tensors;
    - NVIDIA stylegan2-ada-pytorch ``.pkl`` snapshots (``G_ema``, the 'skip' architecture), read
      with a restricted unpickler that never runs their stored code (safepickle.py).

    ``options`` go to StyleGAN2 only: ``demodulation`` ("live" | "frozen"), ``truncation`` (ψ,
    default 1), ``noise`` ("const" | "none"); see rewidget.models.stylegan2."""
    from .progan import is_progan_state, progan_from_state

    path = Path(path)
    if not path.is_file():
        raise RewriteError(f"No checkpoint file at {path}.", "pass the path of a .pth/.pt file.")
    if path.suffix == ".pkl":  # NVIDIA's format: read with the restricted unpickler only
        return _from_nvidia_pickle(path, device, options)
    try:
        with warnings.catch_warnings():  # torch notes foreign pickle protocols; we refuse or read
            warnings.simplefilter("ignore", UserWarning)
            # rosinality's training checkpoints pickle their argparse.Namespace: that class only
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything that is not plain tensors and containers
        raise RewriteError(f"{path.name} could not be read as plain tensors ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}); it was refused, nothing in it ran.",
                           "pass a state dict saved with torch.save(model.state_dict(), path).") \
            from None
    if isinstance(state, dict) and isinstance(state.get("g_ema"), dict):
        return _from_rosinality(path, state, device, options)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if isinstance(state, dict) and is_progan_state(state):
        _no_options(options, "a ProGAN checkpoint")
        return progan_from_state(state, name=path.stem, device=device)
    keys = list(state)[:5] if isinstance(state, dict) else type(state).__name__
    raise RewriteError(f"{path.name} is not a generator checkpoint rewidget recognises "
                       f"(it holds {keys}).", "pass a ProGAN state dict (layer1.conv.weight, …), "
                       "a StyleGAN2 .pt with g_ema, an NVIDIA StyleGAN2 .pkl, or wrap your "
                       "network with from_module(...).")


def _no_options(options: dict, what: str) -> None:
    if options:
        raise RewriteError(f"Options {sorted(options)} do not apply to {what}.",
                           "pass them for StyleGAN2 checkpoints only.")


STYLEGAN2_OPTIONS = ("demodulation", "truncation", "noise")


def _check_options(options: dict) -> None:
    unknown = sorted(set(options) - set(STYLEGAN2_OPTIONS))
    if unknown:
        raise RewriteError(f"Unknown StyleGAN2 options {unknown}.",
                           f"pass only {list(STYLEGAN2_OPTIONS)}.")


def _from_rosinality(path: Path, state: dict, device, options: dict) -> GeneratorAdapter:
    from .stylegan2 import from_rosinality

    _check_options(options)
    args = state.get("args")
    if args is not None and not isinstance(args, argparse.Namespace):
        raise RewriteError(f"{path.name}'s args are a {type(args).__name__}, not the training "
                           "Namespace.", "pass a checkpoint saved by rosinality's train.py.")
    avg = state.get("latent_avg")
    if avg is not None and not isinstance(avg, torch.Tensor):
        raise RewriteError(f"{path.name}'s latent_avg is not a tensor.",
                           "pass the checkpoint as convert_weight.py or train.py wrote it.")
    try:
        net = from_rosinality(state["g_ema"], avg, vars(args) if args is not None else None)
    except RewriteError as e:
        raise RewriteError(f"{path.name} is a StyleGAN2 checkpoint (g_ema) that rewidget "
                           f"cannot read: {e.problem}", e.fix) from None
    except (KeyError, IndexError, AttributeError) as e:
        raise RewriteError(f"{path.name} is a StyleGAN2 checkpoint (g_ema) in rosinality's "
                           f"layout, but {e} is missing or malformed.",
                           "pass an unmodified checkpoint from train.py or convert_weight.py.") \
            from None
    return stylegan2_adapter(net, name=path.stem, device=device, **options)


def _from_nvidia_pickle(path: Path, device, options: dict) -> GeneratorAdapter:
    from .safepickle import read_nvidia_pickle
    from .stylegan2 import from_nvidia

    _check_options(options)
    snap = read_nvidia_pickle(path)
    net = snap.networks.get("G_ema") or snap.networks.get("G")
    if net is None:
        raise RewriteError(f"{path.name} holds no generator record (G_ema or G); it holds "
                           f"{sorted(snap.networks) or sorted(snap.other)[:5]}.",
                           "pass an NVIDIA StyleGAN2-ADA network snapshot.")
    try:
        ours = from_nvidia(net.class_name, net.init_kwargs, net.state_dict())
    except RewriteError as e:
        raise RewriteError(f"{path.name} was read safely (nothing in it ran): an NVIDIA "
                           f"{net.class_name}. {e.problem}", e.fix) from None
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise RewriteError(f"{path.name} was read safely (nothing in it ran): an NVIDIA "
                           f"{net.class_name}, but {e!r} is missing or malformed for a "
                           "StyleGAN2 generator.", "pass an unmodified stylegan2-ada-pytorch "
                           "snapshot.") from None
    return stylegan2_adapter(ours, name=path.stem, device=device, **options)


def from_module(module: torch.nn.Module, latent_shape, name: str = "custom", layers=None,
                sampler=None, trunk=None, device=None) -> GeneratorAdapter:
    """Wrap any generator: ``module(z)`` → images in [-1, 1]; layers named by module path.

    The module is switched to eval() with requires_grad off while rewidget holds it (dropout
    or batch-norm updates would make renders differ); ``adapter.restore_module()`` puts the
    training mode and the flags back. Any dtype works (float32, float16, bfloat16)."""
    return GeneratorAdapter(module, latent_shape, name=name, layers=layers, sampler=sampler,
                            trunk=trunk, device=device)


__all__ = ["GeneratorAdapter", "DCGANGenerator", "TextModel", "ZOO", "load", "load_dcgan_faces",
           "load_tiny", "load_tiny_text", "from_module", "from_checkpoint", "random_stylegan2",
           "stylegan2_adapter"]
