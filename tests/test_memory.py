"""The linear-memory view of each layer kind against direct layer evaluation."""

import pytest
import torch

from rewidget.core.memory import memory_for
from rewidget.models import load_tiny

LAYERS = ["main.0", "main.4", "main.7", "main.9", "main.12"]  # Linear, ConvT, Conv2d, ConvT, ConvT


@pytest.fixture(scope="module")
def gen():
    return load_tiny()


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("rank", [1, 3])
def test_design_and_delta_match_the_layer(gen, layer, rank):
    mem = memory_for(gen.layer(layer))
    g = torch.Generator().manual_seed(1)
    keys = gen.keys(layer, gen.latents([0, 1]))
    d = torch.linalg.qr(torch.randn(mem.key_dim, rank, generator=g))[0]
    lam = torch.randn(mem.factor_shape(rank), generator=g, dtype=torch.float64) * 0.1
    dw = mem.delta_weight(d, lam)
    assert dw.shape == mem.weight.shape
    with torch.no_grad():
        direct = mem.values(keys, mem.weight + dw) - mem.values(keys)
        z = mem.project(keys.double(), d.double())
        via_factor = mem.delta_values(z, lam)
        flat = mem.value_rows(mem.design(z)) @ lam_flat(mem, lam, rank).T
    torch.testing.assert_close(via_factor.float(), direct, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(flat.float(), mem.value_rows(direct), atol=2e-5, rtol=1e-4)


def lam_flat(mem, lam, rank):
    """Λ as (C_out, q), the layout the exact solver produces (inverse of factor_from_flat)."""
    if mem.kind == "linear":
        return lam
    if mem.kind == "conv2d":
        return lam.reshape(mem.value_dim, -1)
    return lam.transpose(0, 1).reshape(mem.value_dim, -1)


@pytest.mark.parametrize("layer", LAYERS)
def test_delta_has_rank_r_along_the_key_axis(gen, layer):
    mem = memory_for(gen.layer(layer))
    g = torch.Generator().manual_seed(2)
    for rank in (1, 2):
        d = torch.linalg.qr(torch.randn(mem.key_dim, rank, generator=g))[0]
        dw = mem.delta_weight(d, torch.randn(mem.factor_shape(rank), generator=g, dtype=torch.float64))
        mat = dw.movedim(mem.key_axis, -1).reshape(-1, mem.key_dim).double()
        assert int(torch.linalg.matrix_rank(mat, rtol=1e-5)) == rank
        # projecting an update already in span(D) changes nothing
        torch.testing.assert_close(mem.project_delta(dw, d), dw, atol=1e-6, rtol=1e-5)
