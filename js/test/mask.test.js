// node --test js/test/   (node's own runner, no npm dependencies)
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  SHORTCUTS_HELP,
  clampPasteOffset,
  clientToImage,
  isMaskEmpty,
  keyAction,
  maskBBox,
  maskToRGBA,
  nextBrushSize,
  stampSegment,
  toBytes,
} from "../mask.js";

const at = (mask, w, x, y) => mask[y * w + x];
const count = (mask) => mask.reduce((n, v) => n + (v > 0 ? 1 : 0), 0);

test("dot at a pixel centre: full centre, symmetric, zero outside the radius", () => {
  const w = 16, h = 16, m = new Uint8Array(w * h);
  stampSegment(m, w, h, 8.5, 8.5, 8.5, 8.5, 3);
  assert.equal(at(m, w, 8, 8), 255);
  assert.equal(at(m, w, 6, 8), 255); // distance 2 <= r - 0.5: fully covered
  assert.equal(at(m, w, 5, 8), 128); // centre exactly on the rim: half covered
  assert.equal(at(m, w, 4, 8), 0); // distance 4 >= r + 0.5
  for (const [dx, dy] of [[2, 1], [1, 2], [-2, 1], [2, -1]]) {
    assert.equal(at(m, w, 8 + dx, 8 + dy), at(m, w, 8 - dx, 8 - dy));
  }
  assert.equal(at(m, w, 0, 0), 0);
});

test("soft edge: rim pixels get partial values", () => {
  const w = 16, h = 16, m = new Uint8Array(w * h);
  stampSegment(m, w, h, 8, 8, 8, 8, 2.7);
  const values = new Set(m);
  assert.ok([...values].some((v) => v > 0 && v < 255), "expected some partial coverage");
});

test("brush size 1 (radius 0.5) paints exactly the pixel under the pointer", () => {
  const w = 8, h = 8, m = new Uint8Array(w * h);
  stampSegment(m, w, h, 3.5, 4.5, 3.5, 4.5, 0.5);
  assert.equal(at(m, w, 3, 4), 255);
  assert.equal(count(m), 1);
});

test("degenerate segment equals a dot", () => {
  const w = 12, h = 10, a = new Uint8Array(w * h), b = new Uint8Array(w * h);
  stampSegment(a, w, h, 4.2, 5.1, 4.2, 5.1, 2);
  stampSegment(b, w, h, 4.2, 5.1, 4.2, 5.1, 2);
  assert.deepEqual(a, b);
  assert.ok(count(a) > 0);
});

test("segment covers the whole line and both round caps", () => {
  const w = 32, h = 16, m = new Uint8Array(w * h);
  stampSegment(m, w, h, 4.5, 8.5, 26.5, 8.5, 2);
  for (let x = 4; x <= 26; x++) assert.equal(at(m, w, x, 8), 255, `x=${x}`);
  assert.equal(at(m, w, 3, 8), 255); // round cap, left
  assert.equal(at(m, w, 27, 8), 255); // round cap, right
  assert.equal(at(m, w, 2, 8), 128); // cap rim
  assert.equal(at(m, w, 1, 8), 0);
  assert.equal(at(m, w, 15, 7), 255);
  assert.equal(at(m, w, 15, 5), 0); // 3 away from the line, beyond r + 0.5
  assert.equal(at(m, w, 15, 11), 0);
});

test("diagonal segment leaves no gaps", () => {
  const w = 20, h = 20, m = new Uint8Array(w * h);
  stampSegment(m, w, h, 1.5, 1.5, 18.5, 18.5, 0.5);
  for (let i = 1; i <= 18; i++) assert.equal(at(m, w, i, i), 255);
});

test("painting keeps the maximum, never lowers", () => {
  const w = 8, h = 8, m = new Uint8Array(w * h).fill(200);
  stampSegment(m, w, h, 4, 4, 4, 4, 1.5);
  assert.ok(m.every((v) => v >= 200));
  assert.equal(at(m, w, 3, 3), 255);
  assert.equal(at(m, w, 0, 0), 200);
});

