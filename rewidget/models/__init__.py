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

from collections.abc import Callable

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


def from_module(module: torch.nn.Module, latent_shape, name: str = "custom", layers=None,
                sampler=None, trunk=None, device=None) -> GeneratorAdapter:
    """Wrap any generator: ``module(z)`` → images in [-1, 1]; layers named by module path.

    The module is switched to eval() with requires_grad off while rewidget holds it (dropout
    or batch-norm updates would make renders differ); ``adapter.restore_module()`` puts the
    training mode and the flags back. Any dtype works (float32, float16, bfloat16)."""
    return GeneratorAdapter(module, latent_shape, name=name, layers=layers, sampler=sampler,
                            trunk=trunk, device=device)


__all__ = ["GeneratorAdapter", "DCGANGenerator", "TextModel", "ZOO", "load", "load_dcgan_faces",
           "load_tiny", "load_tiny_text", "from_module"]
