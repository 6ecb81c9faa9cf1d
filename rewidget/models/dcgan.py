"""The standard DCGAN generator, and the pretrained 64×64 face model from `gan-face-generate`.

    gen = load_dcgan_faces()                   # GeneratorAdapter "dcgan-faces"
    gen.layer_shapes()["main.6"]               # keys (256, 8, 8) → values (128, 16, 16)

The network is defined here (not imported from the package, whose modules pull in training
code); only the weights file ``gan_face_generate/weights.tar`` is read, with weights_only=True.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import GeneratorAdapter, installed_file

FACES_PACKAGE = "gan-face-generate==1.1.1"


class DCGANGenerator(nn.Module):
    """z (N, nz, 1, 1) → tanh image (N, nc, 64, 64); ``main`` holds five ConvTranspose2d blocks."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            blocks += [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(True)]
        blocks += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


def faces_weights_path() -> Path:
    """Locate weights.tar without importing the package (its __init__ is not needed)."""
    return installed_file("gan_face_generate", "weights.tar", FACES_PACKAGE,
                          "The pretrained face generator", "   (--no-deps keeps your torch).")


def load_dcgan_faces(device: torch.device | str | None = None) -> GeneratorAdapter:
    state = torch.load(faces_weights_path(), map_location="cpu", weights_only=True)
    net = DCGANGenerator()
    net.load_state_dict(state["netG_state_dict"])
    return GeneratorAdapter(net, (100, 1, 1), name="dcgan-faces", trunk=net.main, device=device,
                            layers=["main.0", "main.3", "main.6", "main.9", "main.12"],
                            image_size=64)