test("erase clears the brushed area and leaves the rest", () => {
  const w = 16, h = 16, m = new Uint8Array(w * h).fill(255);
  stampSegment(m, w, h, 8.5, 8.5, 8.5, 8.5, 3, true);
  assert.equal(at(m, w, 8, 8), 0);
  assert.equal(at(m, w, 0, 0), 255);
  assert.equal(at(m, w, 15, 15), 255);
  // erasing an empty mask stays empty
  const e = new Uint8Array(w * h);
  stampSegment(e, w, h, 8, 8, 8, 8, 3, true);
  assert.ok(isMaskEmpty(e));
});

test("edge pixels: stamps at corners and borders clip without wrapping", () => {
  const w = 10, h = 6, m = new Uint8Array(w * h);
  const bb = stampSegment(m, w, h, 0, 0, 0, 0, 2);
  assert.deepEqual(bb, { x0: 0, y0: 0, x1: 3, y1: 3 });
  assert.equal(at(m, w, 0, 0), 255);
  assert.equal(at(m, w, w - 1, 0), 0, "no wrap to the end of row 0");
  assert.equal(at(m, w, w - 1, h - 1), 0);
  const m2 = new Uint8Array(w * h);
  stampSegment(m2, w, h, w, h, w, h, 1.5); // bottom-right corner point
  assert.equal(at(m2, w, w - 1, h - 1), 255);
  assert.equal(at(m2, w, 0, 0), 0);
  assert.equal(at(m2, w, 0, h - 1), 0, "no wrap to the start of the last row");
});

test("stamp entirely outside the image is a no-op returning null", () => {
  const w = 8, h = 8, m = new Uint8Array(w * h);
  assert.equal(stampSegment(m, w, h, -20, -20, -10, -15, 2), null);
  assert.equal(stampSegment(m, w, h, 30, 3, 40, 3, 2), null);
  assert.ok(isMaskEmpty(m));
});

test("segment from outside into the image paints the inside part", () => {
  const w = 8, h = 8, m = new Uint8Array(w * h);
  stampSegment(m, w, h, -10, 4.5, 3.5, 4.5, 0.5);
  for (let x = 0; x <= 3; x++) assert.equal(at(m, w, x, 4), 255);
  assert.equal(at(m, w, 5, 4), 0);
});

test("clientToImage maps the rect to image pixels", () => {
  const rect = { left: 100, top: 50, width: 384, height: 384 };
  assert.deepEqual(clientToImage(100, 50, rect, 64, 64), { x: 0, y: 0 });
  assert.deepEqual(clientToImage(484, 434, rect, 64, 64), { x: 64, y: 64 });
  assert.deepEqual(clientToImage(103, 53, rect, 64, 64), { x: 0.5, y: 0.5 }); // centre of pixel 0
  const p = clientToImage(100 + 6 * 10 + 3, 50 + 6 * 20 + 3, rect, 64, 64);
  assert.deepEqual([Math.floor(p.x), Math.floor(p.y)], [10, 20]);
  // non-square image and a CSS-scaled canvas
  const q = clientToImage(150, 75, { left: 0, top: 0, width: 200, height: 100 }, 40, 20);
  assert.deepEqual(q, { x: 30, y: 15 });
  // outside (captured pointer) stays outside, and a zero-size rect does not divide by zero
  assert.ok(clientToImage(0, 0, rect, 64, 64).x < 0);
  assert.deepEqual(clientToImage(5, 5, { left: 0, top: 0, width: 0, height: 0 }, 8, 8), { x: 0, y: 0 });
});

