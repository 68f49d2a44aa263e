"""Leaderboard entries: submit from a store (numbers, refusals), check (file + field named), build
(tables, plots, HTML page rendered in headless Chromium), and a method from outside the repository
through both routes (--include file, installed entry point)."""

import copy
import json
import math
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from ribench.catalog import SUITES
from ribench.cli.main import main
from ribench.leaderboard.plots import pareto_front
from ribench.leaderboard.rows import did_not_adapt, shown_label
from ribench.errors import RibenchError
from ribench.leaderboard.distances import load_distances
from ribench.leaderboard.entries import entry_from_store
from ribench.leaderboard.plots import colours, forgetting_vs_distance, id_vs_ood
from ribench.leaderboard.schema import MIN_SEEDS, validate_entry
from ribench.leaderboard.tree import check_tree, dumps_entry, load_entry, write_entry
from ribench.store import CellRecord, Store, cell_key

from helpers import OUTSIDE_METHOD, run_cli

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY = str(HERE / "tiny_suite.py")
WEIGHTS = "ab" * 32
PLUGIN = OUTSIDE_METHOD


# -- a synthetic store: known accuracies, so every number can be checked by hand ----------------
@pytest.fixture(scope="module")
def suite():
    return SUITES.get("rib-tiny")()


def _columns(suite):
    return [*suite.downstream, suite.pretrain_eval]


def _pretrained_accuracies(suite):
    rng = np.random.default_rng(7)
    return {name: float(rng.uniform(0.3, 0.8)) for name in _columns(suite)}


def _cell_accuracies(suite, seed, dataset, method="ft"):
    rng = np.random.default_rng([seed, suite.downstream.index(dataset), zlib.crc32(method.encode())])
    return {name: float(rng.uniform(0.1, 0.9)) for name in _columns(suite)}


def fill_store(path, suite, method="ft", config=None, seeds=(0, 1, 2), skip=(), protocol=None, pretrain="mini-clip"):
    """Cells of one method with seeded random accuracies; `skip` holds (dataset, seed) left out."""
    with Store(path) as store:
        identity = {"kind": "pretrained", "suite": suite.name, "manifests": suite.manifest_hash(),
                    "pretrain": pretrain, "weights_sha256": WEIGHTS}
        if store.get_pretrained(cell_key(identity)) is None:
            store.put_pretrained(cell_key(identity), suite.name, pretrain, identity, _pretrained_accuracies(suite),
                                 {"ribench": "0.1.0", "git_commit": "c" * 40})
        label = method if not config else method + "[" + ",".join(f"{k}={v}" for k, v in config.items()) + "]"
        for seed in seeds:
            for dataset in suite.downstream:
                if (dataset, seed) in skip:
                    continue
                cell = {"suite": suite.name, "manifests": suite.manifest_hash(), "pretrain": pretrain,
                        "weights_sha256": WEIGHTS, "method": method, "config": dict(config or {}),
                        "protocol": protocol or suite.protocol.as_dict(), "dataset": dataset, "seed": seed}
                store.put(CellRecord(key=cell_key(cell), suite=suite.name, pretrain=pretrain, method=method,
                                     label=label, dataset=dataset, seed=seed, identity=cell,
                                     accuracies=(_pretrained_accuracies(suite) if method == "zeroshot"
                                                 else _cell_accuracies(suite, seed, dataset, method)),
                                     provenance={"ribench": "0.1.0", "git_commit": "d" * 40, "torch": "2.x",
                                                 "device": "cpu"}))
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory, suite):
    path = tmp_path_factory.mktemp("store") / "s.sqlite"
    fill_store(path, suite, "ft")
    fill_store(path, suite, "zeroshot")
    fill_store(path, suite, "lp", {"fit": "lbfgs"}, seeds=(0, 1, 2, 3), skip={("hard", 3)})
    return path


