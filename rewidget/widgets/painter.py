"""The painter: paint rule masks on one generated sample, in the browser.

    painter = Painter(scale=6)
    painter.set_image(rgb)                       # (H, W, 3) uint8, e.g. 64x64
    painter.on_stroke(lambda tool: print(tool, painter.mask(tool).sum()))
    painter.on_shortcut(lambda name: history.undo() if name == "undo" else history.redo())
    painter                                      # paint; masks arrive once per stroke

Strokes are drawn client side (js/painter.js) and each finished stroke writes its whole mask
trait once, on pointerup. Masks are uint8 bytes at image resolution; `mask(tool)` decodes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t
from ipywidgets import CallbackDispatcher
from ipywidgets.widgets.trait_types import bytes_serialization

from .pixels import to_rgba

TOOLS = ("context", "copy", "paste", "keep")
MASK_TOOLS = ("context", "copy", "keep")  # the tools that paint a mask
SHORTCUT_EVENTS = ("undo", "redo")

_JS_FILES = ("mask.js", "painter.js")
# One regex for painter.js' import of the helpers, which may span several lines.
_MASK_IMPORT = re.compile(r"^import\s*\{[^}]*\}\s*from\s*[\"']\./mask\.js[\"'];?[ \t]*$", re.M)


def _js_dir() -> Path:
    """Where the ES modules live: inside the wheel first, then the source checkout's js/."""
    here = Path(__file__).resolve().parent
    for folder in (here / "static", here.parents[1] / "js"):
        if all((folder / name).is_file() for name in _JS_FILES):
            return folder
    raise FileNotFoundError(
        f"rewidget's painter JS ({', '.join(_JS_FILES)}) is neither in {here / 'static'} "
        f"(wheel) nor in {here.parents[1] / 'js'} (source checkout); reinstall rewidget"
    )


def load_esm() -> str:
    """The painter's ES module as one string.

    anywidget hands the browser a single module string, so painter.js' relative import of
    ./mask.js could not resolve there. We inline mask.js (its named exports become module
    locals) and drop that import line; node's tests import js/mask.js directly.
    """
    folder = _js_dir()
    helpers = (folder / "mask.js").read_text(encoding="utf-8")
    view, n = _MASK_IMPORT.subn("", (folder / "painter.js").read_text(encoding="utf-8"))
    if n != 1:
        raise RuntimeError(f'expected one `import ... from "./mask.js"` in {folder / "painter.js"}')
    return f"{helpers}\n// ---- painter.js ----\n{view}"


