"""Run small dense linear algebra on one thread.

    with serial():
        u, s, _ = torch.linalg.svd(k)      # (C_in, n), n a few hundred

LAPACK's SVD/eigh on matrices of a few hundred rows is made of many short parallel regions.
With two threads on a machine where another process holds a core, every region waits for a
descheduled thread: on this project's 2-core machine an SVD of a (512, 60) matrix took 487 ms
on two threads and 1.8 ms on one (eigh of 256×256: 372 ms vs 5 ms). Big convolutions keep
all threads; only the small factorizations go through here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_lock = threading.Lock()
_depth = 0
_saved = 1


@contextmanager
def serial() -> Iterator[None]:
    """torch's intra-op threads set to 1 inside the block (re-entrant, restored after)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                torch.set_num_threads(_saved)