def test_submitted_entry_holds_the_hand_computed_metrics(store_path, suite):
    entry = entry_from_store(store_path, "rib-tiny", "mini-clip", "ft")
    assert validate_entry(entry) == []
    a_pre = _pretrained_accuracies(suite)
    down, p = suite.downstream, suite.pretrain_eval
    per_seed = {"mRI": [], "ID": [], "forgetting": [], "OOD": []}
    for seed in (0, 1, 2):
        acc = {d: _cell_accuracies(suite, seed, d) for d in down}
        ri = [np.mean([acc[i][j] - a_pre[j] for j in down if j != i]) for i in down]
        per_seed["mRI"].append(np.mean(ri))
        per_seed["ID"].append(np.mean([acc[i][i] for i in down]))
        per_seed["forgetting"].append(np.mean([a_pre[p] - acc[i][p] for i in down]))
        per_seed["OOD"].append(np.mean([np.mean([acc[i][j] for j in down if j != i]) for i in down]))
    for metric, values in per_seed.items():
        stat = entry["metrics"][metric]
        assert stat["mean"] == pytest.approx(100 * np.mean(values), abs=1e-4), metric
        assert stat["std"] == pytest.approx(100 * np.std(values, ddof=1), abs=1e-4), metric
        assert stat["ci95"][0] <= stat["mean"] <= stat["ci95"][1] and stat["n_seeds"] == 3
    assert entry["grid"]["seeds"] == [0, 1, 2] and len(entry["provenance"]["cells"]) == 21
    assert entry["provenance"]["weights_sha256"] == WEIGHTS
    assert entry["provenance"]["protocol"] == suite.protocol.as_dict()
    assert entry["provenance"]["git_commits"] == ["d" * 40]
    # the pretrained model's ID and OOD averages are the same number by construction
    assert entry["pretrained"]["ID"] == pytest.approx(entry["pretrained"]["OOD"], abs=1e-3)


def test_partial_seed_is_left_out_and_the_label_keeps_its_settings(store_path):
    entry = entry_from_store(store_path, "rib-tiny", "mini-clip", "lp[fit=lbfgs]")
    assert entry["method"]["label"] == "lp[fit=lbfgs]" and entry["method"]["hyperparameters"] == {"fit": "lbfgs"}
    assert entry["grid"]["seeds"] == [0, 1, 2] and entry["metrics"]["mRI"]["n_seeds"] == 3


def test_submit_cli_writes_once_and_is_idempotent(capsys, store_path, tmp_path):
    argv = ["leaderboard", "submit", "--suite", "rib-tiny", "--store", str(store_path), "--root", str(tmp_path),
            "--method", "ft"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    path = tmp_path / "rib-tiny" / "mini-clip" / "ft.json"
    assert out.startswith(f"written {path}") and "over 3 seeds" in out
    before = path.read_bytes()
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and out.startswith("unchanged") and path.read_bytes() == before
    assert json.loads(before) == load_entry(path, tmp_path)


@pytest.mark.parametrize("seeds, skip, expected", [
    ((0, 1, 2), {("cartoon", 2), ("hard", 2)}, "missing seed 2: cartoon, hard"),
    ((0, 1), set(), "1 more seed(s) with all 7 datasets"),
])
def test_submit_refuses_an_incomplete_grid(capsys, tmp_path, suite, seeds, skip, expected):
    store = fill_store(tmp_path / "s.sqlite", suite, "ft", seeds=seeds, skip=skip)
    code, _, err = run_cli(capsys, "leaderboard", "submit", "--suite", "rib-tiny", "--store", str(store),
                           "--root", str(tmp_path / "lb"), "--method", "ft")
    assert code == 2 and err.startswith("ribench: error: cannot submit ft on rib-tiny/mini-clip: incomplete grid")
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "lb").exists()


