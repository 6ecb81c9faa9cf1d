"""Key statistics C = E[k kᵀ] as a batch job, in one process or many (torch.distributed).

    python -m rewidget.stats dcgan-faces main.9 --samples 2000          # one process
    python -m rewidget.stats dcgan-faces main.6 main.9 --samples auto   # the session's counts
    torchrun --nproc_per_node 2 -m rewidget.stats dcgan-faces main.9 --samples 2000
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m rewidget.stats scenes main.9 --samples 10000 --device cuda --cache-dir /shared/stats

    s = RewriteSession("dcgan-faces", stats_samples=2000)   # later: loads C, collects nothing
    s = RewriteSession("dcgan-faces", cache_dir="/shared/stats", stats_samples=2000)

It writes exactly what the sessions' disk cache reads (core/statistics.py: same key — model
fingerprint, layer, sample count, seed base, format version — same file name and checks), so
a session on the same model and sample count loads C instead of collecting it. Without
``--cache-dir`` the folder is the sessions' default (``$REWIDGET_CACHE/stats`` or
``~/.cache/rewidget/stats``); with it, the folder a session is given as ``cache_dir``.

Under torchrun (RANK and WORLD_SIZE set) each rank runs ``batch_share`` of the batches one
process would run — the same statistics seeds ``stats_seeds(n)``, in whole batches, so every
float32 partial Gram is the one a single process computes — then the float64 sums and row
counts are all-reduced (gloo on the CPU, NCCL with ``--device cuda``, one GPU per local rank)
and rank 0 writes the files. C then equals the single-process C up to the float64 summation
order (bit for bit in every run measured: float32 Grams add almost exactly in float64). Ranks
first check that they all hold the same weights and arguments; only rank 0 reads the cache
and reports progress.

Exit codes: 0 done (or everything cached already), 2 a bad argument or an unwritable cache
(the message names the fix; no traceback), 130 stopped by Ctrl-C or SIGTERM (files already
written stay valid; nothing partial is ever written). Under torchrun these are the workers'
codes: torchrun itself exits 1 when a worker fails and prints its own traceback on Ctrl-C.
Layers cached already are skipped unless ``--refresh``; a cached file that fails the checks
is collected again.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .core.errors import Cancelled, RewriteError
from .core.memory import memory_for
from .core.safefiles import user_path
from .core.serial import serial
from .core.statistics import (
    BATCH_SIZE,
    SecondMoment,
    accumulate_moments,
    auto_samples,
    batch_bounds,
    batch_share,
    cache_key,
    cache_path,
    default_cache_dir,
    load_cached,
    save_cached,
)
from .models import load
from .session.bars import Bar

PROG = "rewidget.stats"
MOST_SAMPLES = 1_000_000  # as RewriteSession(stats_samples=...) accepts
EXIT_BAD_INPUT = 2
EXIT_STOPPED = 130


class _RankError(RewriteError):
    """A problem of this rank only (its GPU), so reported by this rank, not rank 0 for all."""


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun workers (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> World:
        env = os.environ if env is None else env
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return cls()
        try:
            rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
            local = int(env.get("LOCAL_RANK", rank))
        except ValueError as e:
            raise RewriteError(f"RANK/WORLD_SIZE/LOCAL_RANK are not integers ({e}).",
                               "start the workers with torchrun, or unset RANK and "
                               "WORLD_SIZE to run in one process.") from None
        if not (size >= 1 and 0 <= rank < size and local >= 0):
            raise RewriteError(f"RANK={rank} is not in [0, WORLD_SIZE={size}).",
                               "start the workers with torchrun.")
        return cls(rank, size, local)

    @property
    def distributed(self) -> bool:
        return self.size > 1


@dataclass(frozen=True)
class Job:
    """What to collect: the model, {layer: samples}, where the files go and how to run."""

    gen: Any  # a GeneratorAdapter or TextModel (the protocol core/statistics.py reads)
    counts: dict[str, int]
    cache_dir: Path
    batch_size: int
    device: torch.device
    refresh: bool = False


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Collect key statistics C = E[k kᵀ] into the sessions' disk "
        "cache, in one process or under torchrun (each rank a share of the seeds).")
    p.add_argument("model", help="a zoo name (rewidget.models.load), e.g. dcgan-faces, tiny")
    p.add_argument("layers", nargs="+", metavar="LAYER", help="editable layers, e.g. main.9")
    p.add_argument("--samples", required=True,
                   help="statistics samples per layer, or 'auto' (the session's per-layer rule)")
    p.add_argument("--cache-dir", help="the folder a session is given as cache_dir (default: "
                   "the sessions' default, $REWIDGET_CACHE/stats or ~/.cache/rewidget/stats)")
    p.add_argument("--batch-size", help=f"samples per forward pass (default {BATCH_SIZE}, text "
                   "models 16: the sessions' own, which give their C bit for bit)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda (under torchrun: "
                   "one GPU per local rank, NCCL)")
    p.add_argument("--refresh", action="store_true", help="collect again even if cached")
    return p


def parse_count(text: str, what: str, hi: int, fix: str) -> int:
    """``text`` as an int in [1, hi], or a RewriteError naming ``fix``."""
    try:
        n = int(text)
    except ValueError:
        raise RewriteError(f"{what} {text!r} is not an integer.", fix) from None
    if not 1 <= n <= hi:
        raise RewriteError(f"{what} {n} is outside [1, {hi:,}].", fix)
    return n


def sample_counts(gen: Any, layers: Sequence[str], samples: str) -> dict[str, int]:
    """{layer: samples}: the session's per layer for 'auto', else the one count for every layer.
    Unknown layers raise RewriteError (the generator's own message, listing its layers)."""
    layers = list(dict.fromkeys(layers))  # a layer named twice is collected once
    for layer in layers:
        gen.layer(layer)
    if getattr(gen, "kind", None) == "text":
        from .session.text import DRIFT_CHUNKS, STATS_SAMPLES

        most = gen.n_chunks - DRIFT_CHUNKS  # TextRewriteSession keeps the tail for drift
        n = min(STATS_SAMPLES, most) if samples == "auto" else parse_count(
            samples, "--samples", most, f"pass --samples auto or a chunk count up to {most}.")
        return dict.fromkeys(layers, n)
    if samples == "auto":
        return auto_samples(gen, layers)
    n = parse_count(samples, "--samples", MOST_SAMPLES,
                    "pass --samples auto (the session's per-layer counts) or an integer such "
                    "as --samples 2000.")
    return dict.fromkeys(layers, n)


def _device(text: str, world: World) -> torch.device:
    if text not in ("cpu", "cuda"):
        raise RewriteError(f"--device {text!r} is not cpu or cuda.", "pass --device cpu or "
                           "--device cuda.")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RewriteError("--device cuda, but torch sees no GPU here.", "pass --device cpu.")
    if not world.distributed:
        return torch.device("cuda")
    if world.local_rank >= torch.cuda.device_count():
        raise _RankError(f"Local rank {world.local_rank} has no GPU of its own (this node has "
                         f"{torch.cuda.device_count()}).", "start at most that many processes "
                         "per node (torchrun --nproc_per_node).")
    return torch.device("cuda", world.local_rank)


def _default_batch(gen: Any) -> int:
    """The batch size the model's session collects with (so one process gives its C bit for bit)."""
    if getattr(gen, "kind", None) == "text":
        from .session.text import STATS_BATCH

        return STATS_BATCH
    return BATCH_SIZE


def make_job(args: argparse.Namespace, world: World) -> Job:
    """Check every argument and load the model; RewriteError naming the fix on a bad one."""
    device = _device(args.device, world)
    cache_dir = (user_path(args.cache_dir, "cache folder") if args.cache_dir is not None
                 else default_cache_dir())
    gen = load(args.model, device)
    counts = sample_counts(gen, args.layers, args.samples)
    default = _default_batch(gen)
    batch = default if args.batch_size is None else parse_count(
        args.batch_size, "--batch-size", 100_000, f"pass a positive integer (the default is "
        f"{default}, the sessions' own).")
    return Job(gen, counts, cache_dir, batch, device, bool(args.refresh))


# -- the process group --------------------------------------------------------------------------
@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """torch.distributed initialised for this torchrun worker (nothing without torchrun)."""
    if not world.distributed:
        yield
        return
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def _same_everywhere(world: World, value: Any) -> list[Any]:
    """Every rank's ``value`` (just this one's without torchrun)."""
    if not world.distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, value)
    return out


