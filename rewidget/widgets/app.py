"""RewriteApp: paint context, copy and paste on generated samples, rewrite a layer, compare.

    s = RewriteSession("dcgan-faces")
    app = RewriteApp(s)        # display it: grid, painter, tray, rewrite controls, history
    app.paint("context", mask, seed=3); app.rewrite(); app.wait()   # the same, from code
    app.suggest(); app.wait(); app.commit(); app.wait()   # preview the best setting, then install
    app.undo()

The app is a view of the session: it listens to the session's events, so headless calls in
other cells (``s.rewrite()``, ``s.undo()``) show up here too. The kernel's main thread only
receives widget messages and queues work (tasks.py): session calls run on a light worker
thread, statistics/solving/search on a heavy-task thread with progress and Cancel.
Suggest / preview / commit and Rewrite on "auto (suggested)" are in suggesting.py.
"""

from __future__ import annotations

import html
import itertools
import random
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ipywidgets as w
import numpy as np
import traitlets as t

from ..core.errors import RewriteError, check_int
from ..core.requests import Sample, Selection
from ..session import RewriteSession
from .grid import SampleGrid
from .history import HistoryList
from .inspect import AUTO, LayerInspector
from .messages import MessageArea
from .painter import Painter
from .selections import parse_seeds, remove_selection, set_copy
from .suggesting import SuggestFlow
from .suggestions import SuggestionPanel
from .tasks import TaskRunner
from .textapp import TextRewriteApp, is_text_session
from .tray import ContextTray
from .view import SessionView

#: colours that must read on JupyterLab's light and dark backgrounds (WCAG AA, 4.5:1; tested in
#: the browser): JupyterLab marks the theme on <body data-jp-theme-light="true|false">
APP_CSS = """<style>
.rewidget-app .rw-context { color: #007a7a; }
.rewidget-app .rw-copy { color: #a3008c; }
.rewidget-app .rw-paste { color: #2e6b12; }
.rewidget-app .rw-good { color: #1e6b30; }
.rewidget-app .rw-warn { color: #7a5200; }
.rewidget-app .widget-button.mod-info { background-color: #1565c0; color: #fff; }
.rewidget-app .widget-button.mod-success { background-color: #2e7d32; color: #fff; }
body[data-jp-theme-light="false"] .rewidget-app .rw-context { color: #3fd6d6; }
body[data-jp-theme-light="false"] .rewidget-app .rw-copy { color: #f07ae0; }
body[data-jp-theme-light="false"] .rewidget-app .rw-paste { color: #7fd65a; }
body[data-jp-theme-light="false"] .rewidget-app .rw-good { color: #7fd68f; }
body[data-jp-theme-light="false"] .rewidget-app .rw-warn { color: #f0c060; }
</style>"""

HELP = """How to rewrite a rule
1. Context (c): paint where the rule should apply, on one or more samples.
   Each painted sample joins the context tray (click a thumbnail to remove it).
2. Copy (x): paint the object to insert, on any sample.
3. Paste (v): click a target sample, then drag the copied object into place.
   Paste again places it once more; Paste on all places it on every painted context
   object as it sits on this one. With replace, the paste replaces the context
   object it lands on (what the copy does not cover is filled from around it).
   Optional, keep (k): paint what the edit must not change; auto-protect keeps it away
   from keys where the context does not fire.
4. Suggest: every layer x rank is solved and scored (effect, collateral, realism:
   green / amber / red); the best is previewed on the grid, not committed. Click
   another candidate to preview it; Commit installs it (a red collateral or realism
   meter asks twice: "Commit anyway?").
   Rewrite does Suggest + Commit in one click, or uses the layer and rank you picked.
   Erase instead makes the context draw what surrounds it.
Context match tints where the context fires; Search finds the samples where it fires most.

Painter shortcuts (click the painter first):
c / x / v / k  context / copy / paste / keep tool
[ / ]  smaller / bigger brush,  e  eraser
Ctrl+Z  undo,  Ctrl+Shift+Z or Ctrl+Y  redo"""

MAX_SHOWN = 64  # samples the grid shows at once (seed box, New batch)

# what each session event makes stale in the view
_STALE = {
    "selection": ("painter", "tray", "grid", "status", "inspect"),
    "layer": ("layers", "grid", "status", "inspect"),
    "stats": ("layers", "grid"),
    "edit": ("grid", "painter", "tray", "history", "status", "inspect", "show-edited"),
    "undo": ("grid", "painter", "tray", "history", "status", "inspect"),
    "redo": ("grid", "painter", "tray", "history", "status", "inspect"),
    "reset": ("grid", "painter", "tray", "history", "status", "inspect"),
    "strength": ("grid", "painter", "tray", "history"),
    "grid": ("grid",),
}


def _exists(path: str) -> bool:
    try:
        return Path(path).expanduser().is_file()
    except (OSError, TypeError, ValueError):
        return False


def _where(out, existed: bool) -> str:
    """The full path written, and whether it replaced a file (saving overwrites)."""
    full = Path(out).expanduser().resolve()
    return f"{full}" + (" (it replaced the file that was there)" if existed else "")


