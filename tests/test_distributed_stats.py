"""python -m rewidget.stats: shares of the seeds merged equal one pass; two torchrun processes
write the C one process writes, into the cache a session then loads without collecting; bad
input exits 2 naming the fix; Ctrl-C stops and leaves no file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rewidget.core.statistics as statistics
from rewidget import RewriteSession
from rewidget.core.statistics import (
    SecondMoment,
    accumulate_moments,
    batch_bounds,
    batch_share,
    cache_key,
    cache_path,
    collect_second_moments,
)
from rewidget.models import load_tiny
from rewidget.stats import World, main

LAYERS = ["main.4", "main.12"]
N = 400
BATCH = "100"  # 4 batches: the ranks' float64 sums really are added in another order
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # same float32 partial Grams in every process
TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(*args: str, torchrun: int = 0) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(torchrun),
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())] \
        if torchrun else []
    return subprocess.run([sys.executable, *launcher, "-m", "rewidget.stats", *args],
                          capture_output=True, text=True, env=ENV, timeout=TIMEOUT)


def _moments(folder: Path) -> dict[str, torch.Tensor]:
    return {p.name: load_file(p)["moment"] for p in sorted(folder.glob("C_*.safetensors"))}


# -- the shares, in one process -------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_shares_partition_the_batches(world):
    bounds = batch_bounds({"a": 1_000, "b": 430}, 100)
    assert bounds[0] == (0, 100) and bounds[-1] == (900, 1_000) and (400, 430) in bounds
    shares = [batch_share(bounds, r, world) for r in range(world)]
    assert sorted(b for s in shares for b in s) == bounds  # disjoint, and all of them
    with pytest.raises(ValueError):
        batch_share(bounds, world, world)


def test_merged_shares_equal_one_pass():
    gen = load_tiny()
    counts = {"main.4": 700, "main.12": 430}  # uneven: a deep batch ends at 430
    whole = collect_second_moments(gen, counts, batch_size=100)
    bounds, world = batch_bounds(counts, 100), 3
    shares = []
    for rank in range(world):
        stats = {layer: SecondMoment() for layer in counts}
        mine, seen = batch_share(bounds, rank, world), []
        for _ in accumulate_moments(gen, stats, counts, 100, batches=mine,
                                    progress=lambda d, t, _m, seen=seen: seen.append((d, t))):
            pass
        share = sum(b - a for a, b in mine)
        assert seen[-1] == (share, share)  # progress counts this share's samples
        shares.append(stats)
    for layer in counts:
        dim = whole[layer].shape[0]
        total = sum(s[layer].total(dim) for s in shares)
        c = SecondMoment.from_total(total, sum(s[layer].count for s in shares)).moment()
        torch.testing.assert_close((c + c.T) / 2, whole[layer], rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="not batches"):
        next(accumulate_moments(gen, {"main.4": SecondMoment()}, {"main.4": 700}, 100,
                                batches=[(0, 50)]))


def test_world_from_torchrun_env():
    assert World.from_env({}) == World(0, 1, 0)
    assert World.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    assert World.from_env({"RANK": "3", "WORLD_SIZE": "4"}).distributed


# -- the command ----------------------------------------------------------------------------------
GLOO = torch.distributed.is_available() and torch.distributed.is_gloo_available()


@pytest.mark.skipif(not GLOO, reason="torch.distributed with gloo is needed")
def test_two_torchrun_processes_write_the_c_one_process_writes_and_the_session_loads_it(
        tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["tiny", *LAYERS, "--samples", str(N), "--batch-size", BATCH]
    single = _stats(*args, "--cache-dir", str(one))
    assert single.returncode == 0, single.stdout + single.stderr
    pair = _stats(*args, "--cache-dir", str(two), torchrun=2)
    assert pair.returncode == 0, pair.stdout + pair.stderr
    assert "on 2 processes (gloo, cpu)" in pair.stdout
    assert pair.stdout.count("-> ") == len(LAYERS)  # rank 0 alone writes and reports
    c1, c2 = _moments(one), _moments(two)
    assert len(c1) == len(LAYERS) and c1.keys() == c2.keys()  # same cache keys, same names
    for name in c1:
        assert c2[name].dtype == torch.float64
        torch.testing.assert_close(c2[name], c1[name], rtol=1e-10, atol=0)
    assert not list(two.glob(".*")), "no temporary files left"

    # a session on the same model and count reads these files and collects nothing
    def refuse(*_a, **_k):
        raise AssertionError("the session collected statistics instead of loading them")

    monkeypatch.setattr(statistics, "collect_second_moments", refuse)
    s = RewriteSession("tiny", cache_dir=two, stats_samples=N, quiet=True)
    notes: list[str] = []
    got = s.statistics_for(LAYERS, progress=lambda _d, _t, message: notes.append(message))
    assert notes == [f"statistics for {layer} (cached)" for layer in LAYERS]
    for layer in LAYERS:
        name = cache_path(two, cache_key(s.fingerprint, layer, N)).name
        assert torch.equal(got[layer].cpu(), c2[name])
    monkeypatch.undo()
    # and it is the C a session would collect itself (batch size only moves float32 rounding)
    fresh = RewriteSession("tiny", cache_dir=tmp_path / "fresh", stats_samples=N, quiet=True)
    for layer, c in fresh.statistics_for(LAYERS).items():
        torch.testing.assert_close(got[layer], c, rtol=1e-5, atol=1e-7)


def test_cached_layers_are_skipped_a_bad_file_rebuilt_and_refresh_collects_again(
        tmp_path, capsys):
    args = ["tiny", "main.9", "--samples", "300", "--cache-dir", str(tmp_path)]
    assert main(args) == 0
    (path,) = tmp_path.glob("C_*.safetensors")
    stamp = path.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert "cached already" in capsys.readouterr().out and path.stat().st_mtime_ns == stamp
    path.write_bytes(b"not a safetensors file")
    assert main(args) == 0
    assert "rejected (unreadable" in capsys.readouterr().out
    assert main([*args, "--refresh"]) == 0
    assert "-> " in capsys.readouterr().out
    assert len(load_file(path)["moment"]) == 32


def test_samples_auto_uses_the_sessions_counts(tmp_path):
    assert main(["tiny", "main.12", "--samples", "auto", "--cache-dir", str(tmp_path)]) == 0
    s = RewriteSession("tiny", cache_dir=tmp_path, quiet=True)  # stats_samples="auto"
    notes: list[str] = []
    s.statistics_for(["main.12"], progress=lambda _d, _t, message: notes.append(message))
    assert notes == ["statistics for main.12 (cached)"]


def test_unknown_layer_exits_2_with_the_fix_and_no_traceback():
    out = _stats("tiny", "main.99", "--samples", "400")
    assert out.returncode == 2
    assert "Unknown layer 'main.99'. Fix: choose one of ['main.0'" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["nosuch", "main.9", "--samples", "400"], "Unknown model 'nosuch'. Fix: choose one of"),
    (["tiny", "main.99", "--samples", "400"], "Unknown layer 'main.99'. Fix:"),
    (["tiny", "main.9", "--samples", "many"], "--samples 'many' is not an integer. Fix: pass "
                                              "--samples auto"),
    (["tiny", "main.9", "--samples", "0"], "--samples 0 is outside [1, 1,000,000]. Fix:"),
    (["tiny", "main.9", "--samples", "9", "--batch-size", "-1"], "--batch-size -1 is outside"),
    (["tiny", "main.9", "--samples", "9", "--device", "tpu"], "Fix: pass --device cpu"),
])
def test_bad_input_exits_2_naming_the_fix(args, message, tmp_path, capsys):
    assert main([*args, "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rewidget.stats: error: ") and message in err, err
    assert not list(tmp_path.iterdir())


def test_unwritable_cache_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["tiny", "main.9", "--samples", "9", "--cache-dir", str(blocker / "stats")]) == 2
    assert "Cannot write to the statistics cache folder" in capsys.readouterr().err


def _default_sigint() -> None:
    # a shell starts background jobs with SIGINT ignored, and a child keeps that: Python then
    # installs no KeyboardInterrupt handler and Ctrl-C never reaches the job (the test ran
    # 120 s into its timeout under `nohup ./dev test &`). The job is meant to be started as
    # from a terminal, where Ctrl-C works
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_exits_130_and_writes_nothing(tmp_path, sig):
    cache, log = tmp_path / "cache", tmp_path / "stderr.txt"
    with log.open("w") as stderr:  # a file: the progress bar never fills a pipe
        proc = subprocess.Popen([sys.executable, "-m", "rewidget.stats", "tiny", "main.12",
                                 "--samples", "1000000", "--cache-dir", str(cache)],
                                stdout=subprocess.PIPE, stderr=stderr, text=True, env=ENV,
                                preexec_fn=_default_sigint)
        try:
            assert "collecting" in proc.stdout.readline()  # printed just before the first batch
            time.sleep(0.5)
            proc.send_signal(sig)
            proc.communicate(timeout=TIMEOUT)
        finally:
            proc.kill()
    err = log.read_text()
    assert proc.returncode == 130, err
    assert "stopped" in err and "Traceback" not in err
    assert not list(cache.iterdir())


def test_the_batch_entry_imports_no_widget_code():
    banned = ["ipywidgets", "ipycanvas", "anywidget", "traitlets", "IPython"]
    code = f"import sys, rewidget.stats; print([m for m in {banned!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=ENV, timeout=TIMEOUT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