def _from_rank0(world: World, value: Any) -> Any:
    if not world.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_reduce_sum(world: World, t: torch.Tensor) -> torch.Tensor:
    if world.distributed:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# -- the work -----------------------------------------------------------------------------------
def _say(world: World, message: str) -> None:
    if world.rank == 0:
        print(message, flush=True)


def _writable(folder: Path) -> str:
    """"" if a file can be written in ``folder`` (created if missing), else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        return f"{e.strerror or e}"
    return ""


def _plan(job: Job, fingerprint: str) -> tuple[dict[str, int], str]:
    """(the layers to collect, why the cache cannot be written or "") as rank 0 sees the cache."""
    todo: dict[str, int] = {}
    for layer, n in job.counts.items():
        meta = cache_key(fingerprint, layer, n)
        path = cache_path(job.cache_dir, meta)
        if job.refresh:
            todo[layer] = n
            continue
        c, reason = load_cached(path, meta, memory_for(job.gen.layer(layer), layer).key_dim)
        if c is not None:
            print(f"{layer}: cached already ({n:,} samples) in {path}; pass --refresh to "
                  "collect it again.", flush=True)
        else:
            if reason != "no cache file":
                print(f"{layer}: cache file {path.name} rejected ({reason}); collecting it "
                      "again.", flush=True)
            todo[layer] = n
    return todo, (_writable(job.cache_dir) if todo else "")


def collect_share(job: Job, counts: Mapping[str, int], world: World
                  ) -> dict[str, SecondMoment]:
    """This rank's partial second moments: ``batch_share`` of the single-process batches."""
    share = batch_share(batch_bounds(counts, job.batch_size), world.rank, world.size)
    stats = {layer: SecondMoment() for layer in counts}
    title = "statistics"
    if world.distributed:
        title += f", rank 0 of {world.size}"
    bar = Bar(title) if world.rank == 0 else None
    try:
        for _ in accumulate_moments(job.gen, stats, counts, job.batch_size, progress=bar,
                                    batches=share):
            pass
    finally:
        if bar is not None:
            bar.close()
    return stats


