"""OTDD (ribench.distance): the ten checks of OTDD.md on small synthetic feature sets,
solver failures as errors, and `ribench distance` end to end on rib-tiny."""

import json
import math
from pathlib import Path

import numpy as np
import ot
import pytest
import torch

from ribench.distance import otdd as dist
from ribench.distance.matrix import DistanceMatrix
from ribench.distance.options import DistanceOptions, LabelledFeatures
from ribench.distance.otdd import otdd
from ribench.distance.relation import forgetting_relation, spearman
from ribench.distance.solvers import DistanceError

HERE = Path(__file__).resolve().parent
TINY = str(HERE / "tiny_suite.py")
EXACT = DistanceOptions(solver="exact")
SINKHORN = DistanceOptions(solver="sinkhorn", epsilon=0.05)
FAST = DistanceOptions(solver="fast")
SOLVERS = pytest.mark.parametrize("options", [EXACT, SINKHORN, FAST], ids=["exact", "sinkhorn", "fast"])


def clusters(n=120, d=6, classes=3, seed=0, shift=0.0, spread=1.0):
    """n points in `classes` Gaussian clusters whose centres are fixed across seeds."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(classes, d)) * 3.0
    labels = np.arange(n) % classes
    return centres[labels] + spread * rng.normal(size=(n, d)) + shift, labels


def data(name, features, labels):
    return LabelledFeatures(name, np.asarray(features, dtype=np.float64), np.asarray(labels))


def gaussians_of(features, labels):
    x = torch.as_tensor(features, dtype=torch.float64)
    classes, codes = np.unique(labels, return_inverse=True)
    return dist.class_gaussians(x, torch.as_tensor(codes), len(classes))


def empirical(features, labels):
    """Means and (ddof=1) covariances per class, the inputs of the textbook formulas."""
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(0) for c in classes])
    covs = np.stack([np.cov(features[labels == c], rowvar=False) for c in classes])
    return means, covs


def sqrtm_psd(matrix):
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def bures_by_eigendecomposition(m1, c1, m2, c2):
    root = sqrtm_psd(c1)
    return float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(sqrtm_psd(root @ c2 @ root)))


# 1. label distances -------------------------------------------------------------------
def test_label_distances_nuclear_norm_matches_eigendecomposition_and_pot():
    xa, ya = clusters(n=90, d=5, classes=3, seed=1)
    xb, yb = clusters(n=120, d=5, classes=4, seed=2, spread=1.7)
    table = dist.label_distances(gaussians_of(xa, ya), gaussians_of(xb, yb)).numpy()
    ma, ca = empirical(xa, ya)
    mb, cb = empirical(xb, yb)
    by_eig = np.array([[bures_by_eigendecomposition(ma[i], ca[i], mb[j], cb[j]) for j in range(4)] for i in range(3)])
    by_pot = ot.gmm.dist_bures_squared(ma, mb, ca, cb)
    assert table.shape == (3, 4)
    np.testing.assert_allclose(table, by_eig, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(table, by_pot, rtol=1e-7, atol=1e-7)


def test_label_distances_of_diagonal_gaussians_have_the_closed_form():
    rng = np.random.default_rng(3)
    d = 7
    means_a, means_b = rng.normal(size=(2, d)), rng.normal(size=(3, d))
    var_a, var_b = rng.uniform(0.1, 4, size=(2, d)), rng.uniform(0.1, 4, size=(3, d))

    def diagonal(means, variances):   # factor F = diag(σ^½), so FᵀF = diag(σ)
        factors = torch.stack([torch.diag(torch.as_tensor(np.sqrt(v))) for v in variances])
        return dist.ClassGaussians(torch.as_tensor(means), factors, factors.pow(2).sum((1, 2)))

    table = dist.label_distances(diagonal(means_a, var_a), diagonal(means_b, var_b)).numpy()
    expected = (((means_a[:, None] - means_b[None]) ** 2).sum(-1)
                + ((np.sqrt(var_a)[:, None] - np.sqrt(var_b)[None]) ** 2).sum(-1))
    np.testing.assert_allclose(table, expected, rtol=1e-10, atol=1e-12)


def test_label_table_is_symmetric_non_negative_zero_on_the_diagonal_and_chunking_changes_nothing():
    x, y = clusters(n=200, d=8, classes=5, seed=4)
    g = gaussians_of(x, y)
    table = dist.label_distances(g, g, same=True)
    assert torch.equal(table, table.T)
    assert (table >= 0).all() and (torch.diagonal(table) == 0).all()
    assert (table[~torch.eye(5, dtype=torch.bool)] > 1.0).all()      # distinct clusters are far apart
    unsymmetrised = dist.label_distances(g, g)
    np.testing.assert_allclose(unsymmetrised.numpy(), table.numpy(), atol=1e-9)
    one_pair_per_chunk = dist.label_distances(g, g, budget=1)
    np.testing.assert_allclose(one_pair_per_chunk.numpy(), unsymmetrised.numpy(), rtol=1e-12, atol=1e-12)


def test_label_distances_are_finite_when_classes_have_fewer_samples_than_dimensions():
    rng = np.random.default_rng(5)
    d = 40
    xa, ya = rng.normal(size=(9, d)), np.arange(9) % 3          # 3 samples per class, 40 dimensions
    xb, yb = rng.normal(size=(8, d)) + 0.5, np.arange(8) % 2
    table = dist.label_distances(gaussians_of(xa, ya), gaussians_of(xb, yb)).numpy()
    assert np.isfinite(table).all() and (table >= 0).all()
    ma, ca = empirical(xa, ya)
    mb, cb = empirical(xb, yb)
    by_eig = np.array([[bures_by_eigendecomposition(ma[i], ca[i], mb[j], cb[j]) for j in range(2)] for i in range(3)])
    np.testing.assert_allclose(table, by_eig, rtol=1e-6, atol=1e-6)   # eig form needs clipping here; ours does not
    g = gaussians_of(xa, ya)
    assert torch.diagonal(dist.label_distances(g, g)).abs().max() < 1e-9
    single = gaussians_of(rng.normal(size=(3, d)), np.array([0, 1, 2]))   # one sample per class: Σ = 0
    assert torch.isfinite(dist.label_distances(single, g)).all()


# 2-10. the distance --------------------------------------------------------------------
@SOLVERS
def test_a_dataset_against_itself_is_zero_even_when_subsampled(options):
    x, y = clusters(n=150, seed=6)
    a, copy = data("a", x, y), data("a copy", x.copy(), y.copy())
    for samples in (None, 60):
        value = otdd(a, copy, DistanceOptions(**{**options.__dict__, "samples": samples}))
        assert abs(value) < 1e-9


def test_two_disjoint_halves_are_close_and_positive():
    x, y = clusters(n=400, seed=7)
    first, second = data("first", x[::2], y[::2]), data("second", x[1::2], y[1::2])
    other = data("other", *clusters(n=200, seed=8, shift=2.0))
    halves = otdd(first, second, EXACT)
    assert 0 < halves < 0.25 * otdd(first, other, EXACT)


@SOLVERS
def test_distance_is_symmetric(options):
    a = data("a", *clusters(n=100, seed=9))
    b = data("b", *clusters(n=130, classes=3, seed=10, spread=1.5, shift=0.7))
    assert otdd(a, b, options) == otdd(b, a, options)


@SOLVERS
def test_renaming_labels_or_shuffling_rows_changes_nothing(options):
    xa, ya = clusters(n=120, seed=11)
    xb, yb = clusters(n=120, seed=12, shift=0.5)
    reference = otdd(data("a", xa, ya), data("b", xb, yb), options)
    rng = np.random.default_rng(0)
    rename = np.array([7, 42, 3])                 # any other label values, in another order
    order = rng.permutation(len(yb))
    changed = otdd(data("a", xa, rename[ya]), data("b", xb[order], yb[order]), options)
    # the fast solver's bids follow the row order; its value moves only within its certified bound
    assert changed == pytest.approx(reference, rel=2 * options.tolerance if options.solver == "fast" else 1e-7)


@pytest.mark.parametrize("options, tolerance", [(EXACT, 1e-9), (SINKHORN, 1e-4), (FAST, 1e-3)],
                         ids=["exact", "sinkhorn", "fast"])
def test_translated_copy_is_twice_the_squared_shift(options, tolerance):
    x, y = clusters(n=120, seed=13)
    delta = np.linspace(-0.5, 0.8, x.shape[1])
    value = otdd(data("a", x, y), data("a + δ", x + delta, y), options)
    assert value == pytest.approx(2 * float(delta @ delta), rel=tolerance)


def test_without_label_cost_it_is_plain_optimal_transport_on_features():
    xa, ya = clusters(n=80, seed=14)
    xb, yb = clusters(n=100, seed=15, shift=0.3)
    value = otdd(data("a", xa, ya), data("b", xb, yb), DistanceOptions(solver="exact", lambda_y=0.0))
    assert value == pytest.approx(ot.emd2([], [], ot.dist(xa, xb)), rel=1e-10)
    fast = otdd(data("a", xa, ya), data("b", xb[:80], yb[:80]), DistanceOptions(lambda_y=0.0))
    assert fast == pytest.approx(ot.emd2([], [], ot.dist(xa, xb[:80])), rel=1e-3)


def test_one_class_each_adds_the_gaussian_w2_of_the_two_classes():
    xa, _ = clusters(n=90, classes=1, seed=16)
    xb, _ = clusters(n=70, classes=1, seed=17, spread=1.4, shift=0.6)
    ma, ca = empirical(xa, np.zeros(90))
    mb, cb = empirical(xb, np.zeros(70))
    expected = ot.emd2([], [], ot.dist(xa, xb)) + bures_by_eigendecomposition(ma[0], ca[0], mb[0], cb[0])
    value = otdd(data("a", xa, np.zeros(90, int)), data("b", xb, np.ones(70, int)), EXACT)
    assert value == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("options, tolerance", [(EXACT, 1e-9), (SINKHORN, 1e-6), (FAST, 2e-3)],
                         ids=["exact", "sinkhorn", "fast"])
def test_scaling_features_by_s_scales_the_distance_by_s_squared(options, tolerance):
    xa, ya = clusters(n=100, seed=18)
    xb, yb = clusters(n=100, seed=19, shift=0.4, spread=1.3)
    s = 3.0
    plain = dist.distance_matrix([data("a", xa, ya), data("b", xb, yb)], options)
    scaled = dist.distance_matrix([data("a", s * xa, ya), data("b", s * xb, yb)], options)
    assert scaled.get("a", "b") == pytest.approx(s**2 * plain.get("a", "b"), rel=tolerance)
    if options.solver == "sinkhorn":       # ε follows the cost scale, so it is scaled by s² too
        assert scaled.epsilon[0, 1] == pytest.approx(s**2 * plain.epsilon[0, 1], rel=1e-12)


@SOLVERS
def test_a_fixed_seed_reproduces_the_value_exactly(options):
    a = data("a", *clusters(n=300, seed=20))
    b = data("b", *clusters(n=300, seed=21, shift=0.4))
    sub = dict(options.__dict__, samples=90)
    first = otdd(a, b, DistanceOptions(**sub))
    assert otdd(a, b, DistanceOptions(**sub)) == first
    assert otdd(a, b, DistanceOptions(**{**sub, "seed": 1})) != first


# conventions, subsampling, the matrix ---------------------------------------------------------
@SOLVERS
def test_half_convention_is_exactly_half(options):
    a = data("a", *clusters(n=80, seed=22))
    b = data("b", *clusters(n=80, seed=23, shift=0.5))
    half = DistanceOptions(**{**options.__dict__, "convention": "half"})
    assert otdd(a, b, half) == pytest.approx(0.5 * otdd(a, b, options), rel=1e-9)


def test_sinkhorn_approaches_the_exact_value_as_epsilon_shrinks():
    a = data("a", *clusters(n=100, seed=24))
    b = data("b", *clusters(n=100, seed=25, shift=0.5))
    exact = otdd(a, b, EXACT)
    gaps = [abs(otdd(a, b, DistanceOptions(solver="sinkhorn", epsilon=e)) - exact) for e in (0.05, 0.01, 0.001)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.01 * exact


# the fast solver: certified, within its tolerance of the exact value ---------------------------
def gaussian_mixture(n, d, classes, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(classes, d)) * 2.0
    labels = rng.integers(0, classes, n)
    return centres[labels] + rng.normal(size=(n, d)) + shift, labels


@pytest.mark.parametrize("n, d, classes, shift", [(300, 8, 3, 0.5), (400, 32, 10, 0.2), (500, 64, 40, 0.0)],
                         ids=["3-classes-8d", "10-classes-32d", "40-classes-64d-one-law"])
def test_fast_solver_is_within_half_a_percent_of_the_exact_value(n, d, classes, shift):
    a = data("a", *gaussian_mixture(n, d, classes, seed=1))
    b = data("b", *gaussian_mixture(n, d, classes, seed=2, shift=shift))   # shift 0: two samples of one law
    exact, fast = otdd(a, b, EXACT), otdd(a, b, FAST)
    assert exact > 0
    assert abs(fast - exact) <= 0.005 * exact
    assert abs(fast - exact) <= FAST.tolerance * exact * (1 + 1e-6)       # what the certificate promises


def test_auction_certificate_brackets_the_exact_optimum():
    from ribench.distance.auction import auction_ot
    from ribench.distance.cost import GroundCost
    rng = np.random.default_rng(3)
    xa, xb = torch.as_tensor(rng.normal(size=(200, 16))), torch.as_tensor(rng.normal(size=(200, 16)) + 0.3)
    result = auction_ot(GroundCost(xa, xb), tolerance=1e-3)
    exact = ot.emd2([], [], ot.dist(xa.numpy(), xb.numpy()))
    assert result.lower <= exact * (1 + 1e-6) and exact <= result.upper * (1 + 1e-6)
    assert result.gap <= 1e-3 and result.phases >= 1
    with pytest.raises(ValueError, match="equal size"):
        auction_ot(GroundCost(xa, xb[:150]))


def test_streamed_cost_rows_give_the_stored_cost_value():
    """Above the memory budget the cost is recomputed row block by row block: the same numbers."""
    from ribench.distance.auction import auction_ot
    from ribench.distance.cost import GroundCost
    rng = np.random.default_rng(4)
    xa, xb = torch.as_tensor(rng.normal(size=(300, 12))), torch.as_tensor(rng.normal(size=(300, 12)) + 0.2)
    codes_a, codes_b = torch.as_tensor(rng.integers(0, 3, 300)), torch.as_tensor(rng.integers(0, 4, 300))
    table = torch.as_tensor(rng.uniform(0, 5, size=(3, 4)))
    stored = GroundCost(xa, xb, codes_a, codes_b, table)
    streamed = GroundCost(xa, xb, codes_a, codes_b, table, stored_bytes=0)
    assert stored.stored and not streamed.stored
    rows = torch.tensor([0, 17, 299])
    assert torch.allclose(stored.rows(rows), streamed.rows(rows), rtol=1e-5, atol=1e-4)
    assert auction_ot(streamed).value == pytest.approx(auction_ot(stored).value, rel=2e-3)


def test_fast_solver_compares_equal_size_samples_and_records_its_bound():
    sets = [data("small", *clusters(n=60, seed=40)), data("large", *clusters(n=150, seed=41, shift=0.5)),
            data("larger", *clusters(n=200, seed=42, shift=1.0))]
    result = dist.distance_matrix(sets, FAST)
    assert result.samples == {"small": 60, "large": 60, "larger": 60}
    record = json.loads(result.format("json"))
    bound = record["relative_error_bound"]
    assert 0 <= bound["small"]["large"] <= FAST.tolerance and bound["small"]["small"] is None
    assert "certified" in result.format("table")


def test_fast_solver_falls_back_to_the_exact_solver_when_the_auction_stalls(monkeypatch):
    from ribench.distance.auction import AuctionStalled

    def stalled(*args, **kwargs):
        raise AuctionStalled("float32 prices cannot resolve this")
    a, b = data("a", *clusters(n=80, seed=43)), data("b", *clusters(n=80, seed=44, shift=0.4))
    exact = otdd(a, b, EXACT)
    monkeypatch.setattr(dist, "auction_ot", stalled)
    assert otdd(a, b, FAST) == pytest.approx(exact, rel=1e-12)


def test_stratified_subsample_keeps_class_shares_and_is_seeded():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    picks = dist.stratified_subsample(labels, 100, np.random.default_rng(0))
    assert np.bincount(labels[picks]).tolist() == [50, 30, 20]
    assert np.array_equal(picks, dist.stratified_subsample(labels, 100, np.random.default_rng(0)))
    assert np.array_equal(dist.stratified_subsample(labels, None, np.random.default_rng(0)), np.arange(1000))


def test_matrix_is_symmetric_zero_on_the_diagonal_and_matches_pairs():
    sets = [data(f"d{i}", *clusters(n=90, seed=30 + i, shift=0.3 * i)) for i in range(3)]
    result = dist.distance_matrix(sets, EXACT)
    assert np.array_equal(result.values, result.values.T) and (np.diag(result.values) == 0).all()
    assert result.get("d0", "d2") == pytest.approx(otdd(sets[0], sets[2], EXACT), rel=1e-12)
    assert result.get("d0", "d2") > result.get("d0", "d1") > 0
    record = json.loads(result.format("json"))
    assert record["options"]["solver"] == "exact" and record["samples"] == {"d0": 90, "d1": 90, "d2": 90}
    assert record["quantity"].startswith("OTDD²")


# solver failures ----------------------------------------------------------------------------
def test_a_solver_failure_is_an_error_never_a_silent_zero(monkeypatch):
    a = data("a", *clusters(n=200, seed=40))
    b = data("b", *clusters(n=200, seed=41, shift=0.5))
    with pytest.raises(DistanceError, match="did not reach the optimum"):
        otdd(a, b, DistanceOptions(solver="exact", max_iterations=5))
    with pytest.raises(DistanceError, match="bids per point"):
        otdd(a, b, DistanceOptions(solver="fast", max_iterations=1))
    with pytest.raises(DistanceError, match="Sinkhorn did not converge"):
        otdd(a, b, DistanceOptions(solver="sinkhorn", epsilon=0.001, max_iterations=2))

    def broken(*args, **kwargs):
        raise RuntimeError("simplex exploded")

    monkeypatch.setattr(ot, "emd2", broken)
    with pytest.raises(DistanceError, match="simplex exploded") as caught:
        otdd(a, b, EXACT)
    assert "\n" not in str(caught.value)
    bad = np.array(a.features)
    bad[3, 1] = np.nan
    with pytest.raises(DistanceError, match="non-finite"):
        otdd(data("bad", bad, a.labels), b, EXACT)


@pytest.mark.parametrize("kwargs, message", [
    ({"solver": "simplex"}, "unknown solver"),
    ({"epsilon": 0.0}, "epsilon must be"),
    ({"lambda_x": 0.0, "lambda_y": 0.0}, "both 0"),
    ({"convention": "quarter"}, "unknown convention"),
])
def test_bad_options_are_config_errors(kwargs, message):
    from ribench.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        DistanceOptions(**kwargs).validate()


# `ribench distance` end to end -----------------------------------------------------------------
def _fake_ft_store(path, suite):
    """A store holding pretrained accuracies and one ft cell per downstream dataset (no training)."""
    from ribench.store import CellRecord, Store, cell_key

    tag = {"weights_sha256": "w" * 64, "manifests": suite.manifest_hash()}
    columns = [*suite.downstream, suite.pretrain_eval]
    with Store(path) as store:
        identity = {"kind": "pretrained", "suite": suite.name, "pretrain": "mini-clip", **tag}
        store.put_pretrained(cell_key(identity), suite.name, "mini-clip", identity,
                             {name: 0.9 for name in columns}, {})
        for number, trained in enumerate(suite.downstream):
            accuracies = {name: 0.8 - 0.05 * number for name in columns}
            accuracies[trained] = 0.95
            identity = {"suite": suite.name, "pretrain": "mini-clip", "method": "ft", "dataset": trained,
                        "seed": 0, **tag}
            store.put(CellRecord(key=cell_key(identity), suite=suite.name, pretrain="mini-clip", method="ft",
                                 label="ft", dataset=trained, seed=0, identity=identity, accuracies=accuracies,
                                 status="done", details={}, timings={}, provenance={}))


def test_distance_command_prints_matrix_writes_plots_and_relates_to_forgetting(capsys, tmp_path, tiny_suite):
    from ribench.cli.main import main

    store = tmp_path / "results.sqlite"
    _fake_ft_store(store, tiny_suite)
    out = tmp_path / "out"
    argv = ["distance", "--include", TINY, "--suite", "rib-tiny", "--pretrain", "mini-clip",
            "--store", str(store), "--out", str(out), "--samples", "40"]
    assert main(argv) == 0
    printed, _ = capsys.readouterr()
    names = [*tiny_suite.downstream, tiny_suite.pretrain_eval]
    assert printed.startswith("OTDD² (OT within 0.001 (certified auction), full ground cost)")
    assert all(name in printed for name in names) and "Spearman ρ(distance, forgetting)" in printed
    stem = "distance-rib-tiny-mini-clip-fast"
    for png in (f"{stem}.png", f"{stem}-vs-ft.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / f"{stem}.json").read_text())
    matrix = np.array([[record["matrix"][a][b] for b in names] for a in names])
    assert np.array_equal(matrix, matrix.T) and (np.diag(matrix) == 0).all() and (matrix[~np.eye(8, dtype=bool)] > 0).all()
    assert record["options"]["samples"] == 40 and record["feature_split"] == "train"
    # forgetting_i = 0.9 - (0.8 - 0.05 i), so it ranks the datasets in suite order
    rows = record["relation"]["per_dataset"]
    assert [round(r["forgetting"], 6) for r in rows] == [round(0.1 + 0.05 * i, 6) for i in range(7)]
    from scipy.stats import spearmanr

    expected = spearmanr([r["distance"] for r in rows], [r["forgetting"] for r in rows])[0]
    assert record["relation"]["spearman"]["forgetting"] == pytest.approx(expected, abs=1e-12)
    assert f"{expected:+.2f}" in printed

    assert main([*argv, "--format", "csv"]) == 0      # second call: cached features, same numbers
    csv_out, _ = capsys.readouterr()
    first_row = csv_out.splitlines()[1].split(",")
    assert first_row[0] == names[0] and float(first_row[2]) == pytest.approx(record["matrix"][names[0]][names[1]])


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "markdown"])
def test_distance_command_writes_files_only_under_out(capsys, tmp_path, monkeypatch, tiny_suite, fmt):
    """Without --out the command only prints; the heatmap, scatter and JSON go under --out alone."""
    from ribench.cli.main import main

    store = tmp_path / "results.sqlite"
    _fake_ft_store(store, tiny_suite)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    argv = ["distance", "--include", TINY, "--suite", "rib-tiny", "--store", str(store), "--samples", "40",
            "--format", fmt]
    assert main(argv) == 0
    printed, err = capsys.readouterr()
    assert list(here.iterdir()) == [] and "wrote" not in err
    names = [*tiny_suite.downstream, tiny_suite.pretrain_eval]
    if fmt == "json":
        assert json.loads(printed)["relation"]["label"] == "ft"
    elif fmt == "csv":
        assert printed.splitlines()[0].split(",") == ["dataset", *names]
    else:
        assert printed.startswith("OTDD²") and "Spearman ρ(distance, forgetting)" in printed
    assert "plot:" not in printed + err

    assert main([*argv, "--out", "out"]) == 0
    stem = "distance-rib-tiny-mini-clip-fast"
    assert sorted(p.name for p in here.iterdir()) == ["out"]
    assert sorted(p.name for p in (here / "out").iterdir()) == [f"{stem}-vs-ft.png", f"{stem}.json", f"{stem}.png"]
    assert "wrote out/" in capsys.readouterr().err


@pytest.mark.parametrize("extra, expected", [
    (["--epsilon", "-1", "--solver", "sinkhorn"], "epsilon must be a positive fraction"),
    (["--store", "/nonexistent/r.sqlite"], "no results store at /nonexistent/r.sqlite"),
    (["--suite", "rib-tiyn"], "did you mean 'rib-tiny'?"),
    (["--tolerance", "2"], "tolerance must lie between 0 and 1"),
    (["--data-root", "/tmp"], "is generated; --data-root does not apply"),
    (["--suite", "imagenet-rib"], "reads its images from --data-root"),
    (["--suite", "imagenet-rib", "--data-root", "/nonexistent/rib"], "is not a directory"),
])
def test_distance_command_user_errors_are_one_line_and_exit_2(capsys, tmp_path, extra, expected):
    from ribench.cli.main import main

    code = main(["distance", "--include", TINY, "--suite", "rib-tiny", "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ribench: error:") and expected in err and err.count("\n") == 1


def test_forgetting_relation_reads_the_summary():
    from ribench.report.metrics import summarize
    from ribench.store import CellRecord

    cells = [CellRecord(key=f"k{i}", suite="s", pretrain="p", method="ft", label="ft", dataset=d, seed=0,
                        identity={}, accuracies={"x": 0.5, "y": 0.6, "P": acc}, status="done", details={},
                        timings={}, provenance={}) for i, (d, acc) in enumerate([("x", 0.7), ("y", 0.4)])]
    summary = summarize(cells, {"x": 0.5, "y": 0.5, "P": 0.9}, ["x", "y"], "P")
    result = DistanceMatrix(["x", "y", "P"], np.array([[0, 1, 2.0], [1, 0, 3.0], [2, 3, 0.0]]), EXACT,
                            {"x": 1, "y": 1, "P": 1})
    relation = forgetting_relation(result, summary, "ft")
    assert relation["distance"].tolist() == [2.0, 3.0]
    assert relation["forgetting"].round(12).tolist() == [0.2, 0.5]
    assert relation["RI"].round(12).tolist() == [0.1, 0.0]
    assert math.isnan(spearman([1, 2], [1, 2])) and spearman([1, 2, 3], [3, 2, 1]) == -1.0
