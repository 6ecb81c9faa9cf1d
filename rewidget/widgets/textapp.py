"""TextRewriteApp: rewrite a fact inside a language model, from the notebook.

    s = TextRewriteSession("smollm2")
    app = TextRewriteApp(s)      # RewriteApp(s) hands a text session to it as well
    app.prompt.value = "The Eiffel Tower is located in the city of"
    app.select_subject("The Eiffel Tower")      # or click the token chips
    app.target.value = " Rome"
    app.rewrite(); app.wait()                   # the Rewrite button; the panel updates
    app.undo(); app.wait()                      # exact: the weights return bit for bit

The app is a view of the session: it listens to the session's events, so headless calls in
other cells (``s.rewrite(req)``, ``s.undo()``) show up in its history and panel too. It shares
the image app's parts: the task runner (statistics, v* and the suggestion run off the kernel's
main thread with progress and Cancel; session calls on a light worker thread), the message area
and the history list. Every session call that runs the model holds the session's lock, so the
panel never runs while a new value is being found.
"""

from __future__ import annotations

import dataclasses
import html
import threading
from typing import Any

import ipywidgets as w
import traitlets as t

from ..core.errors import RewriteError
from ..session.facts import Fact, FactRequest
from .history import HistoryList, HistoryRow
from .messages import MessageArea
from .tasks import TaskRunner
from .textpanel import panel_html, parse_lines, parse_neighbours
from .tokenchips import TokenChips, visible

AUTO = ""  # the layer dropdown's "auto (suggested)"
EVENTS = ("edit", "undo", "redo", "reset", "strength")

HELP = """How to rewrite a fact
1. Prompt: a sentence that states the fact without its object,
   e.g. "The Eiffel Tower is located in the city of".
2. Subject: click its tokens (the chips under the prompt). A click next to the
   selection extends it, a click on one of its ends takes that token away;
   shift-click selects the run from the last clicked token.
3. New object: what the prompt should continue with, e.g. " Rome".
   Old object: optional (auto: the original model's own continuation).
4. Optional prompts, one per line: paraphrases (the fact in other words),
   neighbours ("prompt -> true object" about other subjects: must not change),
   essence prompts (other properties of the subject; those naming the subject
   also guard the edit against drift).
5. Check shows the panel and changes nothing. Rewrite finds the new value (v*)
   and installs the edit at the chosen layer (auto: several layers are tried
   and the best is installed).
Undo / Redo / Reset are exact: the weights return bit for bit."""


def is_text_session(session: Any) -> bool:
    """Does ``session`` hold a language model (so the text app is its view)?"""
    from ..session.text import TextRewriteSession

    return isinstance(session, TextRewriteSession) or \
        getattr(getattr(session, "gen", None), "kind", None) == "text"


def _button(description: str, css: str, icon: str = "", tooltip: str = "", style: str = ""
            ) -> w.Button:
    b = w.Button(description=description, icon=icon, tooltip=tooltip, button_style=style,
                 layout=w.Layout(width="auto"))
    b.add_class(css)
    return b


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


class _TextHistory(HistoryList):
    """The shared history list, without thumbnails (a text edit has no picture)."""

    def _row_widgets(self, row: HistoryRow):
        img, label, slider = super()._row_widgets(row)
        img.layout.display = "none"
        label.layout.width = "460px"
        return img, label, slider


def describe(edit: Any, history: Any = None) -> str:
    """One line for the history: #n subject → target @ layer (n: its number in ``history``)."""
    no = history.label(edit) if history is not None else f"id {edit.id}"
    req = edit.request
    if isinstance(req, FactRequest):
        f = req.facts[0]
        more = f" (+{len(req.facts) - 1} more facts)" if len(req.facts) > 1 else ""
        return f"{no} {f.subject} → {f.target.strip()}{more} @ {edit.layer}"
    return f"{no} loaded edit @ {edit.layer}"


