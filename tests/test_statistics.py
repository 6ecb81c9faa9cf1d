"""C equals the naive second moment, alone or several layers in one pass; the disk cache
reloads, rejects bad files and keeps nothing partial; auto sample counts follow the rule."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rewidget.core.errors import Cancelled, RewriteError
from rewidget.core.memory import memory_for
from rewidget.core.statistics import (
    MAX_SAMPLES,
    MIN_SAMPLES,
    ROWS_PER_KEY_DIM,
    SAMPLE_STEP,
    SecondMoment,
    auto_samples,
    cache_key,
    cache_path,
    cached_second_moment,
    cached_second_moments,
    collect_second_moment,
    collect_second_moments,
    rows_per_sample,
    samples_needed,
    stats_seeds,
)
from rewidget.models import load_tiny


@pytest.fixture(scope="module")
def gen():
    return load_tiny()


@pytest.mark.parametrize("layer", ["main.0", "main.7", "main.12"])
def test_second_moment_equals_naive_reference(gen, layer):
    n = 300
    c = collect_second_moment(gen, layer, n, batch_size=64)  # several uneven batches
    with torch.no_grad():
        rows = memory_for(gen.layer(layer)).key_rows(gen.keys(layer, gen.latents(stats_seeds(n))))
    ref = rows.double().T @ rows.double() / rows.shape[0]
    assert c.dtype == torch.float64
    torch.testing.assert_close(c, ref, rtol=1e-5, atol=1e-7)


def test_second_moment_accumulates_in_float64():
    stat = SecondMoment()
    x = torch.randn(50_000, 4)
    for part in x.split(777):
        stat.add(part)
    torch.testing.assert_close(stat.moment(), x.double().T @ x.double() / 50_000, rtol=1e-5, atol=1e-6)
    assert stat.count == 50_000


def test_cache_reloads_identically_and_reports_progress(gen, tmp_path):
    calls = []
    c1 = cached_second_moment(gen, "main.9", 200, "fp", tmp_path, progress=lambda *a: calls.append(a))
    assert calls and calls[-1][0] == calls[-1][1] == 200
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    c2 = cached_second_moment(gen, "main.9", 200, "fp", tmp_path)
    assert torch.equal(c1, c2)


def test_corrupted_cache_is_rebuilt_not_used(gen, tmp_path):
    c1 = cached_second_moment(gen, "main.9", 200, "fp", tmp_path)
    path = next(tmp_path.iterdir())
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip bits in the tensor data
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum"):
        c2 = cached_second_moment(gen, "main.9", 200, "fp", tmp_path)
    assert torch.equal(c1, c2)


def test_cache_from_another_model_is_rejected(gen, tmp_path):
    meta = cache_key("fp", "main.9", 200)
    path = cache_path(tmp_path, meta)
    bogus = torch.eye(16, dtype=torch.float64)
    save_file({"moment": bogus}, str(path), metadata={**meta, "fingerprint": "another-model",
                                                       "sha256": "x"})
    with pytest.warns(UserWarning, match="fingerprint"):
        c = cached_second_moment(gen, "main.9", 200, "fp", tmp_path)
    assert not torch.equal(c, bogus)


def test_truncated_cache_is_rebuilt(gen, tmp_path):
    cached_second_moment(gen, "main.9", 200, "fp", tmp_path)
    path = next(tmp_path.iterdir())
    path.write_bytes(path.read_bytes()[:40])
    with pytest.warns(UserWarning, match="unreadable"):
        cached_second_moment(gen, "main.9", 200, "fp", tmp_path)


def test_shared_generator_with_another_sessions_edit_gets_its_own_statistics(tmp_path):
    """Two sessions on one generator: statistics follow the weights actually in the model."""
    from rewidget import RewriteSession

    from .conftest import box

    gen = load_tiny()
    a = RewriteSession(gen, layer="main.4", stats_samples=200, cache_dir=tmp_path)
    clean = a.statistics("main.9").clone()
    a.add_context(1, box(32, 8, 20, 8, 20))
    a.set_copy(2, box(32, 8, 20, 8, 20))
    a.set_paste(1, (2, 2))
    a.rewrite()  # edits main.4, upstream of main.9
    assert torch.equal(a.statistics("main.9", refresh=True), clean)  # a's own edit is swapped out
    b = RewriteSession(gen, stats_samples=200, cache_dir=tmp_path)
    seen_by_b = b.statistics("main.9")  # b sees a's edit as part of its model
    assert not torch.equal(seen_by_b, clean)
    torch.testing.assert_close(seen_by_b, collect_second_moment(gen, "main.9", 200))
    a.undo()
    b2 = RewriteSession(gen, stats_samples=200, cache_dir=tmp_path)
    assert torch.equal(b2.statistics("main.9"), clean)  # the clean cache is still valid


# -- one pass for several layers --------------------------------------------------------------
def naive_moment(gen, layer, n):
    """E[kkᵀ] from gen.keys on all n seeds at once, in float64."""
    with torch.no_grad():
        rows = memory_for(gen.layer(layer)).key_rows(gen.keys(layer, gen.latents(stats_seeds(n))))
    rows = rows.double()
    return rows.T @ rows / rows.shape[0]


TINY_COUNTS = {"main.0": 70, "main.4": 50, "main.7": 33, "main.9": 20, "main.12": 9}


def test_one_pass_equals_per_layer_collection_tiny(gen):
    together = collect_second_moments(gen, TINY_COUNTS, batch_size=16)  # uneven batches
    for layer, n in TINY_COUNTS.items():
        alone = collect_second_moment(gen, layer, n, batch_size=64)
        torch.testing.assert_close(together[layer], alone, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(together[layer], naive_moment(gen, layer, n), rtol=1e-5,
                                   atol=1e-7)


def test_one_pass_is_bit_exact_when_counts_are_whole_batches(gen):
    """Each layer then gets the batches it would get alone: a replayed request's C is exact."""
    counts = {"main.4": 48, "main.9": 32, "main.12": 16}
    together = collect_second_moments(gen, counts, batch_size=16)
    for layer, n in counts.items():
        assert torch.equal(together[layer], collect_second_moment(gen, layer, n, batch_size=16))