def test_submit_refuses_another_protocol_and_missing_cells(capsys, tmp_path, suite):
    other = dict(suite.protocol.as_dict(), epochs=suite.protocol.epochs + 1)
    store = fill_store(tmp_path / "s.sqlite", suite, "ft", protocol=other)
    base = ["leaderboard", "submit", "--suite", "rib-tiny", "--store", str(store), "--root", str(tmp_path / "lb")]
    code, _, err = run_cli(capsys, *base, "--method", "ft")
    assert code == 2 and "use another protocol than rib-tiny's (epochs=" in err
    code, _, err = run_cli(capsys, *base, "--method", "lwf")
    assert code == 2 and "no stored cells" in err
    code, _, err = run_cli(capsys, *base, "--method", "ftt")
    assert code == 2 and "did you mean 'ft'?" in err
    code, _, err = run_cli(capsys, "leaderboard", "submit", "--store", str(tmp_path / "none.sqlite"),
                           "--method", "ft")
    assert code == 2 and "no results store" in err


# -- check: hand-broken entries are refused with the file and the field -------------------------
@pytest.fixture(scope="module")
def good_entry(store_path):
    return entry_from_store(store_path, "rib-tiny", "mini-clip", "ft")


def _break(entry, dotted, value):
    *parents, last = dotted.split(".")
    target = entry
    for name in parents:
        target = target[name]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value(target[last]) if callable(value) else value


@pytest.mark.parametrize("field, value, expected", [
    ("metrics.mRI.mean", "high", "field 'metrics.mRI.mean': expected a finite number, got string 'high'"),
    ("metrics.RI.sketch.mean", lambda v: v + 5, "field 'metrics.RI.sketch.mean'"),
    ("matrix.cartoon.photo", lambda v: v - 3, "does not match"),
    ("matrix.cartoon.photo", lambda v: v - 3, "(mean of matrix.<i>.photo)"),
    ("metrics.ID.n_seeds", 2, "field 'metrics.ID.n_seeds': 2 is below the minimum 3"),
    ("metrics.OOD.ci95", [1.0], "field 'metrics.OOD.ci95': expected [low, high]"),
    ("provenance", KeyError, "field 'provenance': missing"),
    ("provenance.weights_sha256", "abc", "field 'provenance.weights_sha256': 'abc' is not a sha256"),
    ("schema_version", 2, "field 'schema_version': this ribench reads version 1"),
    ("kind", "guessed", "field 'kind': expected one of measured, reported"),
    ("units", "fraction", "field 'units'"),
    ("metrics.mRI.std", -1.0, "field 'metrics.mRI.std': -1.0 is negative"),
    ("method.paper", "arxiv 1234", "field 'method.paper': expected a URL"),
    ("grid.seeds", [0, 1], "field 'grid.seeds': 2 distinct seed(s); an entry needs at least 3"),
    ("method.hyperparams", {}, "field 'method.hyperparams': unknown field"),
])
def test_check_names_the_file_and_the_field(capsys, tmp_path, good_entry, field, value, expected):
    path, _ = write_entry(good_entry, tmp_path)
    assert run_cli(capsys, "leaderboard", "check", "--root", str(tmp_path))[0] == 0
    broken = copy.deepcopy(good_entry)
    _break(broken, field, value)
    path.write_text(dumps_entry(broken))
    code, _, err = run_cli(capsys, "leaderboard", "check", "--root", str(tmp_path))
    assert code == 2
    assert err.startswith(f"ribench: error: {path}: ") and expected in err, err
    assert "Traceback" not in err


