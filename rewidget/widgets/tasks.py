"""Work off the kernel's main thread: heavy tasks with progress and Cancel, light jobs in order.

    tasks = TaskRunner(messages)
    tasks.run("Collecting statistics", lambda progress, cancel: s.statistics(
        progress=progress, cancel=cancel), done=lambda result, seconds: ...)
    tasks.submit(lambda: s.add_context(3, mask))     # light: one worker thread, in order
    tasks.wait()                                     # tests and notebooks: until all is done

The kernel's main thread only receives widget messages and queues work, so it never waits on
the session lock: a Cancel click is handled while statistics are being collected. Heavy tasks
run one at a time in their own thread and first let queued light jobs finish, so a Rewrite
clicked right after a stroke sees that stroke. Every exception lands in the MessageArea.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import traitlets as t

from .messages import MessageArea

HeavyFn = Callable[[Callable[[int, int, str], None], threading.Event], Any]


class TaskRunner(w.HBox):
    """Progress bar, status text and Cancel for the one heavy task; a queue for light jobs."""

    #: True while a heavy task runs (the app disables what must not run alongside it).
    busy = t.Bool(False)
    #: What the running heavy task does ("" when idle).
    title = t.Unicode("")
    #: Seconds between progress updates sent to the browser (the last one always goes).
    min_interval = t.Float(0.1)

    def __init__(self, messages: MessageArea, **kwargs: Any) -> None:
        self.messages = messages
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0,
                                   layout=w.Layout(width="220px", margin="4px 6px 0 0"))
        self.bar.add_class("rewidget-progress")
        self.label = w.HTML("")
        self.label.add_class("rewidget-task-label")
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="warning",
                                      tooltip="Stop the running task; nothing changes",
                                      layout=w.Layout(width="90px"))
        self.cancel_button.add_class("rewidget-cancel")
        self.cancel_button.on_click(lambda _: self.cancel())
        super().__init__([self.bar, self.cancel_button, self.label], **kwargs)
        self.layout.display = "none"
        self.layout.align_items = "center"
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._tasks: deque = deque()  # heavy tasks not yet started
        self._heavy_lock = threading.Lock()
        self._running = False  # the heavy thread is taking tasks (set and cleared under the lock)
        self._started = 0.0
        self._last_report = 0.0
        self.last_seconds = 0.0  # how long the last successful heavy task took
        self._queue: queue.Queue = queue.Queue()
        self._light: threading.Thread | None = None
        self._light_lock = threading.Lock()

    # -- heavy tasks ---------------------------------------------------------------------------
    def run(self, title: str, fn: HeavyFn, done: Callable[[Any, float], Any] | None = None,
            always: Callable[[], Any] | None = None) -> bool:
        """Start ``fn(progress, cancel)`` in a thread; ``done(result, seconds)`` on success and
        ``always()`` in any case run in that thread. While another task runs, this one waits
        for it (returns False); Cancel stops only the running one."""
        with self._heavy_lock:
            self._tasks.append((title, fn, done, always))
            if self._running:
                self.messages.info(f"“{title}” starts when “{self.title}” is done.")
                return False
            self._running = True
            self._start(title)
            self._thread = threading.Thread(target=self._heavy_loop, name="rewidget-task",
                                            daemon=True)
            self._thread.start()
        return True

    def _start(self, title: str) -> None:
        self._cancel = threading.Event()
        self._started = time.perf_counter()
        self._last_report = 0.0
        with self.hold_trait_notifications():
            self.busy, self.title = True, title
        with self.bar.hold_sync():
            self.bar.value, self.bar.bar_style = 0.0, "info"
        self.label.value = f"{_esc(title)} …"
        self.cancel_button.disabled = False
        self.layout.display = "flex"

    def cancel(self) -> None:
        """Ask the running task to stop at its next check (the engine checks often)."""
        if self.busy:
            self._cancel.set()
            self.cancel_button.disabled = True
            self.label.value = f"{_esc(self.title)}: cancelling …"

    def progress(self, done: int, total: int, message: str = "") -> None:
        """A ProgressFn for the engine; throttled to ``min_interval``."""
        now = time.perf_counter()
        if done < total and now - self._last_report < self.min_interval:
            return
        self._last_report = now
        frac = done / total if total else 0.0
        secs = now - self._started
        self.bar.value = min(1.0, max(0.0, frac))
        what = f"{message}: " if message else ""
        self.label.value = (f"{_esc(self.title)} — {_esc(what)}{done:,}/{total:,} "
                            f"<span style='color:var(--jp-ui-font-color3,#888)'>({secs:.1f} s)</span>")

    def _heavy_loop(self) -> None:
        first = True  # run() already started the first task (busy at once, for the buttons)
        while True:
            with self._heavy_lock:
                if not self._tasks:
                    self._running = False
                    self.layout.display = "none"
                    with self.hold_trait_notifications():
                        self.busy, self.title = False, ""
                    return
                title, fn, done, always = self._tasks.popleft()
            if not first:
                self._start(title)
            first = False
            self._heavy(title, fn, done, always)

    def _heavy(self, title: str, fn: HeavyFn, done, always) -> None:
        try:
            self.join_light()  # strokes queued before the click reach the session first
            result = fn(self.progress, self._cancel)
            self.last_seconds = time.perf_counter() - self._started
            if done is not None:
                done(result, self.last_seconds)
        except BaseException as e:  # noqa: BLE001 - every failure must be visible
            self.messages.report(e, title)
        finally:
            if always is not None:
                try:
                    always()
                except BaseException as e:  # noqa: BLE001
                    self.messages.report(e, title)

    # -- light jobs ----------------------------------------------------------------------------
    def submit(self, fn: Callable[[], Any], doing: str = "") -> None:
        """Run ``fn()`` on the light worker thread, after the jobs queued before it."""
        self._queue.put((fn, doing))
        with self._light_lock:
            if self._light is None or not self._light.is_alive():
                self._light = threading.Thread(target=self._light_loop, name="rewidget-light",
                                               daemon=True)
                self._light.start()

    def close(self) -> None:
        """Let the light worker thread end once its queue is done (heavy tasks finish)."""
        self._queue.put((None, ""))
        super().close()

    def _light_loop(self) -> None:
        while True:
            fn, doing = self._queue.get()
            if fn is None:
                self._queue.task_done()
                return
            try:
                fn()
            except BaseException as e:  # noqa: BLE001
                self.messages.report(e, doing)
            finally:
                self._queue.task_done()

    def join_light(self, timeout: float | None = None) -> bool:
        """Wait until the light queue is empty and its last job finished."""
        end = None if timeout is None else time.perf_counter() + timeout
        if threading.current_thread() is self._light:
            return True  # a light job waiting for itself would never return
        while self._queue.unfinished_tasks:
            if end is not None and time.perf_counter() > end:
                return False
            time.sleep(0.005)
        return True

    def wait(self, timeout: float = 120.0) -> bool:
        """Block until no heavy task runs and no light job is queued; False on timeout."""
        end = time.perf_counter() + timeout
        while True:
            th = self._thread
            if th is not None and th.is_alive():
                th.join(max(0.0, end - time.perf_counter()))
                if th.is_alive():
                    return False
            if not self.join_light(max(0.0, end - time.perf_counter())):
                return False
            th = self._thread
            if (th is None or not th.is_alive()) and not self._queue.unfinished_tasks:
                return True


def _esc(text: str) -> str:
    import html

    return html.escape(text)
