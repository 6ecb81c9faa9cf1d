"""The rule-edit benchmark's scores mean what their definitions say (benchmarks/rule_scoring.py)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rewidget import RewriteSession
from rewidget.examples import REQUESTS
from rewidget.models import scenes as S

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import rule_edits as B  # noqa: E402
import rule_scoring as RS  # noqa: E402

STATS = 300  # small C: these tests check the bookkeeping, not the edit's quality
SEEDS = [700_000 + i for i in range(16)]


@pytest.fixture(scope="module")
def scenes_session():
    return RewriteSession("scenes", stats_samples=STATS)


def _naive_class(pixel: np.ndarray, tol: float | None = None) -> int:
    """Nearest palette colour of one pixel by a plain loop (UNKNOWN beyond ``tol``)."""
    best, best_d = -1, float("inf")
    for i, colour in enumerate(S.PALETTE_ARRAY):
        d = float(np.sqrt(((pixel.astype(float) - colour.astype(float)) ** 2).sum()))
        if d < best_d:
            best, best_d = i, d
    return S.UNKNOWN if tol is not None and best_d > tol else best


def _naive_scores(before: np.ndarray, after: np.ndarray, source: str, target: str
                  ) -> tuple[float, float]:
    """Efficacy and collateral pixel by pixel, straight from the definitions."""
    src_cls, tgt = S.CLASS_NAMES.index(source), S.CLASS_NAMES.index(target)
    conv = clear = changed = outside = 0
    for img_b, img_a in zip(before, after, strict=True):
        for y in range(img_b.shape[0]):
            for x in range(img_b.shape[1]):
                cb = _naive_class(img_b[y, x])
                if cb == src_cls:  # in the source region
                    if _naive_class(img_b[y, x], S.DEFAULT_TOL) == src_cls:  # clearly source
                        clear += 1
                        conv += _naive_class(img_a[y, x], S.DEFAULT_TOL) == tgt
                else:
                    outside += 1
                    changed += _naive_class(img_a[y, x]) != cb
    return conv / clear, changed / outside


def test_segment_both_matches_the_world_segmenter(scenes_session):
    rgb = scenes_session.render(SEEDS, original=True)
    nearest, strict = RS.segment_both(rgb)
    assert np.array_equal(nearest, S.segment(rgb))
    assert np.array_equal(strict, S.segment(rgb, S.DEFAULT_TOL))


def test_unchanged_images_score_zero(scenes_session):
    rgb = scenes_session.render(SEEDS, original=True)
    src = RS.source_region(rgb, "roof")
    assert src.any()
    r = RS.scene_scores(rgb, rgb.copy(), src, "tree")
    assert r["efficacy"] == 0 and r["collateral"] == 0 and r["colour_change"] == 0


def test_zero_update_scores_zero_efficacy_and_collateral(scenes_session):
    s = scenes_session
    req = B.variant(B.load_request("roof_to_tree"), "main.12", 1, "exact", {"ridge": 0.1}, STATS)
    edit = s.compute_edit(req)
    empty = dataclasses.replace(edit, factor=torch.zeros_like(edit.factor))
    before = s.render(SEEDS, original=True)
    s.apply(empty)
    try:
        after = s.render(SEEDS)
    finally:
        s.undo()
    assert np.array_equal(after, before)
    r = RS.scene_scores(before, after, RS.source_region(before, "roof"), "tree")
    assert r["efficacy"] == 0 and r["collateral"] == 0


def test_benchmark_edit_end_to_end_matches_naive_recount(scenes_session):
    s = scenes_session
    seeds = SEEDS[:2]
    spec = B.EDITS["roof_to_tree"]
    bench = B.EditBench(spec, s, seeds, ["main.12"], [1], {"exact": B.SOLVERS["exact"]},
                        log=lambda _line: None)
    (row,) = bench.run()
    assert "error" not in row and row["seconds"] > 0
    # replay the same setting and recount pixel by pixel
    solver, opts = B.SOLVERS["exact"]
    s.rewrite(B.variant(B.load_request(spec.name), "main.12", 1, solver, opts, STATS))
    try:
        after = s.render(seeds)
    finally:
        s.undo()
    before = s.render(seeds, original=True)
    assert np.array_equal(before, bench.before_rgb)
    efficacy, collateral = _naive_scores(before, after, "roof", "tree")
    print(f"\nroof_to_tree @ main.12 r1 on 2 seeds: efficacy {row['efficacy']:.3f}, "
          f"collateral {row['collateral']:.4f}")
    assert row["efficacy"] == pytest.approx(efficacy, abs=1e-12)
    assert row["collateral"] == pytest.approx(collateral, abs=1e-12)
    assert row["efficacy"] > 0  # the edit does something at this layer
    assert 0 <= row["collateral"] < 1


def test_faces_scores_of_no_change_are_zero():
    before = torch.rand(2, 3, 64, 64) * 2 - 1
    match = torch.zeros(2, 16, 16)
    match[:, 4:8, 4:12] = 1.0
    r = RS.faces_scores(before, before.clone(), match)
    assert r["inside"] == 0 and r["outside"] == 0 and 0 < r["inside_share"] < 1


def test_saved_requests_are_reproducible(tmp_path, scenes_session):
    import make_requests as M

    paths = M.make_all(tmp_path, scenes_session.gen)
    assert set(paths) == set(B.EDITS)
    for name, path in paths.items():
        committed = json.loads((REQUESTS / f"{name}.json").read_text())
        assert json.loads(path.read_text()) == committed, name


# -- shape-aware scores against the counterfactual render -----------------------------------------
Z = S.scenes_latents(range(700_000, 700_040)).numpy()  # (40, nz, 1, 1): the held-out latents


@pytest.fixture(scope="module")
def tree_world():
    return RS.counterfactual_world(Z, "roof_to_tree")


def _maps(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return RS.segment_both(S.classmap_to_rgb(cm))


def test_drawing_the_counterfactual_scores_full_efficacy_and_no_collateral(tree_world):
    before = _maps(tree_world["orig"])
    r = RS.shape_scores(before, _maps(tree_world["cf"]), tree_world, "tree")
    assert r["region_pixels"] > 500
    assert r["shape_efficacy"] == 1.0 and r["target_iou"] == 1.0
    assert r["shape_collateral"] == 0 and r["shape_trunk"] == 0
    c = RS.world_ceiling(before, tree_world, "tree")
    assert c["ceiling_efficacy"] == 1.0 and c["ceiling_iou"] == 1.0


def test_an_unchanged_image_scores_no_efficacy(tree_world):
    before = _maps(tree_world["orig"])
    r = RS.shape_scores(before, before, tree_world, "tree")
    assert r["shape_efficacy"] == 0 and r["target_iou"] == 0 and r["shape_collateral"] == 0


def test_a_green_roof_is_not_a_crown(tree_world):
    """Colour counting calls a roof repainted green a success; the shape-aware score does not."""
    orig, cf, region = tree_world["orig"], tree_world["cf"], tree_world["region"]
    green = np.where(orig == S.ROOF, S.TREE, orig)
    r = RS.shape_scores(_maps(orig), _maps(green), tree_world, "tree")
    naive = (green[region] == cf[region]).mean()  # straight from the definition
    assert r["shape_efficacy"] == pytest.approx(naive) and 0.2 < naive < 0.8
    old = RS.scene_scores(S.classmap_to_rgb(orig), S.classmap_to_rgb(green), orig == S.ROOF, "tree")
    assert old["efficacy"] == 1.0


def test_collateral_counts_changes_outside_the_region_by_class(tree_world):
    orig = tree_world["orig"]
    trunk = orig == S.TRUNK
    half = trunk & (np.arange(64)[None, None, :] < 32)  # trunks in the left half turn to grass
    after = np.where(tree_world["region"], tree_world["cf"], np.where(half, S.GRASS, orig))
    r = RS.shape_scores(_maps(orig), _maps(after), tree_world, "tree")
    outside = ~tree_world["region"]
    assert r["shape_efficacy"] == 1.0
    assert r["shape_trunk"] == pytest.approx(half.sum() / trunk.sum()) and 0 < r["shape_trunk"] < 1
    assert r["shape_collateral"] == pytest.approx(half.sum() / outside.sum())
    assert r["shape_by_class"]["grass"] == 0


def test_flat_roofs_world_redraws_what_the_roof_flat_request_paints():
    """The counterfactual of roof_flat cuts the same rows as the request's context (roof_tips)."""
    w = RS.counterfactual_world(Z, "flat_roofs")
    tips = np.stack([RS.roof_tips(c) for c in w["orig"]])
    assert tips.any() and np.array_equal(w["region"], tips)


