// The painter view (anywidget ES module): paint context/copy/keep masks, drag the paste patch.
// Everything drawn is rebuilt from traits, so a second view or a reopened notebook shows the
// same state. Masks go to the kernel once per stroke, on pointerup. painter.py removes the
// import line below and prepends mask.js, since anywidget loads one module string.
import { SHORTCUTS_HELP, clampPasteOffset, clientToImage, isMaskEmpty, keyAction, maskBBox, maskToRGBA, nextBrushSize, stampSegment, toBytes } from "./mask.js";

/** @type {Record<string, [number, number, number]>} */
const COLORS = { context: [0, 220, 255], copy: [255, 0, 200], keep: [110, 90, 255] };
const KEPT_COLOR = [90, 200, 60]; // placements kept with "Paste again"
const MASK_TRAIT = { context: "context_mask", copy: "copy_mask", keep: "keep_mask" };
const REDRAW_ON = ["image", "width", "height", "scale", "context_mask", "copy_mask", "keep_mask", "kept_mask", "paste_patch",
  "paste_offset", "paste_active", "tool", "erasing", "brush_size", "enabled"];

/**
 * @param {number} w @param {number} h
 * @returns {[HTMLCanvasElement, CanvasRenderingContext2D]}
 */
function offscreen(w, h) {
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  return [c, /** @type {CanvasRenderingContext2D} */ (c.getContext("2d"))];
}