def test_check_refuses_bad_json_and_misplaced_entries(capsys, tmp_path, good_entry):
    path, _ = write_entry(good_entry, tmp_path)
    path.write_text(path.read_text()[:200])
    code, _, err = run_cli(capsys, "leaderboard", "check", "--root", str(tmp_path))
    assert code == 2 and f"{path}: not valid JSON" in err
    path.unlink()
    moved = tmp_path / "rib-tiny" / "mini-sup" / "ft.json"
    moved.parent.mkdir(parents=True)
    moved.write_text(dumps_entry(good_entry))
    code, _, err = run_cli(capsys, "leaderboard", "check", "--root", str(tmp_path))
    assert code == 2 and f"{moved}: field 'pretrain': 'mini-clip' but the file is in folder 'mini-sup'" in err
    renamed = tmp_path / "rib-tiny" / "mini-clip" / "reported-ft.json"
    renamed.parent.mkdir(parents=True, exist_ok=True)
    moved.rename(renamed)
    code, _, err = run_cli(capsys, "leaderboard", "check", "--root", str(tmp_path))
    assert code == 2 and "belongs in a file named 'ft.json'" in err
    code, _, err = run_cli(capsys, "leaderboard", "check", "--root", str(tmp_path / "nowhere"))
    assert code == 2 and "no leaderboard folder" in err


def test_a_measured_entry_cannot_pose_as_reported(good_entry):
    reported = copy.deepcopy(good_entry)
    reported["kind"] = "reported"
    problems = validate_entry(reported)
    assert "field 'source': missing" in problems and any("'grid': unknown field" in p for p in problems)


def test_repository_leaderboards_are_valid():
    """What CI runs: `ribench leaderboard check` on the committed entries."""
    root = REPO / "leaderboards"
    count, problems = check_tree(root)
    assert problems == [] and count > 0
    for path in root.glob("*/*/*.json"):
        if path.parent.name == "distances":
            continue
        entry = load_entry(path, root)
        assert (entry["kind"] == "reported") == path.name.startswith("reported-")
        if entry["kind"] == "measured":
            assert entry["metrics"]["mRI"]["n_seeds"] >= MIN_SEEDS
            assert len(entry["provenance"]["cells"]) == len(entry["grid"]["downstream"]) * len(entry["grid"]["seeds"])
    assert {p.name for p in (root / "rib-mini").glob("*/*.json")} >= {"ft.json", "zeroshot.json", "lp.json"}
    assert not [p for p in (root / "imagenet-rib").glob("*/*.json") if not p.name.startswith("reported-")]


# -- build: tables, plots, the page -------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory, store_path):
    root = tmp_path_factory.mktemp("leaderboards")
    entries = []
    for method in ("ft", "zeroshot", "lp[fit=lbfgs]"):
        entry = entry_from_store(store_path, "rib-tiny", "mini-clip", method)
        write_entry(entry, root)
        entries.append(entry)
    distances = root / "rib-tiny" / "distances"
    distances.mkdir()
    (distances / "mini-clip.csv").write_text("pretrain,dataset,distance\n" + "".join(
        f"mini-clip,{d},{1.0 + i / 2}\n" for i, d in enumerate(entries[0]["grid"]["downstream"])))
    code = main(["leaderboard", "build", "--root", str(root)])
    assert code == 0
    return root, entries


def test_build_writes_markdown_and_every_plot(built):
    root, entries = built
    folder = root / "rib-tiny"
    for stem in ("mri", "ri-heatmap-mini-clip", "id-gain-vs-mri", "id-vs-ood", "forgetting-vs-otdd"):
        png, svg = folder / "plots" / f"{stem}.png", folder / "plots" / f"{stem}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, stem
        assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    readme = (folder / "README.md").read_text()
    ft = next(e for e in entries if e["method"]["label"] == "ft")
    mri = ft["metrics"]["mRI"]
    assert f"| {shown_label(ft)} | {mri['mean']:+.1f} [{mri['ci95'][0]:+.1f}, {mri['ci95'][1]:+.1f}]" in readme
    assert "zeroshot (trains nothing" in readme.replace("Not drawn in the heatmap of mini-clip: ", "")
    assert "(plots/forgetting-vs-otdd.png)" in readme
    # rows best mRI first
    order = [line.split(" | ")[1] for line in readme.splitlines() if line.startswith("| 1 |")
             or line.startswith("| 2 |") or line.startswith("| 3 |")]
    assert order == [shown_label(e) for e in sorted(entries, key=lambda e: -e["metrics"]["mRI"]["mean"])]


