"""Second moment C = E[k kᵀ] of layers' keys, accumulated in float64, cached on disk.

    stats = {"main.6": SecondMoment(), "main.9": SecondMoment()}
    for done in accumulate_moments(gen, stats, {"main.6": 4_000, "main.9": 2_000}):
        pass                                             # one forward pass per batch
    C = stats["main.6"].moment()                         # (C_in, C_in), float64

    counts = auto_samples(gen)                           # {"main.0": 10000, ..., "main.12": 2000}
    Cs = cached_second_moments(gen, counts, fingerprint=fp, cache_dir=dir, progress=show)
    C = cached_second_moment(gen, "main.6", n=10_000, fingerprint=fp)   # one layer

    share = batch_share(batch_bounds(counts), rank, world)  # one process's whole batches
    for done in accumulate_moments(gen, stats, counts, batches=share):
        pass                                             # then add the shares' stat.total(dim)

One forward pass per batch feeds every layer that still needs samples: the deepest such layer
stops the pass and forward pre-hooks read the shallower ones on the way. Layer ``l`` always
sees the statistics seeds ``STATS_SEED_BASE + [0, n_l)``, so its C is the same whether it is
collected alone or with others: bit for bit when the counts are whole batches (as the auto
counts are), else up to float32 rounding of the partial Grams.

The cache key is everything that changes C: the model fingerprint, the layer, the sample
count, the seed base and FORMAT_VERSION. A file whose metadata, shape, checksum or values
(finite, symmetric, positive semidefinite) do not match is reported and rebuilt, never used.
Files are written atomically under a unique temporary name (safefiles.atomic_write); a cache
folder that cannot be written (read-only, missing parent, full disk) gives a CacheWarning and
the statistics are kept in memory only. ``check()``, when given, runs before each file is
saved and may raise to stop the collection (the session uses it to refuse statistics whose
weights changed meanwhile). Layers already cached are loaded; only the
missing ones are collected, and each is saved as soon as its count is reached (a cancel keeps
the layers finished before it, and never leaves a partial file).

How many samples C needs (``auto_samples``): n = ROWS_PER_KEY_DIM · key_dim / (H·W), rounded
up to a multiple of SAMPLE_STEP and clamped to [MIN_SAMPLES, MAX_SAMPLES] = [2,000, 10,000]:
enough samples for 1,000 key rows per key dimension. On the faces model that is 10,000 for the
1×1 and 4×4 layers, 4,000 at 8×8 and 2,000 at 16×16 and 32×32 (scenes: 10k, 10k, 2k, 2k, 2k).
Measured by ``benchmarks/statistics_speed.py --study`` against a 20,000-sample reference
(nested seeds); err = relative Frobenius error of C, white = |Z C_N Z - I|₂ with
Z = C_ref^-1/2 (the worst relative error over all key directions), cos1/cos3 = agreement of
the top whitened context direction / rank-3 span (smallest principal cosine), worst of two
saved requests' contexts:

    faces     keys          N       err    white  cos1    cos3     at N = 1,000: white  cos3
    main.0    100 × 1×1     10,000  7.1%   0.14   0.977   0.997                  0.69   0.920
    main.3    512 × 4×4     10,000  1.5%   0.10   0.998   0.998                  0.46   0.964
    main.6    256 × 8×8      4,000  2.4%   0.18   0.999   0.994                  0.45   0.961
    main.9    128 × 16×16    2,000  3.6%   0.23   0.998   0.996                  0.43   0.993
    main.12    64 × 32×32    2,000  5.6%   0.18   0.998   0.997                  0.43   0.970
    scenes main.6 / 9 / 12   2,000  2.9 / 0.9 / 0.3%    cos3 0.996 / 0.991 / 0.9999

Rows of one sample are strongly correlated (neighbouring locations of one image), so the
sample count matters more than the row count: at 1,000 samples the faces layers from 4×4 to
32×32 all have white 0.43-0.46 whatever their rows per key dim (31 to 16,000), and the direction of the 32×32
layer is as unsettled as that of the 8×8 one. Hence the floor: below 2,000 samples the
rank-3 span moves (cos3 0.93-0.97 at 500-1,000 on faces' 32×32 layer). Frobenius errors
jump with rare extreme samples (faces 32×32: 12% at 500, 23% at 1,000, 5.6% at 2,000) while
the directions barely move; 10,000 samples is the ceiling (and the old default): it keeps
caches and requests made with it valid, and the 1×1 layer, whose keys are the latents
themselves, would need far more for its rare directions (cos1 0.977 at 10k). All layers of
faces then cost one pass to 32×32 over 2,000 samples (plus 10k cheap shallow ones):
~4x less work than 10,000 samples per layer.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from .errors import CacheWarning, RewriteError
from .memory import LinearMemory, memory_for
from .progress import CancelToken, ProgressFn, check_cancel, report
from .protocol import Generator
from .safefiles import atomic_write, read_safetensors, tensor_bytes
from .serial import serial

#: "2": files are keyed by the weights actually used for collection; a "1" file may have been
#: collected with another session's edit installed under the original weights' fingerprint
FORMAT_VERSION = "2"
STATS_SEED_BASE = 1_000_000  # statistics use seeds far from the ones users look at
_ROWS_PER_GRAM = 16_384  # float32 Gram over at most this many rows, then summed in float64
BATCH_SIZE = 250

#: the per-layer sample-count rule (see the module docstring for what it was chosen from)
ROWS_PER_KEY_DIM = 1_000
SAMPLE_STEP = 500
MIN_SAMPLES = 2_000
MAX_SAMPLES = 10_000
#: a cached C whose smallest eigenvalue is below -PSD_TOLERANCE × its largest is not a second
#: moment (float32 partial Grams leave eigenvalues of order -1e-7 × the largest where keys are
#: rank-deficient, e.g. dead ReLU channels)
PSD_TOLERANCE = 1e-5


_FLOAT64: dict[str, bool] = {}


def _float64_device(device: torch.device) -> torch.device:
    """``device`` if it holds float64 tensors, else the CPU (Apple's MPS has no float64)."""
    if device.type not in _FLOAT64:
        try:
            torch.zeros(1, dtype=torch.float64, device=device)
            _FLOAT64[device.type] = True
        except (TypeError, RuntimeError):
            _FLOAT64[device.type] = False
    return device if _FLOAT64[device.type] else torch.device("cpu")


class SecondMoment:
    """Running uncentred second moment of row vectors; float64 accumulator."""

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self.count = 0

    def add(self, rows: torch.Tensor) -> None:
        """Add (n, C) rows. Partial Grams in the rows' dtype (float32 for 16-bit rows: a
        bfloat16 Gram keeps 3 significant digits), summed in float64 — on the rows' device, or
        on the CPU where the device has no float64 (Apple MPS)."""
        if self._sum is None:
            c = rows.shape[1]
            self._sum = torch.zeros(c, c, dtype=torch.float64,
                                    device=_float64_device(rows.device))
        if rows.dtype not in (torch.float32, torch.float64):
            rows = rows.float()
        for chunk in rows.split(_ROWS_PER_GRAM):
            self._sum += (chunk.T @ chunk).to(self._sum.device, torch.float64)
        self.count += rows.shape[0]

    def moment(self) -> torch.Tensor:
        if self._sum is None or self.count == 0:
            raise ValueError("SecondMoment.moment() before any add()")
        return self._sum / self.count

    def total(self, dim: int, device: torch.device | str | None = None) -> torch.Tensor:
        """A copy of the float64 sum Σ k kᵀ so far, (dim, dim), on ``device`` (default: where
        it is); zeros before any add(). Partial sums over disjoint samples (other processes'
        shares) add up to the whole one."""
        if self._sum is None:
            return torch.zeros(dim, dim, dtype=torch.float64, device=device)
        if tuple(self._sum.shape) != (dim, dim):
            raise ValueError(f"SecondMoment of shape {tuple(self._sum.shape)}, expected {dim}")
        return self._sum.to(device, copy=True)

    @classmethod
    def from_total(cls, total: torch.Tensor, count: int) -> SecondMoment:
        """The moment whose sum is ``total`` (float64) over ``count`` rows, e.g. merged shares."""
        stat = cls()
        stat._sum, stat.count = total.to(torch.float64), int(count)
        return stat


def stats_seeds(n: int) -> range:
    return range(STATS_SEED_BASE, STATS_SEED_BASE + n)


# -- how many samples ---------------------------------------------------------------------------
def samples_needed(key_dim: int, rows_per_sample: int) -> int:
    """The documented rule: enough samples for ROWS_PER_KEY_DIM key rows per key dimension."""
    n = ROWS_PER_KEY_DIM * key_dim / max(rows_per_sample, 1)
    n = SAMPLE_STEP * math.ceil(n / SAMPLE_STEP)
    return int(min(max(n, MIN_SAMPLES), MAX_SAMPLES))


def rows_per_sample(key_shape: Sequence[int], key_dim: int) -> int:
    """Key rows one sample gives: H·W for conv keys (C, H, W), the leading dims for linear."""
    return math.prod(key_shape) // key_dim


def auto_samples(gen: Generator, layers: Sequence[str] | None = None,
                 shapes: Mapping[str, Mapping] | None = None) -> dict[str, int]:
    """``samples_needed`` for each layer; ``shapes`` as from gen.layer_shapes() (saves a forward)."""
    layers = list(layers or gen.layer_names())
    shapes = shapes if shapes is not None else gen.layer_shapes()
    out = {}
    for layer in layers:
        dim = memory_for(gen.layer(layer), layer).key_dim
        out[layer] = samples_needed(dim, rows_per_sample(shapes[layer]["keys"], dim))
    return out


# -- collection ----------------------------------------------------------------------------------
def _batch_ends(counts: Mapping[str, int], batch_size: int) -> list[int]:
    """Batch end points: every ``batch_size`` samples, and at every layer's count."""
    ends = set(range(batch_size, max(counts.values(), default=0), batch_size))
    return sorted(ends | {int(n) for n in counts.values()})


def batch_bounds(counts: Mapping[str, int], batch_size: int = BATCH_SIZE) -> list[tuple[int, int]]:
    """The (start, stop) sample ranges, in order, of the batches accumulate_moments runs."""
    ends = _batch_ends(counts, batch_size)
    return list(zip([0, *ends[:-1]], ends, strict=True))


def batch_share(bounds: Sequence[tuple[int, int]], rank: int, world: int
                ) -> list[tuple[int, int]]:
    """Share ``rank`` of ``world`` of ``bounds``: every world-th whole batch from the rank-th.

    The shares are disjoint and together exactly ``bounds``; whole batches keep each float32
    partial Gram what one process computes, so merged shares give its C up to the float64
    summation order. Interleaved, not contiguous: with several layers the early batches run
    deeper (every layer still needs samples), and interleaving spreads them over the ranks."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    return list(bounds[rank::world])


def _adding_hook(stats: Mapping[str, SecondMoment], seen: set[str], layer: str,
                 mem: LinearMemory):
    """A forward pre-hook adding the first input the layer sees in a pass to stats[layer]; added
    at once, so later in-place ops on that tensor cannot touch it."""
    def hook(_module, args):
        if layer not in seen:
            seen.add(layer)
            stats[layer].add(mem.key_rows(args[0]))
    return hook


def accumulate_moments(gen: Generator, stats: Mapping[str, SecondMoment],
                       counts: Mapping[str, int], batch_size: int = BATCH_SIZE,
                       progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                       batches: Sequence[tuple[int, int]] | None = None) -> Iterator[int]:
    """Add the key rows of ``counts[layer]`` statistics samples to ``stats[layer]``, one forward
    pass per batch for all layers; yields the samples done after each batch.

    A batch holds the layers whose count it has not reached and runs the generator only up to
    the deepest of them (``gen.keys`` stops there; forward pre-hooks read the others on the way).
    With counts that are multiples of ``batch_size`` each layer gets the batches it would get
    alone, so C is bit-for-bit the same as from a collection of that layer alone. (Per-sample
    batched Grams, which skip the rows copy, were 15% faster here but change C in the 7th digit,
    and a replayed request must get the exact C it was made with.)

    ``batches``: only these (start, stop) of ``batch_bounds(counts, batch_size)``, e.g. one
    process's ``batch_share``; progress then counts the samples of that share.
    """
    mems = {layer: memory_for(gen.layer(layer), layer) for layer in counts}  # validates names
    if any(int(n) < 1 for n in counts.values()):
        raise ValueError(f"sample counts must be positive, got {dict(counts)}")
    order = gen.layer_names()
    layers = sorted(counts, key=order.index)  # forward order
    seeds = stats_seeds(max(counts.values(), default=0))
    names = ", ".join(layers)
    bounds = batch_bounds(counts, batch_size)
    if batches is not None:
        wanted = {(int(a), int(b)) for a, b in batches}
        if not wanted <= set(bounds):
            raise ValueError(f"batches {sorted(wanted - set(bounds))} are not batches of "
                             f"batch_bounds(counts, {batch_size})")
        bounds = [b for b in bounds if b in wanted]
    total = sum(stop - start for start, stop in bounds)
    done = 0
    with torch.inference_mode():
        for start, stop in bounds:
            check_cancel(cancel, "Collecting statistics")
            *shallow, deepest = [layer for layer in layers if counts[layer] >= stop]
            seen: set[str] = set()
            handles = [gen.layer(layer).register_forward_pre_hook(
                _adding_hook(stats, seen, layer, mems[layer])) for layer in shallow]
            if cancel is not None:  # Cancel acts within a batch too (a deep batch takes ~1 s)
                handles += [gen.layer(layer).register_forward_pre_hook(
                    lambda _m, _a: check_cancel(cancel, "Collecting statistics"))
                    for layer in layers if counts[layer] >= stop]
            try:
                keys = gen.keys(deepest, gen.latents(seeds[start:stop]))
            finally:
                for h in handles:
                    h.remove()
            missed = [layer for layer in shallow if layer not in seen]
            if missed:
                raise RuntimeError(f"The forward pass to {deepest!r} never reached {missed}; "
                                   "gen.layer_names() must list layers in forward order.")
            stats[deepest].add(mems[deepest].key_rows(keys))
            done += stop - start
            report(progress, done, total, f"statistics for {names}")
            yield stop


def collect_second_moments(gen: Generator, counts: Mapping[str, int],
                           batch_size: int = BATCH_SIZE, progress: ProgressFn | None = None,
                           cancel: CancelToken | None = None,
                           on_layer: Callable[[str, torch.Tensor], None] | None = None,
                           ) -> dict[str, torch.Tensor]:
    """{layer: C (C_in, C_in) float64} over ``counts[layer]`` samples each, in one pass.

    ``on_layer(layer, C)`` is called as soon as a layer's count is reached.
    """
    stats = {layer: SecondMoment() for layer in counts}
    out = {}
    for done in accumulate_moments(gen, stats, counts, batch_size, progress, cancel):
        for layer in [layer for layer, n in counts.items() if n == done]:
            c = stats[layer].moment()
            out[layer] = (c + c.T) / 2  # exact symmetry, so the cache check holds on reload
            if on_layer is not None:
                on_layer(layer, out[layer])
    return out


def collect_second_moment(gen: Generator, layer: str, n: int, batch_size: int = BATCH_SIZE,
                          progress: ProgressFn | None = None,
                          cancel: CancelToken | None = None) -> torch.Tensor:
    return collect_second_moments(gen, {layer: n}, batch_size, progress, cancel)[layer]


# -- the disk cache ------------------------------------------------------------------------------
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
    return base.expanduser() / "stats"


def _checksum(t: torch.Tensor) -> str:
    return hashlib.sha256(tensor_bytes(t)).hexdigest()


def load_cached(path: Path, meta: dict[str, str], dim: int) -> tuple[torch.Tensor | None, str]:
    """(C, "") when the file is valid for ``meta``; (None, reason) otherwise."""
    try:
        if not path.exists():
            return None, "no cache file"
        tensors, stored = read_safetensors(path, max_bytes=64 * dim * dim + (1 << 20))
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
    with serial():
        evals = torch.linalg.eigvalsh(c)
    if float(evals[0]) < -PSD_TOLERANCE * max(float(evals[-1]), 0.0) or float(evals[-1]) <= 0:
        return None, (f"not positive semidefinite (eigenvalues {float(evals[0]):.3g} .. "
                      f"{float(evals[-1]):.3g}), so not a second moment")
    return c, ""


def save_cached(path: Path, meta: dict[str, str], c: torch.Tensor) -> None:
    """Write C atomically (unique temp file, fsync, rename); RewriteError if it cannot be."""
    cpu = c.cpu().contiguous()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RewriteError(f"Cannot create the statistics cache folder {path.parent} "
                           f"({e.strerror or e}).", "set REWIDGET_CACHE (or cache_dir) to a "
                           "folder you can write to.") from e
    metadata = {**meta, "sha256": _checksum(cpu)}
    atomic_write(path, lambda tmp: save_file({"moment": cpu}, str(tmp), metadata=metadata),
                 "statistics cache file")


def cached_second_moments(gen: Generator, counts: Mapping[str, int], fingerprint: str,
                          cache_dir: Path | str | None = None, batch_size: int = BATCH_SIZE,
                          progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                          refresh: bool = False, check: Callable[[], None] | None = None,
                          ) -> dict[str, torch.Tensor]:
    """{layer: C} from the disk cache; the missing or bad ones collected in one pass and cached.

    ``check()`` runs before each collected C is saved (and after the pass); it may raise to
    stop and discard the collection. A cache that cannot be written gives a CacheWarning and
    the statistics are returned all the same."""
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    metas = {layer: cache_key(fingerprint, layer, int(n)) for layer, n in counts.items()}
    paths = {layer: cache_path(cache_dir, meta) for layer, meta in metas.items()}
    out, missing = {}, {}
    for layer, n in counts.items():
        dim = memory_for(gen.layer(layer), layer).key_dim
        if refresh:
            try:
                paths[layer].unlink(missing_ok=True)
            except OSError:
                pass  # read-only: the file is ignored below and the new C kept in memory
        c, reason = (None, "refresh") if refresh else load_cached(paths[layer], metas[layer], dim)
        if c is not None:
            out[layer] = c.to(gen.device)
            report(progress, n, n, f"statistics for {layer} (cached)")
            continue
        if not refresh and reason != "no cache file":
            warnings.warn(f"Statistics cache {paths[layer].name} rejected: {reason}; "
                          "rebuilding it.", CacheWarning, stacklevel=2)
        missing[layer] = int(n)
    unwritable: list[str] = []

    def save(layer: str, c: torch.Tensor) -> None:
        if check is not None:
            check()
        if unwritable:  # one warning per call, not one per layer
            return
        try:
            save_cached(paths[layer], metas[layer], c)
        except RewriteError as e:
            unwritable.append(e.problem)
            warnings.warn(f"{e.problem} The statistics are kept in memory for this session "
                          f"only. Fix: {e.fix}", CacheWarning, stacklevel=3)

    if missing:
        out.update(collect_second_moments(gen, missing, batch_size, progress, cancel,
                                          on_layer=save))
        if check is not None:
            check()
    return {layer: out[layer] for layer in counts}


def cached_second_moment(gen: Generator, layer: str, n: int, fingerprint: str,
                         cache_dir: Path | str | None = None, batch_size: int = BATCH_SIZE,
                         progress: ProgressFn | None = None,
                         cancel: CancelToken | None = None, refresh: bool = False) -> torch.Tensor:
    """C for ``layer`` from the disk cache, or collected (and cached) when missing or bad."""
    return cached_second_moments(gen, {layer: n}, fingerprint, cache_dir, batch_size, progress,
                                 cancel, refresh)[layer]
