"""A tiny seeded generator for fast tests: every editable layer kind, 32×32 images, ~0.1 s.

    gen = load_tiny()
    gen.layer_names()   # ['main.0' Linear, 'main.4' ConvTranspose2d, 'main.7' Conv2d, ...]

Weights are a fixed function of ``seed`` (random init, BatchNorm statistics randomised too),
so images are structured noise, identical on every machine.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import GeneratorAdapter

TINY_NZ = 16


class TinyGenerator(nn.Module):
    def __init__(self, nz: int = TINY_NZ, width: int = 32) -> None:
        super().__init__()
        w = width
        self.main = nn.Sequential(
            nn.Linear(nz, 2 * w * 4 * 4),  # 0   keys: z (16,)
            nn.Unflatten(1, (2 * w, 4, 4)),  # 1
            nn.BatchNorm2d(2 * w),  # 2
            nn.ReLU(),  # 3
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False),  # 4   keys 4x4 → 8x8
            nn.BatchNorm2d(w),  # 5
            nn.ReLU(),  # 6
            nn.Conv2d(w, w, 3, 1, 1),  # 7   keys 8x8 → 8x8
            nn.ReLU(),  # 8
            nn.ConvTranspose2d(w, w // 2, 4, 2, 1, bias=False),  # 9   keys 8x8 → 16x16
            nn.BatchNorm2d(w // 2),  # 10
            nn.ReLU(),  # 11
            nn.ConvTranspose2d(w // 2, 3, 4, 2, 1),  # 12  keys 16x16 → 32x32
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


def build_tiny(seed: int = 0) -> TinyGenerator:
    g = torch.Generator().manual_seed(seed)
    net = TinyGenerator()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                fan = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) else \
                    m.weight.shape[0] * m.weight.shape[2] * m.weight.shape[3] / 4
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return net


def load_tiny(device: torch.device | str | None = None, seed: int = 0) -> GeneratorAdapter:
    net = build_tiny(seed)
    return GeneratorAdapter(net, (TINY_NZ,), name=f"tiny-{seed}", trunk=net.main, device=device,
                            image_size=32)
