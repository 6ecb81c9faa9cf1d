"""Adversarial suite (issue 10): no bad file runs code, no failed call leaves half a change, no
bad input gets a raw exception.

Every case in CASES is an attack on a session that already holds an applied edit, an undone one,
selections and a keep region; each must raise a RewriteError that says how to fix it AND leave
the weights (every tensor of the state_dict, bit for bit), the history (applied and undone) and
the selections exactly as they were. The tests after CASES cover what must *work* despite a
fault: caches that cannot be written, listeners that raise, weights changed by another thread
or session during statistics, full disks, Cancel. A few run on the real faces model.
"""

from __future__ import annotations

import base64
import io
import json
import os
import resource
import signal
import struct
import tempfile
import threading
import time
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from rewidget import RewriteError, RewriteSession
from rewidget.core.edits import Edit
from rewidget.core.errors import CacheWarning, Cancelled, ListenerWarning
from rewidget.core.export import DELTA_FORMAT
from rewidget.core.masks import MAX_DATA_URL_CHARS, mask_from_data_url, mask_to_data_url
from rewidget.core.requests import EditRequest, Paste, Sample, Selection, from_paper_json
from rewidget.core.safefiles import atomic_write
from rewidget.core.statistics import (
    _checksum,
    cache_key,
    cache_path,
    cached_second_moment,
    collect_second_moment,
)
from rewidget.models import from_module, load_tiny
from rewidget.models.tiny import build_tiny

from .conftest import box

BOX = box(32, 8, 20, 8, 20)
KEEP = box(32, 0, 6, 0, 6)


# -- the session under attack, and what must not change ---------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small ops on one thread: on a loaded 2-core machine two threads made this file 5× slower
    (see rewidget/core/serial.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _select(s):
    s.add_context(1, BOX)
    s.set_copy(2, BOX)
    s.set_paste(1, (2, 2))
    return s


@pytest.fixture(scope="module")
def edits():
    """Two edits of the tiny model (main.9, main.7), solved once: edits are data."""
    s = _select(RewriteSession("tiny", layer="main.9", stats_samples=400))
    e9 = s.compute_edit()
    s.set_layer("main.7")
    return e9, s.compute_edit()


@pytest.fixture
def s(edits):
    """A tiny session with an applied edit (main.9), an undone one (main.7), selections and a
    keep region: the state every failed call must leave alone."""
    s = _select(RewriteSession("tiny", layer="main.9", stats_samples=400))
    s.apply(edits[0])
    s.apply(edits[1])
    s.undo()
    s.set_keep(3, KEEP)
    return s


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).clone()


def state(s) -> dict:
    def sel(x):
        return x.to_json() if x is not None else None

    def paste(p):
        return (p.sample.to_json(), p.offset) if p is not None else None

    return {
        "weights": {k: (v.dtype, tuple(v.shape), _bits(v))
                    for k, v in s.gen.module.state_dict().items()},
        "history": [(e.edit.id, e.strength) for e in s.history.entries],
        "redo": [e.edit.id for e in s.history.redo_stack],
        "selections": ([sel(c) for c in s.context], sel(s.copy), paste(s.paste),
                       [(sel(c), paste(p)) for c, p in s.more_pastes], [sel(k) for k in s.keep],
                       s.protect, s.layer, s.rank, s.solver, s.direction_rule,
                       [g.to_json() for g in s.grid], s.stats_samples),
    }


def assert_unchanged(s, before: dict) -> None:
    after = state(s)
    assert after["history"] == before["history"] and after["redo"] == before["redo"]
    assert after["selections"] == before["selections"]
    assert after["weights"].keys() == before["weights"].keys()
    for k, (dtype, shape, bits) in before["weights"].items():
        d2, s2, b2 = after["weights"][k]
        assert (d2, s2) == (dtype, shape) and torch.equal(b2, bits), k


# -- helpers that build bad inputs ---------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width × height and holds no pixels (a bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (32, 32), 255).save(buf, fmt)
    return buf.getvalue()


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n"
       b"(rewidget must never run this) print\nshowpage\n%%EOF\n")


def request_text(s, **changes) -> str:
    d = s.request().to_dict()
    for path, value in changes.items():
        node, keys = d, path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        node[int(last) if isinstance(node, list) else last] = value
    return json.dumps(d)


def load_request_text(s, tmp: Path, text: str | bytes) -> None:
    """The app's Load: read the file, then take its selections into the session."""
    f = tmp / "request.json"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    s.use_request(s.load_request(f))


def replay_text(s, tmp: Path, text: str) -> None:
    f = tmp / "request.json"
    f.write_text(text)
    s.replay(f)


def good_factors(s) -> tuple[torch.Tensor, torch.Tensor]:
    e = s.history.entries[0].edit
    return e.directions.clone(), e.factor.clone()


def write_delta(s, path: Path, entries, **meta) -> Path:
    """A delta file by hand: entries are (layer, directions, factor, strength)."""
    tensors, infos = {}, []
    for i, (layer, d, f, strength) in enumerate(entries):
        if d is not None:
            tensors[f"{i}.directions"] = d.contiguous()
        if f is not None:
            tensors[f"{i}.factor"] = f.contiguous()
        infos.append({"layer": layer, "strength": strength, "context_level": 1.0,
                      "request": None})
    header = {"format": DELTA_FORMAT, "model": s.gen.name, "fingerprint": s.fingerprint,
              "edits": json.dumps(infos), **meta}
    save_file(tensors, str(path), metadata=header)
    return path


