"""Progress reporting and cancellation for long work.

    def show(done, total, message):
        print(f"{message}: {done}/{total}")
    stop = threading.Event()
    collect_second_moment(gen, "main.6", n=10_000, progress=show, cancel=stop)

``progress`` is any callable ``(done, total, message)``; ``cancel`` is anything with
``is_set()`` (a ``threading.Event``). Both are optional everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .errors import Cancelled

ProgressFn = Callable[[int, int, str], None]


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


def report(progress: ProgressFn | None, done: int, total: int, message: str) -> None:
    if progress is not None:
        progress(done, total, message)


def check_cancel(cancel: CancelToken | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} was cancelled; nothing was changed.")
