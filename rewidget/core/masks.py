"""Masks: validation, resizing to a layer's resolution, shifting, PNG data URLs.

    m = as_mask(painted, "context mask")       # (H, W) uint8, any input size or dtype
    check_mask_size(m, (64, 64), "context mask")   # refuses a mask made for another image size
    w = mask_at(m, (8, 8))                     # (8, 8) float32 area-averaged weights in [0, 1]
    url = mask_to_data_url(m)                  # "data:image/png;base64,..." (the paper tool's format)
    m2 = mask_from_data_url(url)               # uint8 again, identical

Masks are stored as uint8 (0..255) so a saved request replays bit-for-bit; they are
resampled to each layer's key or value resolution by area averaging.

Data URLs are decoded as PNG only (the signature is checked and Pillow is told to try no
other format: no EPS/Ghostscript, no other plugin), and the PNG's declared size is read from
its header and checked against MAX_MASK_SIDE before any pixel is decompressed.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import RewriteError, as_real_tensor

MIN_MASK_WEIGHT = 1e-6
#: the largest mask side accepted (arrays and PNGs): 16× a 256-px image, far above any painter
MAX_MASK_SIDE = 4096
#: the longest data URL decoded (a 4096² PNG of a painted mask is a few hundred KB)
MAX_DATA_URL_CHARS = 16 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def as_mask(mask, what: str = "mask") -> np.ndarray:
    """Validate and quantise a mask to (H, W) uint8. Accepts bool, [0,1] floats or uint8.

    A uint8 mask whose values are only 0 and 1 is refused: uint8 means 0..255, so it would be
    a mask of weight 1/255 (pass it as bool, or times 255)."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and not mask.is_meta:
        mask = mask.detach().cpu().numpy()
    elif isinstance(mask, torch.Tensor) or not isinstance(mask, np.ndarray):
        fix = "pass one (H, W) array per image (bool, floats in [0, 1], or uint8)."
        if isinstance(mask, (list, tuple)):
            try:
                mask = np.asarray(mask)
            except ValueError as e:  # ragged
                raise RewriteError(f"The {what} is not a rectangular array ({e}).", fix) from e
        if not (isinstance(mask, np.ndarray) and mask.dtype == bool):
            mask = as_real_tensor(mask, f"the {what}", fix).detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.dtype.kind not in "biuf":
        raise RewriteError(f"The {what} has dtype {arr.dtype}; a mask holds real numbers.",
                           "pass a bool, uint8 or float array.")
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        arr = arr[..., -1] if arr.shape[-1] == 4 else arr[..., 0]
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise RewriteError(
            f"The {what} has shape {tuple(np.shape(mask))}; a mask is a 2-D (height, width) array.",
            "pass one (H, W) array per image (bool, floats in [0, 1], or uint8).",
        )
    if max(arr.shape) > MAX_MASK_SIDE:
        raise RewriteError(f"The {what} is {arr.shape[1]}×{arr.shape[0]} pixels; at most "
                           f"{MAX_MASK_SIDE} per side are accepted.",
                           "paint the mask at the image's own size.")
    if arr.dtype == np.uint8:
        out = arr
        if out.any() and int(out.max()) == 1:
            raise RewriteError(
                f"The {what} is uint8 with values 0 and 1 only; uint8 masks mean 0..255, so "
                "this would be a mask of weight 1/255.",
                "pass mask.astype(bool), or multiply it by 255.")
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


def check_mask_size(mask: np.ndarray, size: tuple[int, int], what: str = "mask") -> None:
    """Refuse a mask whose (H, W) is not the image's: it would be silently stretched."""
    if tuple(mask.shape[:2]) != tuple(size):
        raise RewriteError(
            f"The {what} is {mask.shape[1]}×{mask.shape[0]} pixels but this model's images are "
            f"{size[1]}×{size[0]}; it would be stretched to fit.",
            f"paint the mask on the {size[1]}×{size[0]} image, or resize it yourself first "
            "(e.g. mask_at(mask, size)).")


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
        if abs(dx) >= w or abs(dy) >= h:  # moved wholly out of the map
            return out
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