def _row(layer, shape_eff, shape_coll, trunk, eff, coll, rule="whitened"):
    return {"edit": "roof_to_tree", "layer": layer, "rank": 1, "direction": rule, "solver": "exact",
            "shape_efficacy": shape_eff, "shape_collateral": shape_coll, "shape_trunk": trunk,
            "target_iou": 0.5, "efficacy": eff, "collateral": coll}


def test_scenes_best_setting_and_verdict_use_the_shape_aware_scores():
    green_triangles = _row("main.12", 0.30, 0.02, 0.90, eff=0.95, coll=0.02)
    crowns = _row("main.9", 0.70, 0.02, 0.05, eff=0.60, coll=0.02, rule="cinv")
    rows = [green_triangles, crowns]
    spec = B.EDITS["roof_to_tree"]
    assert B.best_row(spec, rows) is crowns
    assert B.best_by_layer(spec, rows) == {"main.12": {"whitened": green_triangles},
                                           "main.9": {"cinv": crowns}}
    v = B.verdict({"rows": rows, "best": crowns, "key_size": {"main.9": 16, "main.12": 32}})
    assert not v["met"]  # 70% < 80%
    assert v["semantic"]["met"] and v["semantic"]["layer"] == "main.9"
    met = _row("main.12", 0.85, 0.02, 0.08, eff=0.9, coll=0.02)
    assert B.verdict({"rows": [*rows, met], "best": met, "key_size": {}})["met"]
    trunks_broken = _row("main.12", 0.85, 0.02, 0.50, eff=0.9, coll=0.02)
    assert not B.verdict({"rows": [trunks_broken], "best": trunks_broken, "key_size": {}})["met"]


def test_variant_sets_the_direction_rule_or_keeps_the_requests_own():
    req = B.load_request("roof_to_tree")
    for rule in B.DIRECTION_RULES:
        v = B.variant(req, "main.6", 3, "exact", {"ridge": 0.1}, STATS, rule)
        assert v.direction_rule == rule and (v.layer, v.rank) == ("main.6", 3)
    assert B.variant(req, "main.6", 3, "exact", {}, STATS).direction_rule == req.direction_rule
