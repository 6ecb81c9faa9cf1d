"""Read a safetensors file's tensors and its metadata in one open (never unpickles).

    tensors, meta = read_safetensors("C_main_6.safetensors")
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Raises SafetensorError or OSError for unreadable files."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