def test_one_pass_without_a_trunk_uses_hooks(gen):
    """A generator with no sequential trunk: gen.keys stops by a hook, ours read on the way."""
    from rewidget.models import from_module

    hooked = from_module(gen.module, gen.latent_shape, name="tiny-hooked", layers=list(TINY_COUNTS))
    together = collect_second_moments(hooked, TINY_COUNTS, batch_size=25)
    for layer, n in TINY_COUNTS.items():
        torch.testing.assert_close(together[layer], naive_moment(gen, layer, n), rtol=1e-5,
                                   atol=1e-7)


def test_one_pass_equals_per_layer_collection_faces(faces_gen):
    counts = {"main.0": 40, "main.3": 30, "main.6": 20, "main.9": 12, "main.12": 6}
    together = collect_second_moments(faces_gen, counts, batch_size=8)
    for layer, n in counts.items():
        torch.testing.assert_close(together[layer], naive_moment(faces_gen, layer, n),
                                   rtol=1e-5, atol=1e-7)


def test_cached_layers_are_loaded_and_only_missing_ones_collected(gen, tmp_path):
    c9 = cached_second_moment(gen, "main.9", 20, "fp", tmp_path)
    messages = []
    out = cached_second_moments(gen, TINY_COUNTS, "fp", tmp_path, batch_size=16,
                                progress=lambda d, t, m: messages.append(m))
    assert torch.equal(out["main.9"], c9)  # reloaded, not collected again
    assert "statistics for main.9 (cached)" in messages
    collected = {m for m in messages if "cached" not in m}
    assert collected == {"statistics for main.0, main.4, main.7, main.12"}  # one pass
    assert len(list(tmp_path.glob("*.safetensors"))) == len(TINY_COUNTS)
    again = cached_second_moments(gen, TINY_COUNTS, "fp", tmp_path,
                                  progress=lambda d, t, m: messages.append(m))
    assert all(torch.equal(again[k], out[k]) for k in TINY_COUNTS)


class CancelAfter:
    """A cancel token that fires after ``n`` checks."""

    def __init__(self, n):
        self.n = n

    def is_set(self):
        self.n -= 1
        return self.n < 0


def test_cancel_leaves_no_cache_file(gen, tmp_path):
    with pytest.raises(Cancelled):
        cached_second_moments(gen, {"main.4": 200, "main.12": 100}, "fp", tmp_path,
                              batch_size=10, cancel=CancelAfter(3))
    assert list(tmp_path.iterdir()) == []


def test_cancel_keeps_layers_finished_before_it(gen, tmp_path):
    with pytest.raises(Cancelled):
        cached_second_moments(gen, {"main.4": 200, "main.12": 20}, "fp", tmp_path,
                              batch_size=10, cancel=CancelAfter(4))
    assert [p.name.split("_")[1] for p in tmp_path.iterdir()] == ["main"]  # main.12 only
    assert next(tmp_path.iterdir()).name.startswith("C_main_12_20_")
    messages = []
    cached_second_moments(gen, {"main.4": 200, "main.12": 20}, "fp", tmp_path,
                          progress=lambda d, t, m: messages.append(m))
    assert "statistics for main.12 (cached)" in messages