def load_delta_with(s, tmp: Path, entries, **meta) -> None:
    s.load_delta(write_delta(s, tmp / "d.delta.safetensors", entries, **meta))


def scaled(s, k: float):
    d, f = good_factors(s)
    return [("main.9", d, f * k, 1.0)]


def with_nan(s):
    d, f = good_factors(s)
    f.view(-1)[3] = float("nan")
    return [("main.9", d, f, 1.0)]


def second_bad(s):
    d, f = good_factors(s)
    # main.7's factor has another shape than main.9's
    return [("main.9", d, f, 1.0), ("main.7", d.clone(), f.clone(), 1.0)]


def edit_with(s, **changes) -> Edit:
    d, f = good_factors(s)
    fields = {"layer": "main.9", "directions": d, "factor": f, "request": None} | changes
    return Edit(**fields)


def paper(s, **changes) -> dict:
    url = mask_to_data_url(BOX)
    obj = {"key": [[0, url]], "object": [1, url], "paste": [0, url]} | changes
    return obj


def big_sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: no disk used
    return path


# -- the attacks: (call, message), each refused with the session unchanged ---------------------------
A = pytest.param
CASES = [
    # masks
    A(lambda s, p: s.add_context(3, np.zeros((32, 32))), "empty", id="mask-empty"),
    A(lambda s, p: s.add_context(3, np.ones(32)), "2-D", id="mask-1d"),
    A(lambda s, p: s.add_context(3, np.full((32, 32), np.nan)), "NaN", id="mask-nan"),
    A(lambda s, p: s.add_context(3, np.full((32, 32), 2.0)), r"\[0, 1\]", id="mask-range"),
    A(lambda s, p: s.add_context(3, box(64, 8, 20, 8, 20)), "stretched", id="mask-64-on-32"),
    A(lambda s, p: s.add_context(3, box(16, 2, 9, 2, 9)), "stretched", id="mask-16-on-32"),
    A(lambda s, p: s.add_context(3, BOX // 255), "0 and 1", id="mask-uint8-01"),
    A(lambda s, p: s.add_context(3, torch.ones(32, 32, device="meta")), "meta", id="mask-meta"),
    A(lambda s, p: s.add_context(3, np.ones((32, 32), complex)), "complex", id="mask-complex"),
    A(lambda s, p: s.add_context(3, np.array([[None] * 32] * 32)), "object", id="mask-object"),
    A(lambda s, p: s.add_context(3, None), "None", id="mask-none"),
    A(lambda s, p: s.add_context(3, "everything"), "array", id="mask-str"),
    A(lambda s, p: s.add_context(3, [[1.0, 0.5], [1.0]]), "rectangular", id="mask-ragged"),
    A(lambda s, p: s.add_context(3, np.broadcast_to(np.uint8(255), (5000, 5000))), "4096",
      id="mask-huge"),
    A(lambda s, p: s.set_copy(3, box(64, 8, 20, 8, 20)), "copy mask .* stretched",
      id="copy-mask-size"),
    A(lambda s, p: s.set_keep(4, box(64, 8, 20, 8, 20)), "keep mask .* stretched",
      id="keep-mask-size"),
    A(lambda s, p: s.add_paste(5, (1, 1), mask=box(16, 2, 9, 2, 9)), "stretched",
      id="paste-mask-size"),
    A(lambda s, p: s.set_context(1, box(64, 8, 20, 8, 20)), "stretched", id="set-context-size"),
    A(lambda s, p: s.channel_heatmaps(1, box(64, 8, 20, 8, 20)), "stretched",
      id="heatmap-mask-size"),
    # seeds and latents
    A(lambda s, p: s.add_context(True, BOX), "not an integer", id="seed-bool"),
    A(lambda s, p: s.add_context(2**64, BOX), r"2\*\*64", id="seed-2**64"),
    A(lambda s, p: s.add_context(-1, BOX), r"outside", id="seed-negative"),
    A(lambda s, p: s.add_context(3.0, BOX), "not an integer", id="seed-float"),
    A(lambda s, p: s.add_context("3", BOX), "not an integer", id="seed-str"),
    A(lambda s, p: s.add_context(None, BOX), "exactly one", id="seed-none"),
    A(lambda s, p: s.set_grid([0, 2**64]), r"2\*\*64", id="grid-seed-2**64"),
    A(lambda s, p: s.set_grid([]), "at least one", id="grid-empty"),
    A(lambda s, p: s.set_grid(range(5000)), "1,024", id="grid-too-many"),
    A(lambda s, p: s.set_grid("0-15"), "list of samples", id="grid-str"),
    A(lambda s, p: s.add_context(s.gen.latents([1, 3]), BOX), "one sample",
      id="latent-batch-as-one-sample"),
    A(lambda s, p: s.set_paste(s.gen.latents([4, 5]), (1, 1)), "one sample",
      id="paste-latent-batch"),
    A(lambda s, p: s.add_context(torch.zeros(7), BOX), "do not fit", id="latent-shape"),
    A(lambda s, p: s.add_context(torch.zeros(16, device="meta"), BOX), "meta",
      id="latent-meta"),
    A(lambda s, p: s.add_context(torch.full((16,), float("inf")), BOX), "NaN or Inf",
      id="latent-inf"),
    A(lambda s, p: s.add_context(torch.zeros(16, dtype=torch.complex64), BOX), "complex",
      id="latent-complex"),
    A(lambda s, p: Sample(latent="abc"), "tensor or array", id="latent-str"),
    A(lambda s, p: s.render([torch.zeros(7)]), "do not fit", id="render-latent-shape"),
    A(lambda s, p: s.images([np.float32(1.5)]), "not an integer", id="render-float-seed"),
    # offsets
    A(lambda s, p: s.set_paste(1, "12"), "two numbers", id="offset-str"),
    A(lambda s, p: s.set_paste(1, ("1", "2")), "number", id="offset-str-pair"),
    A(lambda s, p: s.set_paste(1, (1, 2, 3)), "two numbers", id="offset-three"),
    A(lambda s, p: s.set_paste(1, (np.nan, 0)), "NaN or Inf", id="offset-nan"),
    A(lambda s, p: s.set_paste(1, (True, False)), "number", id="offset-bool"),
    A(lambda s, p: s.set_paste(1, (1e300, 0)), "outside", id="offset-huge"),
    A(lambda s, p: s.set_paste(1, 5), "two numbers", id="offset-int"),
    # layers, ranks, options, numbers
    A(lambda s, p: s.set_layer("nope"), "Unknown layer", id="layer-unknown"),
    A(lambda s, p: s.set_layer(None), "Unknown layer", id="layer-none"),
    A(lambda s, p: s.set_layer(["main.9"]), "Unknown layer", id="layer-list"),
    A(lambda s, p: s.rewrite(s.request(rank=0)), "positive integer", id="rank-0"),
    A(lambda s, p: s.rewrite(s.request(rank="2")), "positive integer", id="rank-str"),
    A(lambda s, p: s.rewrite(s.request(rank=10_000)), "outside 1..", id="rank-huge"),
    A(lambda s, p: s.rewrite(s.request(solver="magic")), "Unknown solver", id="solver-unknown"),
    A(lambda s, p: s.rewrite(s.request(steps=5)), "does not apply", id="option-unknown"),
    A(lambda s, p: s.rewrite(s.request(ridge=-1.0)), "non-negative", id="ridge-negative"),
    A(lambda s, p: s.rewrite(s.request(ridge=float("nan"))), "non-negative", id="ridge-nan"),
    A(lambda s, p: s.rewrite(s.request(solver="iterative", steps=0)), "steps", id="steps-0"),
    A(lambda s, p: s.rewrite(s.request(solver="iterative", steps=10**9)), "100,000",
      id="steps-1e9"),
    A(lambda s, p: s.rewrite(s.request(solver="iterative", steps=2.5)), "integer",
      id="steps-float"),
    A(lambda s, p: s.rewrite(s.request(solver="iterative", lr=1e12)), "lr", id="lr-huge"),
    A(lambda s, p: s.rewrite(s.request(solver="iterative", lr=0.0)), "lr", id="lr-zero"),
    A(lambda s, p: s.rewrite(s.request(solver="iterative", lr="0.1")), "number", id="lr-str"),
    A(lambda s, p: s.rewrite(s.request(solver="iterative", steps=1, lr=1e-6)), "never improved",
      id="solve-that-never-moves"),
    A(lambda s, p: s.rewrite(s.request(ridge=1e6)), "would not move the goal",
      id="ridge-absurd"),
    A(lambda s, p: s.set_strength(0, "0.5"), "number", id="strength-str"),
    A(lambda s, p: s.set_strength(0, 1.5), "outside", id="strength-1.5"),
    A(lambda s, p: s.set_strength(0, None), "number", id="strength-none"),
    A(lambda s, p: s.set_strength(0, float("nan")), "finite", id="strength-nan"),
    A(lambda s, p: s.set_strength(5, 0.5), "no applied edit", id="strength-index-range"),
    A(lambda s, p: s.set_strength("0", 0.5), "integer", id="strength-index-str"),
    A(lambda s, p: s.rewrite(strength=-0.1), "outside", id="rewrite-strength"),
    A(lambda s, p: s.set_protect(1.0), r"\[0, 1\)", id="protect-1"),
    A(lambda s, p: s.set_protect("0.5"), "number", id="protect-str"),
    A(lambda s, p: s.remove_context("0"), "integer", id="remove-context-str"),
    A(lambda s, p: s.search(pool="abc"), "not a count", id="pool-str"),
    A(lambda s, p: s.search(pool=0), "outside", id="pool-0"),
    A(lambda s, p: s.search(pool=10**9), "outside", id="pool-1e9"),
    A(lambda s, p: s.search(pool=[1, 2**64]), r"2\*\*64", id="pool-seed-2**64"),
    A(lambda s, p: s.search(pool=100, top=0), "outside", id="top-0"),
    A(lambda s, p: s.statistics(samples=-1), "outside", id="stats-samples-negative"),
    A(lambda s, p: s.statistics(samples="many"), "integer", id="stats-samples-str"),
    A(lambda s, p: s.on("edit", "print"), "not callable", id="listener-not-callable"),
    A(lambda s, p: s.on("nope", print), "Unknown event", id="event-unknown"),
    A(lambda s, p: s.preview("edit"), "not an Edit", id="preview-str"),
    A(lambda s, p: s.commit(s.history.entries[0].edit), "not a suggested", id="commit-edit"),
    A(lambda s, p: RewriteSession("tiny", stats_samples="many"), "sample count",
      id="session-stats-str"),
    A(lambda s, p: RewriteSession("tiny", rank=0), "outside", id="session-rank-0"),
    A(lambda s, p: RewriteSession("tiny", device="meta"), "meta", id="session-device-meta"),
    A(lambda s, p: RewriteSession("tiny", device="cuda:7"), "not available",
      id="session-device-missing"),
    A(lambda s, p: RewriteSession("tiny", device="gpu"), "not a torch device",
      id="session-device-bogus"),
    A(lambda s, p: RewriteSession(123), "not a model name", id="session-model-int"),
    A(lambda s, p: RewriteSession("no-such-model"), "Unknown model", id="session-model-unknown"),
    # requests: masks inside them (PNG only, size checked before decoding)
    A(lambda s, p: load_request_text(s, p, request_text(
        s, context__0__mask=data_url(EPS))), "EPS", id="request-eps-as-png"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, context__0__mask=data_url(image_bytes("GIF")))), "not a PNG", id="request-gif-as-png"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, copy__mask=data_url(image_bytes("JPEG"), "image/jpeg"))), "not a PNG data URL",
      id="request-jpeg"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, context__0__mask=data_url(png_header(12000, 12000)))), "12000×12000",
      id="request-png-bomb"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, context__0__mask="data:image/png;base64,@@@@")), "base64", id="request-bad-base64"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, context__0__mask=data_url(png_header(64, 64)[:20]))), "not a PNG",
      id="request-truncated-png"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, context__0__mask=data_url(png_header(64, 64)))), "could not be decoded",
      id="request-png-without-pixels"),
    A(lambda s, p: mask_from_data_url("data:image/png;base64," + "A" * (MAX_DATA_URL_CHARS + 4)),
      "characters", id="data-url-too-long"),
    # requests: values inside them
    A(lambda s, p: load_request_text(s, p, request_text(s, model="dcgan-faces")),
      "made for model", id="app-load-other-model"),
    A(lambda s, p: load_request_text(s, p, request_text(s, layer="main.99")), "Unknown layer",
      id="app-load-unknown-layer"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, context__0__mask=mask_to_data_url(box(64, 8, 20, 8, 20)))), "stretched",
      id="app-load-mask-size"),
    A(lambda s, p: replay_text(s, p, request_text(s, model="dcgan-faces")), "made for model",
      id="replay-other-model"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, context__0__sample={"seed": 2**64})), r"2\*\*64", id="request-seed-2**64"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, context__0__sample={"seed": True})), "seed", id="request-seed-bool"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, context__0__sample={"latent": {"shape": [3], "float32_base64": base64.b64encode(
            np.zeros(3, np.float32).tobytes()).decode()}})), "do not fit",
      id="request-latent-shape"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, context__0__sample={"latent": {"shape": [-1], "float32_base64": ""}})),
      "could not be decoded", id="request-latent-negative-shape"),
    A(lambda s, p: load_request_text(s, p, request_text(s, paste__offset="12")), "offset",
      id="request-offset-str"),
    A(lambda s, p: load_request_text(s, p, request_text(s, paste__offset=5)), "offset",
      id="request-offset-int"),
    A(lambda s, p: load_request_text(s, p, request_text(s, stats_samples=0)), "sample count",
      id="request-stats-0"),
    A(lambda s, p: load_request_text(s, p, request_text(
        s, solver="iterative", solver_options={"steps": 0, "lr": 0.2})), "steps",
      id="request-steps-0"),
    A(lambda s, p: load_request_text(s, p, request_text(s, rank=True)), "rank",
      id="request-rank-bool"),
    A(lambda s, p: load_request_text(s, p, "[" * 100_000), "not valid JSON",
      id="request-deep-json"),
    A(lambda s, p: load_request_text(s, p, b"\x89PNG\r\n\x1a\n\xff\xfe binary"), "not a text",
      id="request-binary-file"),
    A(lambda s, p: s.load_request(p / "missing.json"), "Cannot read", id="request-missing"),
    A(lambda s, p: s.load_request(p), "folder", id="request-is-folder"),
    A(lambda s, p: s.load_request(big_sparse_file(p / "huge.json", (64 << 20) + 1)), "bytes",
      id="request-too-big"),
    A(lambda s, p: s.load_request("~/surely-missing-rewidget-request.json"),
      str(Path.home()), id="request-tilde-expanded"),
    A(lambda s, p: s.load_request(None), "not a file path", id="request-path-none"),
    A(lambda s, p: s.use_request("request.json"), "not an EditRequest", id="use-request-str"),
    A(lambda s, p: s.compute_edit(EditRequest(layer="main.9", context=[BOX])), "Selection",
      id="request-context-not-selection"),
    A(lambda s, p: EditRequest(layer=9), "string", id="request-layer-int"),
    A(lambda s, p: s.save_request(p / "r.json", request={"layer": "main.9"}),
      "not an EditRequest", id="save-request-dict"),
    # paper-tool requests
    A(lambda s, p: from_paper_json(paper(s), latents="abc", layer="main.9"), "tensor or array",
      id="paper-latents-str"),
    A(lambda s, p: from_paper_json(paper(s), latents=torch.zeros(2, 16, device="meta"),
                                   layer="main.9"), "meta", id="paper-latents-meta"),
    A(lambda s, p: from_paper_json(paper(s, object=[True, mask_to_data_url(BOX)]),
                                   latents=torch.zeros(2, 16), layer="main.9"), "imgnum",
      id="paper-imgnum-bool"),
    A(lambda s, p: from_paper_json(paper(s, key="x"), latents=torch.zeros(2, 16),
                                   layer="main.9"), "'key'", id="paper-key-str"),
    A(lambda s, p: from_paper_json(paper(s, key=[[0, data_url(EPS)]]),
                                   latents=torch.zeros(2, 16), layer="main.9"), "EPS",
      id="paper-eps"),
    A(lambda s, p: s.import_paper_request(
        write_delta(s, p / "x.safetensors", scaled(s, 1.0)), torch.zeros(2, 16)), "not a text",
      id="paper-file-binary"),
    # deltas: checked whole before anything is installed
    A(lambda s, p: load_delta_with(s, p, with_nan(s)), "finite", id="delta-nan-factor"),
    A(lambda s, p: load_delta_with(s, p, scaled(s, 1e20)), "weight", id="delta-factor-1e20"),
    A(lambda s, p: load_delta_with(s, p, scaled(s, 1e6)), "at most", id="delta-factor-1e6"),
    A(lambda s, p: load_delta_with(s, p, second_bad(s)), "not installed",
      id="delta-second-edit-invalid"),
    A(lambda s, p: load_delta_with(s, p, [("main.9", *good_factors(s), 2.0)]), "strength",
      id="delta-strength-2"),
    A(lambda s, p: load_delta_with(s, p, [("main.9", *good_factors(s), "1")]), "strength",
      id="delta-strength-str"),
    A(lambda s, p: load_delta_with(s, p, [("main.9", good_factors(s)[0], None, 1.0)]),
      "missing", id="delta-missing-tensor"),
    A(lambda s, p: load_delta_with(s, p, [("main.99", *good_factors(s), 1.0)]),
      "Unknown layer", id="delta-unknown-layer"),
    A(lambda s, p: load_delta_with(s, p, [("main.9", good_factors(s)[0].long(),
                                           good_factors(s)[1], 1.0)]), "float",
      id="delta-int-directions"),
    A(lambda s, p: load_delta_with(s, p, scaled(s, 1.0), fingerprint="0" * 64),
      "other weights", id="delta-other-fingerprint"),
    A(lambda s, p: load_delta_with(s, p, scaled(s, 1.0), edits="{not json"), "unreadable",
      id="delta-edits-corrupt"),
    A(lambda s, p: load_delta_with(s, p, scaled(s, 1.0), format="other/1"), "not a rewidget",
      id="delta-format"),
    A(lambda s, p: load_delta_with(s, p, [("main.9", good_factors(s)[0][:5],
                                           good_factors(s)[1], 1.0)]), "directions",
      id="delta-directions-shape"),
    A(lambda s, p: s.load_delta(s.save_request(p / "r.json")), "not a readable delta",
      id="delta-file-is-json"),
    A(lambda s, p: s.load_delta(p), "folder", id="delta-file-is-folder"),
    A(lambda s, p: s.load_delta(big_sparse_file(p / "big.safetensors", (256 << 20) + 1)),
      "bytes", id="delta-too-big"),
    A(lambda s, p: s.apply(edit_with(s, factor=torch.zeros(16, 1, 4, 4, device="meta"))),
      "meta", id="apply-meta-factor"),
    A(lambda s, p: s.apply("edit"), "not an Edit", id="apply-str"),
    A(lambda s, p: s.apply(edit_with(s, factor=good_factors(s)[1] * float("inf"))),
      "NaN or Inf", id="apply-inf-factor"),
    A(lambda s, p: s.apply(edit_with(s, directions=good_factors(s)[0].numpy())),
      "not a tensor", id="apply-numpy-directions"),
    A(lambda s, p: s.apply(edit_with(s, factor=torch.ones(3, 1, 4, 4))), "does not fit",
      id="apply-factor-shape"),
    # exports: missing, read-only, folders
    A(lambda s, p: s.export_weights(p / "missing" / "w.safetensors"), "does not exist",
      id="export-weights-missing-folder"),
    A(lambda s, p: s.export_delta(p / "missing" / "d.safetensors"), "does not exist",
      id="export-delta-missing-folder"),
    A(lambda s, p: s.save_request(p / "missing" / "r.json"), "does not exist",
      id="save-request-missing-folder"),
    A(lambda s, p: s.export_delta(p), "is a folder", id="export-delta-to-folder"),
    A(lambda s, p: s.export_weights(""), "not a file path", id="export-empty-path"),
]


