"""Pixel helpers for the app's canvases: upscaling, overlays, heat colours, labels, PNG.

    tile = upscale(rgb, 2)                         # (128, 128, 3) from (64, 64, 3), crisp
    tile = overlay(tile, match, (255, 200, 0))     # tint where a (h, w) map in [0, 1] is high
    rgba = to_rgba(tile)                           # (H, W, 4): ipycanvas sends RGBA as PNG
    draw_text(rgba, "seed 3", (4, 110))            # burnt in, so a redraw needs no style state

Everything is numpy uint8 in, numpy uint8 out; the canvases get one finished RGBA image each.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Colours of the selections, shared by the grid tags, the tray and the painter (js/painter.js).
CONTEXT_RGB = (0, 220, 255)
COPY_RGB = (255, 0, 200)
PASTE_RGB = (120, 230, 60)
KEEP_RGB = (110, 90, 255)
PREVIEW_RGB = (255, 120, 0)  # the frame around a grid that shows an edit not committed
MATCH_RGB = (255, 196, 0)
SELECTED_RGB = (255, 235, 60)
BACKGROUND_RGB = (245, 245, 245)

# magma-like stops for heatmaps: dark purple → red → yellow
_HEAT_STOPS = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97],
                        [252, 253, 191]], np.float32)


def to_rgba(img: np.ndarray, alpha: int = 255) -> np.ndarray:
    """(H, W, 3|4) uint8 → contiguous (H, W, 4) uint8."""
    img = np.asarray(img, np.uint8)
    if img.shape[-1] == 4:
        return np.ascontiguousarray(img)
    a = np.full(img.shape[:2] + (1,), alpha, np.uint8)
    return np.ascontiguousarray(np.concatenate([img, a], axis=-1))


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (pixels stay square and crisp)."""
    if factor == 1:
        return np.asarray(img)
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)