# -- how many samples ---------------------------------------------------------------------------
def rule(key_dim, rows):
    """The rule as the module docstring states it."""
    n = math.ceil(ROWS_PER_KEY_DIM * key_dim / rows / SAMPLE_STEP) * SAMPLE_STEP
    return min(max(n, MIN_SAMPLES), MAX_SAMPLES)


def test_auto_samples_follow_the_documented_rule(faces_gen):
    # faces: keys (100, 1, 1), (512, 4, 4), (256, 8, 8), (128, 16, 16), (64, 32, 32)
    expected = {"main.0": rule(100, 1), "main.3": rule(512, 16), "main.6": rule(256, 64),
                "main.9": rule(128, 256), "main.12": rule(64, 1024)}
    assert auto_samples(faces_gen) == expected
    assert samples_needed(10**6, 1) == MAX_SAMPLES and samples_needed(1, 10**6) == MIN_SAMPLES
    assert all(n % SAMPLE_STEP == 0 for n in expected.values())


def test_auto_samples_for_linear_keys(gen):
    assert rows_per_sample((16,), 16) == 1
    assert auto_samples(gen, ["main.0"]) == {"main.0": rule(16, 1)}


# -- the session ----------------------------------------------------------------------------------
def test_session_auto_samples_and_statistics_for(tmp_path):
    from rewidget import RewriteSession

    s = RewriteSession("tiny", cache_dir=tmp_path)
    assert s.stats_samples == "auto"
    expected = auto_samples(s.gen)
    assert {n: s.samples_for(n) for n in s.gen.layer_names()} == expected
    messages = []
    cs = s.statistics_for(progress=lambda d, t, m: messages.append(m))
    assert list(cs) == s.gen.layer_names()
    assert len(set(messages)) == 1  # one pass for every layer
    assert all(row["stats"] for row in s.layers())
    assert s.statistics("main.9") is cs["main.9"]


def test_requests_record_and_replay_their_sample_count(tmp_path):
    from rewidget import RewriteSession

    from .conftest import box

    s = RewriteSession("tiny", layer="main.9", cache_dir=tmp_path)
    s.add_context(1, box(32, 8, 20, 8, 20))
    s.set_copy(2, box(32, 8, 20, 8, 20))
    s.set_paste(1, (2, 2))
    assert s.request().stats_samples == s.samples_for("main.9")
    old = s.request()
    old = type(old)(**{**old.__dict__, "stats_samples": 300})  # as recorded by an older session
    edit = s.compute_edit(old)  # collects 300-sample statistics instead of refusing
    fixed = RewriteSession("tiny", layer="main.9", stats_samples=300, cache_dir=tmp_path)
    ref = fixed.compute_edit(old)
    assert torch.equal(edit.delta(s.gen.layer("main.9")), ref.delta(fixed.gen.layer("main.9")))
    with pytest.raises(RewriteError, match="not a sample count"):
        s.compute_edit(type(old)(**{**old.__dict__, "stats_samples": 0}))
    with pytest.raises(RewriteError, match="not a sample count"):
        RewriteSession("tiny", stats_samples="many")


def test_statistics_under_w0_leave_the_session_free_meanwhile(tmp_path):
    """With an edit upstream, W₀ is used in the collecting thread only: the session lock stays
    free (selections, renders) while the pass runs, and C is the clean one."""
    import threading

    from rewidget import RewriteSession

    from .conftest import box

    s = RewriteSession(load_tiny(), layer="main.4", stats_samples=400, cache_dir=tmp_path,
                       quiet=True)
    clean = s.statistics("main.9").clone()
    s.add_context(1, box(32, 8, 20, 8, 20))
    s.set_copy(2, box(32, 8, 20, 8, 20))
    s.set_paste(1, (2, 2))
    s.rewrite()  # edits main.4, upstream of main.9
    edited_render = s.render().copy()
    free = []

    def other_thread():
        got = s.lock.acquire(timeout=0.5)
        if got:
            s.lock.release()
        free.append(got)
        free.append(s.render().copy())  # renders see the installed edit meanwhile

    def progress(done, total, what):
        if not free:  # while the pass runs (this is the collecting thread)
            t = threading.Thread(target=other_thread)
            t.start()
            t.join()

    again = s.statistics("main.9", refresh=True, progress=progress)
    assert free[0] is True
    assert np.array_equal(free[1], edited_render)
    assert torch.equal(again, clean)
