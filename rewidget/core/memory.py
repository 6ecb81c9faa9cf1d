"""A layer seen as a linear associative memory: keys (input channels) → values (output).

    mem = memory_for(gen.layer("main.6"))      # ConvTranspose2d(256, 128, 4, 2, 1)
    rows = mem.key_rows(keys)                  # (N*H*W, 256): one key per input location
    z = mem.project(keys, D)                   # (N, r, H, W): ⟨k, d⟩ per location
    A = mem.design(z)                          # (N, r*4*4, 2H, 2W): Δvalue = A · Λ per channel
    dW = mem.delta_weight(D, Lam)              # weight-shaped ΛDᵀ

For Conv2d, ConvTranspose2d and Linear the weight update ΔW = ΛDᵀ acts on the input-channel
axis only, so the change of the layer's output is the same layer op applied to the projected
keys Dᵀk with Λ as its weight (r input channels instead of C_in). That output is linear in Λ,
which is what makes the exact least-squares solve possible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import RewriteError


@dataclass(frozen=True)
class LinearMemory:
    """What the engine needs to know about one editable layer."""

    module: nn.Module
    kind: str  # "conv2d" | "conv_transpose2d" | "linear"

    # -- shapes -------------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    @property
    def key_dim(self) -> int:
        w = self.weight
        return w.shape[0] if self.kind == "conv_transpose2d" else w.shape[1]

    @property
    def value_dim(self) -> int:
        w = self.weight
        return w.shape[1] if self.kind == "conv_transpose2d" else w.shape[0]

    @property
    def key_axis(self) -> int:
        """Axis of the weight that holds the input channels (the key dimension)."""
        return 0 if self.kind == "conv_transpose2d" else 1

    @property
    def spatial(self) -> bool:
        return self.kind != "linear"

    @property
    def plain(self) -> bool:
        """The module is torch's own Conv2d / ConvTranspose2d / Linear, not a subclass: its
        output is its op of the weight plus bias and nothing else reads the weight, so with
        ΔW = ΛDᵀ the output is the unedited one plus ``delta_values`` (a subclass, e.g. a
        modulated conv whose weight the demodulation reads, may not be)."""
        return type(self.module) in (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)

    def factor_shape(self, rank: int) -> tuple[int, ...]:
        shape = list(self.weight.shape)
        shape[self.key_axis] = rank
        return tuple(shape)

    # -- keys and values ------------------------------------------------------------------
    def key_rows(self, keys: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) or (N, ..., C_in) → (rows, C_in)."""
        if self.spatial:
            return keys.permute(0, 2, 3, 1).reshape(-1, keys.shape[1])
        return keys.reshape(-1, keys.shape[-1])

    def value_rows(self, values: torch.Tensor) -> torch.Tensor:
        if self.spatial:
            return values.permute(0, 2, 3, 1).reshape(-1, values.shape[1])
        return values.reshape(-1, values.shape[-1])

    def project(self, keys: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """⟨k, d_j⟩ at every location: (N, C_in, H, W) → (N, r, H, W); linear: (N, ..., r)."""
        d = directions.to(keys.dtype)
        if self.spatial:
            return torch.einsum("nchw,cr->nrhw", keys, d)
        return keys @ d

    def values(self, keys: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's output for ``keys`` (with bias), optionally with another weight."""
        if weight is None:
            return self.module(keys)
        return torch.func.functional_call(self.module, {"weight": weight}, (keys,))

    def _op(self, z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The layer's linear op (no bias) with an arbitrary weight of matching layout."""
        m = self.module
        if self.kind == "linear":
            return F.linear(z, weight)
        if self.kind == "conv2d":
            if m.padding_mode != "zeros":
                pad = m._reversed_padding_repeated_twice
                return F.conv2d(F.pad(z, pad, mode=m.padding_mode), weight, None, m.stride, 0,
                                m.dilation)
            return F.conv2d(z, weight, None, m.stride, m.padding, m.dilation)
        return F.conv_transpose2d(z, weight, None, m.stride, m.padding, m.output_padding, 1,
                                  m.dilation)

    def delta_values(self, z: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """Change of the layer's output caused by ΔW = ΛDᵀ, from projected keys z = Dᵀk."""
        return self._op(z, factor.to(z.dtype))

    def edited_values(self, keys: torch.Tensor, directions: torch.Tensor, factor: torch.Tensor,
                      unedited: torch.Tensor | None = None) -> torch.Tensor:
        """The output with W₀ + ΛDᵀ for a ``plain`` layer, without running it at full width:
        ``unedited`` (W₀k, computed here when not given) plus ``delta_values`` of Dᵀk."""
        base = self.values(keys) if unedited is None else unedited
        return base + self.delta_values(self.project(keys, directions), factor).to(base.dtype)

    def design(self, z: torch.Tensor) -> torch.Tensor:
        """Per-location features whose product with Λ (flattened per output channel) is Δvalue.

        Returns (N, q, H', W') for conv layers and (N, ..., q) for linear, q = r*kh*kw.
        """
        r = z.shape[1] if self.spatial else z.shape[-1]
        if self.kind == "linear":
            return z
        kh, kw = self.weight.shape[2:]
        q = r * kh * kw
        eye = torch.eye(q, dtype=z.dtype, device=z.device).reshape(q, r, kh, kw)
        if self.kind == "conv2d":
            return self._op(z, eye)  # weight (out=q, in=r, kh, kw)
        return self._op(z, eye.transpose(0, 1))  # conv_transpose weight (in=r, out=q, kh, kw)

    def factor_from_flat(self, flat: torch.Tensor, rank: int) -> torch.Tensor:
        """(C_out, q) solution rows → Λ in the layer's weight layout."""
        if self.kind == "linear":
            return flat  # (C_out, r)
        kh, kw = self.weight.shape[2:]
        lam = flat.reshape(self.value_dim, rank, kh, kw)
        return lam if self.kind == "conv2d" else lam.transpose(0, 1).contiguous()

    def delta_weight(self, directions: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """ΔW = ΛDᵀ along the key axis, in the weight's layout, dtype and device."""
        w = self.weight
        d = directions.to(device=w.device, dtype=torch.float64)
        lam = factor.to(device=w.device, dtype=torch.float64).movedim(self.key_axis, -1)
        return (lam @ d.T).movedim(-1, self.key_axis).to(w.dtype)  # (..., r) @ (r, C_in)

    def delta_norm(self, directions: torch.Tensor, factor: torch.Tensor) -> float:
        """‖ΛDᵀ‖_F without forming ΔW: √(Σ over rows λ of λ (DᵀD) λᵀ), in float64."""
        d = directions.to(torch.float64)
        lam = factor.to(device=d.device, dtype=torch.float64).movedim(self.key_axis, -1)
        lam = lam.reshape(-1, d.shape[1])
        return float(((lam @ (d.T @ d)) * lam).sum().clamp_min(0).sqrt())

    def factor_from_delta(self, delta: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Λ with ΛDᵀ = delta·P, P the projection onto span(D) along the key axis (float64)."""
        d = directions.to(device=delta.device, dtype=torch.float64)
        pinv = torch.linalg.pinv(d)  # (r, C_in)
        dl = delta.to(torch.float64).movedim(self.key_axis, -1)
        return (dl @ pinv.T).movedim(-1, self.key_axis)

    def project_delta(self, delta: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Project a weight-shaped update onto span(D) along the key axis (rank constraint)."""
        return self.delta_weight(directions, self.factor_from_delta(delta, directions)).to(
            delta.dtype
        )


def memory_for(module: nn.Module, name: str = "layer") -> LinearMemory:
    """The LinearMemory view of ``module``; a clear error for layers rewidget cannot edit."""
    if isinstance(module, nn.ConvTranspose2d):
        kind = "conv_transpose2d"
    elif isinstance(module, nn.Conv2d):
        kind = "conv2d"
    elif isinstance(module, nn.Linear):
        kind = "linear"
    else:
        raise RewriteError(
            f"Layer {name!r} is a {type(module).__name__}; rewidget edits Conv2d, "
            "ConvTranspose2d and Linear layers.",
            "choose one of the generator's editable layers (gen.layer_names()).",
        )
    if getattr(module, "groups", 1) != 1:
        raise RewriteError(
            f"Layer {name!r} is a grouped convolution (groups={module.groups}).",
            "choose an ungrouped Conv2d, ConvTranspose2d or Linear layer.",
        )
    return LinearMemory(module, kind)
