"""Export the edited generator: a full state_dict, or a compact delta of low-rank factors.

    save_state_dict(gen.module, "edited.safetensors")
    save_delta(history, "edits.delta.safetensors", model="dcgan-faces", fingerprint=fp)
    for edit, strength in load_delta("edits.delta.safetensors", fingerprint=fp, model=name):
        history.apply(edit, strength)        # or history.apply_all(...): all or none

Both are safetensors files: loading them never runs pickled code. Both are written atomically
(safefiles.atomic_write): a full disk or a crash leaves an older file intact. A loaded delta is
checked entry by entry (format, model, fingerprint, tensors present, real and finite, shapes,
strength in [0, 1], at most MAX_DELTA_EDITS edits) before anything is returned; the history
then checks each edit against its layer before installing any.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from .edits import Edit
from .errors import RewriteError
from .history import EditHistory
from .requests import EditRequest
from .safefiles import atomic_write, read_safetensors, user_path

DELTA_FORMAT = "rewidget.delta/1"
MAX_DELTA_EDITS = 1_000
MAX_DELTA_BYTES = 256 << 20  # factors of a thousand edits are a few MB


def save_state_dict(module: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """The module's full state_dict (with the edits installed) as safetensors."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta),
                        "weights file")


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
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta),
                        "delta file")


def load_delta(path: str | Path, fingerprint: str | None = None,
               model: str | None = None) -> list[tuple[Edit, float]]:
    """Edits and strengths from a delta file; refuses a file made for another model (by
    ``fingerprint`` and, when given, ``model`` name) and any malformed entry."""
    path = user_path(path, "delta file")
    fix = "export it again with session.export_delta()."
    try:
        tensors, meta = read_safetensors(path, max_bytes=MAX_DELTA_BYTES)
    except RewriteError as e:
        raise RewriteError(f"{path} is not a readable delta file ({e.problem}).", fix) from e
    except (SafetensorError, OSError, ValueError) as e:
        raise RewriteError(f"{path} is not a readable delta file ({e}).", fix) from e
    if meta.get("format") != DELTA_FORMAT:
        raise RewriteError(f"{path} is not a rewidget delta file (format {meta.get('format')!r}).",
                           "export it with session.export_delta().")
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise RewriteError(f"{path} was made for model {meta.get('model')!r} with other weights "
                           "than this session's generator.",
                           "load it into a session on the same model it was exported from.")
    if model is not None and meta.get("model") != model:
        raise RewriteError(f"{path} was made for model {meta.get('model')!r}, not {model!r}.",
                           "load it into a session on the model it was exported from.")
    try:
        infos = json.loads(meta.get("edits", ""))
    except (ValueError, RecursionError) as e:
        raise RewriteError(f"{path} has an unreadable list of edits ({e}).", fix) from e
    if not isinstance(infos, list) or len(infos) > MAX_DELTA_EDITS:
        raise RewriteError(f"{path} does not hold a list of at most {MAX_DELTA_EDITS} edits.", fix)
    out = []
    for i, info in enumerate(infos):
        where = f"{path}, edit {i}"
        if not isinstance(info, dict) or not isinstance(info.get("layer"), str):
            raise RewriteError(f"{where}: the entry has no layer name.", fix)
        strength, level = info.get("strength"), info.get("context_level", 1.0)
        for name, v in (("strength", strength), ("context_level", level)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise RewriteError(f"{where}: {name} is {v!r}, not a finite number.", fix)
        if not 0.0 <= strength <= 1.0:
            raise RewriteError(f"{where}: strength {strength!r} is outside [0, 1].", fix)
        factors = []
        for name in ("directions", "factor"):
            t = tensors.get(f"{i}.{name}")
            if t is None:
                raise RewriteError(f"{where}: the tensor {i}.{name} is missing.", fix)
            if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
                raise RewriteError(f"{where}: {name} is not a finite float tensor "
                                   f"({t.dtype}).", fix)
            factors.append(t)
        if factors[0].dim() != 2 or factors[0].shape[1] < 1:
            raise RewriteError(f"{where}: directions have shape {tuple(factors[0].shape)}, "
                               "expected (C_in, rank).", fix)
        try:
            req = EditRequest.from_json(info["request"]) if info.get("request") else None
        except RewriteError as e:
            raise RewriteError(f"{where}: its request is invalid ({e.problem}).", fix) from e
        edit = Edit(info["layer"], factors[0], factors[1], req, {"loaded_from": str(path)},
                    float(level))
        out.append((edit, float(strength)))
    return out
