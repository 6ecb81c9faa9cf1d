"""The app's message area: what happened, what went wrong and how to fix it.

    msgs = MessageArea()
    msgs.info("Edit #1 installed.")
    msgs.report(exc)              # RewriteError: problem + fix; Cancelled: a note; else traceback
    msgs.last, msgs.kind          # the newest message as plain text, and its kind

Errors raised in widget callbacks or worker threads would otherwise vanish into the kernel log;
everything the app catches lands here, newest first, the last few kept.
"""

from __future__ import annotations

import html
import threading
import time
import traceback
from typing import Any

import ipywidgets as w
import traitlets as t

from ..core.errors import Cancelled, RewriteError

_STYLE = {
    "info": ("#1f5f8b", "#eef6fc", "ℹ"),
    "success": ("#1e6b30", "#eefaf0", "✓"),
    "warning": ("#7a5200", "#fff8e6", "!"),
    "error": ("#9b1c1c", "#fdeeee", "✗"),
}


class MessageArea(w.VBox):
    """Newest message first; errors in red with their fix; an ✕ clears the list."""

    #: The newest message as plain text ("" when there is none).
    last = t.Unicode("")
    #: Kind of the newest message: "", "info", "success", "warning" or "error".
    kind = t.Unicode("")
    #: How many messages stay visible.
    keep = t.Int(4)

    def __init__(self, **kwargs: Any) -> None:
        self._html = w.HTML("")
        self._html.add_class("rewidget-messages")
        self._clear = w.Button(icon="times", tooltip="Clear messages",
                               layout=w.Layout(width="28px", height="24px", padding="0"))
        self._clear.on_click(lambda _: self.clear())
        self._items: list[tuple[str, str, str, int]] = []  # (kind, html body, time, count)
        self._lock = threading.Lock()  # messages come from the worker threads too
        super().__init__([w.HBox([self._html, self._clear],
                                 layout=w.Layout(align_items="flex-start"))], **kwargs)
        self._render()

    # -- adding messages ------------------------------------------------------------------
    def info(self, text: str) -> None:
        self._add("info", html.escape(text), text)

    def success(self, text: str) -> None:
        self._add("success", html.escape(text), text)

    def warn(self, text: str) -> None:
        self._add("warning", html.escape(text), text)

    def error(self, problem: str, fix: str = "", details: str = "") -> None:
        body = f"<b>{html.escape(problem)}</b>"
        if fix:
            body += f"<br>Fix: {html.escape(fix)}"
        if details:
            body += (f"<details><summary>details</summary><pre style='white-space:pre-wrap;"
                     f"font-size:11px;margin:0'>{html.escape(details)}</pre></details>")
        self._add("error", body, f"{problem} Fix: {fix}" if fix else problem)

    def report(self, exc: BaseException, doing: str = "") -> None:
        """Show an exception: RewriteError with its fix, Cancelled as a note, others in full."""
        prefix = f"{doing}: " if doing else ""
        if isinstance(exc, Cancelled):
            self.warn(f"{prefix}cancelled; nothing was changed.")
        elif isinstance(exc, RewriteError):
            self.error(prefix + exc.problem, exc.fix)
        else:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.error(f"{prefix}unexpected {type(exc).__name__}: {exc}",
                       "this is a bug in rewidget or the model; the details say where.", tb)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            with self.hold_trait_notifications():
                self.last, self.kind = "", ""
            self._render()

    # -- internals ----------------------------------------------------------------------------
    def _add(self, kind: str, body: str, plain: str) -> None:
        with self._lock:
            stamp = time.strftime("%H:%M:%S")
            if self._items and self._items[0][:2] == (kind, body):
                # the same message again: one line with a count and the new time, not a column
                # of copies pushing the others out
                self._items[0] = (kind, body, stamp, self._items[0][3] + 1)
            else:
                self._items.insert(0, (kind, body, stamp, 1))
            del self._items[self.keep:]
            with self.hold_trait_notifications():
                self.last, self.kind = plain, kind
            self._render()

    def _render(self) -> None:
        rows = []
        for i, (kind, body, stamp, count) in enumerate(self._items):
            fg, bg, icon = _STYLE[kind]
            fade = "" if i == 0 else "opacity:.6;"
            times = f" <b>(×{count})</b>" if count > 1 else ""
            rows.append(f"<div class='rewidget-msg rewidget-msg-{kind}' style='{fade}color:{fg};"
                        f"background:{bg};border-left:3px solid {fg};padding:2px 8px;"
                        f"margin:1px 0;font-size:12px;line-height:16px'>{icon} "
                        f"<span style='color:#5f5f5f'>{stamp}</span> {body}{times}</div>")
        self._html.value = "".join(rows)
        self._clear.layout.visibility = "visible" if rows else "hidden"
