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

import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..core.errors import RewriteError
from .base import GeneratorAdapter
from .dcgan import DCGANGenerator, load_dcgan_faces
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


def from_checkpoint(path, device=None) -> GeneratorAdapter:
    """A generator from a checkpoint file users bring, recognised by its contents; nothing in
    the file can run code (torch.load with weights_only=True).

    Read: ProGAN state dicts in the paper's layout (``layer1.conv.weight``, ``layer1.wscale.b``,
    …, ``output_RxR.*``; also wrapped as {"state_dict": ...}). NVIDIA ``.pkl`` snapshots are
    read with a restricted unpickler that never runs their stored code (safepickle.py), and
    refused after that, as are StyleGAN2 checkpoints (``g_ema``): rewidget's StyleGAN2 network
    is not written yet."""
    from .progan import is_progan_state, progan_from_state

    path = Path(path)
    if not path.is_file():
        raise RewriteError(f"No checkpoint file at {path}.", "pass the path of a .pth/.pt file.")
    if path.suffix == ".pkl":  # NVIDIA's format: read with the restricted unpickler only
        from .safepickle import read_nvidia_pickle

        snap = read_nvidia_pickle(path)
        net = snap.networks.get("G_ema") or snap.networks.get("G")
        if net is None:
            raise RewriteError(f"{path.name} holds no generator record (G_ema or G); it holds "
                               f"{sorted(snap.networks) or sorted(snap.other)[:5]}.",
                               "pass an NVIDIA StyleGAN2-ADA / StyleGAN3 network snapshot.")
        raise RewriteError(
            f"{path.name} was read safely (nothing in it ran): an NVIDIA {net.class_name} with "
            f"{len(net.state_dict())} tensors and settings {net.init_kwargs}. rewidget's own "
            "StyleGAN2 network is not written yet, so it cannot be edited here.",
            "its tensors are available from rewidget.models.safepickle.read_nvidia_pickle(path); "
            "use a ProGAN .pth, or wrap a StyleGAN2 module you trust with from_module(...).")
    try:
        with warnings.catch_warnings():  # torch notes foreign pickle protocols; we refuse or read
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything that is not plain tensors and containers
        raise RewriteError(f"{path.name} could not be read as plain tensors ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}); it was refused, nothing in it ran.",
                           "pass a state dict saved with torch.save(model.state_dict(), path).") \
            from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if isinstance(state, dict) and is_progan_state(state):
        return progan_from_state(state, name=path.stem, device=device)
    if isinstance(state, dict) and "g_ema" in state:
        raise RewriteError(f"{path.name} is a StyleGAN2 checkpoint (g_ema): its generator is not "
                           "written in rewidget yet.", "use a ProGAN checkpoint, or wrap your own "
                           "StyleGAN2 module with from_module(...).")
    keys = list(state)[:5] if isinstance(state, dict) else type(state).__name__
    raise RewriteError(f"{path.name} is not a generator checkpoint rewidget recognises "
                       f"(it holds {keys}).", "pass a ProGAN state dict (layer1.conv.weight, …), "
                       "or wrap your network with from_module(...).")


def from_module(module: torch.nn.Module, latent_shape, name: str = "custom", layers=None,
                sampler=None, trunk=None, device=None) -> GeneratorAdapter:
    """Wrap any generator: ``module(z)`` → images in [-1, 1]; layers named by module path.

    The module is switched to eval() with requires_grad off while rewidget holds it (dropout
    or batch-norm updates would make renders differ); ``adapter.restore_module()`` puts the
    training mode and the flags back. Any dtype works (float32, float16, bfloat16)."""
    return GeneratorAdapter(module, latent_shape, name=name, layers=layers, sampler=sampler,
                            trunk=trunk, device=device)


__all__ = ["GeneratorAdapter", "DCGANGenerator", "TextModel", "ZOO", "load", "load_dcgan_faces",
           "load_tiny", "load_tiny_text", "from_module", "from_checkpoint"]
