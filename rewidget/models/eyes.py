"""A class-conditional DCGAN of painted eyes, 128×128, from `omniart-eye-generator` (MIT).

    gen = load_eyes()                          # GeneratorAdapter "eyes"
    colour_of(9)                               # 'blue': seed s draws the colour COLOURS[s % 8]
    gen.latents([1, 9, 17])                    # three blue eyes: z from the seed + one-hot colour
    eyes_latent(4, "red")                      # seed 4's z with another colour (an explicit latent)

The network is defined here (the package's own loader runs at import, and without
weights_only); only ``omniart_eye_generator/generator_model_state.pth`` is read, with
weights_only=True, and the package is found with find_spec, never imported. Its input is
z (100) with a one-hot eye colour (8) appended; editable layers are the six transposed
convolutions. A sample is a seed, and the seed names its colour too (seed mod 8), so saved
requests replay the same eyes; other colours for a seed are explicit latents. About a third
of its samples are smeared (no clear iris or lid): the model is small and its training data
(OmniArt paintings) varied.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.errors import RewriteError
from .base import GeneratorAdapter, installed_file, seeded_normal

EYES_PACKAGE = "omniart-eye-generator==0.1"
#: the package's class order (its one-hot index)
COLOURS = ("amber", "blue", "brown", "gray", "grayscale", "green", "hazel", "red")
NZ = 100


class EyesGenerator(nn.Module):
    """z + one-hot colour (N, 108, 1, 1) → tanh image (N, 3, 128, 128); the package's layout."""

    def __init__(self, nz: int = NZ, n_classes: int = len(COLOURS), ngf: int = 64) -> None:
        super().__init__()
        widths = [nz + n_classes, ngf * 16, ngf * 8, ngf * 4, ngf * 2, ngf]
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            blocks += [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(True)]
            if i == 0:
                blocks.append(nn.Dropout(0.2))  # an identity in eval(), kept for the layout
        blocks += [nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


LAYERS = ["main.0", "main.4", "main.7", "main.10", "main.13", "main.16"]


def colour_of(seed: int) -> str:
    """The eye colour seed ``seed`` draws."""
    return COLOURS[int(seed) % len(COLOURS)]


def eyes_latent(seed: int, colour: str) -> torch.Tensor:
    """(108, 1, 1): seed ``seed``'s z with eye colour ``colour`` (one of COLOURS)."""
    if colour not in COLOURS:
        raise RewriteError(f"Unknown eye colour {colour!r}.", f"choose one of {COLOURS}.")
    z = seeded_normal([int(seed)], (NZ, 1, 1))[0]
    onehot = torch.zeros(len(COLOURS), 1, 1)
    onehot[COLOURS.index(colour)] = 1.0
    return torch.cat([z, onehot])


def _sample(seed: int) -> torch.Tensor:
    return eyes_latent(seed, colour_of(seed))


def eyes_weights_path() -> Path:
    """Locate the weights file without importing the package."""
    return installed_file("omniart_eye_generator", "generator_model_state.pth", EYES_PACKAGE,
                          "The painted-eyes generator")


def load_eyes(device: torch.device | str | None = None) -> GeneratorAdapter:
    state = torch.load(eyes_weights_path(), map_location="cpu", weights_only=True)
    net = EyesGenerator()
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise RewriteError(f"The eyes weights do not fit the network: {e}",
                           f"reinstall {EYES_PACKAGE}.") from None
    return GeneratorAdapter(net, (NZ + len(COLOURS), 1, 1), name="eyes", trunk=net.main,
                            device=device, layers=LAYERS, sampler=_sample, image_size=128)
