"""Second moment C = E[k kᵀ] of a layer's keys, accumulated in float64, cached on disk.

    stat = SecondMoment()
    for keys in key_batches(gen, "main.6", n=10_000):   # (rows, C_in) per batch
        stat.add(keys)
    C = stat.moment()                                    # (C_in, C_in), float64

    C = cached_second_moment(gen, "main.6", n=10_000, fingerprint=fp, cache_dir=dir,
                             progress=show)              # collects once, reloads in ms

The cache key is everything that changes C: the model fingerprint, the layer, the sample
count, the seed base and FORMAT_VERSION. A file whose metadata, shape, checksum or values
do not match is reported and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from .memory import memory_for
from .progress import CancelToken, ProgressFn, check_cancel, report
from .protocol import Generator
from .safefiles import read_safetensors

#: "2": files are keyed by the weights actually used for collection; a "1" file may have been
#: collected with another session's edit installed under the original weights' fingerprint
FORMAT_VERSION = "2"
STATS_SEED_BASE = 1_000_000  # statistics use seeds far from the ones users look at
_ROWS_PER_GRAM = 16_384  # float32 Gram over at most this many rows, then summed in float64


class SecondMoment:
    """Running uncentred second moment of row vectors; float64 accumulator."""

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self.count = 0

    def add(self, rows: torch.Tensor) -> None:
        """Add (n, C) rows. Partial Grams in the rows' dtype, summed in float64."""
        if self._sum is None:
            c = rows.shape[1]
            self._sum = torch.zeros(c, c, dtype=torch.float64, device=rows.device)
        for chunk in rows.split(_ROWS_PER_GRAM):
            self._sum += (chunk.T @ chunk).to(torch.float64)
        self.count += rows.shape[0]

    def moment(self) -> torch.Tensor:
        if self._sum is None or self.count == 0:
            raise ValueError("SecondMoment.moment() before any add()")
        return self._sum / self.count


def stats_seeds(n: int) -> range:
    return range(STATS_SEED_BASE, STATS_SEED_BASE + n)


def key_batches(gen: Generator, layer: str, n: int, batch_size: int = 250,
                progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                ) -> Iterator[torch.Tensor]:
    """Yield the layer's key rows for ``n`` statistics samples, batch by batch."""
    mem = memory_for(gen.layer(layer), layer)
    seeds = stats_seeds(n)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            check_cancel(cancel, "Collecting statistics")
            z = gen.latents(seeds[start:start + batch_size])
            yield mem.key_rows(gen.keys(layer, z))
            report(progress, min(start + batch_size, n), n, f"statistics for {layer}")


def collect_second_moment(gen: Generator, layer: str, n: int, batch_size: int = 250,
                          progress: ProgressFn | None = None,
                          cancel: CancelToken | None = None) -> torch.Tensor:
    stat = SecondMoment()
    for rows in key_batches(gen, layer, n, batch_size, progress, cancel):
        stat.add(rows)
    return stat.moment()


def cache_key(fingerprint: str, layer: str, n: int) -> dict[str, str]:
    return {"format": FORMAT_VERSION, "fingerprint": fingerprint, "layer": layer,
            "samples": str(n), "seed_base": str(STATS_SEED_BASE)}


def cache_path(cache_dir: Path, meta: dict[str, str]) -> Path:
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]
    safe_layer = "".join(c if c.isalnum() else "_" for c in meta["layer"])
    return Path(cache_dir) / f"C_{safe_layer}_{meta['samples']}_{digest}.safetensors"


def default_cache_dir() -> Path:
    env = os.environ.get("REWIDGET_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rewidget"
    return base / "stats"


def _checksum(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().cpu().numpy().tobytes()).hexdigest()


def load_cached(path: Path, meta: dict[str, str], dim: int) -> tuple[torch.Tensor | None, str]:
    """(C, "") when the file is valid for ``meta``; (None, reason) otherwise."""
    if not path.exists():
        return None, "no cache file"
    try:
        tensors, stored = read_safetensors(path)
    except (SafetensorError, OSError, ValueError) as e:
        return None, f"unreadable ({e})"
    c = tensors.get("moment")
    if c is None:
        return None, "no 'moment' tensor"
    for k, v in meta.items():
        if stored.get(k) != v:
            return None, f"{k} is {stored.get(k)!r}, expected {v!r} (cache from another model or setting)"
    if c.dtype != torch.float64 or tuple(c.shape) != (dim, dim):
        return None, f"shape {tuple(c.shape)} {c.dtype}, expected ({dim}, {dim}) float64"
    if stored.get("sha256") != _checksum(c):
        return None, "checksum mismatch (corrupted file)"
    if not bool(torch.isfinite(c).all()) or not torch.equal(c, c.T):
        return None, "values are not a finite symmetric matrix"
    return c, ""


def cached_second_moment(gen: Generator, layer: str, n: int, fingerprint: str,
                         cache_dir: Path | str | None = None, batch_size: int = 250,
                         progress: ProgressFn | None = None,
                         cancel: CancelToken | None = None, refresh: bool = False) -> torch.Tensor:
    """C for ``layer`` from the disk cache, or collected (and cached) when missing or bad."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    meta = cache_key(fingerprint, layer, n)
    path = cache_path(cache_dir, meta)
    dim = memory_for(gen.layer(layer), layer).key_dim
    if refresh:
        path.unlink(missing_ok=True)
    c, reason = load_cached(path, meta, dim)
    if c is not None:
        report(progress, n, n, f"statistics for {layer} (cached)")
        return c.to(gen.device)
    if path.exists():
        warnings.warn(f"Statistics cache {path.name} rejected: {reason}; rebuilding it.",
                      stacklevel=2)
    c = collect_second_moment(gen, layer, n, batch_size, progress, cancel)
    c = (c + c.T) / 2  # exact symmetry, so the check above holds on reload
    cpu = c.cpu().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"moment": cpu}, str(tmp), metadata={**meta, "sha256": _checksum(cpu)})
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache
    return c
