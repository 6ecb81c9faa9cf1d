"""C equals the naive second moment; the disk cache reloads, and rejects bad files."""

import pytest
import torch
from safetensors.torch import save_file

from rewidget.core.memory import memory_for
from rewidget.core.statistics import (
    SecondMoment,
    cache_key,
    cache_path,
    cached_second_moment,
    collect_second_moment,
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