def resize_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float (h, w) map resized bilinearly to ``size`` = (H, W)."""
    m = np.asarray(m, np.float32)
    if m.shape == tuple(size):
        return m
    im = Image.fromarray(m, mode="F").resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im, np.float32)


def overlay(img: np.ndarray, amount: np.ndarray, rgb: tuple[int, int, int],
            opacity: float = 0.6) -> np.ndarray:
    """Tint ``img`` (H, W, 3) towards ``rgb`` by ``amount`` ((h, w), clipped to [0, 1])."""
    a = np.clip(resize_map(amount, img.shape[:2]), 0.0, 1.0)[..., None] * opacity
    out = img[..., :3].astype(np.float32) * (1 - a) + np.asarray(rgb, np.float32) * a
    return np.rint(out).astype(np.uint8)


def heat(m: np.ndarray) -> np.ndarray:
    """(h, w) float in [0, 1] → (h, w, 3) uint8 in a magma-like colour map."""
    x = np.clip(np.asarray(m, np.float32), 0, 1) * (len(_HEAT_STOPS) - 1)
    i = np.minimum(x.astype(int), len(_HEAT_STOPS) - 2)
    f = (x - i)[..., None]
    return np.rint(_HEAT_STOPS[i] * (1 - f) + _HEAT_STOPS[i + 1] * f).astype(np.uint8)


def heat_over(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """A heatmap of ``m`` over a dimmed grey copy of ``img``, as a (size, size, 3) tile."""
    grey = np.asarray(Image.fromarray(np.asarray(img[..., :3], np.uint8)).convert("L")
                      .resize((size, size), Image.NEAREST), np.float32)[..., None]
    hm = heat(resize_map(m, (size, size))).astype(np.float32)
    return np.rint(0.3 * grey + 0.7 * hm).clip(0, 255).astype(np.uint8)


def mask_tint(img: np.ndarray, mask: np.ndarray | None, rgb: tuple[int, int, int],
              opacity: float = 0.5) -> np.ndarray:
    """Show a uint8 or float mask on ``img`` the way the painter does."""
    if mask is None:
        return np.asarray(img[..., :3], np.uint8)
    m = np.asarray(mask, np.float32)
    if m.max() > 1.0:
        m = m / 255.0
    return overlay(img, m, rgb, opacity)


def canvas(height: int, width: int, rgb: tuple[int, int, int] = BACKGROUND_RGB,
           alpha: int = 255) -> np.ndarray:
    """An RGBA picture filled with ``rgb``; alpha 0 lets the page (its theme) show through."""
    out = np.empty((height, width, 4), np.uint8)
    out[..., :3] = rgb
    out[..., 3] = alpha
    return out


def paste(dst: np.ndarray, src: np.ndarray, x: int, y: int) -> None:
    """Copy ``src`` (h, w, 3|4) into the RGBA ``dst`` at (x, y), clipped to ``dst``."""
    h, w = src.shape[:2]
    H, W = dst.shape[:2]
    x1, y1 = min(W, x + w), min(H, y + h)
    if x1 <= x or y1 <= y:
        return
    dst[y:y1, x:x1, :3] = src[: y1 - y, : x1 - x, :3]
    dst[y:y1, x:x1, 3] = 255


def frame(dst: np.ndarray, x: int, y: int, w: int, h: int, rgb: tuple[int, int, int],
          width: int = 3) -> None:
    """A rectangle outline of ``width`` px drawn *around* the box (x, y, w, h)."""
    H, W = dst.shape[:2]
    for x0, y0, x1, y1 in ((x - width, y - width, x + w + width, y),
                           (x - width, y + h, x + w + width, y + h + width),
                           (x - width, y, x, y + h), (x + w, y, x + w + width, y + h)):
        dst[max(0, y0):max(0, min(H, y1)), max(0, x0):max(0, min(W, x1)), :3] = rgb


_PROBE = ImageDraw.Draw(Image.new("RGBA", (1, 1)))


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def draw_text(dst: np.ndarray, text: str, xy: tuple[int, int], rgb=(255, 255, 255),
              bg: tuple[int, int, int] | None = (0, 0, 0), size: int = 11) -> None:
    """Burn ``text`` into the RGBA ``dst`` in place, on a small box of ``bg`` (None: no box)."""
    font = _font(size)
    x0, y0, x1, y1 = _PROBE.textbbox(xy, text, font=font)
    # only the text's box goes through PIL, not the whole canvas (a grid draws dozens of labels)
    H, W = dst.shape[:2]
    bx0, by0, bx1, by1 = max(0, x0 - 3), max(0, y0 - 3), min(W, x1 + 3), min(H, y1 + 3)
    if bx0 >= bx1 or by0 >= by1:
        return
    sub = dst[by0:by1, bx0:bx1]
    im = Image.fromarray(np.ascontiguousarray(sub))
    d = ImageDraw.Draw(im)
    if bg is not None:
        d.rectangle((x0 - 2 - bx0, y0 - 1 - by0, x1 + 2 - bx0, y1 + 1 - by0), fill=(*bg, 255))
    d.text((xy[0] - bx0, xy[1] - by0), text, fill=(*rgb, 255), font=font)
    sub[...] = np.asarray(im)


def close_mark(dst: np.ndarray, x: int, y: int, size: int = 11) -> None:
    """A white ✕ on a red square at (x, y), drawn with lines (the built-in font lacks ×)."""
    H, W = dst.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + size), min(H, y + size)
    if x0 >= x1 or y0 >= y1:
        return
    sub = dst[y0:y1, x0:x1]  # only the mark's square goes through PIL
    im = Image.fromarray(np.ascontiguousarray(sub))
    d = ImageDraw.Draw(im)
    x, y = x - x0, y - y0
    d.rectangle((x, y, x + size - 1, y + size - 1), fill=(160, 30, 30, 255))
    a, b = 3, size - 4
    for dx in (0, 1):  # two 1-px diagonals side by side: a crisp 2-px stroke
        d.line((x + a + dx, y + a, x + b + dx - 1, y + b), fill=(255, 255, 255, 255))
        d.line((x + a + dx, y + b, x + b + dx - 1, y + a), fill=(255, 255, 255, 255))
    sub[...] = np.asarray(im)


def text_width(text: str, size: int = 11) -> int:
    return int(_font(size).getlength(text))


def png(rgba: np.ndarray, level: int = 1) -> bytes:
    """Lossless PNG bytes; level 1 is several times faster than PIL's default, a bit larger."""
    f = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba)).save(f, "PNG", compress_level=level)
    return f.getvalue()
