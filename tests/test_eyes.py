"""The painted-eyes GAN (omniart-eye-generator, MIT): our network against the package's own,
colours from seeds, and an edit that undoes exactly."""

import importlib.util

import numpy as np
import pytest
import torch

from rewidget import RewriteError, RewriteSession
from rewidget.models import load
from rewidget.models.eyes import COLOURS, colour_of, eyes_latent, eyes_weights_path

from .conftest import edit_then_undo


@pytest.fixture(scope="module")
def gen():
    return load("eyes")


def test_seeds_name_their_colour_and_latents_carry_it(gen):
    z = gen.latents([1, 9, 3])
    assert tuple(z.shape) == (3, 108, 1, 1)
    assert [COLOURS[int(i)] for i in z[:, 100:, 0, 0].argmax(1)] == ["blue", "blue", "gray"]
    assert float(z[:, 100:].sum()) == 3.0  # one-hot
    assert colour_of(9) == "blue" and colour_of(7) == "red" and colour_of(4) == "grayscale"
    assert not torch.equal(z[0, :100], z[1, :100])  # each seed its own z
    red = eyes_latent(9, "red")
    assert torch.equal(red[:100], z[1, :100]) and int(red[100:, 0, 0].argmax()) == 7
    with pytest.raises(RewriteError, match="Unknown eye colour"):
        eyes_latent(9, "purple")
    img = gen.render([1, 9])
    assert img.shape == (2, 128, 128, 3) and np.array_equal(img, gen.render([1, 9]))


def test_the_network_matches_the_packages_own(gen):
    """The package's generator.py, read from its file (the package itself is never imported:
    its __init__ loads the weights at import), with the same weights and inputs."""
    src = eyes_weights_path().parent / "generator.py"
    spec = importlib.util.spec_from_file_location("_eyes_reference", src)
    ref_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref_mod)
    ref = ref_mod.Generator()
    ref.load_state_dict(torch.load(eyes_weights_path(), map_location="cpu", weights_only=True))
    ref.eval()
    z = gen.latents(range(8))
    with torch.no_grad():
        want = ref(z[:, :100], z[:, 100:, 0, 0])
        got = gen.forward(z)
    assert torch.allclose(got, want, atol=1e-5)


def test_an_iris_edit_changes_the_eyes_and_undo_is_exact(tmp_path):
    s = RewriteSession("eyes", stats_samples=1000, cache_dir=tmp_path, quiet=True,
                       grid=[9, 25, 41, 57])
    yy, xx = np.mgrid[:128, :128]
    iris = (((yy - 62) ** 2 + (xx - 60) ** 2) < 18 ** 2).astype(np.uint8) * 255
    for seed in (25, 41, 57):  # blue eyes: where the rule applies
        s.add_context(seed, iris)
    s.set_copy(58, iris)  # a brown eye's iris
    s.set_paste(25, (0, 0))
    edit_then_undo(s, s.request(layer="main.10", rank=3))


def test_the_teachers_edit_turns_held_out_blue_irises_red_and_leaves_other_colours(gen):
    """The saved request (benchmarks/eyes_edit.py): blue-iris pixels of held-out blue eyes turn
    red-dominant; brown and green eyes change far less than the blue irises do."""
    from rewidget import examples

    req = examples.request("eyes_blue_to_red")
    assert (req.layer, req.solver, len(req.pastes)) == ("main.13", "output", 4)
    s = RewriteSession(gen)
    edit = s.compute_edit(req)  # with the request's own statistics count
    blue = gen.latents([1 + 8 * i for i in range(1000, 1016)])
    other = gen.latents([2 + 8 * i for i in range(1000, 1008)] + [5 + 8 * i for i in range(1000, 1008)])
    with torch.no_grad():
        b0, o0 = gen.forward(blue), gen.forward(other)
        s.apply(edit)
        b1, o1 = gen.forward(blue), gen.forward(other)
        s.undo()
        assert torch.equal(gen.forward(blue), b0)
    iris = (b0[:, 2] - b0[:, 0] > 0.27) & (b0[:, 2] > -0.45)
    red = ((b1[:, 0] - b1[:, 2] > 0.1) & (b1[:, 0] - b1[:, 1] > 0.1))[iris].float().mean()
    assert float(red) > 0.4
    on_iris = float((b1 - b0).abs().mean(1)[iris].mean())
    assert float((o1 - o0).abs().mean()) < on_iris / 4