def png_size(raw: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR header; RewriteError if ``raw`` is not a PNG."""
    if raw[:8] != PNG_SIGNATURE or len(raw) < 33 or raw[12:16] != b"IHDR":
        kind = "an EPS/PostScript document" if raw[:4] in (b"%!PS", b"\xc5\xd0\xd3\xc6") else \
            "not a PNG"
        raise RewriteError(f"The data is {kind}; masks are read as PNG only.",
                           "save the mask as a PNG data URL (as rewidget and the paper's tool do).")
    return struct.unpack(">II", raw[16:24])


def mask_from_data_url(url: str, what: str = "mask") -> np.ndarray:
    """Decode a PNG data URL to a uint8 mask (alpha if present, else luminance).

    PNG only (signature checked, no other Pillow plugin is tried); the size in the PNG header
    is checked against MAX_MASK_SIDE before anything is decompressed."""
    if not isinstance(url, str) or "," not in url or \
            not url[:40].lower().startswith("data:image/png"):
        raise RewriteError(
            f"The {what} is not a PNG data URL (expected 'data:image/png;base64,...').",
            "save masks as PNG data URLs, as rewidget and the paper's tool do.",
        )
    if len(url) > MAX_DATA_URL_CHARS:
        raise RewriteError(f"The {what} data URL is {len(url):,} characters; at most "
                           f"{MAX_DATA_URL_CHARS:,} are decoded.",
                           "save the mask at the image's own size.")
    try:
        raw = base64.b64decode(url.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError) as e:
        raise RewriteError(f"The {what} is not valid base64 ({e}).",
                           "re-save the mask as a PNG data URL.") from e
    try:
        width, height = png_size(raw)
    except RewriteError as e:
        problem = e.problem[:1].lower() + e.problem[1:]
        raise RewriteError(f"The {what} could not be decoded: {problem}", e.fix) from None
    if not (1 <= width <= MAX_MASK_SIDE and 1 <= height <= MAX_MASK_SIDE):
        raise RewriteError(f"The {what} PNG declares {width}×{height} pixels; at most "
                           f"{MAX_MASK_SIDE} per side are decoded.",
                           "save the mask at the image's own size.")
    try:
        img = Image.open(io.BytesIO(raw), formats=["PNG"])
        if img.size != (width, height):
            raise ValueError(f"header says {width}×{height}, Pillow read {img.size}")
        img.load()
    except Exception as e:  # PIL raises many types for bad data  # noqa: BLE001
        raise RewriteError(f"The {what} could not be decoded as a PNG ({e}).",
                           "re-save the mask as a PNG data URL.") from e
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        arr = np.asarray(img.convert("RGBA"))[..., 3]
    else:
        arr = np.asarray(img.convert("L"))
    return np.ascontiguousarray(arr.astype(np.uint8))


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the non-zero pixels, x1/y1 exclusive."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def parts_touching(mask: np.ndarray, region: torch.Tensor) -> np.ndarray:
    """The connected parts (8-neighbour) of the uint8 (H, W) ``mask`` that ``region`` (an
    (H, W) weight map at the same size, e.g. a pasted copy's footprint) overlaps: uint8, with
    ``mask``'s values there and 0 elsewhere (all zero when ``region`` misses the mask).

    Replacing pastes use it: the context object under a paste is the part of the context the
    paste lands on, not every context object of that image.
    """
    m = np.asarray(mask)
    inside = torch.from_numpy(m > 0)
    grown = inside & (region.detach().cpu() > MIN_MASK_WEIGHT)
    while True:  # reconstruction by dilation: grow the seeds inside the mask until stable
        step = F.max_pool2d(grown[None, None].float(), 3, 1, 1)[0, 0].bool() & inside
        if torch.equal(step, grown):
            return np.where(grown.numpy(), m, 0).astype(np.uint8)
        grown = step
