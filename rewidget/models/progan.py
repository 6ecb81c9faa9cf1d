"""Progressive GAN generators in the layout of the paper's checkpoints (converted from Karras et
al.'s TensorFlow models): ``layer1.conv.weight``, ``layer1.wscale.b``, …, ``output_256x256.*``.

    gen = load_progan("proggan_churchoutdoor.pth")      # a GeneratorAdapter; or from_checkpoint
    gen.layer_names()                                   # ['layer1.conv', ..., 'output_256x256.conv']

Each block is pixel norm → (nearest ×2 upsampling at every odd block from layer3) → a bias-free
conv → equalized learning rate (a constant scale √2 / (k·√C_in), √1/C_in for the RGB output,
then a learned bias) → leaky ReLU 0.2; the RGB output is clamped to [-1, 1]. The network is
written here from that description; the file is read with ``torch.load(weights_only=True)``,
so it cannot run code. Editable layers are the convolutions: keys are the normalised (and
upsampled) features entering a conv, values its output; the scale and bias after it are a fixed
affine map, so the exact solver edits the conv as it is.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import RewriteError
from .base import GeneratorAdapter


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


class EqualizedScale(nn.Module):
    """x · scale + b (per channel): equalized learning rate's runtime scale, then the bias."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)
        self.b = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.b.view(1, -1, 1, 1)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-1.0, 1.0)


def _block(cin: int, cout: int, k: int, pad: int, up: bool) -> nn.Sequential:
    parts: list[tuple[str, nn.Module]] = [("norm", PixelNorm())]
    if up:
        parts.append(("up", Upsample2x()))
    parts += [("conv", nn.Conv2d(cin, cout, k, 1, pad, bias=False)),
              ("wscale", EqualizedScale(cout, math.sqrt(2) / (k * math.sqrt(cin)))),
              ("relu", nn.LeakyReLU(0.2))]
    return nn.Sequential(OrderedDict(parts))


class ProGANGenerator(nn.Sequential):
    """z (N, sizes[0]) or (N, sizes[0], 1, 1) → image (N, 3, R, R), R = 4 · 2^(len(sizes) - 2).

    ``sizes``: channels of z, then of each resolution from 4×4 up."""

    def __init__(self, sizes: list[int]) -> None:
        if len(sizes) < 2:
            raise RewriteError(f"A ProGAN needs at least z and one resolution; got {sizes}.",
                               "pass sizes such as [512, 512, 512, 256].")
        blocks: list[tuple[str, nn.Module]] = []

        def add(m: nn.Module) -> None:
            blocks.append((f"layer{len(blocks) + 1}", m))

        add(_block(sizes[0], sizes[1], 4, 3, up=False))  # 1×1 → 4×4
        add(_block(sizes[1], sizes[1], 3, 1, up=False))
        for cin, cout in zip(sizes[1:-1], sizes[2:], strict=True):
            add(_block(cin, cout, 3, 1, up=True))
            add(_block(cout, cout, 3, 1, up=False))
        res = 4 * 2 ** (len(sizes) - 2)
        out = nn.Sequential(OrderedDict([
            ("norm", PixelNorm()),
            ("conv", nn.Conv2d(sizes[-1], 3, 1, 1, 0, bias=False)),
            ("wscale", EqualizedScale(3, 1 / math.sqrt(sizes[-1]))),
            ("clamp", Clamp())]))
        blocks.append((f"output_{res}x{res}", out))
        super().__init__(OrderedDict(blocks))
        self.sizes, self.resolution = list(sizes), res

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z.reshape(z.shape[0], z.shape[1], 1, 1))


def is_progan_state(state: Mapping) -> bool:
    return "layer1.conv.weight" in state and any(k.startswith("output_") for k in state)


def sizes_from_state(state: Mapping[str, torch.Tensor]) -> list[int]:
    """[z, 4×4, 8×8, ...] channels read off the conv weights (out, in, k, k)."""
    convs = {int(m.group(1)): v for k, v in state.items()
             if (m := re.fullmatch(r"layer(\d+)\.conv\.weight", k))}
    if not convs or sorted(convs) != list(range(1, len(convs) + 1)) or len(convs) % 2:
        raise RewriteError(f"The ProGAN checkpoint's blocks are {sorted(convs)}: expected "
                           "layer1 … layer2n in pairs.", "pass the generator's full state dict.")
    sizes = [int(convs[1].shape[1]), int(convs[1].shape[0])]
    sizes += [int(convs[i].shape[0]) for i in range(3, len(convs) + 1, 2)]
    return sizes


def progan_from_state(state: Mapping[str, torch.Tensor], name: str = "progan",
                      device=None) -> GeneratorAdapter:
    net = ProGANGenerator(sizes_from_state(state))
    missing, unexpected = net.load_state_dict(dict(state), strict=False)
    if missing or unexpected:
        raise RewriteError(f"The checkpoint does not fit a ProGAN of sizes {net.sizes}: "
                           f"missing {missing[:4]}, unexpected {unexpected[:4]}.",
                           "pass the generator's own state dict (layer1.conv.weight, …).")
    layers = [f"{n}.conv" for n, _ in net.named_children()]
    return GeneratorAdapter(net, (net.sizes[0],), name=name, layers=layers, device=device,
                            image_size=net.resolution)


def load_progan(path: str | Path, device=None) -> GeneratorAdapter:
    """A ProGAN checkpoint file (a state dict, or {'state_dict': ...}), read without pickle code."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not is_progan_state(state):
        raise RewriteError(f"{path} is not a ProGAN generator state dict (no layer1.conv.weight "
                           "and output_* entries).", "pass the generator's .pth state dict.")
    return progan_from_state(state, name=Path(path).stem, device=device)
