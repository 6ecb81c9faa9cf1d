"""The scenes world (renderer, segmenter, rules) and its trained generator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from rewidget.models import scenes as S


@pytest.fixture(scope="module")
def rendered():
    z = np.random.default_rng(123).standard_normal((250, S.SCENES_NZ))
    rgb, cm = S.render_latents(z)
    return z, rgb, cm


def test_same_latent_same_scene_and_different_latents_differ(rendered):
    z, rgb, cm = rendered
    rgb2, cm2 = S.render_latents(z[:20].copy())
    assert np.array_equal(rgb2, rgb[:20]) and np.array_equal(cm2, cm[:20])
    assert S.sample_params(z[0]) == S.sample_params(z[0].copy())
    assert S.sample_params(np.random.default_rng(5)) == S.sample_params(5)
    flat = rgb.reshape(len(rgb), -1)
    assert len({row.tobytes() for row in flat}) == len(flat)


def test_latent_shapes_accepted():
    z = torch.randn(3, S.SCENES_NZ, 1, 1, generator=torch.Generator().manual_seed(0))
    a, _ = S.render_latents(z.numpy())
    b, _ = S.render_latents(z.numpy().reshape(3, -1))
    assert a.shape == (3, 64, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    with pytest.raises(ValueError):
        S.params_from_latent(np.zeros(S.SCENES_NZ + 1))


def test_classmap_matches_colours_and_segmenter_is_exact(rendered):
    _, rgb, cm = rendered
    assert np.array_equal(S.PALETTE_ARRAY[cm], rgb)
    assert np.array_equal(S.segment(rgb), cm)
    assert np.array_equal(S.segment(rgb, tol=S.DEFAULT_TOL), cm)
    assert S.palette_share(rgb) == 1.0
    assert set(np.unique(cm)) == set(range(len(S.CLASS_NAMES)))


def test_palette_distinct_and_blends_never_look_like_a_third_class(rendered):
    _, _, cm = rendered
    touching = set()  # class pairs that meet somewhere in a scene
    for a, b in ((cm[:, 1:], cm[:, :-1]), (cm[:, :, 1:], cm[:, :, :-1])):
        touching |= {frozenset(p) for p in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True)}
    c = S.PALETTE_ARRAY.astype(float)
    d = np.linalg.norm(c[:, None] - c[None], axis=-1) + 1e9 * np.eye(len(c))
    assert d.min() > 2 * S.DEFAULT_TOL
    t = np.linspace(0, 1, 51)[:, None]
    for i, j in itertools.combinations(range(len(c)), 2):
        blend = ((1 - t) * c[i] + t * c[j]).round().astype(np.uint8)[None]  # (1, 51, 3)
        labels = set(S.segment(blend, tol=S.DEFAULT_TOL).ravel().tolist())
        if frozenset((i, j)) not in touching:
            continue
        assert labels <= {i, j, S.UNKNOWN}, (S.CLASS_NAMES[i], S.CLASS_NAMES[j], labels)


def test_rules_hold_on_every_rendered_scene(rendered):
    _, _, cm = rendered
    agg = S.sum_rule_counts([S.check_rules(c) for c in cm])
    for rule, v in agg.items():
        assert v["total"] > 0, rule
        assert v["held"] == v["total"], (rule, v)
    counts = [S.object_counts(c) for c in cm]
    towers = np.bincount([c["towers"] for c in counts]) / len(counts)
    assert len(towers) == 4 and towers.min() > 0.05  # 0-3 towers, each common


def _scene_with(towers=True, trees=True, sun=True):
    for seed in range(1000):
        p = S.sample_params(seed)
        if (not towers or p.towers) and (not trees or p.trees) and (not sun or p.sun):
            return S.render_classmap(p)
    raise AssertionError


def test_rules_catch_violations():
    cm = _scene_with()
    assert all(h == t for h, t in S.check_rules(cm).values())

    no_roof = np.where(cm == S.ROOF, S.SKY, cm)
    r = S.check_rules(no_roof)
    assert r["roof_on_tower"][0] == 0 < r["roof_on_tower"][1]

    bare = np.where(cm == S.WINDOW, S.TOWER, cm)
    assert S.check_rules(bare)["tower_has_windows"][0] == 0
    stray = cm.copy()
    stray[58:62, 1:5] = S.WINDOW
    r = S.check_rules(stray)
    assert r["window_on_tower"][1] - r["window_on_tower"][0] >= 1

    no_trunk = np.where(cm == S.TRUNK, S.GRASS, cm)
    assert S.check_rules(no_trunk)["trunk_under_tree"][0] == 0

    sunk = np.where(cm == S.SUN, S.SKY, cm)
    sunk[52:60, 1:9] = S.SUN
    r = S.check_rules(sunk)
    assert r["sun_in_sky"][0] < r["sun_in_sky"][1]


def test_network_shape_and_layers():
    net = S.build_scenes_network()
    assert sum(p.numel() for p in net.parameters()) <= 1_000_000
    names = dict(net.named_modules())
    key_res = {}
    hooks = [
        names[n].register_forward_pre_hook(lambda m, a, n=n: key_res.__setitem__(n, a[0].shape[-1]))
        for n in ("main.3", "main.6", "main.9")
    ]
    out = net.eval()(torch.randn(2, S.SCENES_NZ, 1, 1))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 3, 64, 64) and out.abs().max() <= 1
    assert key_res == {"main.3": 4, "main.6": 8, "main.9": 16}
    assert all(
        isinstance(names[n], torch.nn.ConvTranspose2d) for n in ("main.3", "main.6", "main.9")
    )
    assert isinstance(net.main[-1], torch.nn.Tanh)


def test_trained_generator_follows_the_rules():
    net = S.load_scenes_network()
    assert not net.training
    assert S.WEIGHTS_PATH.stat().st_size <= 10 * 2**20
    z = S.scenes_latents(range(3))
    with torch.no_grad():
        assert torch.equal(net(z), net(z))
    rep = S.evaluate_generator(net, n=500, seed0=1_000_000)
    # the targets on the documented 500-seed evaluation set (deterministic on CPU);
    # the share is 0.9502 there, so this also guards against any regression
    assert rep["palette_share"] >= 0.95
    for rule, v in rep["rules"].items():
        assert v["rate"] >= 0.95, (rule, v)
    assert rep["rules"]["roof_on_tower"]["total"] >= 200  # towers really are drawn
    assert rep["rules"]["trunk_under_tree"]["total"] >= 200
    assert rep["towers"]["agree"] >= 0.9
    gen, ren = np.array(rep["towers"]["generator"]), np.array(rep["towers"]["renderer"])
    assert np.abs(gen - ren).sum() <= 0.1


# --------------------------------------------------------------------------- counterfactual worlds


@pytest.fixture(scope="module")
def worlds(rendered):
    z = rendered[0]
    return {change: S.render_latents(z, change)[1] for change in S.COUNTERFACTUALS}


def _roofs_and_crowns(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 64, 64) bool each: every tower's roof triangle, and the crown disc that replaces it."""
    yc, xc = np.mgrid[0:64, 0:64] + 0.5
    roofs, crowns = np.zeros((2, len(z), 64, 64), bool)
    for i, zi in enumerate(z):
        for t in S.params_from_latent(zi).towers:
            depth = (yc - (t.top - t.roof_h)) / t.roof_h
            roofs[i] |= (depth > 0) & (yc < t.top) & (np.abs(xc - t.cx) < depth * (t.width / 2 + 1.5))
            cx, cy, r = S.crown_for_roof(t)
            crowns[i] |= (xc - cx) ** 2 + (yc - cy) ** 2 <= r**2
    return roofs, crowns