def test_each_protocol_is_its_own_view_with_its_own_tables_and_figures(built, tmp_path):
    """A tuned row and a reference row of one method are different measurements: with both protocols
    in a leaderboard, each gets its tables and its figures (tuned keeps the plain names, first)."""
    root, entries = built
    ft = next(e for e in entries if e["method"]["label"] == "ft")
    tuned = copy.deepcopy({k: v for k, v in ft.items() if not k.startswith("_")})
    tuned["protocol"] = {"name": "tuned", "description": "the method's recipe at its selected lr",
                         "selection": {"tune": "lr", "grid": [1e-3, 1e-2], "value": 1e-2,
                                       "heldout_acc": {"0.001": 0.4, "0.01": 0.5}, "datasets": ["sketch"],
                                       "holdout": 0.25, "seed": 0, "extended": []}}
    both = tmp_path / "leaderboards"
    for entry in (tuned, *entries):
        write_entry({k: v for k, v in entry.items() if not k.startswith("_")}, both)
    assert main(["leaderboard", "build", "--root", str(both)]) == 0
    folder = both / "rib-tiny"
    readme = (folder / "README.md").read_text()
    sections = [line for line in readme.splitlines() if line.startswith("## mini-clip")]
    assert sections == ["## mini-clip · tuned protocol (measured)", "## mini-clip · reference protocol (measured)"]
    tuned_part, reference_part = readme.split(sections[1])
    assert "ft · tuned (lr 0.01)" in tuned_part and "ft · tuned" not in reference_part
    for stem in ("mri", "id-gain-vs-mri", "id-vs-ood", "ri-heatmap-mini-clip"):
        assert (folder / "plots" / f"{stem}.png").is_file() and (folder / "plots" / f"{stem}-reference.png").is_file()
        assert f"(plots/{stem}-reference.png)" in readme


def test_a_method_that_did_not_adapt_is_marked_and_the_pareto_front_is_drawn(built):
    root, entries = built
    ft = next(e for e in entries if e["method"]["label"] == "ft")
    stood = {**ft, "method": {**ft["method"], "label": "stood-still"},
             "metrics": {**ft["metrics"], "ID_gain": {**ft["metrics"]["ID_gain"], "mean": 0.05, "ci95": [-0.1, 0.2]}}}
    adapted = {**stood, "metrics": {**stood["metrics"], "ID_gain": {**stood["metrics"]["ID_gain"], "ci95": [0.01, 0.2]}}}
    assert did_not_adapt(stood) and not did_not_adapt(adapted)
    assert shown_label(stood) == "stood-still (did not adapt)"
    selection = {"tune": "lr", "value": 0.005}
    assert shown_label({**adapted, "protocol": {"name": "tuned", "selection": selection}}) == \
        "stood-still · tuned (lr 0.005)"
    assert shown_label({**adapted, "protocol": {"name": "tuned", "ingredients": {"ft": selection}}}) == \
        "stood-still · tuned (ft: lr 0.005)"
    zeroshot = next(e for e in entries if e["method"]["label"] == "zeroshot")
    assert not did_not_adapt(zeroshot)                      # it trains nothing: shown apart, not marked
    # (1, 1) beats (0, 0); (2, -1) and (-1, 2) trade off: the front is everything but (0, 0), by ID gain
    assert pareto_front([(0, 0), (1, 1), (2, -1), (-1, 2)]) == [3, 1, 2]
    assert pareto_front([(1, 1), (1, 1)]) == [0, 1]


def test_forgetting_plot_is_skipped_without_distances(tmp_path, built):
    _, entries = built
    assert load_distances([], "rib-tiny", entries) == {}
    assert forgetting_vs_distance(entries, {}, tmp_path, {}) == [] and not list(tmp_path.iterdir())
    bad = tmp_path / "d.json"
    bad.write_text('{"pretrain": "mini-clip"}')
    with pytest.raises(RibenchError, match="d.json: expected 'to_pretrain_domain' or 'matrix'"):
        load_distances([bad], "rib-tiny", entries)