test("maskToRGBA: colour everywhere, alpha scaled by opacity", () => {
  const rgba = maskToRGBA(new Uint8Array([0, 255, 100]), [10, 20, 30], 0.5);
  assert.equal(rgba.length, 12);
  assert.deepEqual([...rgba.slice(0, 4)], [10, 20, 30, 0]);
  assert.deepEqual([...rgba.slice(4, 8)], [10, 20, 30, 128]);
  assert.deepEqual([...rgba.slice(8, 12)], [10, 20, 30, 50]);
  assert.equal(maskToRGBA(new Uint8Array([255]), [1, 2, 3], 1)[3], 255);
  assert.ok(maskToRGBA(new Uint8Array(4), [0, 0, 0]) instanceof Uint8ClampedArray);
});

test("isMaskEmpty", () => {
  assert.equal(isMaskEmpty(null), true);
  assert.equal(isMaskEmpty(undefined), true);
  assert.equal(isMaskEmpty(new Uint8Array(0)), true);
  assert.equal(isMaskEmpty(new Uint8Array(10)), true);
  const m = new Uint8Array(10);
  m[9] = 1;
  assert.equal(isMaskEmpty(m), false);
});

test("maskBBox: exclusive ends, null when empty, threshold, RGBA alpha channel", () => {
  const w = 6, h = 5, m = new Uint8Array(w * h);
  assert.equal(maskBBox(m, w, h), null);
  m[1 * w + 2] = 255;
  m[3 * w + 4] = 10;
  assert.deepEqual(maskBBox(m, w, h), { x0: 2, y0: 1, x1: 5, y1: 4 });
  assert.deepEqual(maskBBox(m, w, h, { threshold: 10 }), { x0: 2, y0: 1, x1: 3, y1: 2 });
  const full = new Uint8Array(w * h).fill(1);
  assert.deepEqual(maskBBox(full, w, h), { x0: 0, y0: 0, x1: w, y1: h });
  const rgba = new Uint8Array(w * h * 4).fill(255); // opaque colour would fool a naive scan
  for (let k = 0; k < w * h; k++) rgba[4 * k + 3] = 0;
  rgba[(4 * w + 0) * 4 + 3] = 200; // alpha at (0, 4)
  assert.deepEqual(maskBBox(rgba, w, h, { stride: 4, offset: 3 }), { x0: 0, y0: 4, x1: 1, y1: 5 });
});

test("clampPasteOffset keeps at least one row and column inside", () => {
  const bbox = { x0: 10, y0: 20, x1: 20, y1: 30 }; // 10x10 patch
  const w = 64, h = 64;
  assert.deepEqual(clampPasteOffset(0, 0, bbox, w, h), [0, 0]);
  assert.deepEqual(clampPasteOffset(5.4, -3.6, bbox, w, h), [5, -4]);
  // far left/up: the patch's last column/row stays at 0
  assert.deepEqual(clampPasteOffset(-1000, -1000, bbox, w, h), [-19, -29]);
  // far right/down: the patch's first column/row stays at w-1 / h-1
  assert.deepEqual(clampPasteOffset(1000, 1000, bbox, w, h), [53, 43]);
  const [dx, dy] = clampPasteOffset(1000, -1000, bbox, w, h);
  assert.equal(bbox.x0 + dx, w - 1);
  assert.equal(bbox.y1 + dy, 1);
  // a larger minimum overlap
  assert.deepEqual(clampPasteOffset(-1000, 1000, bbox, w, h, 4), [-16, 40]);
  // minimum overlap larger than the patch: the whole patch must stay inside
  assert.deepEqual(clampPasteOffset(1000, 0, bbox, w, h, 50), [44, 0]);
  // no patch: no offset
  assert.deepEqual(clampPasteOffset(7, 7, null, w, h), [0, 0]);
  // never -0
  assert.ok(!Object.is(clampPasteOffset(-0.2, -0.3, bbox, w, h)[0], -0));
});

