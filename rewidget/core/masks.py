"""Masks: validation, resizing to a layer's resolution, shifting, PNG data URLs.

    m = as_mask(painted, "context mask")       # (H, W) uint8, any input size or dtype
    w = mask_at(m, (8, 8))                     # (8, 8) float32 area-averaged weights in [0, 1]
    url = mask_to_data_url(m)                  # "data:image/png;base64,..." (the paper tool's format)
    m2 = mask_from_data_url(url)               # uint8 again, identical

Masks are stored as uint8 (0..255) so a saved request replays bit-for-bit; they are
resampled to each layer's key or value resolution by area averaging.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import RewriteError

MIN_MASK_WEIGHT = 1e-6


def as_mask(mask, what: str = "mask") -> np.ndarray:
    """Validate and quantise a mask to (H, W) uint8. Accepts bool, [0,1] floats or uint8."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        arr = arr[..., -1] if arr.shape[-1] == 4 else arr[..., 0]
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise RewriteError(
            f"The {what} has shape {tuple(np.shape(mask))}; a mask is a 2-D (height, width) array.",
            "pass one (H, W) array per image (bool, floats in [0, 1], or uint8).",
        )
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == bool:
        out = arr.astype(np.uint8) * 255
    else:
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise RewriteError(f"The {what} contains NaN or Inf.", "pass finite values in [0, 1].")
        if arr.min() < 0 or arr.max() > 1:
            raise RewriteError(
                f"The {what} has values in [{arr.min():.3g}, {arr.max():.3g}]; float masks must lie in [0, 1].",
                "scale it to [0, 1], or pass uint8 (0..255).",
            )
        out = np.rint(arr * 255).astype(np.uint8)
    if not out.any():
        raise RewriteError(
            f"The {what} is empty (all zero).",
            f"paint the region for the {what} before running the edit.",
        )
    return np.ascontiguousarray(out)


def mask_at(mask: np.ndarray, size: tuple[int, int], device=None) -> torch.Tensor:
    """Area-resample a uint8 mask to ``size`` (H, W) as float32 weights in [0, 1]."""
    t = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="area") if _shrinks(t.shape[-2:], size) else \
            F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t[0, 0].clamp_(0, 1).to(device) if device is not None else t[0, 0].clamp_(0, 1)


def _shrinks(src, dst) -> bool:
    return src[0] >= dst[0] and src[1] >= dst[1]


def shift(t: torch.Tensor, offset: tuple[float, float], image_size: int) -> torch.Tensor:
    """Translate a (N, C, H, W) map by ``offset`` = (dx, dy) in image pixels (zero fill).

    The map may be at any resolution; the offset is rescaled from ``image_size`` to it.
    Integer shifts at the map's resolution are exact; fractional ones are bilinear.
    """
    h, w = t.shape[-2:]
    dx = float(offset[0]) * w / image_size
    dy = float(offset[1]) * h / image_size
    if dx == int(dx) and dy == int(dy):
        out = torch.zeros_like(t)
        dx, dy = int(dx), int(dy)
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[..., yd, xd] = t[..., ys, xs]
        return out
    theta = torch.tensor([[1.0, 0.0, -2 * dx / w], [0.0, 1.0, -2 * dy / h]], dtype=t.dtype,
                         device=t.device).expand(t.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(t.shape), align_corners=False)
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def mask_to_data_url(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def mask_from_data_url(url: str, what: str = "mask") -> np.ndarray:
    """Decode a PNG/any-image data URL to a uint8 mask (alpha if present, else luminance)."""
    if not isinstance(url, str) or not url.startswith("data:image/") or "," not in url:
        raise RewriteError(
            f"The {what} is not an image data URL (expected 'data:image/png;base64,...').",
            "save masks as PNG data URLs, as rewidget and the paper's tool do.",
        )
    try:
        raw = base64.b64decode(url.split(",", 1)[1], validate=True)
        img = Image.open(io.BytesIO(raw))
        img.load()
    except Exception as e:  # PIL raises many types for bad data
        raise RewriteError(f"The {what} could not be decoded as an image ({e}).",
                           "re-save the mask as a PNG data URL.") from e
    if img.mode in ("RGBA", "LA") or "transparency" in img.info:
        arr = np.asarray(img.convert("RGBA"))[..., 3]
    else:
        arr = np.asarray(img.convert("L"))
    return np.ascontiguousarray(arr.astype(np.uint8))


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the non-zero pixels, x1/y1 exclusive."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