def test_page_is_self_contained(built):
    root, _ = built
    page = (root / "rib-tiny" / "index.html").read_text()
    assert "http://" not in page.replace('href="https://example', "") and "<script src" not in page
    assert page.count("data:image/png;base64,") == 5      # mRI, RI heatmap, ID gain vs mRI, ID vs OOD, forgetting vs OTDD


def test_page_renders_and_sorts_in_headless_chromium(built):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    root, entries = built
    page = root / "rib-tiny" / "index.html"
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--user-data-dir={root / 'profile'}", "--dump-dom", page.as_uri() + "#sort=forgetting"],
                            capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert result.returncode == 0 and 'data-ready="true"' in dom, result.stderr[-2000:]
    assert f"{len(entries)} measured entries, sorted by forgetting" in dom
    rendered = [part.split('"', 1)[0] for part in dom.split('data-entry="')[1:]]
    expected = [shown_label(e) for e in sorted(entries, key=lambda e: e["metrics"]["forgetting"]["mean"])]
    assert rendered == expected
    for entry in entries:
        mri = entry["metrics"]["mRI"]["mean"]
        assert f'data-value="{mri}"' in dom


# -- a method from outside the repository, both routes, then submitted ---------------------------
def test_outside_method_runs_through_include_and_entry_point(capsys, tmp_path, suite):
    plugin = tmp_path / "outside_method.py"
    plugin.write_text(PLUGIN.format(name="outside-head"))
    store = tmp_path / "s.sqlite"
    common = ["--include", TINY, "--suite", "rib-tiny", "--datasets", "sketch", "--no-progress", "--store", str(store)]
    code, out, err = run_cli(capsys, "run", "--include", str(plugin), "--method", "outside-head", *common)
    assert code == 0 and "outside-head" in out and "mRI" in out, err

    site = tmp_path / "site"
    (site / "outside_pkg").mkdir(parents=True)
    (site / "outside_pkg" / "__init__.py").write_text(PLUGIN.format(name="outside-ep"))
    info = site / "outside_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: outside-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ribench.methods]\noutside-ep = outside_pkg:HeadOnly\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    listed = subprocess.run([sys.executable, "-m", "ribench", "run", "--method", "outside-ep", "--threads", "1",
                             "--set", "scale=0.5", *common], env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "outside-ep[scale=0.5]" in listed.stdout and "mRI" in listed.stdout
    with Store(store) as db:
        labels = {c.label for c in db.cells()}
    assert labels == {"outside-head", "outside-ep[scale=0.5]"}


def test_outside_method_is_submitted_with_its_file(capsys, tmp_path, suite):
    plugin = tmp_path / "outside_submit.py"
    plugin.write_text(PLUGIN.format(name="outside-submit"))
    store = fill_store(tmp_path / "s.sqlite", suite, "outside-submit")
    base = ["leaderboard", "submit", "--suite", "rib-tiny", "--store", str(store), "--root", str(tmp_path / "lb"),
            "--method", "outside-submit"]
    code, _, err = run_cli(capsys, *base)
    assert code == 2 and "unknown method 'outside-submit'" in err
    code, out, err = run_cli(capsys, *base, "--include", str(plugin))
    assert code == 0, err
    entry = load_entry(tmp_path / "lb" / "rib-tiny" / "mini-clip" / "outside-submit.json", tmp_path / "lb")
    assert entry["method"]["paper"] == "https://example.org/head-only"
    assert entry["method"]["description"] == "an outside method: trains only the head"
    assert not math.isnan(entry["metrics"]["mRI"]["mean"])


@pytest.mark.parametrize("count", [3, 15, 24, 45])
def test_every_method_of_a_legend_has_its_own_colour(count):
    labels = [f"method-{i:02d}" for i in range(count)]
    palette = colours(labels + labels[:2])                    # repeats do not take a colour
    assert len(palette) == count and len(set(palette.values())) == count
    assert colours(list(reversed(labels))) == palette         # stable: by sorted label, whatever the order


