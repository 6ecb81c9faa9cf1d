"""Progress bars for headless calls: long work shows where it is without a callback.

    s = RewriteSession("dcgan-faces")          # s.statistics() draws a bar
    s = RewriteSession("dcgan-faces", quiet=True)   # ... or not

A call given its own ``progress`` callback (the app's) draws no bar. In a notebook or IPython
(IPython already imported) the bar is tqdm's notebook widget, elsewhere tqdm's text bar on
stderr; the engine itself never imports a widget library for it.
"""

from __future__ import annotations

import sys
from typing import Any


class Bar:
    """A ``ProgressFn`` that draws a tqdm bar, opened on the first report and closed when the
    work reports done (or when used as a context manager, on exit)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._bar: Any = None

    def __call__(self, done: int, total: int, message: str) -> None:
        if self._bar is None and done >= total:
            return  # done at once (read from the disk cache): nothing to show
        if self._bar is None:
            if "IPython" in sys.modules:
                from tqdm.auto import tqdm
            else:
                from tqdm import tqdm
            self._bar = tqdm(total=max(int(total), 1), desc=self.title, leave=False,
                             dynamic_ncols=True)
        bar = self._bar
        bar.total = max(int(total), 1)
        bar.n = min(int(done), bar.total)
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
