"""The small protocol through which core talks to any generator.

    gen = rewidget.models.load("dcgan-faces")
    z = gen.latents([0, 1, 2])                 # (3, 100, 1, 1): sample i is always the same
    k = gen.keys("main.6", z)                  # (3, 256, 8, 8): the layer's input, forward stops there
    x = gen.forward_from("main.6", k)          # (3, 3, 64, 64): runs the layer and everything after
    rgb = gen.to_rgb(x)                        # (3, 64, 64, 3) uint8

Core never asks which architecture it holds; `rewidget.models` implements this protocol
for the DCGAN faces model, the tiny test generator and any user ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@runtime_checkable
class Generator(Protocol):
    name: str
    module: nn.Module
    image_size: int

    @property
    def device(self) -> torch.device: ...

    def latents(self, seeds: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        """Latents for integer seeds, computed on the CPU so a seed means one image on any device."""

    def layer_names(self) -> list[str]:
        """Editable layers in forward order."""

    def layer(self, name: str) -> nn.Module: ...

    def keys(self, name: str, z: torch.Tensor) -> torch.Tensor:
        """The input of layer ``name`` for latents ``z``; stops the forward pass at the layer."""

    def forward_from(self, name: str, keys: torch.Tensor, z: torch.Tensor | None = None,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
        """Images from the input of layer ``name`` (runs the layer and everything after it);
        ``weight`` replaces the layer's weight for this call only (a preview writes nothing)."""

    def run_between(self, start: str, keys: torch.Tensor, stop: str | None = None,
                    z: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                    output: torch.Tensor | None = None) -> torch.Tensor:
        """From the input of ``start`` to the input of a later layer ``stop`` (None: images);
        ``output``, when given, is ``start``'s output for ``keys`` as the caller computed it
        (e.g. W₀k cached plus a low-rank change) and stands in for running the layer."""

    def forward(self, z: torch.Tensor) -> torch.Tensor: ...

    def to_rgb(self, images: torch.Tensor) -> np.ndarray: ...