test("toBytes views DataView, ArrayBuffer and typed arrays without copying", () => {
  const buf = new ArrayBuffer(8);
  new Uint8Array(buf).set([1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual([...toBytes(new DataView(buf, 2, 3))], [3, 4, 5]);
  assert.deepEqual([...toBytes(buf)], [1, 2, 3, 4, 5, 6, 7, 8]);
  const u = new Uint8Array(buf);
  assert.equal(toBytes(u), u);
  assert.equal(toBytes(new DataView(buf)).buffer, buf);
  assert.equal(toBytes(null).length, 0);
  assert.equal(toBytes(undefined).length, 0);
  assert.equal(toBytes("nope").length, 0);
});

test("nextBrushSize walks a ladder, clamps to 1..64, and [ undoes ]", () => {
  assert.equal(nextBrushSize(6, 1), 7);
  assert.equal(nextBrushSize(6, -1), 5);
  assert.equal(nextBrushSize(8, 1), 10);
  assert.equal(nextBrushSize(20, 1), 24);
  assert.equal(nextBrushSize(9, 1), 10); // off-ladder sizes join the ladder
  assert.equal(nextBrushSize(9, -1), 8);
  assert.equal(nextBrushSize(1, -1), 1);
  assert.equal(nextBrushSize(2, -1), 1);
  assert.equal(nextBrushSize(64, 1), 64);
  assert.equal(nextBrushSize(60, 1), 64);
  for (const s of [1, 2, 6, 8, 10, 16, 32, 56]) assert.equal(nextBrushSize(nextBrushSize(s, 1), -1), s);
  let s = 1;
  const seen = [];
  for (let i = 0; i < 100; i++) seen.push((s = nextBrushSize(s, 1)));
  assert.equal(s, 64);
  assert.ok(seen.every((v, i) => i === 0 || v >= seen[i - 1]), "monotone");
  for (let i = 0; i < 100; i++) s = nextBrushSize(s, -1);
  assert.equal(s, 1);
});

test("keyAction maps the shortcuts and ignores everything else", () => {
  assert.deepEqual(keyAction({ key: "[" }), { type: "brush", dir: -1 });
  assert.deepEqual(keyAction({ key: "]" }), { type: "brush", dir: 1 });
  assert.deepEqual(keyAction({ key: "e" }), { type: "eraser" });
  assert.deepEqual(keyAction({ key: "E", shiftKey: true }), { type: "eraser" });
  assert.deepEqual(keyAction({ key: "c" }), { type: "tool", tool: "context" });
  assert.deepEqual(keyAction({ key: "x" }), { type: "tool", tool: "copy" });
  assert.deepEqual(keyAction({ key: "v" }), { type: "tool", tool: "paste" });
  assert.deepEqual(keyAction({ key: "k" }), { type: "tool", tool: "keep" });
  assert.deepEqual(keyAction({ key: "K", shiftKey: true }), { type: "tool", tool: "keep" });
  assert.deepEqual(keyAction({ key: "z", ctrlKey: true }), { type: "send", event: "undo" });
  assert.deepEqual(keyAction({ key: "z", metaKey: true }), { type: "send", event: "undo" });
  assert.deepEqual(keyAction({ key: "Z", ctrlKey: true, shiftKey: true }), { type: "send", event: "redo" });
  assert.deepEqual(keyAction({ key: "y", ctrlKey: true }), { type: "send", event: "redo" });
  for (const e of [{ key: "z" }, { key: "c", ctrlKey: true }, { key: "v", metaKey: true },
    { key: "e", altKey: true }, { key: "k", ctrlKey: true }, { key: "a" }, { key: "Enter", shiftKey: true }, { key: "" }, {}]) {
    assert.equal(keyAction(/** @type {any} */ (e)), null, JSON.stringify(e));
  }
});

test("the help text lists every shortcut", () => {
  for (const s of ["[", "]", "e", "c", "x", "v", "k  keep", "Ctrl+Z", "Ctrl+Shift+Z", "Ctrl+Y"]) {
    assert.ok(SHORTCUTS_HELP.includes(s), s);
  }
});