def _rgba(image: Any, name: str) -> np.ndarray:
    """(H, W, 3|4) uint8 array-like -> contiguous (H, W, 4) uint8."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{name} must have shape (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise TypeError(
            f"{name} must be uint8 (0..255), got {arr.dtype}; "
            "convert floats in [0, 1] with (x * 255).round().astype(np.uint8)"
        )
    return to_rgba(arr)


class Painter(anywidget.AnyWidget):
    """A generated sample shown enlarged, with brushes for the context, copy and keep masks
    and a draggable paste patch. Keyboard shortcuts work while it has focus (the "?" lists them)."""

    _esm = load_esm()

    #: The sample as raw RGBA bytes, width*height*4, row-major. Set it with `set_image`.
    image = t.Bytes(b"").tag(sync=True)
    #: Image width in pixels; masks and the paste patch share it.
    width = t.Int(64).tag(sync=True)
    #: Image height in pixels.
    height = t.Int(64).tag(sync=True)
    #: Display pixels per image pixel (64 px at scale 6 shows as 384 px, pixelated).
    scale = t.Int(6).tag(sync=True)
    #: Active tool: "context", "copy" and "keep" paint masks, "paste" drags the paste patch.
    tool = t.Unicode("context").tag(sync=True)
    #: Brush diameter in image pixels, 1..64 (`[` and `]` change it in the browser).
    brush_size = t.Int(6).tag(sync=True)
    #: True: the brush erases from the current tool's mask (`e` toggles it).
    erasing = t.Bool(False).tag(sync=True)
    #: Context mask, uint8 width*height (0..255, soft edges); b"" is no mask. Written by the browser.
    context_mask = t.Bytes(b"").tag(sync=True, **bytes_serialization)
    #: Copy mask, uint8 width*height; b"" is no mask. Written by the browser.
    copy_mask = t.Bytes(b"").tag(sync=True, **bytes_serialization)
    #: Keep mask (what the edit must not change), uint8 width*height; b"" is none. Browser-written.
    keep_mask = t.Bytes(b"").tag(sync=True, **bytes_serialization)
    #: Where pastes kept with "Paste again" land on this image, uint8 width*height (drawn in
    #: green; b"" is none). Kernel-written.
    kept_mask = t.Bytes(b"").tag(sync=True, **bytes_serialization)
    #: The copied object as RGBA width*height*4 at its source position, alpha = copy mask.
    paste_patch = t.Bytes(b"").tag(sync=True)
    #: [dx, dy] in image pixels that moves the paste patch to its target; written on drag end.
    paste_offset = t.List(t.Int(), default_value=[0, 0], minlen=2, maxlen=2).tag(sync=True)
    #: True once the user has placed the paste patch (the browser sets it after a drag).
    paste_active = t.Bool(False).tag(sync=True)
    #: Finished strokes and drags so far; the browser adds one per gesture, after the mask.
    stroke_count = t.Int(0).tag(sync=True)
    #: False ignores painting and shortcuts and dims the image (e.g. while a rewrite runs).
    enabled = t.Bool(True).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stroke_callbacks = CallbackDispatcher()
        self._shortcut_callbacks = CallbackDispatcher()
        self.on_msg(self._on_custom_msg)
        self.observe(self._on_stroke_count, names="stroke_count")

    # -- validation ---------------------------------------------------------------------------

    @t.validate("tool")
    def _valid_tool(self, proposal: dict) -> str:
        if proposal["value"] not in TOOLS:
            raise t.TraitError(f"tool must be one of {', '.join(TOOLS)}; got {proposal['value']!r}")
        return proposal["value"]

    @t.validate("brush_size")
    def _valid_brush(self, proposal: dict) -> int:
        if not 1 <= proposal["value"] <= 64:
            raise t.TraitError(f"brush_size is in image pixels, 1..64; got {proposal['value']}")
        return proposal["value"]

    @t.validate("width", "height", "scale")
    def _valid_positive(self, proposal: dict) -> int:
        if proposal["value"] < 1:
            raise t.TraitError(f"{proposal['trait'].name} must be >= 1; got {proposal['value']}")
        return proposal["value"]

    @t.validate("image", "paste_patch", "context_mask", "copy_mask", "keep_mask")
    def _valid_size(self, proposal: dict) -> bytes:
        name, value = proposal["trait"].name, proposal["value"]
        channels = 4 if name in ("image", "paste_patch") else 1
        expected = self.width * self.height * channels
        if len(value) not in (0, expected):
            raise t.TraitError(
                f"{name} needs {expected} bytes ({self.width}x{self.height}x{channels}) or b''; "
                f"got {len(value)}. Use set_image() to change the image size."
            )
        return value

    # -- reading and writing masks --------------------------------------------------------------

    def mask(self, tool: str) -> np.ndarray | None:
        """The tool's mask as float32 (H, W) in [0, 1], or None when there is none (or it is blank).

        For "paste" this is the patch's alpha moved by `paste_offset`, i.e. where the object will
        land in this image; None until the user has placed it (`paste_active`).
        """
        if tool not in TOOLS:
            raise ValueError(f"tool must be one of {', '.join(TOOLS)}; got {tool!r}")
        h, w = self.height, self.width
        if tool == "paste":
            if not self.paste_active or not self.paste_patch:
                return None
            alpha = np.frombuffer(self.paste_patch, np.uint8).reshape(h, w, 4)[..., 3]
            out = _shift(alpha, *self.paste_offset)
        else:
            data = getattr(self, f"{tool}_mask")
            if not data:
                return None
            out = np.frombuffer(data, np.uint8).reshape(h, w)
        if not out.any():
            return None
        return out.astype(np.float32) / 255.0

    def set_mask(self, tool: str, mask: np.ndarray | None) -> None:
        """Set the "context", "copy" or "keep" mask from an (H, W) array in [0, 1] (or uint8);
        None clears."""
        if tool not in MASK_TOOLS:
            raise ValueError(f"set_mask takes {', '.join(map(repr, MASK_TOOLS))}; got {tool!r}")
        data = b""
        if mask is not None:
            arr = np.asarray(mask)
            if arr.shape != (self.height, self.width):
                raise ValueError(f"mask must be ({self.height}, {self.width}); got {arr.shape}")
            if arr.dtype != np.uint8:
                arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
            data = np.ascontiguousarray(arr).tobytes()
        setattr(self, f"{tool}_mask", data)

    def set_image(self, image: Any) -> None:
        """Show a (H, W, 3) or (H, W, 4) uint8 image; clears the masks and the paste placement.

        The paste patch is kept when the size is unchanged, so a copied object can be pasted into
        the next sample; its offset resets to [0, 0] and `paste_active` to False.
        """
        rgba = _rgba(image, "image")
        h, w = rgba.shape[:2]
        keep_patch = (w, h) == (self.width, self.height)
        # hold_trait_notifications defers the size validators until width/height are set too
        with self.hold_sync(), self.hold_trait_notifications():
            self.width, self.height = w, h
            self.image = rgba.tobytes()
            self.context_mask = b""
            self.copy_mask = b""
            self.keep_mask = b""
            if not keep_patch:
                self.paste_patch = b""
            self.paste_offset = [0, 0]
            self.paste_active = False

    def set_paste_patch(self, image: Any, mask: np.ndarray) -> None:
        """Cut the object to paste out of `image` with `mask` ((H, W) in [0, 1]) as its alpha.

        The patch stays at its source position; the user drags it in the painter.
        """
        rgba = _rgba(image, "image").copy()
        m = np.asarray(mask, dtype=np.float32)
        if rgba.shape[:2] != (self.height, self.width) or m.shape != (self.height, self.width):
            raise ValueError(
                f"image and mask must be {self.height}x{self.width}; "
                f"got {rgba.shape[:2]} and {m.shape}"
            )
        rgba[..., 3] = (np.clip(m, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        with self.hold_sync():
            self.paste_patch = rgba.tobytes()
            self.paste_offset = [0, 0]
            self.paste_active = False

    def clear(self, tool: str | None = None) -> None:
        """Clear one tool's state ("context", "copy", "keep", or "paste": patch and placement),
        or all."""
        if tool is not None and tool not in TOOLS:
            raise ValueError(f"tool must be one of {', '.join(TOOLS)} or None; got {tool!r}")
        with self.hold_sync():
            if tool in (None, "context"):
                self.context_mask = b""
            if tool in (None, "copy"):
                self.copy_mask = b""
            if tool in (None, "keep"):
                self.keep_mask = b""
            if tool in (None, "paste"):
                self.paste_patch = b""
                self.paste_offset = [0, 0]
                self.paste_active = False

    # -- events ---------------------------------------------------------------------------------

    def on_stroke(self, callback: Callable[[str], Any], remove: bool = False) -> None:
        """Call `callback(tool)` after each finished stroke or paste drag (the mask is updated)."""
        self._stroke_callbacks.register_callback(callback, remove=remove)

    def on_shortcut(self, callback: Callable[[str], Any], remove: bool = False) -> None:
        """Call `callback(name)` for the shortcuts Python handles: "undo" (Ctrl+Z) and "redo"
        (Ctrl+Shift+Z, Ctrl+Y). Tool, brush and eraser keys just change traits."""
        self._shortcut_callbacks.register_callback(callback, remove=remove)

    def _on_stroke_count(self, change: dict) -> None:
        # only growth is a stroke; Python resetting the counter is not
        if change["new"] > change["old"]:
            self._stroke_callbacks(self.tool)

    def _on_custom_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # other custom messages may come from newer JS or other tools; they are not ours
        if isinstance(content, dict) and content.get("event") in SHORTCUT_EVENTS:
            self._shortcut_callbacks(content["event"])


def _shift(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`a` moved by (dx, dy) pixels; what moves in is zero, what moves out is lost."""
    h, w = a.shape
    out = np.zeros_like(a)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out
