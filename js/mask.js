// Pure helpers for the painter: no DOM, no model, so node's test runner covers them
// (js/test/mask.test.js). painter.js imports them; rewidget/widgets/painter.py inlines
// this file in front of painter.js because anywidget loads a single ES module string.
//
// Coordinates: image pixel (i, j) covers [i, i+1) x [j, j+1), its centre is (i+0.5, j+0.5).
// Masks are Uint8Array of w*h, row-major, 0..255.

/** @typedef {{x0: number, y0: number, x1: number, y1: number}} BBox  x1, y1 exclusive */

/**
 * Stamp a round brush swept from (x0, y0) to (x1, y1) into `mask`, in place.
 * Coverage falls off over one pixel at the rim (soft edge). Painting keeps the max of old and
 * new coverage; erasing lowers pixels to at most 255 - coverage. A zero-length segment is a dot.
 * @param {Uint8Array} mask w*h
 * @param {number} w
 * @param {number} h
 * @param {number} x0 @param {number} y0 @param {number} x1 @param {number} y1
 * @param {number} r radius in image pixels
 * @param {boolean} [erase]
 * @returns {BBox | null} the pixels touched, or null when the stamp misses the image
 */
export function stampSegment(mask, w, h, x0, y0, x1, y1, r, erase = false) {
  const reach = r + 0.5;
  const bx0 = Math.max(0, Math.floor(Math.min(x0, x1) - reach));
  const by0 = Math.max(0, Math.floor(Math.min(y0, y1) - reach));
  const bx1 = Math.min(w, Math.ceil(Math.max(x0, x1) + reach));
  const by1 = Math.min(h, Math.ceil(Math.max(y0, y1) + reach));
  if (bx0 >= bx1 || by0 >= by1) return null;
  const dx = x1 - x0;
  const dy = y1 - y0;
  const len2 = dx * dx + dy * dy;
  for (let j = by0; j < by1; j++) {
    for (let i = bx0; i < bx1; i++) {
      const px = i + 0.5;
      const py = j + 0.5;
      // distance from the pixel centre to the segment (its closest point at parameter t)
      const t = len2 > 0 ? Math.min(1, Math.max(0, ((px - x0) * dx + (py - y0) * dy) / len2)) : 0;
      const d = Math.hypot(px - (x0 + t * dx), py - (y0 + t * dy));
      const cover = Math.min(1, Math.max(0, reach - d));
      if (cover <= 0) continue;
      const v = Math.round(cover * 255);
      const k = j * w + i;
      mask[k] = erase ? Math.min(mask[k], 255 - v) : Math.max(mask[k], v);
    }
  }
  return { x0: bx0, y0: by0, x1: bx1, y1: by1 };
}

/**
 * Map a pointer's client coordinates to continuous image coordinates.
 * @param {number} clientX @param {number} clientY
 * @param {{left: number, top: number, width: number, height: number}} rect the canvas' bounding rect
 * @param {number} w image width @param {number} h image height
 * @returns {{x: number, y: number}} may lie outside [0, w) x [0, h) when the pointer is captured
 */
export function clientToImage(clientX, clientY, rect, w, h) {
  const sx = rect.width > 0 ? w / rect.width : 0;
  const sy = rect.height > 0 ? h / rect.height : 0;
  return { x: (clientX - rect.left) * sx, y: (clientY - rect.top) * sy };
}

/**
 * RGBA pixels for showing `mask` as a tinted overlay: colour everywhere, alpha = mask * opacity.
 * @param {Uint8Array} mask
 * @param {[number, number, number]} rgb
 * @param {number} [opacity] 0..1
 * @returns {Uint8ClampedArray} mask.length * 4
 */
export function maskToRGBA(mask, rgb, opacity = 0.5) {
  const out = new Uint8ClampedArray(mask.length * 4);
  for (let k = 0; k < mask.length; k++) {
    out[4 * k] = rgb[0];
    out[4 * k + 1] = rgb[1];
    out[4 * k + 2] = rgb[2];
    out[4 * k + 3] = Math.round(mask[k] * opacity);
  }
  return out;
}

/** @param {Uint8Array | null | undefined} mask @returns {boolean} true for no mask or all zeros */
export function isMaskEmpty(mask) {
  if (!mask) return true;
  for (let k = 0; k < mask.length; k++) if (mask[k] !== 0) return false;
  return true;
}