class TextRewriteApp(w.VBox):
    """The notebook app for one TextRewriteSession (display it in a cell)."""

    #: True while a heavy task (statistics, new value, suggestion, replay, check) runs.
    busy = t.Bool(False)

    def __init__(self, session: Any, *, layer: str | None = None, preload: bool = True,
                 **kwargs: Any) -> None:
        """``layer`` picks the edit layer (default: the session's; "" is auto: the
        suggestion's best). ``preload`` loads (or collects) its statistics in the background."""
        if not is_text_session(session):
            raise RewriteError(f"{session!r} is not a text session.",
                               "use TextRewriteApp with TextRewriteSession('smollm2'); "
                               "RewriteApp shows image sessions.")
        if layer:
            session.gen.layer(layer)  # validates the name
        self.session = session
        self.messages = MessageArea()
        self.tasks = TaskRunner(self.messages)
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._tokens_of = ""
        self._panel_request: FactRequest | None = None
        self._panel_prompts: dict = {"paraphrases": [], "neighbours": [], "essence": []}
        self.panel_rows: list[dict] = []  # the rows the panel shows (session.panel's)
        self._build(session.layer if layer is None else layer)
        super().__init__(self._layout(), **kwargs)
        self.add_class("rewidget-text-app")
        self._wire()
        self._show_tokens()
        self._mark("history", "panel")
        if preload:
            self._preload_statistics()

    # -- building ---------------------------------------------------------------------------------
    def _build(self, layer: str) -> None:
        s = self.session
        dim = "color:var(--jp-ui-font-color2,#666)"
        self.title = w.HTML(
            f"<b style='font-size:15px'>rewidget</b> <span style='{dim}'>— rewrite a fact "
            f"inside <b>{_esc(s.gen.name)}</b></span>"
            f"<span class='rewidget-help' title='{_esc(HELP)}' style='cursor:help;margin-left:10px;"
            f"border:1px solid var(--jp-border-color1,#999);border-radius:9px;padding:0 7px;"
            f"{dim}'>? help</span>")
        wide = {"description_width": "88px"}
        self.prompt = w.Text(description="Prompt", style=wide,
                             placeholder="The Eiffel Tower is located in the city of",
                             layout=w.Layout(width="100%", max_width="780px"))
        self.prompt.add_class("rewidget-prompt")
        self.chips = TokenChips(layout=w.Layout(margin="0 0 0 92px"))
        self.subject = w.HTML("", layout=w.Layout(margin="0 0 0 92px"))
        self.subject.add_class("rewidget-subject")
        self.target = w.Text(description="New object", placeholder=" Rome", style=wide,
                             layout=w.Layout(width="300px"))
        self.target.add_class("rewidget-target")
        self.old = w.Text(description="Old object", placeholder="auto (the model's own)",
                          style={"description_width": "72px"}, layout=w.Layout(width="270px"))
        self.old.add_class("rewidget-old")
        names = list(s.gen.layer_names())
        self.layer = w.Dropdown(options=[("auto (suggested)", AUTO)] + [(n, n) for n in names],
                                value=layer if layer in names or layer == AUTO else s.layer,
                                description="Layer", style={"description_width": "40px"},
                                layout=w.Layout(width="290px"))
        self.layer.add_class("rewidget-layer")
        self.check_button = _button("Check", "rewidget-check", "eye",
                                    "Fill the panel for these prompts (nothing changes)")
        self.rewrite_button = _button("Rewrite", "rewidget-rewrite", "magic",
                                      "Find the new value and install the edit (auto: try "
                                      "several layers, install the best)", "success")
        self.undo_button = _button("Undo", "rewidget-undo", "undo", "Undo the last edit")
        self.redo_button = _button("Redo", "rewidget-redo", "repeat", "Redo the undone edit")
        self.reset_button = _button("Reset", "rewidget-reset", "refresh",
                                    "Back to the original weights (Redo brings edits back)")

        def area(css: str, placeholder: str) -> w.Textarea:
            a = w.Textarea(placeholder=placeholder, rows=3, layout=w.Layout(width="auto"))
            a.add_class(css)
            return a
        self.paraphrases = area("rewidget-paraphrases",
                                "one per line, e.g.\nThe Eiffel Tower stands in the city of")
        self.neighbours = area("rewidget-neighbours",
                               "prompt -> true object, one per line, e.g.\n"
                               "The Louvre is located in the city of -> Paris")
        self.essence = area("rewidget-essence",
                            "one per line, e.g.\nThe Eiffel Tower was designed by")
        self.panel = w.HTML(panel_html([]))
        self.panel.add_class("rewidget-panel")
        self.history = _TextHistory()
        text = {"description_width": "64px"}
        self.request_path = w.Text(value="fact.json", description="Request", style=text,
                                   layout=w.Layout(width="320px"))
        self.request_path.add_class("rewidget-request-path")
        self.save_button = _button("Save", "rewidget-save", "save",
                                   "Save the last edit's request (or these inputs) as JSON")
        self.load_button = _button("Load", "rewidget-load", "folder-open",
                                   "Load a request into the inputs (Rewrite applies it)")
        self.replay_button = _button("Replay", "rewidget-replay", "play",
                                     "Run the saved request (all its facts) as a new edit")
        self.delta_path = w.Text(value="facts.delta.safetensors", description="Delta",
                                 style=text, layout=w.Layout(width="320px"))
        self.delta_path.add_class("rewidget-delta-path")
        self.export_delta_button = _button("Export delta", "rewidget-export-delta", "download",
                                           "Only the low-rank factors of the applied edits")
        self.load_delta_button = _button("Load delta", "rewidget-load-delta", "upload",
                                         "Install the edits from a delta file")

    def _layout(self) -> list[w.Widget]:
        row = w.Layout(flex_flow="row wrap", align_items="center")
        label = "font-size:12px;color:var(--jp-ui-font-color1,#333)"

        def column(title: str, tip: str, area: w.Textarea) -> w.VBox:
            head = w.HTML(f"<span style='{label}' title='{_esc(tip)}'>{_esc(title)}</span>")
            return w.VBox([head, area], layout=w.Layout(flex="1 1 240px", margin="0 6px 0 0"))

        prompts = w.HBox([
            column("Paraphrases", "The same fact in other words (the panel shows whether the "
                   "edit generalises to them)", self.paraphrases),
            column("Neighbours (prompt -> true object)", "Facts about other subjects that "
                   "must not change", self.neighbours),
            column("Essence prompts", "Other properties of the subject; those that name the "
                   "subject also guard the edit against drift", self.essence),
        ], layout=w.Layout(max_width="900px", margin="4px 0 0 0"))
        objects = w.HBox([self.target, self.old, self.layer], layout=row)
        actions = w.HBox([self.check_button, self.rewrite_button,
                          w.HTML("<span style='display:inline-block;width:18px'></span>"),
                          self.undo_button, self.redo_button, self.reset_button],
                         layout=w.Layout(flex_flow="row wrap", align_items="center",
                                         margin="4px 0 0 0"))
        files = w.VBox([
            w.HBox([self.request_path, self.save_button, self.load_button, self.replay_button],
                   layout=row),
            w.HBox([self.delta_path, self.export_delta_button, self.load_delta_button],
                   layout=row),
        ])
        return [self.title, self.prompt, self.chips, self.subject, objects, prompts, actions,
                self.tasks, self.messages, self.panel, self.history, files]

    def _wire(self) -> None:
        self.prompt.observe(lambda _: self._show_tokens(keep=True), names="value")
        self.chips.observe(lambda _: self._show_subject(), names="selected")
        self.check_button.on_click(lambda _: self.check())
        self.rewrite_button.on_click(lambda _: self.rewrite())
        self.undo_button.on_click(lambda _: self.undo())
        self.redo_button.on_click(lambda _: self.redo())
        self.reset_button.on_click(lambda _: self.reset())
        self.save_button.on_click(lambda _: self.save_request())
        self.load_button.on_click(lambda _: self.load_request())
        self.replay_button.on_click(lambda _: self.replay())
        self.export_delta_button.on_click(lambda _: self.export_delta())
        self.load_delta_button.on_click(lambda _: self.load_delta())
        self.history.on_strength(self._on_strength)
        self.tasks.observe(self._on_busy, names="busy")
        for event in EVENTS:
            self.session.on(event, self._on_session)

    # -- the inputs ---------------------------------------------------------------------------
    def _show_tokens(self, keep: bool = False) -> None:
        text = self.prompt.value
        try:
            toks = self.session.tokens(text) if text else []
        except Exception as e:  # noqa: BLE001 - visible, never swallowed
            self.messages.report(e, "Reading the prompt's tokens")
            toks = []
        self.chips.set_tokens(toks, text, keep=keep)
        self._tokens_of = text  # the prompt the chips show
        self._show_subject()

    def _show_subject(self) -> None:
        sel = list(self.chips.selected)
        dim = "color:var(--jp-ui-font-color2,#777)"
        if not sel:
            hint = ("click the tokens of the subject (shift-click selects a run)"
                    if self.chips.tokens else "")
            self.subject.value = f"<span style='{dim};font-size:12px'>{hint}</span>"
            return
        text = self.prompt.value
        start, end = self.chips.spans[sel[0]][0], self.chips.spans[sel[-1]][1]
        last = self.chips.spans[sel[-1]]
        code = "font-family:var(--jp-code-font-family,monospace)"
        self.subject.value = (
            f"<span style='font-size:12px'>Subject: <b style='{code}'>"
            f"{_esc(text[start:end].strip())}</b> <span style='{dim}'>· tokens {sel[0]}–"
            f"{sel[-1]}; its key is read at the last one, "
            f"<span style='{code}'>{_esc(visible(text[last[0]:last[1]]))}</span></span></span>")

    def select_subject(self, subject: str) -> list[int]:
        """Select the tokens covering the first ``subject`` in the prompt (as clicks would)."""
        text = self.prompt.value
        if text != self._tokens_of:
            self._show_tokens(keep=True)
        start = text.find(subject) if subject else -1
        if start < 0:
            raise RewriteError(f"The subject {subject!r} does not occur in the prompt "
                               f"{text!r}.", "type the subject exactly as it appears in the "
                               "prompt, or click its tokens.")
        end = start + len(subject)
        positions = [i for i, (a, b) in enumerate(self.chips.spans) if a < end and b > start]
        self.chips.select(positions)
        return list(self.chips.selected)

    def fact(self) -> Fact:
        """The fact the inputs describe (checked; raises RewriteError with the fix)."""
        prompt = self.prompt.value
        if not prompt.strip():
            raise RewriteError("The prompt is empty.",
                               "type a prompt that mentions the subject, e.g. 'The Eiffel Tower "
                               "is located in the city of'.")
        if prompt != self._tokens_of:  # the chips must show this prompt's tokens
            self._show_tokens(keep=True)
        return self.session.fact_from_tokens(prompt, list(self.chips.selected),
                                             self.target.value, self.old.value)

    def _inputs(self) -> tuple[Fact, dict]:
        fact = self.fact()
        prompts = {"paraphrases": parse_lines(self.paraphrases.value),
                   "neighbours": parse_neighbours(self.neighbours.value),
                   "essence": parse_lines(self.essence.value)}
        return fact, prompts

    def _request(self, fact: Fact, prompts: dict, layer: str) -> FactRequest:
        """The request for ``fact`` (runs the model when the old object is on auto: worker
        thread). The old object is the original model's (W₀) continuation; essence prompts
        that name the subject join the request's drift guard."""
        s = self.session
        with s.lock, s.history.original_weights():
            req = s.request(fact, layer=layer or s.layer)
        extra = [p.replace(fact.subject, "{}", 1) for p in prompts["essence"]
                 if fact.subject in p and "{" not in p and "}" not in p]
        extra = [e for e in extra if e not in req.essence]
        if extra:
            req = dataclasses.replace(req, essence=(*req.essence, *extra))
        return req

    # -- actions ------------------------------------------------------------------------------
    def check(self) -> bool:
        """Fill the panel for the current inputs with the current weights (nothing changes)."""
        try:
            fact, prompts = self._inputs()
        except RewriteError as e:
            self.messages.report(e, "Check")
            return False
        layer = self.layer.value

        def job(progress, cancel):
            progress(0, 2, "the old object")
            req = self._request(fact, prompts, layer)
            progress(1, 2, "completions")
            self._set_panel(req, prompts)
            self._refresh_panel()
            progress(2, 2, "done")

        return self.tasks.run(f"Checking {fact.subject!r}", job)

    def rewrite(self) -> bool:
        """Find the new value for the inputs' fact and install the edit (in the background), at
        the chosen layer or, on auto, at the best layer of session.suggest."""
        try:
            fact, prompts = self._inputs()
        except RewriteError as e:
            self.messages.report(e, "Rewrite")
            return False
        s, layer = self.session, self.layer.value
        where = layer or "the suggested layer"

        def job(progress, cancel):
            progress(0, 1, "the old object")
            with s.lock:  # nothing else runs the model meanwhile (the panel swaps W₀ in)
                req = self._request(fact, prompts, layer)
                note = ""
                if layer == AUTO:
                    rows = s.suggest(req, paraphrases=prompts["paraphrases"],
                                     neighbours=prompts["neighbours"], progress=progress,
                                     cancel=cancel)
                    edit = rows[0]["edit"]
                    note = "; suggested among " + ", ".join(
                        f"{r['layer']} ({r['score']:.2f})" for r in rows[:4])
                else:
                    edit = s.compute_edit(req, progress, cancel)
                self._set_panel(edit.request, prompts)
                s.apply(edit)
            return edit, note

        def done(result, secs):
            edit, note = result
            p = [v.get("p_target") for v in edit.report.get("values", [])]
            reached = f"; p(target) when v* was found {p[0]:.2f}" if p and p[0] is not None else ""
            self.messages.success(f"Edit {self.session.history.label(edit)} installed: "
                                  f"{fact.subject} → "
                                  f"{fact.target.strip()} @ {edit.layer} in {secs:.2f} s"
                                  f"{reached}{note}.")

        return self.tasks.run(f"Rewriting {fact.subject!r} → {fact.target.strip()!r} at {where}",
                              job, done)

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
            self.messages.info(f"Reset: {n} edit(s) off, weights back to the original (Redo "
                               "brings them back)." if n else "Nothing to reset.")
        self.tasks.submit(job, "Reset")

    def save_request(self, path: str | None = None) -> None:
        """Save the last edit's request (or, before any edit, the inputs') as JSON."""
        path = self._path(path, self.request_path, "request")
        if path is None:
            return
        s = self.session
        last = s.last_edit.request if s.last_edit is not None else None
        inputs = None
        if not isinstance(last, FactRequest):
            try:
                inputs = self._inputs()
            except RewriteError as e:
                self.messages.report(e, "Saving the request")
                return
        layer = self.layer.value

        def job() -> None:
            req = last if inputs is None else self._request(*inputs, layer)
            out = s.save_request(path, req)
            self.messages.success(f"Saved the request ({len(req.facts)} fact(s) @ {req.layer}) "
                                  f"to {out}.")
        self.tasks.submit(job, "Saving the request")

    def load_request(self, path: str | None = None) -> None:
        """Load a saved request's first fact and layer into the inputs (Rewrite applies it;
        Replay runs the whole request)."""
        path = self._path(path, self.request_path, "request")
        if path is None:
            return

        def job() -> None:
            req = self.session.load_request(path)
            self.show_request(req)
            more = (f" It has {len(req.facts)} facts; Replay runs them all."
                    if len(req.facts) > 1 else "")
            self.messages.success(f"Loaded {path}: {req.facts[0].subject} → "
                                  f"{req.facts[0].target.strip()} @ {req.layer}. Press Rewrite "
                                  f"to apply.{more}")
        self.tasks.submit(job, "Loading the request")

    def show_request(self, req: FactRequest) -> None:
        """Put ``req``'s first fact and layer into the inputs."""
        f = req.facts[0]
        self.prompt.value = f.prompt  # the chips follow
        self.select_subject(f.subject)
        self.target.value, self.old.value = f.target, f.old
        if any(value == req.layer for _, value in self.layer.options):
            self.layer.value = req.layer

    def replay(self, path: str | None = None) -> bool:
        """Run a saved request (all its facts) as a new edit (background)."""
        path = self._path(path, self.request_path, "request")
        if path is None:
            return False
        s = self.session
        prompts = dict(self._panel_prompts)

        def job(progress, cancel):
            with s.lock:
                req = s.load_request(path)
                edit = s.compute_edit(req, progress, cancel)  # = s.replay(path), in two steps
                self._set_panel(req, prompts)                 # so the panel shows this request
                s.apply(edit)
            return edit

        return self.tasks.run(f"Replaying {path}", job,
                              lambda edit, secs: self.messages.success(
                                  f"Replayed {path} as edit "
                                  f"{self.session.history.label(edit)} @ {edit.layer} in "
                                  f"{secs:.2f} s."))

    def export_delta(self, path: str | None = None) -> None:
        """Write only the low-rank factors of the applied edits (safetensors)."""
        path = self._path(path, self.delta_path, "delta")
        if path is None:
            return

        def job() -> None:
            out = self.session.export_delta(path)
            self.messages.success(f"Exported {len(self.session.history)} edit(s) as a delta "
                                  f"to {out}.")
        self.tasks.submit(job, "Exporting the delta")

    def load_delta(self, path: str | None = None) -> None:
        """Install the edits stored in a delta file."""
        path = self._path(path, self.delta_path, "delta")
        if path is None or self._refuse_while_busy("load a delta"):
            return

        def job() -> None:
            edits = self.session.load_delta(path)
            self.messages.success(f"Installed {len(edits)} edit(s) from {path}.")
        self.tasks.submit(job, "Loading the delta")

    def wait(self, timeout: float = 120.0) -> bool:
        """Block until queued work and any running task are done (for scripts and tests)."""
        return self.tasks.wait(timeout)

    def close(self) -> None:
        """Stop listening to the session and close the widgets."""
        session, tasks = getattr(self, "session", None), getattr(self, "tasks", None)
        if session is not None:  # None when __init__ refused the session
            for event in EVENTS:
                session.on(event, self._on_session, remove=True)
        if tasks is not None:
            tasks.close()
        super().close()

    # -- handlers ------------------------------------------------------------------------------
    def _path(self, path: str | None, field: w.Text, what: str) -> str | None:
        path = (field.value if path is None else path).strip()
        if not path:
            self.messages.error(f"No file name for the {what}.",
                                f"type one in the {field.description} box.")
            return None
        return path

    def _on_session(self, event: str, **_: Any) -> None:
        self._mark("history", "panel")

    def _on_strength(self, index: int, value: float) -> None:
        self.tasks.submit(lambda: self.session.set_strength(index, value),
                          "Changing the strength")

    def _on_busy(self, change: dict) -> None:
        busy = change["new"]
        self.busy = busy
        for b in (self.check_button, self.rewrite_button, self.undo_button, self.redo_button,
                  self.reset_button, self.replay_button, self.load_button,
                  self.load_delta_button):
            b.disabled = busy

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
                self.messages.info(f"{name.capitalize()}: "
                                   f"{describe(edit, self.session.history)}.")
        self.tasks.submit(job, name.capitalize())

    def _preload_statistics(self) -> bool:
        s, layer = self.session, self.session.layer

        def job(progress, cancel):
            s.statistics_for([layer], progress=progress, cancel=cancel)

        def done(_, secs):
            self.messages.info(f"Statistics for {layer} ready ({secs:.1f} s; cached on disk).")

        return self.tasks.run(f"Statistics for {layer} (needed to rewrite, cached on disk)",
                              job, done)

    # -- session state → widgets (worker threads) ----------------------------------------------
    def _mark(self, *parts: str) -> None:
        """Note what is stale; one refresh job (coalesced) redraws it on the worker thread."""
        with self._dirty_lock:
            first = not self._dirty
            self._dirty.update(parts)
        if first:
            self.tasks.submit(self._refresh, "Updating the view")

    def _refresh(self) -> None:
        with self._dirty_lock:
            parts, self._dirty = self._dirty, set()
        for name, step in (("history", self._refresh_history), ("panel", self._refresh_panel)):
            if name in parts:
                try:
                    step()
                except Exception as e:  # noqa: BLE001 - one failing part must not stop others
                    self.messages.report(e, f"Updating the {name}")

    def _set_panel(self, request: FactRequest, prompts: dict) -> None:
        self._panel_request = request
        self._panel_prompts = {k: list(v) for k, v in prompts.items()}

    def _refresh_history(self) -> None:
        s = self.session
        with s.lock:
            applied = list(s.history.entries)
            undone = list(reversed(s.history.redo_stack))
        h = self.session.history
        rows = [HistoryRow(e.edit.id, describe(e.edit, h), e.edit.created, e.strength, True)
                for e in applied]
        rows += [HistoryRow(e.edit.id, describe(e.edit, h), e.edit.created, e.strength, False)
                 for e in undone]
        self.history.set_rows(rows)

    def _refresh_panel(self) -> None:
        s = self.session
        req = self._panel_request
        if req is None and s.last_edit is not None and isinstance(s.last_edit.request,
                                                                   FactRequest):
            req = s.last_edit.request
        if req is None:
            self.panel_rows = []
            self.panel.value = panel_html([])
            return
        with s.lock:
            rows = s.panel(req, **self._panel_prompts)
            n = len(s.history)
        self.panel_rows = rows
        self.panel.value = panel_html(rows, n)