def test_no_change_is_the_world_and_unknown_changes_are_refused(rendered):
    z, _, cm = rendered
    assert np.array_equal(S.render_latents(z[:10], None)[1], cm[:10])
    with pytest.raises(ValueError, match="counterfactual"):
        S.render_latents(z[:1], "no_towers")


def test_no_windows_and_no_sun_change_exactly_those_pixels(rendered, worlds):
    _, _, cm = rendered
    for change, source, becomes in (("no_windows", S.WINDOW, S.TOWER), ("no_sun", S.SUN, S.SKY)):
        cf = worlds[change]
        changed = cf != cm
        assert np.array_equal(changed, cm == source), change
        assert (cf[changed] == becomes).all() and changed.any()


def test_flat_roofs_cut_the_upper_half_of_each_roof(rendered, worlds):
    _, _, cm = rendered
    cf = worlds["flat_roofs"]
    changed = cf != cm
    assert (cm[changed] == S.ROOF).all() and changed.any()
    assert np.isin(cf[changed], (S.SKY, S.SUN)).all()  # what lay behind the tip shows
    n_roofs = 0
    for c, f in zip(cm, cf, strict=True):
        for rows, cols in S._components(c == S.ROOF):
            gone = f[rows, cols] != S.ROOF
            top, height = rows.min(), rows.max() - rows.min() + 1
            assert np.array_equal(gone, rows < top + round(0.5 * height))  # whole rows, from the tip
            n_roofs += 1
    assert n_roofs > 100


def test_roof_to_tree_changes_only_roofs_and_the_crowns_that_replace_them(rendered, worlds):
    z, _, cm = rendered
    cf = worlds["roof_to_tree"]
    roofs, crowns = _roofs_and_crowns(z)
    changed = cf != cm
    assert not (changed & ~(roofs | crowns)).any()  # nothing else is redrawn
    assert not (cf == S.ROOF).any()  # no roof is left
    assert (cf[crowns] == S.TREE).all()  # every crown is drawn whole, on top
    assert np.isin(cf[roofs & ~crowns], (S.SKY, S.SUN)).all()  # the roof's corners show the sky
    assert (changed & crowns & ~roofs).any() and (changed & roofs & ~crowns).any()  # a shape change
    # each crown rests on its tower: the row under its lowest pixel is tower wall
    for zi, f in zip(z[:40], cf[:40], strict=True):
        for t in S.params_from_latent(zi).towers:
            assert f[t.top, round(t.cx)] == S.TOWER and f[t.top - 1, round(t.cx)] == S.TREE
    counts = [S.object_counts(f) for f in cf]
    want = [len(p.towers) + len(p.trees) for p in map(S.params_from_latent, z)]
    assert [c["trees"] for c in counts] == want  # one crown per tower, apart from the trees