@pytest.mark.parametrize("attack,msg", CASES)
def test_refused_clearly_and_nothing_changes(s, tmp_path, attack, msg):
    before = state(s)
    with pytest.raises(RewriteError, match=msg) as info:
        attack(s, tmp_path)
    assert info.value.fix, "the error must say how to fix it"
    assert_unchanged(s, before)


def test_there_are_at_least_80_distinct_attacks():
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids) >= 80


# -- file-system faults ----------------------------------------------------------------------------
@contextmanager
def read_only(folder: Path):
    """A folder nobody may create files in. Root ignores permission bits, so there the creation
    of the temporary file fails as it would with EACCES."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*args, dir=dir, **kw)

    with mock.patch("rewidget.core.safefiles.tempfile.mkstemp", mkstemp):
        yield


@contextmanager
def disk_full(limit: int):
    """Writes past ``limit`` bytes fail with EFBIG, as on a full disk (RLIMIT_FSIZE)."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize("what", ["save_request", "export_delta", "export_weights"])
def test_read_only_folder_is_refused(s, tmp_path, what):
    before = state(s)
    with read_only(tmp_path), pytest.raises(RewriteError, match="Cannot write") as info:
        getattr(s, what)(tmp_path / "out.bin")
    assert info.value.fix and not list(tmp_path.iterdir())
    assert_unchanged(s, before)