def test_a_long_legend_below_the_axes_is_not_cut_off(tmp_path, built):
    """With 24 methods the id-vs-ood legend sits below the axes and the saved image grows to hold it."""
    from PIL import Image

    _, entries = built
    ft = next(e for e in entries if e["method"]["label"] == "ft")
    many = [{**ft, "method": {**ft["method"], "label": f"variant-{i:02d}"}} for i in range(24)]
    few_png = id_vs_ood([ft], tmp_path / "few", colours(["ft"]))[0]
    many_png = id_vs_ood(many, tmp_path / "many", colours([e["method"]["label"] for e in many]))[0]
    few, many_size = Image.open(few_png).size, Image.open(many_png).size
    # 13 legend rows of 0.19 in at 200 dpi, beside the 2 rows of one method: ≥ 11 rows taller
    assert many_size[1] - few[1] >= 11 * 0.19 * 200 * 0.9
    assert "variant-23" in (tmp_path / "many" / "id-vs-ood.svg").read_text()


def test_every_measured_entry_records_its_protocol_and_a_tuned_one_its_selection():
    import copy

    from ribench.leaderboard.schema import validate_entry
    from ribench.leaderboard.tree import entry_filename
    shipped = json.loads((Path(__file__).resolve().parents[1] / "leaderboards" / "rib-mini" / "mini-clip"
                          / "ft.json").read_text())
    assert shipped["protocol"]["name"] == "reference" and validate_entry(shipped) == []
    assert entry_filename(shipped) == "ft.json"
    tuned = copy.deepcopy(shipped)
    tuned["protocol"] = {"name": "tuned", "description": "the method's recipe at its selected lr",
                         "selection": {"tune": "lr", "grid": [1e-5, 1e-4, 1e-3, 1e-2, 0.1], "value": 1e-3,
                                       "heldout_acc": {"1e-05": 0.475, "0.0001": 0.49, "0.001": 0.501,
                                                       "0.01": 0.463, "0.1": None},
                                       "datasets": ["resample", "sketch", "corrupt"], "holdout": 0.25, "seed": 0,
                                       "extended": []}}
    assert validate_entry(tuned) == [] and entry_filename(tuned) == "tuned-ft.json"
    broken = copy.deepcopy(tuned)
    broken["protocol"]["selection"]["value"] = 3e-3
    assert any("protocol.selection.value" in p for p in validate_entry(broken))
    broken = copy.deepcopy(tuned)
    del broken["protocol"]["selection"]["heldout_acc"]["0.1"]
    assert any("heldout_acc" in p for p in validate_entry(broken))
    derived = copy.deepcopy(tuned)                                  # e.g. wiseft: its ingredient's selection
    derived["protocol"]["ingredients"] = {"ft": derived["protocol"].pop("selection")}
    assert validate_entry(derived) == []
    derived["protocol"]["ingredients"]["ft"]["value"] = 3e-3
    assert any("protocol.ingredients.ft.value" in p for p in validate_entry(derived))
    del derived["protocol"]["ingredients"]
    assert any("records its selection or its ingredients" in p for p in validate_entry(derived))
    broken = copy.deepcopy(shipped)
    broken["protocol"]["selection"] = tuned["protocol"]["selection"]
    assert any("a reference entry has no selection" in p for p in validate_entry(broken))
    broken = copy.deepcopy(shipped)
    del broken["protocol"]
    assert any("'protocol'" in p for p in validate_entry(broken))


