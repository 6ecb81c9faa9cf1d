"""The notebook app without a browser: traits, handlers and session wiring.

Browser strokes are simulated the way the front end delivers them (mask bytes, then
stroke_count + 1); buttons with ``click()``; canvas clicks and client_ready with the message
ipycanvas sends. Work runs on the app's threads, so each action is followed by ``app.wait()``.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch

from rewidget import RewriteSession
from rewidget.session.suggest import Meter, Suggestion
from rewidget.widgets import pixels as px
from rewidget.widgets.app import RewriteApp
from rewidget.widgets.grid import GAP
from rewidget.widgets.selections import parse_seeds
from rewidget.widgets.suggestions import short_label

from .conftest import box as square_box

S = 32  # the tiny generator's image size


def box(y0: int, y1: int, x0: int, x1: int, size: int = S) -> np.ndarray:
    return square_box(size, y0, y1, x0, x1)


def stroke(app: RewriteApp, tool: str, mask: np.ndarray | None = None,
           offset: tuple[int, int] | None = None) -> None:
    """What painter.js does on pointerup: write the mask (or offset), then count the stroke."""
    p = app.painter
    p.tool = tool
    if tool == "paste":
        p.paste_offset = list(offset)
        p.paste_active = True
    else:
        p.set_mask(tool, mask)
    p.stroke_count += 1
    assert app.wait(30)


def canvas_click(canvas, x: float, y: float) -> None:
    canvas._handle_frontend_event(None, {"event": "mouse_down", "x": x, "y": y}, [])


def tile_center(app: RewriteApp, index: int) -> tuple[float, float]:
    x, y = app.grid.tile_origin(index)
    half = app.grid._geometry()[0] / 2
    return x + half, y + half


def shortcut(app: RewriteApp, name: str) -> None:
    app.painter._handle_msg({"content": {"data": {"method": "custom",
                                                  "content": {"event": name}}}, "buffers": []})
    assert app.wait(30)


@pytest.fixture
def app(tiny_session):
    a = RewriteApp(tiny_session)
    assert a.wait(60)
    yield a
    a.close()


def rewrite(app: RewriteApp, kind: str = "paste") -> None:
    """Press Rewrite or Erase (layer and rank on auto: the suggestion's best); when the best has
    a red meter the app previews it and asks, and this confirms with a click on "Commit anyway?"."""
    (app.rewrite_button if kind == "paste" else app.erase_button).click()
    assert app.wait(60)
    if app.suggestions.armed:
        app.suggestions.commit_button.click()
        assert app.wait(60)


def pin(app: RewriteApp, layer: str = "main.7", rank: int = 1) -> None:
    """Pick a layer and a rank, as a user would: Rewrite then solves exactly that setting."""
    app.inspector.selector.value = layer
    app.rank.value = rank
    assert app.wait(60) and (app.layer_choice, app.rank_choice) == (layer, rank)


def weights(s) -> dict[str, torch.Tensor]:
    return {n: s.gen.layer(n).weight.detach().clone() for n in s.gen.layer_names()}


def same_weights(s, w0) -> bool:
    return all(torch.equal(s.gen.layer(n).weight, w) for n, w in w0.items())


def full_selection(app: RewriteApp) -> None:
    app.select(0)
    assert app.wait()
    stroke(app, "context", box(8, 16, 8, 20))
    app.select(5)
    assert app.wait()
    stroke(app, "context", box(10, 18, 6, 22))
    stroke(app, "copy", box(12, 20, 10, 22))
    app.select(0)
    assert app.wait()
    stroke(app, "paste", offset=(2, -3))


# -- building and displaying ---------------------------------------------------------------


def test_app_builds_with_traits_and_renders_the_grid(app, tiny_session):
    s = tiny_session
    assert app.sample == 0 and app.busy is False
    assert app.grid.view == "edited" and not app.grid.compare and not app.grid.show_match
    assert app.messages.kind in ("", "info")
    pix = app.grid.pixels
    assert pix is not None and pix.dtype == np.uint8 and pix.shape[2] == 4
    # the first tile is sample 0, enlarged without smoothing
    x, y = app.grid.tile_origin(0)
    tile = pix[y:y + S * app.grid.scale, x:x + S * app.grid.scale, :3]
    img = s.render([0])[0]
    assert np.array_equal(tile[::app.grid.scale, ::app.grid.scale][:20], img[:20])
    # the painter shows the selected sample as RGBA bytes
    assert app.painter.image == px.to_rgba(img).tobytes()
    assert (app.painter.width, app.painter.height) == (S, S)
    assert app.tray.count == 0 and app.history.applied == 0
    assert "Next: 1." in app.status.value
    # statistics for the edit layer were preloaded in the background
    assert any(i["stats"] for i in s.layers() if i["name"] == s.layer)


def test_canvases_have_their_own_css_classes(app):
    classes = {c for w in (app.grid.canvas, app.tray.canvas, app.inspector.canvas,
                           app.inspector.large) for c in w._dom_classes}
    assert {"rewidget-grid", "rewidget-tray", "rewidget-heatmaps",
            "rewidget-heatmap-large"} <= classes


def test_client_ready_redraws_every_canvas(app, monkeypatch):
    sent = []
    mgr = app.grid.canvas._canvas_manager
    monkeypatch.setattr(mgr, "_send_custom", lambda command, buffers=(): sent.append(
        (command, [bytes(b) for b in buffers])))
    for canvas in (app.grid.canvas, app.tray.canvas):
        sent.clear()
        canvas._handle_frontend_event(None, {"event": "client_ready"}, [])
        pngs = [b for _, bufs in sent for b in bufs if b.startswith(b"\x89PNG")]
        assert pngs, "a new view must get the picture again"
        import io

        from PIL import Image
        shown = np.asarray(Image.open(io.BytesIO(pngs[-1])))
        assert np.array_equal(shown, canvas.pixels)  # RGBA, lossless (not JPEG)


def test_app_can_be_displayed_twice(tiny_session):
    a = RewriteApp(tiny_session, preload=False)
    b1, b2 = a._repr_mimebundle_(), a._repr_mimebundle_()
    key = "application/vnd.jupyter.widget-view+json"
    assert b1[key]["model_id"] == b2[key]["model_id"] == a.model_id
    a.close()


# -- painting --------------------------------------------------------------------------------


def test_context_strokes_keep_one_tray_entry_per_sample(app, tiny_session):
    s = tiny_session
    stroke(app, "context", box(8, 16, 8, 20))
    assert len(s.context) == 1 and s.context[0].sample.seed == 0
    assert np.array_equal(s.context[0].mask, box(8, 16, 8, 20))
    # a second stroke on the same sample: the painter's mask is the union, the entry is replaced
    m = np.maximum(box(8, 16, 8, 20), box(20, 24, 4, 10))
    stroke(app, "context", m)
    assert len(s.context) == 1 and np.array_equal(s.context[0].mask, m)
    app.select(7)
    assert app.wait()
    assert app.painter.context_mask == b""  # sample 7 has no context yet
    stroke(app, "context", box(2, 6, 2, 6))
    assert [c.sample.seed for c in s.context] == [0, 7]
    assert app.tray.count == 2
    # back on sample 0 the painter shows its entry again
    app.select(0)
    assert app.wait()
    assert np.frombuffer(app.painter.context_mask, np.uint8).reshape(S, S).tolist() == m.tolist()
    # erasing it all removes the entry; the tray keeps the other
    stroke(app, "context", np.zeros((S, S), np.uint8))
    assert [c.sample.seed for c in s.context] == [7]
    assert app.tray.count == 1


def test_clicking_a_tray_thumbnail_removes_it(app, tiny_session):
    stroke(app, "context", box(8, 16, 8, 20))
    app.select(3)
    assert app.wait()
    stroke(app, "context", box(8, 16, 8, 20))
    assert app.tray.count == 2
    canvas_click(app.tray.canvas, 8 + 10, 8 + 10)  # first thumbnail
    assert app.wait()
    assert [c.sample.seed for c in tiny_session.context] == [3]
    assert app.tray.count == 1
    canvas_click(app.tray.canvas, 500, 500)  # outside any thumbnail: nothing happens
    assert app.wait() and app.tray.count == 1


def test_copy_sets_the_patch_and_paste_sets_the_offset(app, tiny_session):
    s = tiny_session
    app.select(4)
    assert app.wait()
    stroke(app, "copy", box(10, 20, 8, 24))
    assert s.copy is not None and s.copy.sample.seed == 4
    patch = np.frombuffer(app.painter.paste_patch, np.uint8).reshape(S, S, 4)
    assert np.array_equal(patch[..., 3], box(10, 20, 8, 24))
    assert np.array_equal(patch[12, 12, :3], s.render([4])[0][12, 12])
    # on a target sample the patch is still there, ready to be dragged
    app.select(9)
    assert app.wait()
    assert app.painter.paste_patch == patch.tobytes() and not app.painter.paste_active
    stroke(app, "paste", offset=(3, -4))
    assert s.paste.sample.seed == 9 and s.paste.offset == (3.0, -4.0)
    assert "Paste</b> seed 9 at (+3, -4)" in app.status.value
    # the painter shows the placement again when the target comes back
    app.select(4)
    assert app.wait()
    assert not app.painter.paste_active
    app.select(9)
    assert app.wait()
    assert app.painter.paste_active and app.painter.paste_offset == [3, -4]


def test_the_status_names_a_layer_whose_statistics_are_loading(app, tiny_session):
    app.pending_layer = "main.9"
    app._refresh_status()
    assert "layer main.9 (statistics loading…)" in app.status.value
    app.pending_layer = ""
    app._load_statistics("main.7", then_set_layer=True)  # collected, then chosen
    assert app.wait(60)
    assert app.pending_layer == "" and app.layer_choice == "main.7"
    assert "layer main.7," in app.status.value


def test_the_top_strength_slider_says_it_scales_the_next_edit(app):
    app.strength.value = 0.5
    assert "applies to the next Rewrite" in app.messages.last
    assert "next Rewrite" in app.strength.tooltip
    app.strength.value = 1.0


def test_choosing_paste_says_what_is_missing_or_places_the_copy_as_shown(app, tiny_session):
    s = tiny_session
    app.select(3)
    assert app.wait()
    app.painter.tool = "paste"  # nothing copied yet: say so, place nothing
    assert app.wait()
    assert s.paste is None and "nothing is copied" in app.messages.last
    app.painter.tool = "copy"
    stroke(app, "copy", box(12, 20, 10, 22))
    app.painter.tool = "context"
    app.select(7)
    assert app.wait()
    app.painter.tool = "paste"  # the patch shows at the copy's own place: that counts
    assert app.wait()
    assert s.paste is not None and s.paste.sample.seed == 7 and s.paste.offset == (0.0, 0.0)
    assert app.painter.paste_active and "placed on seed 7" in app.messages.last
    stroke(app, "paste", offset=(2, 1))  # dragging moves it
    assert s.paste.offset == (2.0, 1.0)


def test_paste_again_keeps_the_paste_and_places_another(app, tiny_session):
    s = tiny_session
    app.paste_again_button.click()  # nothing placed yet: a clear message, nothing changes
    assert app.wait()
    assert app.messages.kind == "error" and "no placed paste" in app.messages.last
    full_selection(app)  # pasted on sample 0
    app.paste_again_button.click()
    assert app.wait()
    assert s.paste is None and len(s.more_pastes) == 1
    assert not app.painter.paste_active  # the paste tool is free for the next placement
    assert "Paste</b> 1 kept" in app.status.value
    # the kept placement stays drawn on the painter: the copy mask moved by (2, -3)
    kept = np.frombuffer(app.painter.kept_mask, np.uint8).reshape(S, S)
    assert np.array_equal(kept > 0, np.roll(box(12, 20, 10, 22) > 0, (-3, 2), (0, 1)))
    app.select(5)
    assert app.wait()
    stroke(app, "paste", offset=(1, 2))
    assert "Paste</b> seed 5 at (+1, +2) + 1 kept" in app.status.value
    assert app.painter.kept_mask == b""  # none kept on this sample
    assert len(s.request().pastes) == 2
    rewrite(app)
    assert len(s.history) == 1 and len(s.last_edit.targets) == 2
    app.clear("paste")
    assert app.wait()
    assert s.paste is None and not s.more_pastes and s.copy is not None


def test_paste_on_all_and_replace(app, tiny_session):
    s = tiny_session
    app.paste_all_button.click()  # nothing placed yet: a clear message, nothing changes
    assert app.wait()
    assert app.messages.kind == "error" and "no placed paste" in app.messages.last
    full_selection(app)  # context on samples 0 and 5, the copy placed on sample 0's
    app.paste_all_button.click()
    assert app.wait()
    assert "placed on 1 more context object(s), 2 in all" in app.messages.last
    assert [p.sample.seed for _, p in s.pastes_placed()] == [0, 5]
    app.paste_all_button.click()
    assert app.wait()
    assert "every painted context object has a paste already" in app.messages.last
    app.replace.value = True
    assert app.wait()
    assert s.replace and s.request(layer="main.7").replace
    rewrite(app)
    assert len(s.history) == 1 and s.last_edit.request.replace
    s.set_replace(False)  # the session's own change reaches the checkbox
    assert app.wait()
    assert app.replace.value is False


def test_clear_tools_and_clear_all(app, tiny_session):
    s = tiny_session
    full_selection(app)
    assert s.context and s.copy and s.paste
    app.select(5)
    assert app.wait()
    app.painter.tool = "copy"
    app.clear_button.click()
    assert app.wait()
    assert s.copy is None and s.paste is None and len(s.context) == 2
    assert app.painter.paste_patch == b""
    app.painter.tool = "context"
    app.clear_button.click()
    assert app.wait()
    assert [c.sample.seed for c in s.context] == [0]
    app.clear_all_button.click()
    assert app.wait()
    assert not s.context and app.painter.context_mask == b""


def test_grid_click_loads_the_sample_into_the_painter(app, tiny_session):
    canvas_click(app.grid.canvas, *tile_center(app, 5))
    assert app.wait()
    assert app.sample == tiny_session.grid[5].seed
    assert app.grid.selected == 5
    assert app.painter.image == px.to_rgba(tiny_session.render([5])[0]).tobytes()
    canvas_click(app.grid.canvas, 1, 1)  # the gap between tiles selects nothing
    assert app.wait() and app.sample == 5


# -- rewriting -------------------------------------------------------------------------------


def test_rewrite_button_changes_the_grid_and_undo_restores_it_exactly(app, tiny_session):
    s = tiny_session
    full_selection(app)
    w0 = weights(s)
    before = app.grid.pixels.copy()
    painter_before = app.painter.image
    rewrite(app)  # auto: the suggestion's best layer and rank
    assert len(s.history) == 1
    assert not np.array_equal(app.grid.pixels, before)
    assert app.painter.image != painter_before  # the painter shows the edited model too
    assert app.messages.kind == "success" and "installed" in app.messages.last
    assert app.history.applied == 1 and app.painter.enabled
    assert "2 samples" in app.status.value  # selections are kept for the next edit
    app.undo_button.click()
    assert app.wait()
    assert len(s.history) == 0
    assert np.array_equal(app.grid.pixels, before)
    assert app.painter.image == painter_before
    assert same_weights(s, w0)
    assert app.history.applied == 0 and app.history.undone == 1
    app.redo_button.click()
    assert app.wait()
    assert len(s.history) == 1 and not np.array_equal(app.grid.pixels, before)
    app.reset_button.click()
    assert app.wait()
    assert len(s.history) == 0 and np.array_equal(app.grid.pixels, before)


def test_keyboard_shortcuts_undo_and_redo(app, tiny_session):
    full_selection(app)
    rewrite(app)
    shortcut(app, "undo")
    assert len(tiny_session.history) == 0
    shortcut(app, "redo")
    assert len(tiny_session.history) == 1
    assert "Ctrl+Z" in app.help.value and "[ / ]" in app.help.value


def test_erase_and_strength_slider(app, tiny_session):
    s = tiny_session
    stroke(app, "context", box(8, 16, 8, 20))
    before = app.grid.pixels.copy()
    rewrite(app, "erase")
    assert len(s.history) == 1 and s.history.edits[0].request.kind == "erase"
    full = app.grid.pixels.copy()
    assert not np.array_equal(full, before)
    slider = app.history._widgets[s.history.edits[0].id][2]
    slider.value = 0.0
    assert app.wait()
    assert s.history.entries[0].strength == 0.0
    assert np.array_equal(app.grid.pixels, before)  # strength 0 switches the edit off exactly


def test_rank_solver_and_strength_controls_reach_the_session(app, tiny_session):
    s = tiny_session
    app.inspector.selector.value = s.layer  # a layer and a rank picked: Rewrite solves them
    app.rank.value = 2
    app.solver.value = "iterative"
    assert app.wait() and app.layer_choice == s.layer and app.rank_choice == 2
    assert (s.rank, s.solver) == (2, "iterative")
    full_selection(app)
    app.strength.value = 0.5
    assert app.rewrite() and app.wait(120)
    edit = s.history.edits[0]
    assert edit.rank == 2 and edit.request.solver == "iterative"
    assert s.history.entries[0].strength == 0.5


def test_headless_session_calls_show_up_in_the_app(app, tiny_session):
    s = tiny_session
    s.add_context(2, box(8, 16, 8, 20))
    s.set_copy(3, box(8, 16, 8, 20))
    s.set_paste(2, (1, 1))
    before = app.grid.pixels.copy()
    s.rewrite()
    assert app.wait()
    assert app.tray.count == 1 and app.history.applied == 1
    assert not np.array_equal(app.grid.pixels, before)


# -- suggest, preview, commit --------------------------------------------------------------------


def plant(session, monkeypatch, level: str = "red"):
    """Make the suggestion's best candidate look destructive (red realism), or every
    candidate harmless (all meters green)."""
    real = session.suggest
    calls = []

    def planted(**kw):
        calls.append(kw)
        sug = real(**kw)
        if level == "red":
            c = sug.best
            meters = {**c.meters, "realism": Meter("red", 9.9, "planted: every image melts")}
            cands = [dataclasses.replace(c, meters=meters)] + sug.candidates[1:]
        else:
            cands = [dataclasses.replace(c, meters={k: Meter("green", m.value, m.why)
                                                    for k, m in c.meters.items()})
                     for c in sug.candidates]
        return Suggestion(cands, sug.seconds, sug.preview_seeds, sug.skipped)

    monkeypatch.setattr(session, "suggest", planted)
    return calls


def test_suggest_lists_candidates_and_previews_without_changing_weights(app, tiny_session):
    s = tiny_session
    full_selection(app)
    w0, before = weights(s), app.grid.pixels.copy()
    assert "Suggest" in app.status.value and app.suggestions.state == "empty"
    app.suggest_button.click()
    assert app.wait(60)
    panel = app.suggestions
    assert panel.state == "ready" and panel.selected == 0, app.messages.last
    assert 1 < len(panel.candidates) <= 8
    best = panel.suggestion.best
    assert panel.candidate is best and panel.candidates[0] is best
    assert {c.layer for c in panel.candidates} == set(panel.suggestion.by_layer())
    shown = [row for _, _, row in panel._rows if row.layout.display != "none"]
    assert len(shown) == len(panel.candidates)
    b, info, _ = panel._rows[0]
    assert b.description == short_label(best) and b.button_style == "info"
    assert best.label() in b.tooltip
    for m in ("effect", "collateral", "realism"):  # a dot per meter, its why on hover
        assert f"rewidget-meter-{best.meters[m].level}" in info.value
        assert best.meters[m].why[:30] in b.tooltip
    assert best.meters["collateral"].why[:30] in panel.detail.value
    assert bytes(panel.chart.value).startswith(b"\x89PNG")
    assert panel.chart in app.inspector.side.children  # beside the channel heatmaps
    # the grid previews the best: pixels of the edit, clearly marked, nothing installed
    assert app.grid.preview == best.label() and "PREVIEW" in app.grid.caption.value
    assert same_weights(s, w0) and len(s.history) == 0
    x, y = app.grid.tile_origin(0)
    k = app.grid.scale
    preview = s.preview(best)
    assert np.array_equal(app.grid.pixels[y + 10 * k:y + 20 * k:k, x:x + S * k:k, :3],
                          preview[0][10:20])
    assert not np.array_equal(app.grid.pixels, before)
    assert "previewing" in app.status.value and "not committed" in app.status.value
    assert "main.0" not in {c.layer for c in panel.suggestion.candidates}  # 1×1 keys: not offered
    # click another candidate: its preview, quickly
    other = panel._rows[1][0]
    t0 = time.perf_counter()
    other.click()
    assert app.wait()
    took = time.perf_counter() - t0
    assert panel.selected == 1 and app.grid.preview == panel.candidates[1].label()
    assert app.last_preview_seconds < 1.0 and took < 1.0
    assert same_weights(s, w0)
    # Discard: the model again, exactly
    panel.discard_button.click()
    assert app.wait()
    assert app.grid.preview == "" and np.array_equal(app.grid.pixels, before)
    assert panel.state == "ready" and panel.commit_button.disabled


def test_preview_side_by_side_pairs_the_model_with_the_preview(app, tiny_session):
    full_selection(app)
    app.suggest()
    assert app.wait(60)
    app.grid.compare_toggle.value = True
    assert app.wait()
    x, y = app.grid.tile_origin(0)
    k, tile = app.grid.scale, S * app.grid.scale
    now = app.grid.pixels[y + 10 * k:y + 20 * k:k, x - tile - 2:x - 2:k, :3]
    assert np.array_equal(now, tiny_session.render([tiny_session.grid[0]])[0][10:20])
    assert "now | preview" in app.grid.caption.value


def test_commit_installs_the_previewed_candidate_and_undo_restores_exactly(app, tiny_session,
                                                                          monkeypatch):
    s = tiny_session
    plant(s, monkeypatch, "green")
    full_selection(app)
    w0, before = weights(s), app.grid.pixels.copy()
    app.suggest()
    assert app.wait(60)
    panel = app.suggestions
    app.pick(1)
    assert app.wait()
    chosen = panel.candidate
    previewed = app.grid.pixels.copy()
    app.strength.value = 1.0
    panel.commit_button.click()
    assert app.wait()
    assert len(s.history) == 1 and s.history.edits[0] is chosen.edit
    assert not same_weights(s, w0)
    assert app.messages.kind == "success" and "installed" in app.messages.last
    assert panel.state == "committed" and "Committed" in panel.detail.value
    # the grid shows the model (no preview marks), which now has the edit the preview showed
    assert app.grid.preview == ""
    assert np.array_equal(app.grid._edited, s.render())
    assert not np.array_equal(app.grid.pixels, before)
    assert not np.array_equal(app.grid.pixels, previewed)  # same images, no preview frame
    app.commit()  # nothing left to commit
    assert app.wait() and len(s.history) == 1 and "Already committed" in app.messages.last
    app.undo_button.click()
    assert app.wait()
    assert same_weights(s, w0) and np.array_equal(app.grid.pixels, before)


def test_a_red_candidate_is_refused_until_confirmed(app, tiny_session, monkeypatch):
    s = tiny_session
    plant(s, monkeypatch, "red")
    full_selection(app)
    w0 = weights(s)
    app.suggest()
    assert app.wait(60)
    panel = app.suggestions
    bad = panel.candidate
    assert bad.blocked and panel.commit_button.button_style == "warning"
    assert "red" in app.status.value and "asks twice" in app.status.value
    panel.commit_button.click()  # first click: refused, the button asks
    assert app.wait()
    assert len(s.history) == 0 and same_weights(s, w0)
    assert panel.armed and panel.commit_button.description == "Commit anyway?"
    assert panel.commit_button.button_style == "danger"
    assert "planted: every image melts" in panel.detail.value
    assert app.messages.kind == "warning" and "likely to damage" in app.messages.last
    app.pick(1)  # another candidate disarms; back to the red one asks again
    app.pick(0)
    assert app.wait() and not panel.armed
    panel.commit_button.click()
    assert app.wait() and len(s.history) == 0 and panel.armed
    panel.commit_button.click()  # second, explicit click: installed
    assert app.wait()
    assert len(s.history) == 1 and s.history.edits[0] is bad.edit
    assert "confirmed despite a red meter" in app.messages.last


def test_rewrite_on_auto_stops_at_a_red_best_and_waits_for_commit(app, tiny_session, monkeypatch):
    s = tiny_session
    plant(s, monkeypatch, "red")
    full_selection(app)
    w0 = weights(s)
    app.rewrite_button.click()
    assert app.wait(60)
    panel = app.suggestions
    assert len(s.history) == 0 and same_weights(s, w0)
    assert panel.armed and app.grid.preview == panel.candidate.label()
    assert "Not installed" in app.messages.last and "Commit anyway?" in app.messages.last
    app.rewrite_button.click()  # Rewrite again is not the confirmation
    assert app.wait() and len(s.history) == 0 and panel.armed
    panel.commit_button.click()
    assert app.wait() and len(s.history) == 1


def test_auto_layer_and_rank(app, tiny_session, monkeypatch):
    s = tiny_session
    calls = plant(s, monkeypatch, "green")
    assert app.layer_choice == "" and app.rank_choice == 0
    assert app.inspector.selector.value == "" and app.rank.value == 0
    full_selection(app)
    assert "layer auto, rank auto" in app.status.value
    # auto: Rewrite runs the suggestion and commits its best
    app.rewrite_button.click()
    assert app.wait(60)
    assert len(calls) == 1 and len(calls[0]["layers"]) == 4 and calls[0]["ranks"] == (1, 2, 3, 6,
                                                                                      10)
    best = app.suggestions.suggestion.best
    assert len(s.history) == 1 and s.history.edits[0] is best.edit
    assert "the best of" in app.messages.last and app.grid.preview == ""
    s.undo()
    # a layer picked, the rank on auto: the suggestion at that layer only
    app.inspector.selector.value = "main.9"
    assert app.wait(60) and app.layer_choice == "main.9" and s.layer == "main.9"
    assert "layer main.9, rank auto" in app.status.value
    app.rewrite_button.click()
    assert app.wait(60)
    assert calls[-1]["layers"] == ["main.9"] and s.history.edits[-1].layer == "main.9"
    # a suggestion is shown and current: Rewrite commits the previewed candidate, no new solve
    s.undo()
    app.suggest()
    assert app.wait(60)
    n = len(calls)
    app.pick(1)
    chosen = app.suggestions.candidate
    app.rewrite()
    assert app.wait()
    assert len(calls) == n and s.history.edits[-1] is chosen.edit
    # layer and rank picked: Rewrite solves exactly that, as before (no suggestion)
    s.undo()
    app.rank.value = 2
    assert app.wait() and app.rank_choice == 2 and s.rank == 2
    assert "your choice" in app.status.value
    app.rewrite_button.click()
    assert app.wait(60)
    edit = s.history.edits[-1]
    assert len(calls) == n and (edit.layer, edit.rank) == ("main.9", 2)
    # back to auto
    app.rank.value = 0
    app.inspector.selector.value = ""
    assert app.wait() and (app.layer_choice, app.rank_choice) == ("", 0)
    assert "layer auto, rank auto" in app.status.value


def test_layer_and_rank_can_be_picked_from_the_start(tiny_session):
    s = tiny_session
    a = RewriteApp(s, layer="main.9", rank=2)  # e.g. those of a loaded request
    try:
        assert a.wait(60)
        assert (a.layer_choice, a.rank_choice, s.layer, s.rank) == ("main.9", 2, "main.9", 2)
        assert a.inspector.selector.value == "main.9" and a.rank.value == 2
        full_selection(a)
        assert "your choice" in a.status.value
        assert a.rewrite() and a.wait(60)
        assert (s.history.edits[0].layer, s.history.edits[0].rank) == ("main.9", 2)
        assert a.suggestions.state == "empty"  # no suggestion was needed
    finally:
        a.close()


def test_statistics_for_the_suggestion_are_preloaded(app, tiny_session):
    layers = app.suggest_layers()
    assert len(layers) == 4
    assert all(info["stats"] for info in tiny_session.layers() if info["name"] in layers)


def test_selection_change_or_edit_makes_the_suggestion_stale(app, tiny_session):
    s = tiny_session
    full_selection(app)
    app.suggest()
    assert app.wait(60)
    stroke(app, "context", box(4, 10, 4, 12))  # painting on sample 0 changes the context
    panel = app.suggestions
    assert panel.state == "stale" and "selections changed" in panel.detail.value
    assert "out of date" in app.status.value and "Suggest" in app.status.value
    assert app.grid.preview == "" and np.array_equal(app.grid._edited, s.render())
    assert panel.commit_button.disabled and all(b.disabled for b, _, _ in panel._rows)
    app.commit()
    assert app.wait() and len(s.history) == 0 and "out of date" in app.messages.last
    app.suggest()
    assert app.wait(60) and panel.state == "ready"
    s.rewrite(s.request(layer="main.7"))  # an edit from code
    assert app.wait()
    assert panel.state == "stale" and "an edit was installed" in panel.detail.value


def test_suggest_can_be_cancelled(app, tiny_session, monkeypatch):
    full_selection(app)
    started = threading.Event()

    def slow(progress=None, cancel=None, **kw):
        started.set()
        for i in range(200):
            progress(i, 200, "suggest")
            if cancel.is_set():
                from rewidget.core.errors import Cancelled
                raise Cancelled("The suggestion was cancelled.")
            time.sleep(0.05)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(tiny_session, "suggest", slow)
    app.suggest_button.click()
    assert started.wait(10) and app.busy and app.suggest_button.disabled
    app.tasks.cancel_button.click()
    assert app.wait(30)
    assert app.messages.kind == "warning" and "cancelled" in app.messages.last
    assert app.suggestions.state == "empty" and len(tiny_session.history) == 0


# -- keep and protect ------------------------------------------------------------------------------


def test_keep_strokes_reach_the_session(app, tiny_session):
    s = tiny_session
    app.select(3)
    assert app.wait()
    stroke(app, "keep", box(20, 30, 4, 28))
    assert len(s.keep) == 1 and s.keep[0].sample.seed == 3
    assert np.array_equal(s.keep[0].mask, box(20, 30, 4, 28))
    assert app.tray.count == 1 and "1 keep region" in app.tray.title.value
    assert "Keep</b> 1 sample" in app.status.value
    assert "keep" in app.painter_caption.value
    # the painter shows it again when the sample comes back
    app.select(0)
    assert app.wait() and app.painter.keep_mask == b""
    stroke(app, "context", box(8, 16, 8, 20))
    app.select(3)
    assert app.wait()
    assert np.array_equal(np.frombuffer(app.painter.keep_mask, np.uint8).reshape(S, S),
                          box(20, 30, 4, 28))
    assert app.tray.count == 2  # one context entry, one keep region
    # requests carry it
    stroke(app, "copy", box(8, 16, 8, 20))
    stroke(app, "paste", offset=(1, 1))
    assert len(s.request().keep) == 1
    # auto-protect
    app.protect.value = True
    assert app.wait() and s.protect == 0.9 and s.request().protect == 0.9
    assert "auto-protect 90%" in app.status.value
    app.protect.value = False
    assert app.wait() and s.protect == 0.0
    # removable like context: the tray thumbnail (after the context entry), the eraser, Clear
    canvas_click(app.tray.canvas, 8 + 72 + 10, 8 + 10)
    assert app.wait() and s.keep == [] and app.tray.count == 1
    stroke(app, "keep", box(2, 6, 2, 6))
    assert len(s.keep) == 1
    stroke(app, "keep", np.zeros((S, S), np.uint8))  # erased to nothing
    assert s.keep == []
    stroke(app, "keep", box(2, 6, 2, 6))
    app.painter.tool = "keep"
    app.clear_button.click()
    assert app.wait() and s.keep == [] and app.painter.keep_mask == b""
    stroke(app, "keep", box(2, 6, 2, 6))
    app.clear_all_button.click()
    assert app.wait() and s.keep == []


def test_a_keep_stroke_makes_the_suggestion_stale(app, tiny_session):
    full_selection(app)
    app.suggest()
    assert app.wait(60)
    stroke(app, "keep", box(24, 30, 0, 30))
    assert app.suggestions.state == "stale" and app.grid.preview == ""


def test_help_lists_suggest_and_the_keep_tool(app):
    assert "Suggest" in app.help.value and "keep (k)" in app.help.value.lower()
    assert [v for _, v in app.tool.options] == ["context", "copy", "paste", "keep"]


# -- errors ----------------------------------------------------------------------------------


def test_errors_land_in_the_message_area_and_nothing_is_lost(app, tiny_session):
    s = tiny_session
    app.rewrite_button.click()  # nothing selected
    assert app.wait()
    assert app.messages.kind == "error" and "No context" in app.messages.last
    assert "Fix:" in app.messages.last
    stroke(app, "context", box(8, 16, 8, 20))
    app.rewrite_button.click()  # context but no copy
    assert app.wait()
    assert "Nothing is copied" in app.messages.last and "copy tool" in app.messages.last
    assert len(s.context) == 1 and len(s.history) == 0 and app.painter.enabled
    assert "rewidget-msg-error" in app.messages._html.value
    app.seeds_text.value = "3, x7"
    assert app.wait()
    assert app.messages.kind == "error" and "'x7' is not a seed" in app.messages.last
    app.load_request("/nonexistent/edit.json")
    assert app.wait()
    assert "Cannot read" in app.messages.last
    assert len(s.context) == 1  # still there


def test_unexpected_errors_show_a_traceback(app, tiny_session, monkeypatch):
    full_selection(app)

    def broken(*a, **k):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(tiny_session, "rewrite", broken)
    monkeypatch.setattr(tiny_session, "suggest", broken)  # Rewrite on auto suggests first
    app.rewrite_button.click()
    assert app.wait()
    assert app.messages.kind == "error" and "solver exploded" in app.messages.last
    assert "<details>" in app.messages._html.value and "Traceback" in app.messages._html.value
    assert not app.busy and app.painter.enabled and tiny_session.copy is not None


# -- background work -------------------------------------------------------------------------


def test_statistics_run_in_the_background_with_progress_and_cancel():
    s = RewriteSession("tiny", stats_samples=400_000)  # takes minutes: we cancel it
    app = RewriteApp(s, preload=False)
    assert app.wait()
    other = next(i["name"] for i in s.layers() if i["name"] != s.layer)
    started = time.perf_counter()
    app.inspector.selector.value = other  # the layer selector
    assert app.busy and app.tasks.layout.display == "flex"
    assert app.rewrite_button.disabled and app.inspector.selector.disabled
    # the main thread is free: a grid click is handled at once
    canvas_click(app.grid.canvas, *tile_center(app, 3))
    assert app.sample == s.grid[3].seed
    deadline = time.time() + 30
    while app.tasks.bar.value == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert 0 < app.tasks.bar.value < 1 and "/" in app.tasks.label.value
    app.tasks.cancel_button.click()
    assert app.wait(30)
    assert time.perf_counter() - started < 30
    assert app.messages.kind == "warning" and "cancelled" in app.messages.last
    # nothing changed: the layer is still on auto
    assert s.layer != other and app.inspector.selector.value == "" and app.layer_choice == ""
    assert not app.busy and not app.rewrite_button.disabled
    app.close()


def test_switching_layers_loads_statistics_then_sets_the_layer(app, tiny_session):
    s = tiny_session
    other = [i["name"] for i in s.layers() if i["name"] != s.layer][-1]
    app.inspector.selector.value = other
    assert app.wait(60)
    assert s.layer == other
    label = dict((v, k) for k, v in app.inspector.selector.options)[other]
    assert "stats ✓" in label and "keys" in label
    options = app.inspector.selector.options
    assert options[0] == ("auto (suggested) · Rewrite uses the best layer", "")
    assert all("×" in k or "1×1" in k for k, _ in options[1:])
    assert app.layer_choice == other and app.rank_choice == 0  # the rank stays on auto
    app.inspector.selector.value = ""  # back to auto
    assert app.wait() and app.layer_choice == "" and s.layer == other


def test_heavy_tasks_queue_behind_each_other(app, tiny_session):
    gate = threading.Event()
    order = []
    app.tasks.run("first", lambda p, c: (gate.wait(10), order.append(1)))
    assert not app.tasks.run("second", lambda p, c: order.append(2))
    assert "starts when" in app.messages.last
    gate.set()
    assert app.wait()
    assert order == [1, 2] and not app.busy


# -- grid views, match and search ---------------------------------------------------------------


def test_before_after_toggle_and_side_by_side(app, tiny_session):
    s = tiny_session
    full_selection(app)
    rewrite(app)
    edited = app.grid.pixels.copy()
    app.grid.view_toggle.value = "original"
    assert app.wait()
    original = app.grid.pixels.copy()
    assert not np.array_equal(original, edited)
    x, y = app.grid.tile_origin(0)
    k = app.grid.scale
    rows = slice(y + 10 * k, y + 20 * k, k)  # image rows 10..19: clear of badges and labels
    assert np.array_equal(original[rows, x:x + S * k:k, :3],
                          s.render([s.grid[0]], original=True)[0][10:20])
    app.grid.compare_toggle.value = True
    assert app.wait()
    assert abs(app.grid.pixels.shape[1] - edited.shape[1]) < 20  # pairs, half as many per row
    assert app.grid.pixels.shape[0] > 1.8 * edited.shape[0]
    # clicking either half of a pair selects that sample
    canvas_click(app.grid.canvas, GAP + 5, GAP + 5)
    assert app.wait() and app.sample == s.grid[0].seed
    # a new edit switches back to the edited view
    app.grid.compare_toggle.value = False
    rewrite(app)
    assert len(s.history) == 2 and app.grid.view == "edited"


def test_context_match_overlay_and_search(app, tiny_session):
    s = tiny_session
    plain = app.grid.pixels.copy()
    app.grid.match_toggle.value = True
    assert app.wait()
    assert "paint a context first" in app.messages.last
    stroke(app, "context", box(8, 16, 8, 20))
    tinted = app.grid.pixels.copy()
    assert not np.array_equal(tinted, plain)
    match = s.context_match().numpy()
    assert match.shape[0] == len(s.grid)
    app.search_button.click()
    assert app.wait(60)
    top = s.search(pool=app.pool, top=len(s.grid))
    assert [x.seed for x in s.grid] == [seed for seed, _ in top]
    assert app.messages.kind == "success" and "best matches" in app.messages.last
    assert app.grid.show_match
    # the context's own sample matches by construction: left out, unless asked for
    own = s.context[0].sample.seed
    assert own not in [seed for seed, _ in top] and "left out" in app.messages.last
    assert own in [seed for seed, _ in s.search(pool=app.pool, top=3, include_context=True)]


def test_new_batch_and_typed_seeds(app, tiny_session):
    s = tiny_session
    app.seeds_text.value = "0-3, 9"
    assert app.wait()
    assert [x.seed for x in s.grid] == [0, 1, 2, 3, 9]
    assert app.grid.pixels.shape[0] == 2 * S * app.grid.scale + 3 * GAP  # 2 rows of 4
    app.batch_button.click()
    assert app.wait()
    assert len(s.grid) == 5 and [x.seed for x in s.grid] != [0, 1, 2, 3, 9]


def test_parse_seeds():
    assert parse_seeds("0-3, 9 12") == [0, 1, 2, 3, 9, 12]
    assert parse_seeds("5,5,4") == [5, 4]
    for bad in ("", "a", "3-1", "-2", "0-100"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


# -- inspection, history, files --------------------------------------------------------------


def test_heatmaps_for_the_painted_region(app, tiny_session):
    stroke(app, "context", box(8, 16, 8, 20))
    assert app.inspector.canvas.pixels.shape[0] <= 40  # collapsed: nothing computed
    app.more.selected_index = 0
    assert app.wait()
    heat = app.inspector._heat
    assert heat and all(len(v) == 4 for v in heat.values())
    assert "main.0" not in heat  # no spatial keys
    big = app.inspector.canvas.pixels
    assert big.shape[0] >= len(heat) * 64
    canvas_click(app.inspector.canvas, 118 + 10, 6 + 10)  # first layer, top channel
    assert app.wait()
    first = next(iter(heat))
    assert app.inspector.enlarged == f"{first}/0"
    assert app.inspector.large.pixels.shape[:2] == (256, 256)
    assert "channel" in app.inspector.large_caption.value


def test_history_rows_show_layer_rank_time_and_thumbnail(app, tiny_session):
    pin(app, "main.7", 1)
    full_selection(app)
    assert app.rewrite() and app.wait()
    edit = tiny_session.history.edits[0]
    img, label, slider = app.history._widgets[edit.id]
    assert bytes(img.value).startswith(b"\x89PNG")
    assert edit.layer in label.value and "rank 1" in label.value and ":" in label.value
    assert slider.value == 1.0


def test_save_load_and_export(app, tiny_session, tmp_path):
    s = tiny_session
    full_selection(app)
    req = tmp_path / "edit.json"
    app.request_path.value = str(req)
    app.save_button.click()
    assert app.wait() and req.exists()
    assert str(req.resolve()) in app.messages.last and "replaced" not in app.messages.last
    app.save_button.click()  # saving again overwrites the file: said so
    assert app.wait() and "replaced the file" in app.messages.last
    app.clear_all_button.click()
    assert app.wait() and not s.context
    app.load_button.click()
    assert app.wait()
    assert len(s.context) == 2 and s.copy is not None and s.paste.offset == (2.0, -3.0)
    assert app.tray.count == 2
    app.replay_button.click()
    assert app.wait(60) and len(s.history) == 1
    assert f"as edit {s.history.label(s.history.entries[-1].edit)} " in app.messages.last
    app.weights_path.value = str(tmp_path / "w.safetensors")
    app.delta_path.value = str(tmp_path / "d.safetensors")
    app.export_weights_button.click()
    app.export_delta_button.click()
    assert app.wait()
    assert (tmp_path / "w.safetensors").exists() and (tmp_path / "d.safetensors").exists()
    after = app.grid.pixels.copy()
    app.reset()
    assert app.wait() and len(s.history) == 0
    app.load_delta_button.click()
    assert app.wait()
    assert len(s.history) == 1 and np.array_equal(app.grid.pixels, after)


def test_close_stops_listening(tiny_session):
    a = RewriteApp(tiny_session, preload=False)
    assert a.wait()
    a.close()
    tiny_session.add_context(1, box(8, 16, 8, 20))
    time.sleep(0.1)
    assert a.tray.count == 0


# -- the real generator ----------------------------------------------------------------------


@pytest.mark.slow
def test_faces_app_edit_and_exact_undo(faces_gen):
    s = RewriteSession(faces_gen, stats_samples=500)
    app = RewriteApp(s)
    try:  # the generator is shared with other tests: always back to W₀
        assert app.wait(120)
        assert app.grid.pixels.shape == (4 * 128 + 5 * GAP,) * 2 + (4,)
        assert app.painter.scale == 4
        eyes = box(22, 32, 12, 52, 64)
        app.paint("context", eyes, seed=1)
        app.paint("context", eyes, seed=5)
        app.paint("copy", box(22, 36, 8, 54, 64), seed=4)
        app.paint("paste", seed=1, offset=(2, -1))
        assert app.wait()
        before = app.grid.pixels.copy()
        t0 = time.perf_counter()
        app.rewrite_button.click()  # auto: the suggestion's best
        assert app.wait(60)
        if app.suggestions.armed:  # the best has a red meter: it waits for a second click
            assert len(s.history) == 0 and "Not installed" in app.messages.last
            app.suggestions.commit_button.click()
            assert app.wait(60)
        took = time.perf_counter() - t0
        assert len(s.history) == 1, app.messages.last
        assert not np.array_equal(app.grid.pixels, before)
        assert took < 30  # suggestion + re-render; the browser benchmark measures the latency
        app.undo_button.click()
        assert app.wait()
        assert np.array_equal(app.grid.pixels, before)
    finally:
        s.reset()
        app.close()


def test_a_repeated_message_is_one_line_with_a_count():
    from rewidget.widgets.messages import MessageArea

    m = MessageArea()
    m.info("Statistics ready.")
    m.info("Statistics ready.")
    m.info("Statistics ready.")
    assert m._html.value.count("Statistics ready.") == 1 and "(×3)" in m._html.value
    m.error("Bad mask.", "paint again")
    m.info("Statistics ready.")  # not the newest any more: a new line
    assert m._html.value.count("Statistics ready.") == 2 and m.last == "Statistics ready."