/** @param {{ model: any, el: HTMLElement }} ctx */
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "rewidget-painter";
  root.tabIndex = 0;
  root.style.cssText = "position:relative;display:inline-block;outline:none;line-height:0;user-select:none";
  const canvas = document.createElement("canvas");
  canvas.className = "rewidget-painter-canvas";
  canvas.style.cssText = "display:block;image-rendering:pixelated;touch-action:none";
  const cursor = document.createElement("div");
  cursor.className = "rewidget-painter-cursor";
  cursor.style.cssText = "position:absolute;display:none;pointer-events:none;border-radius:50%;" +
    "box-sizing:border-box;box-shadow:0 0 0 1px rgba(0,0,0,.7)";
  const bar = document.createElement("div");
  bar.style.cssText = "display:flex;justify-content:space-between;font:12px sans-serif;line-height:18px;color:var(--jp-ui-font-color2, #555)";
  const status = document.createElement("span");
  status.className = "rewidget-painter-status";
  const help = document.createElement("span");
  help.className = "rewidget-painter-help";
  help.textContent = "?";
  help.title = SHORTCUTS_HELP;
  help.setAttribute("aria-label", SHORTCUTS_HELP);
  help.style.cssText = "cursor:help;padding:0 6px;border:1px solid #aaa;border-radius:8px;margin-left:8px";
  bar.append(status, help);
  root.append(canvas, cursor, bar);
  el.appendChild(root);
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));

  /** Live state of the gesture in progress: a stroke's working mask or a drag's offset. */
  /** @type {null | {kind: "stroke", tool: string, mask: Uint8Array, w: number, h: number, last: {x: number, y: number}} | {kind: "drag", start: {x: number, y: number}, from: [number, number], offset: [number, number], bbox: import("./mask.js").BBox}} */
  let gesture = null;
  let frame = 0;

  const dims = () => ({ w: Math.max(1, model.get("width") | 0), h: Math.max(1, model.get("height") | 0) });
  /** @param {string} name @param {number} size @returns {Uint8Array | null} bytes of `name` if it has `size` bytes */
  const traitBytes = (name, size) => {
    const b = toBytes(model.get(name));
    return b.length === size ? b : null;
  };
  /** @returns {[number, number]} */
  const pasteOffset = () => {
    const o = model.get("paste_offset") || [0, 0];
    return [Number(o[0]) || 0, Number(o[1]) || 0];
  };

  function draw() {
    frame = 0;
    const { w, h } = dims();
    const s = Math.max(1, model.get("scale") | 0);
    if (canvas.width !== w * s || canvas.height !== h * s) {
      canvas.width = w * s;
      canvas.height = h * s;
      canvas.style.width = `${w * s}px`;
      canvas.style.height = `${h * s}px`;
    }
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    /** @param {Uint8ClampedArray} rgba @param {number} dx @param {number} dy @param {number} alpha */
    const blit = (rgba, dx, dy, alpha) => {
      const [c, cctx] = offscreen(w, h);
      cctx.putImageData(new ImageData(rgba, w, h), 0, 0);
      ctx.globalAlpha = alpha;
      ctx.drawImage(c, dx * s, dy * s, w * s, h * s);
      ctx.globalAlpha = 1;
    };
    const image = traitBytes("image", w * h * 4);
    if (image) blit(new Uint8ClampedArray(image), 0, 0, 1);
    else {
      ctx.fillStyle = "#888";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
    }
    const tool = model.get("tool");
    const kept = traitBytes("kept_mask", w * h);
    if (kept && !isMaskEmpty(kept)) blit(maskToRGBA(kept, KEPT_COLOR, tool === "paste" ? 0.5 : 0.25), 0, 0, 1);
    if (tool !== "paste") {
      for (const t of ["keep", "context", "copy"]) {
        const live = gesture && gesture.kind === "stroke" && gesture.tool === t ? gesture.mask : null;
        const mask = live || traitBytes(MASK_TRAIT[t], w * h);
        if (mask && !isMaskEmpty(mask)) blit(maskToRGBA(mask, COLORS[t], t === tool ? 0.55 : 0.2), 0, 0, 1);
      }
    }
    const patch = traitBytes("paste_patch", w * h * 4);
    if (patch && (tool === "paste" || model.get("paste_active"))) {
      const [dx, dy] = gesture && gesture.kind === "drag" ? gesture.offset : pasteOffset();
      blit(new Uint8ClampedArray(patch), dx, dy, tool === "paste" ? 0.75 : 0.35);
      const bb = tool === "paste" && maskBBox(patch, w, h, { stride: 4, offset: 3 });
      if (bb) {
        ctx.setLineDash([4, 3]);
        ctx.strokeStyle = "rgba(255,255,255,.9)";
        ctx.strokeRect((bb.x0 + dx) * s + 0.5, (bb.y0 + dy) * s + 0.5, (bb.x1 - bb.x0) * s - 1, (bb.y1 - bb.y0) * s - 1);
        ctx.setLineDash([]);
      }
    }
    const enabled = model.get("enabled");
    canvas.style.opacity = enabled ? "1" : "0.45";
    canvas.style.cursor = !enabled ? "not-allowed" : tool === "paste" ? "move" : "none";
    const size = model.get("brush_size");
    const d = size * s;
    cursor.style.width = cursor.style.height = `${d}px`;
    cursor.style.border = `1.5px ${model.get("erasing") ? "dashed" : "solid"} rgba(255,255,255,.95)`;
    status.textContent = `${tool} · brush ${size}${model.get("erasing") ? " · eraser" : ""}${enabled ? "" : " · busy"}`;
  }
  const redraw = () => {
    if (!frame) frame = requestAnimationFrame(draw);
  };

  /** @param {PointerEvent} e */
  const imagePoint = (e) => {
    const { w, h } = dims();
    return clientToImage(e.clientX, e.clientY, canvas.getBoundingClientRect(), w, h);
  };
  /** @param {PointerEvent} e */
  function moveCursor(e) {
    const show = model.get("enabled") && model.get("tool") !== "paste";
    cursor.style.display = show ? "block" : "none";
    if (!show) return;
    const r = root.getBoundingClientRect();
    const half = (model.get("brush_size") * Math.max(1, model.get("scale") | 0)) / 2;
    cursor.style.left = `${e.clientX - r.left - half}px`;
    cursor.style.top = `${e.clientY - r.top - half}px`;
  }

  /** @param {PointerEvent} e */
  function onDown(e) {
    root.focus({ preventScroll: true });
    if (e.button !== 0 || !model.get("enabled") || gesture) return;
    e.preventDefault(); // also suppresses the compat mousedown the notebook would act on
    const { w, h } = dims();
    const p = imagePoint(e);
    const tool = model.get("tool");
    if (tool === "paste") {
      const patch = traitBytes("paste_patch", w * h * 4);
      const bbox = patch && maskBBox(patch, w, h, { stride: 4, offset: 3 });
      if (!bbox) return;
      let from = pasteOffset();
      const inside = p.x >= bbox.x0 + from[0] && p.x < bbox.x1 + from[0] && p.y >= bbox.y0 + from[1] && p.y < bbox.y1 + from[1];
      // a press outside the patch first centres the patch under the pointer, then drags it
      if (!inside) from = clampPasteOffset(p.x - (bbox.x0 + bbox.x1) / 2, p.y - (bbox.y0 + bbox.y1) / 2, bbox, w, h);
      gesture = { kind: "drag", start: p, from, offset: from, bbox };
    } else if (tool in MASK_TRAIT) {
      const mask = new Uint8Array(w * h);
      const old = traitBytes(MASK_TRAIT[tool], w * h);
      if (old) mask.set(old);
      gesture = { kind: "stroke", tool, mask, w, h, last: p };
      stampSegment(mask, w, h, p.x, p.y, p.x, p.y, model.get("brush_size") / 2, model.get("erasing"));
    } else return;
    canvas.setPointerCapture(e.pointerId);
    redraw();
  }

  /** @param {PointerEvent} e */
  function onMove(e) {
    moveCursor(e);
    if (!gesture) return;
    const p = imagePoint(e);
    if (gesture.kind === "stroke") {
      const { mask, w, h, last } = gesture;
      stampSegment(mask, w, h, last.x, last.y, p.x, p.y, model.get("brush_size") / 2, model.get("erasing"));
      gesture.last = p;
    } else {
      const { w, h } = dims();
      const { start, from, bbox } = gesture;
      gesture.offset = clampPasteOffset(from[0] + p.x - start.x, from[1] + p.y - start.y, bbox, w, h);
    }
    redraw();
  }

  /** @param {PointerEvent} e */
  function onUp(e) {
    if (!gesture) return;
    const g = gesture;
    gesture = null;
    if (canvas.hasPointerCapture(e.pointerId)) canvas.releasePointerCapture(e.pointerId);
    const { w, h } = dims();
    const count = (model.get("stroke_count") | 0) + 1;
    // disabled mid-gesture (a rewrite started): drop the gesture
    if (!model.get("enabled")) return redraw();
    if (g.kind === "stroke") {
      // the image changed size mid-stroke: the stroke belongs to the old image, drop it
      if (g.w !== w || g.h !== h) return redraw();
      // a fresh DataView per stroke: ipywidgets sends it as a binary buffer, bytes_serialization
      // turns it into bytes on the Python side
      model.set({ [MASK_TRAIT[g.tool]]: new DataView(g.mask.buffer), stroke_count: count });
    } else {
      model.set({ paste_offset: [g.offset[0], g.offset[1]], paste_active: true, stroke_count: count });
    }
    model.save_changes();
    redraw();
  }

  const onLeave = () => {
    cursor.style.display = "none";
  };

  /** @param {KeyboardEvent} e */
  function onKey(e) {
    const action = keyAction(e);
    if (!action) return;
    // ours even while disabled: unstopped, c/x/v would copy/cut/paste notebook cells
    e.preventDefault();
    e.stopPropagation();
    if (!model.get("enabled")) return;
    if (action.type === "send") return model.send({ event: action.event });
    if (action.type === "brush") model.set("brush_size", nextBrushSize(model.get("brush_size"), action.dir));
    else if (action.type === "eraser") model.set("erasing", !model.get("erasing"));
    else model.set("tool", action.tool);
    model.save_changes();
  }

  // Keys meant for the app must never reach the notebook. JupyterLab and Notebook 7 (Lumino)
  // handle their shortcuts on the document before the painter's own listener could stop them,
  // and skip events from inside an element marked data-lm-suppress-shortcuts: the painter marks
  // itself and the app around it. Keys pressed elsewhere in the app (a focused button, the grid)
  // are caught on the window in the capture phase, before anything else sees them, so they
  // switch tools too; typing in the app's text fields is left alone.
  root.setAttribute("data-lm-suppress-shortcuts", "");
  /** @type {HTMLElement | null} */
  let app = null;
  const claimApp = () => {
    if (!app || !app.isConnected) {
      app = root.closest(".rewidget-app");
      if (app) app.setAttribute("data-lm-suppress-shortcuts", "");
    }
    return app;
  };
  /** @param {EventTarget | null} t */
  const typing = (t) =>
    t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
  /** @param {KeyboardEvent} e */
  const onWindowKey = (e) => {
    const target = e.target;
    if (!(target instanceof Node) || root.contains(target)) return; // the painter's own listener
    const inApp = claimApp();
    if (!inApp || !inApp.contains(target) || typing(target) || !keyAction(e)) return;
    onKey(e);
    // the focused button may be redrawn by the change (the tool buttons are): keep the focus in
    // the app, on the painter, so the next key does not fall through to the notebook
    root.focus({ preventScroll: true });
  };
  window.addEventListener("keydown", onWindowKey, true);
  // The mouse wheel over the app's other canvases (grid, tray, heatmaps: ipycanvas, which
  // cancels every wheel event it sees) scrolls the notebook: stopped on the way down, the event
  // never reaches their listener, and the browser scrolls as it would over any image.
  /** @param {WheelEvent} e */
  const onWindowWheel = (e) => {
    const target = e.target;
    if (!(target instanceof HTMLCanvasElement) || root.contains(target)) return;
    const inApp = claimApp();
    if (inApp && inApp.contains(target)) e.stopPropagation();
  };
  window.addEventListener("wheel", onWindowWheel, { capture: true, passive: true });
  // mark the app as soon as the view is attached (a painter shown on its own has no app: stop
  // asking after ~10 s; a key pressed later claims it then)
  let tries = 600;
  let claimFrame = requestAnimationFrame(function again() {
    claimFrame = claimApp() || --tries <= 0 ? 0 : requestAnimationFrame(again);
  });

  canvas.addEventListener("pointerdown", onDown);
  canvas.addEventListener("pointermove", onMove);
  canvas.addEventListener("pointerup", onUp);
  canvas.addEventListener("pointercancel", onUp);
  canvas.addEventListener("pointerleave", onLeave);
  root.addEventListener("keydown", onKey);
  for (const name of REDRAW_ON) model.on(`change:${name}`, redraw);
  draw();

  return () => {
    for (const name of REDRAW_ON) model.off(`change:${name}`, redraw);
    if (frame) cancelAnimationFrame(frame);
    if (claimFrame) cancelAnimationFrame(claimFrame);
    window.removeEventListener("keydown", onWindowKey, true);
    window.removeEventListener("wheel", onWindowWheel, { capture: true });
    root.remove();
  };
}

export default { render };
