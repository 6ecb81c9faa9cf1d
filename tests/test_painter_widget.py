"""The painter's Python side, without a browser: traits, mask decoding, messages from the JS.

Browser messages are fed through `Widget._handle_msg`, the path ipywidgets uses for messages
from the front end, with masks as binary buffers (memoryview), as the JS sends them.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import traitlets

from rewidget.widgets import painter as painter_module
from rewidget.widgets.painter import Painter, load_esm


def browser_update(widget: Painter, state: dict, buffers: dict | None = None) -> None:
    """Deliver an 'update' message as the front end sends it: bytes travel as buffers."""
    buffers = buffers or {}
    msg_state = dict(state)
    for name in buffers:
        msg_state.pop(name, None)
    widget._handle_msg(
        {
            "content": {
                "data": {
                    "method": "update",
                    "state": msg_state,
                    "buffer_paths": [[name] for name in buffers],
                }
            },
            "buffers": [memoryview(b) for b in buffers.values()],
        }
    )


def browser_custom(widget: Painter, content: dict) -> None:
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


def gradient(h: int = 8, w: int = 10, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)


# -- defaults and validation -------------------------------------------------------------------


def test_defaults():
    p = Painter()
    assert (p.width, p.height, p.scale) == (64, 64, 6)
    assert p.tool == "context"
    assert p.brush_size == 6
    assert p.erasing is False
    assert p.image == p.context_mask == p.copy_mask == p.keep_mask == p.paste_patch == b""
    assert p.paste_offset == [0, 0]
    assert p.paste_active is False
    assert p.stroke_count == 0
    assert p.enabled is True
    for tool in ("context", "copy", "paste", "keep"):
        assert p.mask(tool) is None


def test_all_contract_traits_sync():
    names = {"image", "width", "height", "scale", "tool", "brush_size", "erasing",
             "context_mask", "copy_mask", "keep_mask", "paste_patch", "paste_offset",
             "paste_active",
             "stroke_count", "enabled"}  # fmt: skip
    synced = set(Painter().keys)
    assert names <= synced


def test_browser_written_masks_use_bytes_serialization():
    for name in ("context_mask", "copy_mask", "keep_mask"):
        meta = Painter().trait_metadata(name, "from_json")
        assert meta is not None, f"{name} needs **bytes_serialization"


def test_every_synced_trait_has_a_doc_comment():
    source = painter_module.__file__
    text = open(source, encoding="utf-8").read().splitlines()
    for i, line in enumerate(text):
        stripped = line.strip()
        if ".tag(sync=True" in stripped and not stripped.startswith(("_", "#")):
            assert text[i - 1].strip().startswith("#:"), f"no #: comment above: {stripped}"


@pytest.mark.parametrize("tool", ["context", "copy", "paste", "keep"])
def test_tool_accepts_known(tool):
    p = Painter()
    p.tool = tool
    assert p.tool == tool


def test_tool_rejects_unknown_with_helpful_message():
    p = Painter()
    with pytest.raises(traitlets.TraitError, match="context, copy, paste.*'brush'"):
        p.tool = "brush"
    assert p.tool == "context"
    with pytest.raises(traitlets.TraitError):
        Painter(tool="erase")


@pytest.mark.parametrize("size", [1, 6, 64])
def test_brush_size_in_range(size):
    assert Painter(brush_size=size).brush_size == size


@pytest.mark.parametrize("size", [0, -3, 65, 1000])
def test_brush_size_out_of_range(size):
    with pytest.raises(traitlets.TraitError, match="1..64"):
        Painter().brush_size = size


@pytest.mark.parametrize("name", ["width", "height", "scale"])
def test_sizes_must_be_positive(name):
    with pytest.raises(traitlets.TraitError, match=">= 1"):
        setattr(Painter(), name, 0)


def test_byte_traits_must_match_the_image_size():
    p = Painter(width=4, height=3)
    p.context_mask = bytes(12)
    p.copy_mask = b""
    p.image = bytes(48)
    p.paste_patch = bytes(48)
    with pytest.raises(traitlets.TraitError, match="12 bytes.*4x3x1.*set_image"):
        p.context_mask = bytes(13)
    with pytest.raises(traitlets.TraitError, match="48 bytes"):
        p.image = bytes(12)
    with pytest.raises(traitlets.TraitError):
        p.paste_patch = bytes(12)


def test_paste_offset_is_two_ints():
    p = Painter()
    p.paste_offset = [3, -4]
    assert p.paste_offset == [3, -4]
    for bad in ([1], [1, 2, 3], ["a", 1], [1.5, 2]):
        with pytest.raises(traitlets.TraitError):
            p.paste_offset = bad


# -- the ES module -------------------------------------------------------------------------


def test_esm_inlines_mask_helpers_and_drops_the_relative_import():
    esm = Painter._esm if isinstance(Painter._esm, str) else str(Painter._esm)
    assert esm == load_esm()
    assert not re.search(r"^\s*import\b", esm, re.M), "anywidget cannot resolve relative imports"
    assert "export function stampSegment" in esm
    assert "export default { render }" in esm
    assert esm.index("export function stampSegment") < esm.index("function render(")
    # the view sets the classes the browser tests select on
    assert "rewidget-painter-canvas" in esm and '"rewidget-painter"' in esm


def test_js_dir_prefers_the_wheel_static_folder(tmp_path, monkeypatch):
    # a fake package dir with static/ next to painter.py, as in the wheel
    pkg = tmp_path / "rewidget" / "widgets"
    (pkg / "static").mkdir(parents=True)
    (pkg / "static" / "mask.js").write_text("export const A = 1;\n")
    (pkg / "static" / "painter.js").write_text(
        'import { A } from "./mask.js";\nexport default { render() { return A; } };\n'
    )
    monkeypatch.setattr(painter_module, "__file__", str(pkg / "painter.py"))
    assert painter_module._js_dir() == pkg / "static"
    esm = load_esm()
    assert esm.startswith("export const A = 1;") and "import" not in esm


def test_js_dir_missing_is_a_clear_error(tmp_path, monkeypatch):
    pkg = tmp_path / "rewidget" / "widgets"
    pkg.mkdir(parents=True)
    monkeypatch.setattr(painter_module, "__file__", str(pkg / "painter.py"))
    with pytest.raises(FileNotFoundError, match="mask.js"):
        painter_module._js_dir()


# -- images and masks ----------------------------------------------------------------------


def test_set_image_rgb_adds_opaque_alpha_and_sets_size():
    rgb = gradient(8, 10, 3)
    p = Painter()
    p.set_image(rgb)
    assert (p.width, p.height) == (10, 8)
    rgba = np.frombuffer(p.image, np.uint8).reshape(8, 10, 4)
    np.testing.assert_array_equal(rgba[..., :3], rgb)
    assert (rgba[..., 3] == 255).all()


def test_set_image_rgba_kept_as_is():
    rgba = gradient(5, 7, 4)
    p = Painter()
    p.set_image(rgba)
    assert p.image == rgba.tobytes()


def test_set_image_rejects_bad_input():
    p = Painter()
    with pytest.raises(TypeError, match="uint8"):
        p.set_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        p.set_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        p.set_image(np.zeros((4, 4, 2), np.uint8))


def test_set_image_clears_masks_and_paste_placement():
    p = Painter()
    p.set_image(gradient(8, 10))
    p.context_mask = bytes([255]) * 80
    p.copy_mask = bytes([255]) * 80
    p.set_paste_patch(gradient(8, 10), np.ones((8, 10)))
    p.paste_offset, p.paste_active = [2, 1], True
    p.set_image(gradient(8, 10))  # same size: the copied patch survives, its placement does not
    assert p.context_mask == p.copy_mask == b""
    assert len(p.paste_patch) == 8 * 10 * 4
    assert p.paste_offset == [0, 0] and p.paste_active is False
    p.set_image(gradient(4, 4))  # new size: the patch no longer fits
    assert p.paste_patch == b""


def test_mask_decodes_browser_bytes():
    p = Painter()
    p.set_image(gradient(3, 4))
    raw = np.array([[0, 255, 128, 0], [0, 0, 0, 0], [1, 2, 3, 255]], np.uint8)
    browser_update(p, {"stroke_count": 1}, {"context_mask": raw.tobytes()})
    assert isinstance(p.context_mask, bytes)
    m = p.mask("context")
    assert m.dtype == np.float32 and m.shape == (3, 4)
    np.testing.assert_allclose(m, raw / 255.0, rtol=1e-6)
    assert m.min() >= 0.0 and m.max() <= 1.0
    assert p.mask("copy") is None


def test_blank_mask_reads_as_none():
    p = Painter()
    p.set_image(gradient(3, 4))
    browser_update(p, {}, {"copy_mask": bytes(12)})
    assert p.copy_mask == bytes(12)
    assert p.mask("copy") is None


def test_mask_rejects_unknown_tool():
    with pytest.raises(ValueError, match="one of"):
        Painter().mask("brush")


def test_set_mask_roundtrip_and_clear():
    p = Painter()
    p.set_image(gradient(3, 4))
    m = np.zeros((3, 4), np.float32)
    m[1, 2] = 1.0
    m[0, 0] = 0.5
    p.set_mask("copy", m)
    np.testing.assert_allclose(p.mask("copy"), np.round(m * 255) / 255)
    p.set_mask("copy", None)
    assert p.copy_mask == b""
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        p.set_mask("context", np.zeros((4, 3)))
    with pytest.raises(ValueError):
        p.set_mask("paste", m)


def test_keep_mask_is_painted_read_and_cleared_like_the_others():
    p = Painter()
    p.set_image(gradient(3, 4))
    m = np.zeros((3, 4), np.uint8)
    m[2, 1:3] = 255
    browser_update(p, {"tool": "keep", "stroke_count": 1}, {"keep_mask": m.tobytes()})
    assert p.tool == "keep" and p.keep_mask == m.tobytes()
    np.testing.assert_array_equal(p.mask("keep"), m / 255.0)
    p.set_mask("copy", m)
    p.clear("keep")
    assert p.keep_mask == b"" and p.copy_mask == m.tobytes()
    p.set_mask("keep", m)
    p.set_image(gradient(3, 4))  # a new sample: no masks
    assert p.keep_mask == b""
    with pytest.raises(traitlets.TraitError, match="keep_mask needs 12 bytes"):
        p.keep_mask = bytes(5)


def test_paste_mask_is_the_patch_alpha_moved_by_the_offset():
    p = Painter()
    img = gradient(6, 8)
    p.set_image(img)
    src = np.zeros((6, 8), np.float32)
    src[1:3, 1:4] = 1.0  # rows 1-2, cols 1-3
    p.set_paste_patch(img, src)
    patch = np.frombuffer(p.paste_patch, np.uint8).reshape(6, 8, 4)
    np.testing.assert_array_equal(patch[..., :3], img)
    np.testing.assert_array_equal(patch[..., 3], (src * 255).astype(np.uint8))
    assert p.mask("paste") is None  # not placed yet
    browser_update(p, {"paste_offset": [3, 2], "paste_active": True, "stroke_count": 1})
    expected = np.zeros((6, 8), np.float32)
    expected[3:5, 4:7] = 1.0
    np.testing.assert_array_equal(p.mask("paste"), expected)
    # moved partly off the image: the outside part is cut off
    browser_update(p, {"paste_offset": [-2, 4]})
    expected = np.zeros((6, 8), np.float32)
    expected[5:6, 0:2] = 1.0
    np.testing.assert_array_equal(p.mask("paste"), expected)
    # entirely off: nothing lands
    p.paste_offset = [8, 0]
    assert p.mask("paste") is None


def test_set_paste_patch_checks_sizes():
    p = Painter()
    p.set_image(gradient(6, 8))
    with pytest.raises(ValueError, match="6x8"):
        p.set_paste_patch(gradient(6, 8), np.ones((5, 8)))


def test_clear_one_or_all():
    p = Painter()
    img = gradient(4, 4)
    p.set_image(img)

    def fill():
        p.context_mask = bytes([9]) * 16
        p.copy_mask = bytes([9]) * 16
        p.set_paste_patch(img, np.ones((4, 4)))
        p.paste_offset, p.paste_active = [1, 1], True

    fill()
    p.clear("context")
    assert p.context_mask == b"" and p.copy_mask != b"" and p.paste_active
    p.clear("copy")
    assert p.copy_mask == b"" and p.paste_patch != b""
    p.clear("paste")
    assert p.paste_patch == b"" and p.paste_offset == [0, 0] and not p.paste_active
    fill()
    p.clear()
    assert p.context_mask == p.copy_mask == p.paste_patch == b""
    assert p.paste_offset == [0, 0] and not p.paste_active
    assert p.image == img.tobytes() or len(p.image) == 64  # the image stays
    with pytest.raises(ValueError):
        p.clear("everything")


# -- messages from the browser ------------------------------------------------------------


def test_on_stroke_fires_per_stroke_with_the_tool_and_the_new_mask():
    p = Painter()
    p.set_image(gradient(2, 2))
    seen = []
    p.on_stroke(lambda tool: seen.append((tool, p.mask(tool))))
    mask = bytes([0, 255, 0, 0])
    browser_update(p, {"stroke_count": 1}, {"context_mask": mask})
    assert len(seen) == 1 and seen[0][0] == "context"
    # the mask was already updated when the callback ran (same message)
    np.testing.assert_array_equal(seen[0][1], np.array([[0, 1], [0, 0]], np.float32))
    browser_update(p, {"tool": "copy"})
    browser_update(p, {"stroke_count": 2}, {"copy_mask": mask})
    assert [s[0] for s in seen] == ["context", "copy"]


def test_on_stroke_ignores_counter_resets_and_can_be_removed():
    p = Painter()
    calls = []

    def cb(tool):
        calls.append(tool)

    p.on_stroke(cb)
    p.on_stroke(cb)  # registering twice is once
    browser_update(p, {"stroke_count": 1})
    assert calls == ["context"]
    p.stroke_count = 0  # Python resetting is not a stroke
    assert calls == ["context"]
    p.on_stroke(cb, remove=True)
    browser_update(p, {"stroke_count": 1})
    assert calls == ["context"]


def test_paste_drag_reports_a_paste_stroke():
    p = Painter(tool="paste")
    calls = []
    p.on_stroke(calls.append)
    browser_update(p, {"paste_offset": [5, -2], "paste_active": True, "stroke_count": 1})
    assert calls == ["paste"]
    assert p.paste_offset == [5, -2] and p.paste_active


def test_shortcut_messages():
    p = Painter()
    names = []
    p.on_shortcut(names.append)
    browser_custom(p, {"event": "undo"})
    browser_custom(p, {"event": "redo"})
    browser_custom(p, {"event": "something-else"})  # not ours: ignored
    browser_custom(p, {"no": "event"})
    assert names == ["undo", "redo"]
    p.on_shortcut(names.append, remove=True)
    browser_custom(p, {"event": "undo"})
    assert names == ["undo", "redo"]


def test_browser_keyboard_trait_changes_validate():
    p = Painter()
    browser_update(p, {"tool": "paste", "brush_size": 7, "erasing": True})
    assert (p.tool, p.brush_size, p.erasing) == ("paste", 7, True)


def test_set_image_syncs_in_one_message(monkeypatch):
    p = Painter()
    p.set_image(gradient(4, 4))
    p.context_mask = p.copy_mask = bytes([1]) * 16
    sent = []
    # hold_sync passes its pending set and clears it afterwards: keep a copy
    monkeypatch.setattr(p, "send_state", lambda key=None: sent.append(set(key)))
    p.set_image(gradient(5, 6))
    assert len(sent) == 1
    assert {"image", "width", "height", "context_mask", "copy_mask"} <= set(sent[0])
