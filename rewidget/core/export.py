"""Export the edited generator: a full state_dict, or a compact delta of low-rank factors.

    save_state_dict(gen.module, "edited.safetensors")
    save_delta(history, "edits.delta.safetensors", model="dcgan-faces", fingerprint=fp)
    for layer, edit, strength in load_delta("edits.delta.safetensors", fingerprint=fp):
        history.apply(edit, strength)

Both are safetensors files: loading them never runs pickled code.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from .edits import Edit
from .errors import RewriteError
from .history import EditHistory
from .requests import EditRequest
from .safefiles import read_safetensors

DELTA_FORMAT = "rewidget.delta/1"


def save_state_dict(module: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """The module's full state_dict (with the edits installed) as safetensors."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return Path(path)


def save_delta(history: EditHistory, path: str | Path, model: str, fingerprint: str) -> Path:
    """The active edits' factors (D, Λ) and strengths; a few KB instead of the whole model."""
    tensors, entries = {}, []
    for i, entry in enumerate(history.entries):
        e = entry.edit
        tensors[f"{i}.directions"] = e.directions.detach().cpu().contiguous()
        tensors[f"{i}.factor"] = e.factor.detach().cpu().contiguous()
        entries.append({"layer": e.layer, "strength": entry.strength,
                        "context_level": e.context_level,
                        "request": e.request.to_dict() if e.request else None})
    meta = {"format": DELTA_FORMAT, "model": model, "fingerprint": fingerprint,
            "edits": json.dumps(entries)}
    save_file(tensors, str(path), metadata=meta)
    return Path(path)


def load_delta(path: str | Path, fingerprint: str | None = None) -> list[tuple[Edit, float]]:
    """Edits and strengths from a delta file; refuses a file made for another model."""
    try:
        tensors, meta = read_safetensors(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise RewriteError(f"{path} is not a readable delta file ({e}).",
                           "export it again with session.export_delta().") from e
    if meta.get("format") != DELTA_FORMAT:
        raise RewriteError(f"{path} is not a rewidget delta file (format {meta.get('format')!r}).",
                           "export it with session.export_delta().")
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise RewriteError(f"{path} was made for model {meta.get('model')!r} with other weights "
                           "than this session's generator.",
                           "load it into a session on the same model it was exported from.")
    out = []
    for i, info in enumerate(json.loads(meta["edits"])):
        req = EditRequest.from_json(info["request"]) if info.get("request") else None
        edit = Edit(info["layer"], tensors[f"{i}.directions"], tensors[f"{i}.factor"], req,
                    {"loaded_from": str(path)}, float(info.get("context_level", 1.0)))
        out.append((edit, float(info["strength"])))
    return out