def merge_shares(job: Job, stats: Mapping[str, SecondMoment], world: World
                 ) -> dict[str, torch.Tensor]:
    """{layer: C} from every rank's shares: their float64 sums and row counts all-reduced in one
    buffer (row counts are far below 2**53, so exact in float64); C made exactly symmetric, as
    collect_second_moments does, so the cache's check holds on reload."""
    dims = {layer: memory_for(job.gen.layer(layer), layer).key_dim for layer in stats}
    parts = [stats[layer].total(dims[layer], job.device).flatten() for layer in stats]
    counts = torch.tensor([float(stats[layer].count) for layer in stats], dtype=torch.float64,
                          device=job.device)
    flat = _all_reduce_sum(world, torch.cat([*parts, counts]))
    out, at = {}, 0
    for i, layer in enumerate(stats):
        d = dims[layer]
        total = flat[at:at + d * d].reshape(d, d)  # (C_in, C_in)
        at += d * d
        c = SecondMoment.from_total(total, int(flat[-len(stats) + i])).moment()
        out[layer] = ((c + c.T) / 2).cpu()
    return out


def _save(job: Job, fingerprint: str, moments: Mapping[str, torch.Tensor]) -> None:
    """Rank 0: each C written atomically, then read back through the session's own check."""
    for layer, c in moments.items():
        n = job.counts[layer]
        meta = cache_key(fingerprint, layer, n)
        path = cache_path(job.cache_dir, meta)
        save_cached(path, meta, c)
        with serial():
            back, reason = load_cached(path, meta, c.shape[0])
        if back is None:
            path.unlink(missing_ok=True)
            raise RewriteError(f"The C collected for {layer} fails the cache's own check "
                               f"({reason}); it was not kept.",
                               "check the model's outputs are finite at this layer.")
        print(f"{layer}: C {tuple(c.shape)} over {n:,} samples -> {path}", flush=True)


def run(job: Job, world: World) -> int:
    """Collect the layers not cached yet and write them (rank 0); every rank returns 0."""
    fingerprint = job.gen.fingerprint(current=True)  # what RewriteSession._collect keys by
    mine = (fingerprint, job.counts, job.batch_size)
    if any(other != mine for other in _same_everywhere(world, mine)):
        raise RewriteError("The ranks do not agree on the model weights, layers, sample counts "
                           "or batch size; their sums cannot be added.",
                           "run the same rewidget, model files and arguments on every node.")
    todo, unwritable = _from_rank0(world, _plan(job, fingerprint) if world.rank == 0 else None)
    if unwritable:
        raise RewriteError(f"Cannot write to the statistics cache folder {job.cache_dir} "
                           f"({unwritable}).", "pass --cache-dir (or set REWIDGET_CACHE to) a "
                           "folder you can write to.")
    if not todo:
        return 0
    how = (f"{world.size} processes ({'nccl' if job.device.type == 'cuda' else 'gloo'}, "
           f"{job.device.type})" if world.distributed else f"one process ({job.device})")
    counts = ", ".join(f"{layer} × {n:,}" for layer, n in todo.items())
    _say(world, f"{job.gen.name}: collecting {counts} samples on {how}")
    t0 = time.perf_counter()
    moments = merge_shares(job, collect_share(job, todo, world), world)
    _say(world, f"collected in {time.perf_counter() - t0:.1f} s")
    if world.rank == 0:
        _save(job, fingerprint, moments)
    return 0


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM (how torchrun stops its workers) acts as Ctrl-C while the job runs."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # handlers belong to the main thread (main() may be called from a test's)
        return

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code (0, 2 bad input, 130 stopped)."""
    args = _parser().parse_args(argv)  # a malformed command line: usage and exit 2 (argparse)
    world = World()
    try:
        with _sigterm_stops():
            world = World.from_env()
            job = make_job(args, world)
            with process_group(world, job.device):
                return run(job, world)
    except RewriteError as e:
        # every rank meets the same argument, cache and agreement errors: rank 0 speaks for all
        if world.rank == 0 or isinstance(e, _RankError):
            where = f" (rank {world.rank})" if world.distributed else ""
            print(f"{PROG}: error{where}: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Cancelled):
        if world.rank == 0:
            print(f"\n{PROG}: stopped; the layers not reported as written were not written "
                  "(no partial file is ever left).", file=sys.stderr, flush=True)
        return EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main())