@pytest.mark.parametrize("what", ["save_request", "export_delta", "export_weights"])
def test_full_disk_keeps_the_old_file_whole(s, tmp_path, what):
    """Writing over a good file on a full disk: a clear error, the good file still loads."""
    target = tmp_path / "out"
    getattr(s, what)(target)
    good = target.read_bytes()
    s.set_strength(0, 0.5)  # something new to write
    before = state(s)
    with disk_full(512), pytest.raises(RewriteError, match="failed"):
        getattr(s, what)(target)
    assert target.read_bytes() == good
    assert [f.name for f in tmp_path.iterdir()] == ["out"]  # no temporary file left
    assert_unchanged(s, before)
    if what == "save_request":
        assert s.load_request(target) == EditRequest.from_json(good.decode())


def test_concurrent_writers_use_unique_temporary_files(tmp_path):
    """Two processes (here threads) writing the same file never share a temporary name."""
    seen, gate = [], threading.Barrier(2)

    def write(tmp: Path, text: str) -> None:
        seen.append(tmp)
        gate.wait(5)  # both temporary files exist at once
        tmp.write_text(text)

    target = tmp_path / "C_main_9.safetensors"
    threads = [threading.Thread(target=atomic_write, args=(target, lambda t, x=x: write(t, x)))
               for x in ("a" * 100, "b" * 100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(set(seen)) == 2 and all(p.parent == tmp_path for p in seen)
    assert target.read_text() in ("a" * 100, "b" * 100)
    assert [f.name for f in tmp_path.iterdir()] == [target.name]


# -- statistics caches ---------------------------------------------------------------------------
def test_read_only_cache_keeps_statistics_in_memory(tmp_path):
    s = RewriteSession("tiny", layer="main.9", stats_samples=200, cache_dir=tmp_path)
    with read_only(tmp_path), pytest.warns(CacheWarning, match="in memory"):
        c = s.statistics()
    assert not list(tmp_path.iterdir())
    torch.testing.assert_close(c, collect_second_moment(s.gen, "main.9", 200))
    s.add_context(1, BOX)
    s.set_copy(2, BOX)
    s.set_paste(1, (2, 2))
    assert s.rewrite() is s.history.edits[-1]  # edits work without a cache


@pytest.mark.parametrize("where", ["under-a-file", "tilde"])
def test_missing_or_impossible_cache_dir(tmp_path, monkeypatch, where):
    if where == "under-a-file":
        (tmp_path / "file").write_text("x")
        s = RewriteSession("tiny", stats_samples=200, cache_dir=tmp_path / "file" / "stats")
        with pytest.warns(CacheWarning, match="in memory"):
            s.statistics("main.9")
    else:
        monkeypatch.setenv("HOME", str(tmp_path))
        s = RewriteSession("tiny", stats_samples=200, cache_dir="~/new/cache")
        assert s.cache_dir == tmp_path / "new" / "cache"
        s.statistics("main.9")
        assert len(list((tmp_path / "new" / "cache").iterdir())) == 1  # created, ~ expanded
    assert ("main.9", 200) in s._moments


def test_checksummed_cache_that_is_not_psd_is_rebuilt(tmp_path):
    gen = load_tiny()
    good = cached_second_moment(gen, "main.9", 200, "fp", tmp_path)
    path = cache_path(tmp_path, cache_key("fp", "main.9", 200))
    bad = -good  # symmetric, finite, a valid checksum: but not a second moment
    save_file({"moment": bad}, str(path), metadata={**cache_key("fp", "main.9", 200),
                                                    "sha256": _checksum(bad)})
    with pytest.warns(CacheWarning, match="positive semidefinite"):
        again = cached_second_moment(gen, "main.9", 200, "fp", tmp_path)
    assert torch.equal(again, good)


def test_cache_file_that_is_a_folder_is_ignored_with_a_warning(tmp_path):
    gen = load_tiny()
    cache_path(tmp_path, cache_key("fp", "main.9", 200)).mkdir(parents=True)
    with pytest.warns(CacheWarning):
        c = cached_second_moment(gen, "main.9", 200, "fp", tmp_path)
    torch.testing.assert_close(c, collect_second_moment(gen, "main.9", 200))


# -- threads and shared generators ------------------------------------------------------------------
def _selected(s, layer="main.4"):
    s.set_layer(layer)
    s.add_context(1, BOX)
    s.set_copy(2, BOX)
    s.set_paste(1, (2, 2))
    return s


def test_statistics_are_never_cached_under_weights_they_were_not_collected_on(tmp_path):
    """An edit applied during collection (another thread or session on the same generator):
    the pass is thrown away and run again, so every cached C is the C of its fingerprint."""
    gen = load_tiny()
    editor = _selected(RewriteSession(gen, stats_samples=200, cache_dir=tmp_path / "e"))
    edit = editor.compute_edit()
    s = RewriteSession(gen, stats_samples=200, cache_dir=tmp_path / "c")
    calls = []

    def progress(done, total, msg):
        calls.append(done)
        if len(calls) == 1:  # the weights change in the middle of the first pass
            editor.apply(edit)

    c = s.statistics("main.9", progress=progress)
    torch.testing.assert_close(c, collect_second_moment(gen, "main.9", 200))  # edited weights
    files = list((tmp_path / "c").iterdir())
    assert len(files) == 1
    editor.undo()
    fresh = RewriteSession(gen, stats_samples=200, cache_dir=tmp_path / "c")
    clean = fresh.statistics("main.9")  # another fingerprint: not the file above
    torch.testing.assert_close(clean, collect_second_moment(gen, "main.9", 200))
    assert not torch.equal(clean, c) and len(list((tmp_path / "c").iterdir())) == 2


def test_statistics_refused_while_weights_keep_changing(tmp_path):
    gen = load_tiny()
    editor = _selected(RewriteSession(gen, stats_samples=200, cache_dir=tmp_path / "e"))
    edit = editor.compute_edit()
    s = RewriteSession(gen, stats_samples=200, cache_dir=tmp_path / "c")
    before = state(s)

    def progress(done, total, msg):  # every batch: apply or undo
        editor.undo() if len(editor.history) else editor.apply(edit)

    with pytest.raises(RewriteError, match="changed twice") as info:
        s.statistics("main.9", progress=progress)
    assert info.value.fix and not (tmp_path / "c").exists() and not s._moments
    editor.reset()
    assert_unchanged(s, before)


def test_two_sessions_on_one_generator_work_or_are_refused_clearly():
    gen = load_tiny()
    w0 = {k: v.clone() for k, v in gen.module.state_dict().items()}
    a = _selected(RewriteSession(gen, stats_samples=200))
    b = _selected(RewriteSession(gen, stats_samples=200))
    ea = a.rewrite()
    before = state(b)
    with pytest.raises(RewriteError, match="another RewriteSession") as info:
        b.rewrite()  # the same layer: refused, nothing changes
    assert info.value.fix
    assert_unchanged(b, before)
    b.set_layer("main.7")
    b.rewrite()  # another layer: works
    a.undo()  # undo in turn: each undoes only its own edit
    assert torch.equal(gen.layer("main.4").weight, w0["main.4.weight"])
    assert not torch.equal(gen.layer("main.7").weight, w0["main.7.weight"])
    b.set_layer("main.4")
    b.rewrite()  # a released main.4: b may edit it now
    with pytest.raises(RewriteError, match="another RewriteSession"):
        a.redo()  # a's undone edit cannot come back under b's
    assert a.history.redo_stack[-1].edit is ea
    b.reset()
    a.redo()
    a.reset()
    for k, v in gen.module.state_dict().items():
        assert torch.equal(v, w0[k]), k  # W₀ bit for bit


# -- cancellation --------------------------------------------------------------------------------
def _cancelled_within(work, cancel: threading.Event, after: float = 0.3) -> float:
    """Run ``work`` in a thread, set ``cancel`` after ``after`` s; seconds until it stopped."""
    out = {}

    def run():
        try:
            out["result"] = work()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    time.sleep(after)
    assert t.is_alive(), "the work finished before Cancel: make it longer"
    stopped = time.perf_counter()
    cancel.set()
    t.join(10)
    took = time.perf_counter() - stopped
    assert isinstance(out.get("error"), Cancelled), out
    return took


def test_cancel_stops_an_iterative_solve_within_half_a_second(s):
    before = state(s)
    cancel = threading.Event()
    req = s.request(solver="iterative", steps=100_000)
    assert _cancelled_within(lambda: s.rewrite(req, cancel=cancel), cancel) < 0.5
    assert_unchanged(s, before)


def test_cancel_stops_statistics_within_half_a_second(tmp_path):
    s = RewriteSession("tiny", stats_samples=1_000_000, cache_dir=tmp_path)
    cancel = threading.Event()
    assert _cancelled_within(lambda: s.statistics("main.12", cancel=cancel), cancel) < 0.5
    assert not list(tmp_path.rglob("*")) and not s._moments  # nothing partial kept


def test_cancel_stops_a_search_within_half_a_second(s):
    before = state(s)
    cancel = threading.Event()
    assert _cancelled_within(lambda: s.search(pool=100_000, cancel=cancel), cancel) < 0.5
    assert_unchanged(s, before)


# -- listeners -----------------------------------------------------------------------------------
@pytest.mark.parametrize("event,call", [
    ("edit", lambda s: s.rewrite()),
    ("undo", lambda s: s.undo()),
    ("selection", lambda s: s.add_context(5, BOX)),
    ("strength", lambda s: s.set_strength(0, 0.25)),
])
def test_a_listener_that_raises_is_reported_and_the_others_run(s, event, call):
    got = []
    s.on(event, lambda **e: 1 / 0)
    s.on(event, lambda **e: got.append(e["event"]))
    n = len(s.history)
    with pytest.warns(ListenerWarning, match="ZeroDivisionError"):
        call(s)
    assert got == [event]
    assert len(s.history) == n + {"edit": 1, "undo": -1}.get(event, 0)  # the change is done
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ListenerWarning)
        s.reset()
    w0 = build_tiny().state_dict()
    assert all(torch.equal(s.gen.layer(n).weight, w0[f"{n}.weight"]) for n in s.gen.layer_names())


# -- the bugs of the issue, as they were reported ------------------------------------------------------
def test_eps_labelled_png_never_reaches_ghostscript(s, tmp_path):
    import subprocess

    from PIL import EpsImagePlugin

    before = state(s)
    with mock.patch.object(EpsImagePlugin, "Ghostscript", side_effect=AssertionError("gs")), \
            mock.patch.object(subprocess, "Popen", side_effect=AssertionError("program run")), \
            mock.patch.object(Image, "open", wraps=Image.open) as opened:
        with pytest.raises(RewriteError, match="PNG only"):
            load_request_text(s, tmp_path, request_text(s, context__0__mask=data_url(EPS)))
    assert not opened.called  # refused from the signature, before Pillow
    assert_unchanged(s, before)


def test_png_bomb_is_refused_from_its_header_before_decoding():
    with mock.patch.object(Image, "open", side_effect=AssertionError("decoded")):
        t = time.perf_counter()
        with pytest.raises(RewriteError, match="12000×12000"):
            mask_from_data_url(data_url(png_header(12000, 12000)))
        assert time.perf_counter() - t < 0.5
    # a real PNG within the limit still decodes
    assert mask_from_data_url(mask_to_data_url(BOX)).tolist() == BOX.tolist()


def test_paste_goal_comes_from_the_paste_target_with_latent_samples():
    """Latent samples, one per entry: the goal is built from the paste target's keys (a batch
    given as one sample used to shift them onto the copy's; now refused, see CASES)."""
    from rewidget.core.edits import edit_problem

    s = RewriteSession("tiny", layer="main.9", stats_samples=200)
    z = s.gen.latents([1, 3, 5, 6])
    s.add_context(z[0], BOX)
    s.add_context(z[1], BOX)
    s.set_copy(z[2], BOX)
    s.set_paste(z[3], (2, 2))
    target = edit_problem(s.gen, s.request()).targets[0]
    k5, k6 = (s.gen.keys("main.9", z[i:i + 1]) for i in (2, 3))
    torch.testing.assert_close(target.keys, k6)
    assert not torch.allclose(target.keys, k5)


def test_latent_given_by_the_caller_is_copied(s):
    z = s.gen.latents([7])[0].clone()
    s.set_copy(z, BOX)
    z.zero_()  # the caller reuses its tensor
    assert torch.equal(s.copy.sample.latent, s.gen.latents([7])[0])


def test_app_seed_box_checks_ranges_before_expanding_them():
    from rewidget.widgets.selections import parse_seeds

    t = time.perf_counter()
    for text, msg in [("0-49999999", "More than 64"), ("18446744073709551616", "2\\*\\*64"),
                      ("1" * 5000, "not a seed"), ("5-3", "backwards")]:
        with pytest.raises(RewriteError, match=msg):
            parse_seeds(text)
    assert time.perf_counter() - t < 0.5
    assert parse_seeds("0-3, 18446744073709551615") == [0, 1, 2, 3, 2**64 - 1]


def test_app_escapes_names_and_refuses_another_models_request(tmp_path):
    from rewidget.widgets.app import RewriteApp

    hostile = "<img src=x onerror=alert(1)>"
    gen = from_module(build_tiny(), (16,), name=hostile, trunk=None)
    s = RewriteSession(gen, layer="main.9", stats_samples=200)
    app = RewriteApp(s, preload=False)
    try:
        assert hostile not in app.title.value and "&lt;img" in app.title.value
        other = tmp_path / "other.json"
        s.add_context(1, BOX)
        s.set_copy(2, BOX)
        s.set_paste(1, (2, 2))
        other.write_text(request_text(s, model="dcgan-faces"))
        s.clear_selection()
        before = state(s)
        app.load_request(str(other))
        app.seeds_text.value = "0-49999999"  # typed in the seed box
        assert app.wait(30)
        text = app.messages._html.value
        assert "made for model" in text and "More than 64" in text
        assert_unchanged(s, before)
    finally:
        app.close()


# -- a few on the real faces model ----------------------------------------------------------------------
@pytest.fixture
def faces(faces_gen):
    s = RewriteSession(faces_gen, layer="main.9", stats_samples=300)
    s.add_context(4, box(64, 24, 38, 12, 52))
    return s


@pytest.mark.parametrize("attack,msg", [
    A(lambda s, p: s.add_context(5, BOX), "32×32 pixels but this model's images are 64×64",
      id="faces-mask-of-tiny-size"),
    A(lambda s, p: s.set_copy(torch.zeros(16), box(64, 24, 38, 12, 52)), "do not fit",
      id="faces-tiny-latent"),
    A(lambda s, p: load_request_text(s, p, json.dumps(
        EditRequest(layer="main.9", model="dcgan-faces",
                    context=(Selection(Sample(4), box(64, 24, 38, 12, 52)),)).to_dict()
        | {"context": [{"sample": {"seed": 4}, "mask": data_url(EPS)}]})), "EPS",
      id="faces-eps-request"),
    A(lambda s, p: load_delta_with(s, p, [("main.9", torch.eye(128)[:, :1],
                                           torch.full((1, 64, 4, 4), float("nan")), 1.0)]),
      "finite", id="faces-delta-nan"),
    A(lambda s, p: s.set_paste(4, Paste(Sample(4)).offset + (1,)), "two numbers",
      id="faces-offset-three"),
])
def test_faces_refused_clearly_and_nothing_changes(faces, tmp_path, attack, msg):
    before = state(faces)
    with pytest.raises(RewriteError, match=msg) as info:
        attack(faces, tmp_path)
    assert info.value.fix
    assert_unchanged(faces, before)