/**
 * Bounding box of the pixels above `threshold`. `stride`/`offset` read one channel of
 * interleaved data, e.g. (4, 3) for the alpha of RGBA.
 * @param {ArrayLike<number>} data @param {number} w @param {number} h
 * @param {{threshold?: number, stride?: number, offset?: number}} [opts]
 * @returns {BBox | null}
 */
export function maskBBox(data, w, h, { threshold = 0, stride = 1, offset = 0 } = {}) {
  let x0 = w;
  let y0 = h;
  let x1 = 0;
  let y1 = 0;
  for (let j = 0; j < h; j++) {
    for (let i = 0; i < w; i++) {
      if (data[(j * w + i) * stride + offset] > threshold) {
        if (i < x0) x0 = i;
        if (i >= x1) x1 = i + 1;
        if (j < y0) y0 = j;
        y1 = j + 1;
      }
    }
  }
  return x1 > x0 ? { x0, y0, x1, y1 } : null;
}

/**
 * Round a paste offset and clamp it so that at least `minInside` columns and rows of the
 * patch's bounding box stay inside the w x h image.
 * @param {number} dx @param {number} dy
 * @param {BBox | null} bbox the patch's bounding box at offset (0, 0)
 * @param {number} w @param {number} h
 * @param {number} [minInside]
 * @returns {[number, number]}
 */
export function clampPasteOffset(dx, dy, bbox, w, h, minInside = 1) {
  if (!bbox) return [0, 0];
  const mx = Math.min(minInside, bbox.x1 - bbox.x0, w);
  const my = Math.min(minInside, bbox.y1 - bbox.y0, h);
  const cx = Math.min(Math.max(Math.round(dx), mx - bbox.x1), w - mx - bbox.x0);
  const cy = Math.min(Math.max(Math.round(dy), my - bbox.y1), h - my - bbox.y0);
  return [cx + 0, cy + 0]; // + 0 turns -0 into 0
}

/**
 * Bytes as they come from a trait (DataView from the kernel, ArrayBuffer, typed array, or
 * nothing) viewed as a Uint8Array without copying.
 * @param {unknown} value
 * @returns {Uint8Array}
 */
export function toBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return new Uint8Array(0);
}

const BRUSH_LADDER = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64];

/**
 * Next brush size for `[` (dir -1) and `]` (dir +1): the neighbouring rung of a ladder of
 * roughly 15-25% steps, so `]` then `[` returns to a ladder size. Stays in 1..64.
 * @param {number} size @param {number} dir
 * @returns {number}
 */
export function nextBrushSize(size, dir) {
  const up = BRUSH_LADDER.find((s) => s > size);
  const down = BRUSH_LADDER.findLast((s) => s < size);
  return dir > 0 ? up ?? 64 : down ?? 1;
}

/** @typedef {{type: "brush", dir: number} | {type: "eraser"} | {type: "tool", tool: string} | {type: "send", event: string}} KeyAction */

/**
 * The painter's keyboard shortcut for a keydown event, or null when the key is not ours.
 * @param {{key: string, ctrlKey?: boolean, metaKey?: boolean, shiftKey?: boolean, altKey?: boolean}} e
 * @returns {KeyAction | null}
 */
export function keyAction(e) {
  const key = (e.key || "").toLowerCase();
  if (e.altKey) return null;
  if (e.ctrlKey || e.metaKey) {
    if (key === "z") return { type: "send", event: e.shiftKey ? "redo" : "undo" };
    if (key === "y" && !e.shiftKey) return { type: "send", event: "redo" };
    return null;
  }
  if (e.key === "[") return { type: "brush", dir: -1 };
  if (e.key === "]") return { type: "brush", dir: 1 };
  if (key === "e") return { type: "eraser" };
  const tool = { c: "context", x: "copy", v: "paste", k: "keep" }[key];
  return tool ? { type: "tool", tool } : null;
}

/** Tooltip text listing the shortcuts (the "?" in the widget). */
export const SHORTCUTS_HELP = [
  "Painter shortcuts (click the image first):",
  "c / x / v  context / copy / paste tool",
  "k  keep tool: paint what the edit must not change",
  "[ / ]  smaller / bigger brush",
  "e  toggle eraser",
  "Ctrl+Z  undo,  Ctrl+Shift+Z or Ctrl+Y  redo",
  "paste: drag the copied object to place it",
].join("\n");