def test_a_tuned_entry_takes_its_selection_from_the_choice_its_cells_were_trained_at(monkeypatch):
    from types import SimpleNamespace

    from ribench.errors import RibenchError
    from ribench.leaderboard import entries
    choice = {"tune": "lr", "grid": [1e-4, 1e-3, 1e-2], "value": 1e-3, "heldout_acc": {"0.0001": 0.4, "0.001": 0.5,
              "0.01": 0.45}, "datasets": ["sketch"], "holdout": 0.25, "seed": 0, "recipe": {"lr": 1e-3}}
    monkeypatch.setattr(entries, "chosen", lambda suite, pretrain, label: choice)
    suite = SimpleNamespace(name="rib-mini")
    cells = [SimpleNamespace(identity={"selection": {"ft": 1e-3}}) for _ in range(3)]
    record = entries._protocol_record(suite, "mini-clip", "ft", "tuned", cells)
    assert record["name"] == "tuned" and record["selection"]["value"] == 1e-3 and "recipe" not in record["selection"]
    assert record["selection"]["extended"] == []
    stale = [SimpleNamespace(identity={"selection": {"ft": 1e-2}})]      # trained at an older choice
    with pytest.raises(RibenchError, match="not trained at the choice"):
        entries._protocol_record(suite, "mini-clip", "ft", "tuned", stale)
    assert entries._protocol_record(suite, "mini-clip", "ft", "reference", stale)["name"] == "reference"
    # wiseft tunes nothing itself: its record is its ingredient's selection, and a stale ingredient is refused
    record = entries._protocol_record(suite, "mini-clip", "wiseft", "tuned", cells)
    assert "selection" not in record and record["ingredients"]["ft"]["value"] == 1e-3
    with pytest.raises(RibenchError, match="not trained at the choice"):
        entries._protocol_record(suite, "mini-clip", "wiseft", "tuned", stale)
    with pytest.raises(RibenchError, match="not trained at the choice"):      # lora's own choice is missing
        entries._protocol_record(suite, "mini-clip", "lora", "tuned", cells)


def test_a_superseded_row_is_marked_with_its_reason(built, tmp_path):
    """A kept row the code no longer measures (e.g. before a method fix) says so beside its label and
    under its table; the reason must be text."""
    from ribench.leaderboard.schema import validate_entry

    root, entries = built
    ft = {k: v for k, v in next(e for e in entries if e["method"]["label"] == "ft").items() if not k.startswith("_")}
    old = {**ft, "superseded": "measured before the head fix"}
    assert validate_entry(old) == [] and shown_label(old) == shown_label(ft) + " (superseded)"
    assert any("superseded" in p for p in validate_entry({**ft, "superseded": 3}))
    folder = tmp_path / "leaderboards"
    write_entry(old, folder)
    assert main(["leaderboard", "build", "--root", str(folder)]) == 0
    readme = (folder / "rib-tiny" / "README.md").read_text()
    assert f"| {shown_label(old)} |" in readme and "Rows marked (superseded): measured before the head fix" in readme
    assert "measured before the head fix" in (folder / "rib-tiny" / "index.html").read_text()


def test_a_long_legend_label_is_wrapped_within_its_panel():
    """A soup's label lists its ingredients' choices; unwrapped, it ran into the next panel's legend."""
    from ribench.leaderboard.plots import _figure, _legend_below

    figure = _figure(3.5 * 2 + 0.3, 4)                          # two panels, as the scatter plots draw them
    left, right = figure.subplots(1, 2)
    long_label = "soup · tuned (ewc: λ 0.1; ft: lr 0.001; lwf: lr 0.001)"
    for axes in (left, right):
        axes.plot([0], [0], "o", label=long_label)
        axes.plot([1], [1], "o", label="ft · tuned (lr 0.001)")
        _legend_below(axes, -0.3)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    left_legend, right_legend = (axes.get_legend().get_window_extent(renderer) for axes in (left, right))
    assert left_legend.x1 < right_legend.x0                      # the two legends do not overlap
    texts = [t.get_text() for t in left.get_legend().get_texts()]
    assert texts[0].count("\n") >= 1 and texts[0].replace("\n  ", " ") == long_label
    assert texts[1] == "ft · tuned (lr 0.001)"                   # short labels stay on one line