def _button(description: str, css: str, icon: str = "", tooltip: str = "", style: str = "",
            width: str = "auto") -> w.Button:
    b = w.Button(description=description, icon=icon, tooltip=tooltip, button_style=style,
                 layout=w.Layout(width=width))
    b.add_class(css)
    return b


class RewriteApp(SessionView, SuggestFlow, w.VBox):
    """The notebook app for one RewriteSession (display it in a cell)."""

    #: Seed of the sample shown in the painter.
    sample = t.Int(0)
    #: A layer the user picked whose statistics are still loading ("" when none).
    pending_layer = t.Unicode("")
    #: True while a heavy task (statistics, suggestion, rewrite, search, replay) runs.
    busy = t.Bool(False)
    #: The layer Rewrite uses; "" = auto: the suggestion's best layer (the default).
    layer_choice = t.Unicode("")
    #: The rank Rewrite uses; 0 = auto: the suggestion's best rank (the default).
    rank_choice = t.Int(0)

    def __new__(cls, *args: Any, **kwargs: Any):
        """A text session (TextRewriteSession) gets the text app, TextRewriteApp."""
        if cls is RewriteApp and is_text_session(args[0] if args else kwargs.get("session")):
            return TextRewriteApp(*args, **kwargs)
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, session: RewriteSession, *, columns: int = 4, grid_scale: int | None = None,
                 painter_scale: int | None = None, pool: int = 1000, preload: bool = True,
                 layer: str | None = None, rank: int | None = None, **kwargs: Any) -> None:
        """``layer`` / ``rank`` pick them from the start (e.g. those of a loaded request);
        by default both are on auto: Rewrite uses the suggestion's. ``preload`` loads (or
        collects) the statistics Suggest needs in the background."""
        if layer is not None:
            session.set_layer(layer)  # validates
        self.session = session
        self.pool = int(pool)
        size = session.gen.image_size
        self._size = size
        self._init_view()
        self._init_suggest()
        self.last_stroke_at = 0.0  # time.time() when the last stroke reached the kernel
        self.last_click_at = 0.0  # time.time() when the last Rewrite/Erase click arrived

        self.messages = MessageArea()
        self.tasks = TaskRunner(self.messages)
        self._build(columns, grid_scale or max(1, 128 // size), painter_scale or max(1, 256 // size))
        super().__init__(self._layout(), **kwargs)
        self.add_class("rewidget-app")
        self._wire()
        with self.hold_trait_notifications():
            self.layer_choice = layer or ""
            self.rank_choice = int(rank or 0)
        seeds = [s.seed for s in session.grid if s.seed is not None]
        self.sample = seeds[0] if seeds else 0
        self._mark("layers", "grid", "painter", "tray", "history", "status")
        if preload:
            self._preload_statistics()

    # -- building ---------------------------------------------------------------------------------
    def _build(self, columns: int, grid_scale: int, painter_scale: int) -> None:
        s = self.session
        self.title = w.HTML(
            f"<b style='font-size:15px'>rewidget</b> <span style='color:var(--jp-ui-font-color2,#555)'>— rewrite a rule "
            f"of <b>{html.escape(str(s.gen.name))}</b> ({self._size}×{self._size})</span>")
        self.help = w.HTML(f"<span class='rewidget-help' title='{_attr(HELP)}' style='cursor:help;"
                           "border:1px solid #999;border-radius:9px;padding:0 7px;margin-left:8px;"
                           "color:var(--jp-ui-font-color2,#555)'>? help &amp; shortcuts</span>")
        # rewrite controls
        self.inspector = LayerInspector()
        self.rank = w.Dropdown(options=[("auto", 0)] + [(str(r), r) for r in range(1, 33)],
                               value=0, description="Rank",
                               tooltip="How many directions the edit may change (1 is the "
                                       "paper's rank-one update); auto: the suggestion's best",
                               layout=w.Layout(width="130px"),
                               style={"description_width": "38px"})
        self.rank.add_class("rewidget-rank")
        self.solver = w.ToggleButtons(options=[("exact", "exact"), ("iterative", "iterative"),
                                               ("output", "output")],
                                      value=s.solver, style={"button_width": "80px"},
                                      tooltips=["one least-squares solve (fast)",
                                                "the paper's Adam optimisation",
                                                "the paste drawn in the image, solved through "
                                                "the later layers (shapes; paste on several "
                                                "samples)"])
        self.strength = w.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05,
                                      description="Strength", continuous_update=False,
                                      readout_format=".2f", layout=w.Layout(width="250px"),
                                      style={"description_width": "58px"},
                                      tooltip="How strongly the next Rewrite or Commit is "
                                              "installed (1 = the full edit); installed edits "
                                              "have their own slider in the history")
        self.protect = w.Checkbox(value=s.protect > 0, description="auto-protect", indent=False,
                                  tooltip="Keep the edit away from keys sampled where the context "
                                          "does not fire (protects 90% of their energy)",
                                  layout=w.Layout(width="120px"))
        self.protect.add_class("rewidget-protect")
        self.suggest_button = _button("Suggest", "rewidget-suggest", "lightbulb-o",
                                      "Solve every layer × rank, score each, preview the best "
                                      "(nothing is installed)", "info")
        self.suggestions = SuggestionPanel()
        self.inspector.side.children = [self.suggestions.chart]  # beside the heatmaps too
        self.rewrite_button = _button("Rewrite", "rewidget-rewrite", "magic",
                                      "Make the context produce the pasted object (auto: the "
                                      "suggestion's best layer and rank)", "success")
        self.erase_button = _button("Erase", "rewidget-erase", "eraser",
                                    "Make the context produce what surrounds it")
        self.undo_button = _button("Undo", "rewidget-undo", "undo", "Undo the last edit (Ctrl+Z)")
        self.redo_button = _button("Redo", "rewidget-redo", "repeat",
                                   "Redo (Ctrl+Shift+Z / Ctrl+Y)")
        self.reset_button = _button("Reset", "rewidget-reset", "refresh",
                                    "Back to the original weights (Redo brings edits back)")
        # painter and its tools
        self.painter = Painter(scale=painter_scale)
        self.tool = w.ToggleButtons(
            options=[("context", "context"), ("copy", "copy"), ("paste", "paste"),
                     ("keep", "keep")],
            tooltips=["c: paint where the rule applies", "x: paint the object to copy",
                      "v: drag the copied object into place",
                      "k: paint what the edit must not change"],
            style={"button_width": "84px"})  # 72 px cut "context" to "cont…"
        self.tool.add_class("rewidget-tool")
        self.brush = w.IntSlider(value=self.painter.brush_size, min=1, max=64,
                                 description="Brush", layout=w.Layout(width="186px"),
                                 style={"description_width": "42px"})
        self.eraser = w.ToggleButton(description="", icon="eraser",
                                     tooltip="Eraser (e): erase from the current tool's mask",
                                     layout=w.Layout(width="40px"))
        self.paste_again_button = _button(
            "Paste again", "rewidget-paste-again", "plus",
            "Keep this paste and place the copy once more (another roof, another sample): "
            "all pastes are solved together, so the rule generalises better", width="112px")
        self.paste_all_button = _button(
            "Paste on all", "rewidget-paste-all", "clone",
            "Place the copy on every painted context object no paste covers yet, as it sits on "
            "its own object (a crown resting on one roof rests on every roof)", width="116px")
        self.replace = w.Checkbox(value=s.replace, description="replace", indent=False,
                                  tooltip="The paste replaces the context object it lands on: "
                                          "what the copy does not cover is filled from the "
                                          "surroundings (a roof turned crown leaves sky, not "
                                          "roof, beside it)",
                                  layout=w.Layout(width="84px"))
        self.replace.add_class("rewidget-replace")
        self.clear_button = _button("Clear", "rewidget-clear", "times",
                                    "Clear the current tool's selection on this sample",
                                    width="70px")
        self.clear_all_button = _button("Clear all", "rewidget-clear-all", "trash",
                                        "Clear context, copy, paste and keep everywhere",
                                        width="100px")
        self.clear_all_button.layout.flex = "0 0 auto"
        self.painter_caption = w.HTML("", layout=w.Layout(width=f"{self._size * painter_scale}px"))
        # grid
        self.grid = SampleGrid(columns=columns, scale=grid_scale)
        self.batch_button = _button("New batch", "rewidget-batch", "random",
                                    "Show new random samples")
        self.seeds_text = w.Text(placeholder="seeds, e.g. 0-15 or 3, 8, 21",
                                 layout=w.Layout(width="190px"), continuous_update=False)
        self.seeds_text.add_class("rewidget-seeds")
        self.seeds_button = _button("Show", "rewidget-show-seeds", "",
                                    "Show the typed seeds", width="60px")
        self.search_button = _button("Search", "rewidget-search", "search",
                                     f"Rank {self.pool:,} samples by context match and show "
                                     "the best")
        self.grid_tools = w.HBox([self.batch_button, self.seeds_text, self.seeds_button,
                                  self.search_button],
                                 layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.status = w.HTML("")
        self.status.add_class("rewidget-selection")
        self.tray = ContextTray()
        self.history = HistoryList()
        # save / export
        self.request_path = w.Text(value="edit.json", description="Request",
                                   layout=w.Layout(width="330px"),
                                   style={"description_width": "70px"})
        self.save_button = _button("Save", "rewidget-save", "save",
                                   "Save the last edit's request (or the current selections)")
        self.load_button = _button("Load", "rewidget-load", "folder-open",
                                   "Load the request's selections, layer, rank and solver")
        self.replay_button = _button("Replay", "rewidget-replay", "play",
                                     "Run the saved request as a new edit")
        self.weights_path = w.Text(value="edited.safetensors", description="Weights",
                                   layout=w.Layout(width="330px"),
                                   style={"description_width": "70px"})
        self.export_weights_button = _button("Export weights", "rewidget-export-weights",
                                             "download", "The full edited state_dict")
        self.delta_path = w.Text(value="edits.delta.safetensors", description="Delta",
                                 layout=w.Layout(width="330px"),
                                 style={"description_width": "70px"})
        self.export_delta_button = _button("Export delta", "rewidget-export-delta", "download",
                                           "Only the low-rank factors of the applied edits")
        self.load_delta_button = _button("Load delta", "rewidget-load-delta", "upload",
                                         "Install the edits from a delta file")

    def _layout(self) -> list[w.Widget]:
        row = w.Layout(flex_flow="row wrap", align_items="center")
        controls = w.VBox([
            w.HBox([self.inspector.selector, self.rank, self.solver, self.strength,
                    self.protect], layout=row),
            w.HBox([self.suggest_button, self.rewrite_button, self.erase_button,
                    w.HTML("<span style='display:inline-block;width:18px'></span>"),
                    self.undo_button, self.redo_button, self.reset_button], layout=row),
        ])
        painter_box = w.VBox(
            [w.HBox([self.tool, self.eraser], layout=row),
             w.HBox([self.paste_again_button, self.paste_all_button, self.replace], layout=row),
             w.HBox([self.brush, self.clear_button], layout=row),
             self.painter, self.painter_caption],
            layout=w.Layout(align_items="flex-start", margin="0 12px 0 0"))
        # new batch / seeds / search above the grid: below it they sat 576 px down, off-screen
        # while the controls were in view
        grid_box = w.VBox([self.grid_tools, self.grid], layout=w.Layout(align_items="flex-start"))
        main = w.HBox([painter_box, grid_box, self.suggestions],
                      layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))
        files = w.VBox([
            w.HBox([self.request_path, self.save_button, self.load_button, self.replay_button],
                   layout=row),
            w.HBox([self.weights_path, self.export_weights_button], layout=row),
            w.HBox([self.delta_path, self.export_delta_button, self.load_delta_button],
                   layout=row),
        ])
        self.more = w.Accordion([self.inspector, files], selected_index=None)
        self.more.set_title(0, "Layers and heatmaps: which channels respond to the painted "
                               "region; the suggestion per layer")
        self.more.set_title(1, "Save, load and export")
        return [w.HTML(APP_CSS),
                w.HBox([self.title, self.help], layout=w.Layout(align_items="center")),
                controls, self.tasks, self.messages,
                w.HBox([self.status, self.clear_all_button],
                       layout=w.Layout(align_items="center", justify_content="space-between")),
                main, self.tray, self.history,
                self.more]

    def _wire(self) -> None:
        s = self.session
        for event in _STALE:
            s.on(event, self._on_session)
        w.link((self.tool, "value"), (self.painter, "tool"))
        w.link((self.brush, "value"), (self.painter, "brush_size"))
        w.link((self.eraser, "value"), (self.painter, "erasing"))
        self.painter.on_stroke(self._guard(self._on_stroke))
        self.painter.on_shortcut(self._guard(self._on_shortcut))
        self.painter.observe(lambda _: self._caption(), names=["tool", "erasing"])
        self.painter.observe(self._guard(self._on_tool), names="tool")
        self.clear_button.on_click(self._guard(lambda _: self.clear(self.painter.tool)))
        self.clear_all_button.on_click(self._guard(lambda _: self.clear(None)))
        self.paste_again_button.on_click(self._guard(lambda _: self.paste_again()))
        self.paste_all_button.on_click(self._guard(lambda _: self.paste_on_all()))
        self.replace.observe(self._guard(self._on_replace), names="value")
        self.grid.on_select(self._guard(self._on_grid_click))
        self.grid.schedule = lambda fn: self._mark("grid")  # the view changes; data may too
        self.grid.observe(self._guard(self._on_match_toggle), names="show_match")
        self.batch_button.on_click(self._guard(lambda _: self.new_batch()))
        self.seeds_button.on_click(self._guard(lambda _: self.show_seeds(self.seeds_text.value)))
        self.seeds_text.observe(self._guard(lambda ch: self.show_seeds(ch["new"])
                                            if ch["new"].strip() else None), names="value")
        self.search_button.on_click(self._guard(lambda _: self.search()))
        self.tray.on_remove(self._guard(self._remove_context))
        self.inspector.on_pick(self._guard(self.set_layer))
        self.observe(lambda _: self._mark("layers", "status"), names=["layer_choice"])
        self.inspector.schedule = lambda fn: self.tasks.submit(fn, "Drawing heatmaps")
        self.more.observe(lambda ch: self._mark("inspect") if ch["new"] == 0 else None,
                          names="selected_index")
        w.link((self.rank, "value"), (self, "rank_choice"))
        self.observe(self._guard(self._on_rank), names="rank_choice")
        self.protect.observe(self._guard(self._on_protect), names="value")
        self.suggest_button.on_click(self._guard(lambda _: self._clicked() or self.suggest()))
        self.suggestions.observe(self._guard(self._on_pick), names="selected")
        self.suggestions.on_commit(self._guard(lambda: self._clicked() or self.commit()))
        self.suggestions.on_discard(self._guard(lambda: self.discard()))
        self.solver.observe(self._guard(self._on_solver), names="value")
        self.strength.observe(self._guard(self._on_next_strength), names="value")
        self.rewrite_button.on_click(self._guard(lambda _: self._clicked() or self.rewrite()))
        self.erase_button.on_click(self._guard(lambda _: self._clicked() or self.erase()))
        self.undo_button.on_click(self._guard(lambda _: self.undo()))
        self.redo_button.on_click(self._guard(lambda _: self.redo()))
        self.reset_button.on_click(self._guard(lambda _: self.reset()))
        self.history.on_strength(self._guard(self._on_strength))
        self.save_button.on_click(self._guard(lambda _: self.save_request(self.request_path.value)))
        self.load_button.on_click(self._guard(lambda _: self.load_request(self.request_path.value)))
        self.replay_button.on_click(self._guard(lambda _: self.replay(self.request_path.value)))
        self.export_weights_button.on_click(
            self._guard(lambda _: self.export_weights(self.weights_path.value)))
        self.export_delta_button.on_click(
            self._guard(lambda _: self.export_delta(self.delta_path.value)))
        self.load_delta_button.on_click(
            self._guard(lambda _: self.load_delta(self.delta_path.value)))
        self.tasks.observe(self._on_busy, names="busy")
        self.observe(lambda _: self._mark("painter", "grid", "tray", "inspect", "status"),
                     names="sample")
        self._caption()

    def _guard(self, fn):
        """Wrap a widget callback so that any error lands in the message area."""
        def run(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - never lost in the kernel log
                self.messages.report(e)
        return run

    # -- public actions (the buttons call these; notebooks and tests may too) ---------------------
    def select(self, seed: int) -> None:
        """Load sample ``seed`` into the painter."""
        self.sample = Sample(seed=seed).seed  # an int in [0, 2**64), or a RewriteError

    def paint(self, tool: str, mask: np.ndarray | None = None, seed: int | None = None,
              offset: tuple[int, int] | None = None) -> None:
        """Do what a finished stroke in the browser does: set the tool's mask (or, for "paste",
        the offset) on the painter and count a stroke."""
        if seed is not None:
            self.select(seed)
        p = self.painter
        with p.hold_sync():
            p.tool = tool
            if tool == "paste":
                if offset is None:
                    raise RewriteError("A paste needs an offset.", "pass offset=(dx, dy).")
                p.paste_offset = [int(offset[0]), int(offset[1])]
                p.paste_active = True
            else:
                p.set_mask(tool, mask)
            p.stroke_count += 1

    def clear(self, tool: str | None = None) -> None:
        """Clear one tool's selection on the painter's sample, or (None) every selection."""
        p, seed = self.painter, self.sample
        if tool is None:
            p.clear()
            self._submit(self.session.clear_selection, "Clearing the selections")
        elif tool == "context":
            p.clear("context")
            self._submit(lambda: self._set_context(seed, None), "Clearing the context")
        elif tool == "copy":
            p.clear("copy")
            p.clear("paste")
            self._submit(self._drop_copy, "Clearing the copy")
        elif tool == "keep":
            p.clear("keep")
            self._submit(lambda: self.session.set_keep(seed, None), "Clearing the keep region")
        else:
            with p.hold_sync():
                p.paste_active, p.paste_offset = False, [0, 0]
            self._submit(self._drop_paste, "Clearing the paste")

    def paste_again(self) -> None:
        """Keep the placed paste as one goal and let the paste tool place another.

        Runs after any stroke still on its way to the session (the task queue is ordered).
        """
        self._submit(self._keep_paste, "Keeping the paste")

    def paste_on_all(self) -> None:
        """Place the copy on every context object no paste covers yet (session.paste_on_context).
        """
        def job() -> None:
            n = self.session.paste_on_context()
            total = len(self.session.pastes_placed())
            self.messages.info(
                f"Paste on all: the copy placed on {n} more context object(s), {total} in all "
                "(drawn in green where they land); they are solved together." if n else
                "Paste on all: every painted context object has a paste already (paint context "
                "on more samples to teach the rule on more examples).")
        self._submit(job, "Placing the copy on every context object")

    def new_batch(self, n: int | None = None) -> None:
        """Show ``n`` (default: as many as now) random samples."""
        n = check_int(n or len(self.session.grid), "the batch size", 1, MAX_SHOWN,
                      f"show 1 to {MAX_SHOWN} samples.")
        seeds = random.sample(range(100_000), n)
        self._submit(lambda: self.session.set_grid(seeds), "New batch")

    def show_seeds(self, text: str | Iterable[int]) -> None:
        """Show these seeds in the grid ('0-15', '3, 8' or a list)."""
        if isinstance(text, str):
            seeds = parse_seeds(text, MAX_SHOWN)
        else:  # at most one more than allowed is read: a huge range is never expanded
            seeds = [Sample.of(x).seed for x in itertools.islice(text, MAX_SHOWN + 1)]
            if len(seeds) > MAX_SHOWN or None in seeds or not seeds:
                raise RewriteError(f"Show 1 to {MAX_SHOWN} seeds (integers) at a time.",
                                   "pass a shorter list, e.g. range(16).")
        self._submit(lambda: self.session.set_grid(seeds), "Showing seeds")

    def search(self) -> None:
        """Rank ``pool`` seeds by their strongest context match; show the best in the grid."""
        s, pool = self.session, self.pool

        def job(progress, cancel):
            s.statistics(s.layer, progress=progress, cancel=cancel)
            return s.search(pool=pool, top=len(s.grid), progress=progress, cancel=cancel)

        def done(result, secs):
            s.set_grid([seed for seed, _ in result])
            self.grid.show_match = True
            best = ", ".join(f"{seed} ({score:.2f})" for seed, score in result[:4])
            n = len({c.sample.seed for c in s.context})
            left = f" (the {n} context sample(s) left out)" if n else ""
            self.messages.success(f"Searched {pool:,} samples in {secs:.1f} s{left}; best "
                                  f"matches: {best} …")

        self.tasks.run(f"Searching {pool:,} samples for the context", job, done)

    def set_layer(self, name: str) -> None:
        """Make ``name`` the edit layer (Rewrite uses it), collecting or loading its statistics
        first; AUTO ("") goes back to "auto (suggested)"."""
        if name == AUTO:
            self.layer_choice = AUTO
        elif name == self.session.layer and name == self.layer_choice:
            return
        elif self._stats_ready(name):
            self._submit(lambda: self._use_layer(name), "Switching layer")
        else:
            self._load_statistics(name, then_set_layer=True)

    def _use_layer(self, name: str) -> None:
        self.session.set_layer(name)
        self.layer_choice = name

    def rewrite(self, kind: str = "paste") -> bool:
        """Compute and install an edit from the current selections (in the background): at the
        picked layer and rank, or, with either on auto, the suggestion's best (a candidate with
        a red meter is previewed and waits for "Commit anyway?")."""
        if not (self.layer_choice and self.rank_choice):
            return self._rewrite_by_suggestion(kind)
        s, strength = self.session, float(self.strength.value)
        verb = "Rewriting" if kind == "paste" else "Erasing"
        title = f"{verb} {s.layer} (rank {s.rank}, {s.solver})"

        def job(progress, cancel):
            self.painter.enabled = False  # a stroke now would not be part of this edit
            return s.rewrite(s.request(kind), strength=strength, progress=progress, cancel=cancel)

        def done(edit, secs):
            rep = edit.report
            err = ""
            if "before" in rep and "installed" in rep:
                err = (f"; error on the goal {rep['before']['l1']:.3g} → "
                       f"{rep['installed']['l1']:.3g}")
            self.messages.success(f"Edit {self._no(edit)} installed ({kind} @ {edit.layer}, rank "
                                  f"{edit.rank}) in {secs:.2f} s{err}{self._dropped()}.")

        return self.tasks.run(title, job, done,
                              always=lambda: setattr(self.painter, "enabled", True))

    def erase(self) -> bool:
        """Make the context produce what its surroundings produce (background)."""
        return self.rewrite("erase")

    def undo(self) -> None:
        """Take back the last edit (exact: the weights return bit for bit)."""
        self._history_step("undo")

    def redo(self) -> None:
        """Re-apply the last undone edit."""
        self._history_step("redo")

    def reset(self) -> None:
        """Switch every edit off (the original weights); Redo brings them back one by one."""
        if self._refuse_while_busy("reset"):
            return
        n = len(self.session.history)

        def job() -> None:
            self.session.reset()
            self.messages.info(f"Reset: {n} edit(s) off, weights back to the original "
                               "(Redo brings them back)." if n else "Nothing to reset.")
        self._submit(job, "Reset")

    def save_request(self, path: str) -> None:
        """Save the last edit's request (or the current selections) as JSON."""
        def job() -> None:
            existed = _exists(path)
            out = self.session.save_request(path)
            self.messages.success(f"Saved the edit request to {_where(out, existed)}.")
        self._submit(job, "Saving the request")

    def load_request(self, path: str) -> None:
        """Load a saved request's selections, layer, rank and solver (Rewrite applies it)."""
        def job() -> None:
            req = self.session.load_request(path)
            self.session.use_request(req)
            with self.hold_trait_notifications():  # the request's layer and rank are chosen
                self.layer_choice, self.rank_choice = req.layer, req.rank
            self.messages.success(f"Loaded {path}: {req.kind} @ {req.layer}, rank {req.rank}, "
                                  f"{len(req.context)} context sample(s). Press Rewrite to apply.")
        self._submit(job, "Loading the request")

    def replay(self, path: str) -> bool:
        """Run a saved request as a new edit (background)."""
        s = self.session
        return self.tasks.run(f"Replaying {path}",
                              lambda progress, cancel: s.replay(path, progress=progress,
                                                                cancel=cancel),
                              lambda edit, secs: self.messages.success(
                                  f"Replayed {path} as edit {self._no(edit)} in {secs:.2f} s"
                                  f"{self._dropped()}."))

    def export_weights(self, path: str) -> None:
        """Write the edited model's full state_dict (safetensors)."""
        def job() -> None:
            existed = _exists(path)
            out = self.session.export_weights(path)
            self.messages.success(f"Exported the edited weights to {_where(out, existed)}.")
        self._submit(job, "Exporting weights")

    def export_delta(self, path: str) -> None:
        """Write only the low-rank factors of the applied edits (safetensors)."""
        def job() -> None:
            existed = _exists(path)
            out = self.session.export_delta(path)
            self.messages.success(f"Exported {len(self.session.history)} edit(s) as a delta "
                                  f"to {_where(out, existed)}.")
        self._submit(job, "Exporting the delta")

    def load_delta(self, path: str) -> None:
        """Install the edits stored in a delta file."""
        if self._refuse_while_busy("load a delta"):
            return

        def job() -> None:
            edits = self.session.load_delta(path)
            self.messages.success(f"Installed {len(edits)} edit(s) from {path}.")
        self._submit(job, "Loading the delta")

    def wait(self, timeout: float = 120.0) -> bool:
        """Block until queued work and any running task are done (for scripts and tests)."""
        return self.tasks.wait(timeout)

    def close(self) -> None:
        """Stop listening to the session and close the widgets."""
        for event in _STALE:
            self.session.on(event, self._on_session, remove=True)
        self.tasks.close()
        super().close()

    # -- event handlers -------------------------------------------------------------------------
    def _on_session(self, event: str, **_: Any) -> None:
        self._invalidate(event)
        if event == "layer" and self.layer_choice and self.layer_choice != self.session.layer:
            self.layer_choice = self.session.layer  # set in code: still a layer, not auto
        self._mark(*_STALE[event])

    def _on_tool(self, change: dict) -> None:
        """Choosing paste: say so when nothing is copied yet; otherwise the copied object is
        placed where the painter shows it (its own place), so what is seen is what Rewrite uses
        — before, it looked placed but counted only once dragged."""
        if change["new"] != "paste":
            return
        s, p = self.session, self.painter
        with s.lock:
            copy, paste = s.copy, s.paste
        if copy is None:
            self.messages.info("Paste: nothing is copied yet. Choose the copy tool (x) and paint "
                               "the object on one sample, then pick the sample to paste on and "
                               "drag the object into place.")
            return
        here = Sample(self.sample)
        if p.paste_active or copy.sample == here or (paste is not None and paste.sample == here):
            return
        with p.hold_sync():
            p.paste_offset, p.paste_active = [0, 0], True
            p.stroke_count += 1  # as if dropped there: the session records the placement
        self.messages.info(f"Paste: the copied object is placed on seed {self.sample} where it "
                           "was copied from; drag it to move it.")

    def _on_stroke(self, tool: str) -> None:
        self.last_stroke_at = time.time()  # read by benchmarks/browser_latency.py
        seed, p = self.sample, self.painter
        if tool in ("context", "copy", "keep"):
            mask = p.mask(tool)  # read now: the trait may change before the job runs
            setter = {"context": self._set_context, "copy": self._set_copy,
                      "keep": self.session.set_keep}[tool]
            job, what = (lambda: setter(seed, mask)), tool.capitalize()
        elif tool == "paste" and p.paste_active:
            off = (float(p.paste_offset[0]), float(p.paste_offset[1]))
            job, what = (lambda: self.session.set_paste(seed, off)), "Paste"
        else:
            return
        with self._dirty_lock:
            self._pending_strokes += 1

        def run() -> None:
            try:
                job()
            finally:
                with self._dirty_lock:
                    self._pending_strokes -= 1
                self._mark("status")
        self.tasks.submit(run, what)

    def _clicked(self) -> None:
        self.last_click_at = time.time()

    def _on_shortcut(self, name: str) -> None:
        if name == "undo":
            self.undo()
        elif name == "redo":
            self.redo()

    def _on_grid_click(self, index: int) -> None:
        samples = self.session.grid
        if 0 <= index < len(samples):
            if samples[index].seed is None:
                self.messages.warn("This sample is given by a latent, not a seed; the painter "
                                   "works on seeded samples.")
                return
            self.select(samples[index].seed)

    def _on_match_toggle(self, change: dict) -> None:
        if change["new"] and not self.session.context:
            self.messages.info("Context match: paint a context first; the tint appears then.")
        elif change["new"] and not self._stats_ready(self.session.layer):
            self._load_statistics(self.session.layer, then_set_layer=False)

    def _remove_context(self, index: int) -> None:
        """A tray thumbnail was clicked: the context entries come first, then the keep regions."""
        ctx, keep = self.session.context, self.session.keep
        if 0 <= index < len(ctx):
            sel = ctx[index]
            self._submit(lambda: self._remove_selection(sel), "Removing a context entry")
        elif 0 <= index - len(ctx) < len(keep):
            sample = keep[index - len(ctx)].sample
            self._submit(lambda: self.session.set_keep(sample, None), "Removing a keep region")

    def _on_rank(self, change: dict) -> None:
        if change["new"]:
            self.session.rank = int(change["new"])
        self._mark("status")

    def _on_protect(self, change: dict) -> None:
        share = 0.9 if change["new"] else 0.0
        if share != self.session.protect:  # not an echo of the session's own value
            self._submit(lambda: self.session.set_protect(share), "Setting auto-protect")

    def _on_replace(self, change: dict) -> None:
        if bool(change["new"]) != self.session.replace:  # not an echo of the session's value
            self._submit(lambda: self.session.set_replace(bool(change["new"])),
                         "Setting replace")

    def _on_solver(self, change: dict) -> None:
        self.session.solver = change["new"]
        self._mark("status")

    def _on_next_strength(self, change: dict) -> None:
        """The top slider scales the next edit, not the ones installed: say so where it is
        moved (it changed nothing visible and said nothing)."""
        n = len(self.session.history)
        installed = (f" The {n} installed edit(s) keep theirs: use the slider on each in the "
                     "history below." if n else "")
        self.messages.info(f"Strength {change['new']:.2f} applies to the next Rewrite or "
                           f"Commit.{installed}")

    def _on_strength(self, index: int, value: float) -> None:
        self._submit(lambda: self.session.set_strength(index, value), "Changing the strength")

    def _on_busy(self, change: dict) -> None:
        busy = change["new"]
        self.busy = busy
        for b in (self.suggest_button, self.rewrite_button, self.erase_button, self.undo_button,
                  self.redo_button, self.reset_button, self.search_button, self.replay_button,
                  self.load_delta_button, self.load_button):
            b.disabled = busy
        self.inspector.selector.disabled = busy
        self.suggestions.busy = busy
        if not busy:
            self._mark("layers")

    # -- session mutations (light worker thread) -----------------------------------------------
    def _no(self, edit) -> str:
        """The edit's number as users see it ("#2": the second edit of this session)."""
        return self.session.history.label(edit)

    def _dropped(self) -> str:
        """Said after an install that dropped edits Redo would have brought back."""
        n = self.session.history.dropped_redo
        return (f". It replaced {n} undone edit(s) that Redo would have brought back"
                if n else "")

    def _submit(self, fn, doing: str) -> None:
        self.tasks.submit(fn, doing)

    def _refuse_while_busy(self, what: str) -> bool:
        if self.tasks.busy:
            self.messages.warn(f"Cannot {what} while “{self.tasks.title}” runs; wait or Cancel.")
            return True
        return False

    def _history_step(self, name: str) -> None:
        if self._refuse_while_busy(name):
            return

        def job() -> None:
            edit = getattr(self.session, name)()
            if edit is None:
                self.messages.info(f"Nothing to {name}.")
            else:
                self.messages.info(f"{name.capitalize()}: edit {self._no(edit)} "
                                   f"({edit.request.kind if edit.request else 'loaded'} @ "
                                   f"{edit.layer}, rank {edit.rank}).")
        self._submit(job, name.capitalize())

    def _set_context(self, seed: int, mask: np.ndarray | None) -> None:
        self.session.set_context(seed, mask)

    def _remove_selection(self, sel: Selection) -> None:
        remove_selection(self.session, sel)

    def _set_copy(self, seed: int, mask: np.ndarray | None) -> None:
        set_copy(self.session, seed, mask)

    def _drop_copy(self) -> None:
        self.session.clear_copy()

    def _keep_paste(self) -> None:
        self.session.keep_paste()

    def _drop_paste(self) -> None:
        self.session.clear_paste()

    def _preload_statistics(self) -> bool:
        """Statistics of the layers a suggestion covers (or the picked layer), in the
        background: from the disk cache in milliseconds, else collected once."""
        s = self.session
        layers = [n for n in dict.fromkeys([s.layer, *self.suggest_layers()])
                  if not self._stats_ready(n)]
        if not layers:
            return False

        def job(progress, cancel):
            s.prepare_statistics(layers, progress=progress, cancel=cancel)

        def done(_, secs):
            self.messages.info(f"Statistics for {', '.join(layers)} ready ({secs:.1f} s; cached "
                               "on disk).")

        return self.tasks.run(f"Statistics for {len(layers)} layer{'s' if len(layers) > 1 else ''}"
                              " (needed to suggest and rewrite, cached on disk)", job, done)

    def _load_statistics(self, layer: str, then_set_layer: bool) -> bool:
        s = self.session

        def job(progress, cancel):
            return s.statistics(layer, progress=progress, cancel=cancel)

        def done(_, secs):
            if then_set_layer:
                self._use_layer(layer)
            self.messages.info(f"Statistics for {layer} ready ({secs:.1f} s; cached on disk).")

        def always() -> None:
            self.pending_layer = ""
            self._mark("status")

        if then_set_layer:  # the status line names the layer chosen, not the one before it
            self.pending_layer = layer
            self._mark("status")
        return self.tasks.run(f"Statistics for {layer} ({s.samples_for(layer):,} samples; "
                              "needed to rewrite, cached on disk)", job, done, always=always)

def _attr(text: str) -> str:
    import html

    return html.escape(text, quote=True).replace("\n", "&#10;")
