"""Fault injection and hostile input (issue 19): each test reproduces one way ribench used to break.

Fast and seeded: the tiny suite, one dataset, one seed; nothing trains on rib-mini.
"""

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from helpers import run_cli

HERE = Path(__file__).resolve().parent
TINY = str(HERE / "tiny_suite.py")


@pytest.fixture(autouse=True, scope="module")
def _generate_each_tiny_split_once():
    """Each CLI call builds a fresh rib-tiny, which renders its images again; here they are rendered once
    (the arrays are only read), so this file stays fast."""
    import functools

    from ribench.suites import rib_mini

    original = rib_mini.generate
    rib_mini.generate = functools.cache(original)
    yield
    rib_mini.generate = original


def tiny_run(*extra):
    return ["run", "--include", TINY, "--suite", "rib-tiny", "--no-progress", "--datasets", "sketch", *extra]


def one_line_error(code, err, *expected):
    assert code == 2, err
    assert err.startswith("ribench: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err


def rows(store_path):
    with sqlite3.connect(store_path) as db:
        return db.execute("SELECT label, status, details FROM cells").fetchall()


# -- 3. a diverged run is stored as failed, never as a result ------------------------------------------
def test_diverged_cell_is_stored_failed_with_its_step_reported_skipped_and_retried(capsys, tmp_path):
    store = str(tmp_path / "s.sqlite")
    code, out, err = run_cli(capsys, *tiny_run("--method", "ft", "--set", "lr=1e6", "--set", "batch_size=4", "--store", store))
    assert "diverged at step" in err and "stored as failed" in err
    assert code == 2 and err.strip().splitlines()[-1].startswith("ribench: error: 1 cell(s) of ft[batch_size=4,lr=1000000.0] diverged")
    [(label, status, details)] = rows(store)
    assert status == "failed"
    step = json.loads(details)["diverged"]["step"]
    assert isinstance(step, int) and step >= 0 and json.loads(details)["diverged"]["what"] == "loss"
    # results does not count it and names it
    code, out, err = run_cli(capsys, "results", "--include", TINY, "--suite", "rib-tiny", "--store", store)
    assert f"failed: {label} on sketch, seed 0: diverged at step {step}" in err
    # a rerun skips it, a retry runs it again (it diverges again: the row stays one failed row)
    code, out, err = run_cli(capsys, *tiny_run("--method", "ft", "--set", "lr=1e6", "--set", "batch_size=4", "--store", store))
    assert "stored as failed (diverged); skipping" in err and "0 cell(s) run" in out
    code, out, err = run_cli(capsys, *tiny_run("--method", "ft", "--set", "lr=1e6", "--set", "batch_size=4", "--store", store,
                                               "--retry-failed"))
    assert "1 cell(s) run" in out and [r[1] for r in rows(store)] == ["failed"]


def test_weights_that_hold_nan_after_fit_fail_the_cell(clip):
    import torch

    from ribench.engine.method import Method
    from ribench.run.cell import run_cell
    from ribench.run.spec import cell_for, resolve

    spec = resolve("ft", "rib-tiny", "mini-clip", datasets=["sketch"])

    class PoisonsAWeight(spec.method_cls):
        def fit(self, ctx):               # a method with its own fit: no loss the loop could see
            ctx.step = 5
            with torch.no_grad():
                next(ctx.model.parameters()).view(-1)[0] = float("inf")
            return {}

    spec.method_cls = PoisonsAWeight
    cell = cell_for(spec, clip, "sketch", 0)
    _, record = run_cell(spec, clip, cell, {})
    assert record.status == "failed" and record.accuracies == {}
    assert record.details["diverged"]["what"] == "weights" and record.details["diverged"]["step"] == 5
    assert Method  # the base class is what plug-ins subclass


def test_a_failed_cell_never_replaces_a_finished_one_and_is_not_finished(tmp_path):
    from ribench.run.runner import FINISHED
    from ribench.store import CellRecord, Store, cell_key

    identity = {"seed": 0}
    done = CellRecord(key=cell_key(identity), suite="s", pretrain="p", method="m", label="m", dataset="d", seed=0,
                      identity=identity, accuracies={"d": 0.5})
    failed = CellRecord(**{**done.__dict__, "status": "failed", "accuracies": {}, "created_at": None})
    assert "failed" not in FINISHED
    with Store(tmp_path / "s.sqlite") as store:
        store.put(done)
        with pytest.raises(ValueError, match="never overwritten"):
            store.put(failed, replace_failed=True)
        assert store.get(done.key).status == "done"


def test_tuning_treats_a_failed_candidate_as_unscored(tmp_path):
    from ribench.run.selection import _heldout
    from ribench.store import CellRecord, Store, cell_key

    with Store(tmp_path / "s.sqlite") as store:
        for seed, status, acc in ((0, "selection", {"heldout": 0.4}), (1, "failed", {})):
            identity = {"seed": seed}
            store.put(CellRecord(key=cell_key(identity), suite="s", pretrain="p", method="m", label="m",
                                 dataset="d", seed=seed, identity=identity, accuracies=acc, status=status))
        assert _heldout(store, cell_key({"seed": 0})) == 0.4
        assert _heldout(store, cell_key({"seed": 1})) is None


def test_submit_refuses_a_method_with_failed_cells(capsys, tmp_path, clip):
    from ribench.engine.trainer import Diverged
    from ribench.run.cell import failed_record
    from ribench.run.spec import cell_for, resolve
    from ribench.store import Store

    store = str(tmp_path / "s.sqlite")
    assert run_cli(capsys, *tiny_run("--method", "zeroshot", "--store", store))[0] == 0
    spec = resolve("ft", "rib-tiny", "mini-clip", datasets=["sketch"])
    with Store(store) as db:
        db.put(failed_record(spec, clip, cell_for(spec, clip, "sketch", 0), Diverged(3, "loss"), 0.0))
    code, out, err = run_cli(capsys, "leaderboard", "submit", "--include", TINY, "--suite", "rib-tiny",
                             "--method", "ft", "--store", store, "--root", str(tmp_path / "lb"))
    one_line_error(code, err, "cannot submit ft: 1 of its cells failed", "diverged at step 3")
    assert not (tmp_path / "lb").exists()


# -- 1, 2. leaderboard check and build never write outside the root and are atomic -----------------------
REPO = HERE.parent


def board(tmp_path, methods=("ft", "zeroshot")):
    """A copy of two shipped rib-mini entries in tmp/repo/leaderboards, a README.md above it to guard."""
    repo = tmp_path / "repo"
    root = repo / "leaderboards"
    (root / "rib-mini" / "mini-clip").mkdir(parents=True)
    for method in methods:
        source = REPO / "leaderboards" / "rib-mini" / "mini-clip" / f"{method}.json"
        (root / "rib-mini" / "mini-clip" / f"{method}.json").write_bytes(source.read_bytes())
    (repo / "README.md").write_text("the project's own README\n")
    return repo, root


def entry_of(root, method="ft"):
    return json.loads((root / "rib-mini" / "mini-clip" / f"{method}.json").read_text())


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("suite", ["..", "ABSOLUTE"])
def test_a_symlinked_entry_cannot_make_build_write_outside_the_root(capsys, tmp_path, suite):
    repo, root = board(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.png").write_bytes(b"png")
    entry = entry_of(root)
    entry["suite"] = str(outside) if suite == "ABSOLUTE" else suite
    entry["method"]["label"] = "evil"
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps(entry))
    (root / "rib-mini" / "mini-clip" / "evil.json").symlink_to(evil)
    before = snapshot(tmp_path)
    code, out, err = run_cli(capsys, "leaderboard", "check", "--root", str(root))
    assert code == 2 and "evil.json" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "leaderboard", "build", "--root", str(root))
    one_line_error(code, err, "evil.json")
    assert snapshot(tmp_path) == before            # nothing written, nothing deleted, anywhere


def test_suite_and_pretrain_must_be_plain_folder_names():
    from ribench.leaderboard.schema import validate_entry

    entry = entry_of(REPO / "leaderboards")
    for field, bad in (("suite", ".."), ("suite", "/etc"), ("pretrain", "a/b"), ("pretrain", ".")):
        problems = validate_entry({**entry, field: bad})
        assert any(f"field '{field}'" in p for p in problems), (field, bad, problems)


def test_huge_numbers_are_refused_by_check_and_build_changes_nothing(capsys, tmp_path):
    repo, root = board(tmp_path)
    assert run_cli(capsys, "leaderboard", "build", "--root", str(root))[0] == 0
    built = snapshot(root)
    entry = entry_of(root, "zeroshot")
    entry["metrics"]["mRI"]["ci95"] = [-1e308, 1e308]
    (root / "rib-mini" / "mini-clip" / "zeroshot.json").write_text(json.dumps(entry))
    code, out, err = run_cli(capsys, "leaderboard", "check", "--root", str(root))
    assert code == 2 and "metrics.mRI.ci95" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "leaderboard", "build", "--root", str(root))
    one_line_error(code, err, "metrics.mRI.ci95")
    after = snapshot(root)
    del after["rib-mini/mini-clip/zeroshot.json"], built["rib-mini/mini-clip/zeroshot.json"]
    assert after == built


def test_a_build_that_fails_midway_leaves_the_previous_pages_and_plots(capsys, tmp_path, monkeypatch):
    from ribench.leaderboard import plots

    repo, root = board(tmp_path)
    assert run_cli(capsys, "leaderboard", "build", "--root", str(root))[0] == 0
    built = snapshot(root)
    assert any(name.startswith("rib-mini/plots/") for name in built)

    def explode(*args, **kwargs):
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(plots, "id_vs_ood", explode)
    code, out, err = run_cli(capsys, "leaderboard", "build", "--root", str(root))
    one_line_error(code, err, "nothing was changed", "OverflowError")
    assert snapshot(root) == built
    assert sorted(p.name for p in (root / "rib-mini").iterdir()) == sorted(
        {Path(name).parts[1] for name in built if name.startswith("rib-mini/")})   # no temporary folder left


def test_deeply_nested_and_oversized_entries_are_one_problem_each(capsys, tmp_path):
    repo, root = board(tmp_path, methods=("ft",))
    folder = root / "rib-mini" / "mini-clip"
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "big.json").write_text(json.dumps({"x": "a" * (3 << 20)}))
    code, out, err = run_cli(capsys, "leaderboard", "check", "--root", str(root))
    assert code == 2 and "Traceback" not in err and "RecursionError" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert any("deep.json" in line and "nested deeper than" in line for line in lines)
    assert any("big.json" in line and "larger than" in line for line in lines)


def test_readme_escapes_entry_text(capsys, tmp_path):
    repo, root = board(tmp_path, methods=("ft",))
    entry = entry_of(root)
    entry["method"]["hyperparameters"] = {"note": "<script>alert(1)</script> **bold** [x](javascript:y)"}
    (root / "rib-mini" / "mini-clip" / "ft.json").write_text(json.dumps(entry))
    assert run_cli(capsys, "leaderboard", "build", "--root", str(root))[0] == 0
    readme = (root / "rib-mini" / "README.md").read_text()
    assert "<script>" not in readme and "&lt;script&gt;" in readme
    assert "**bold**" not in readme and "](javascript" not in readme


# -- 6. every bad value is one line, exit 2, before any training --------------------------------------
@pytest.mark.parametrize("extra, expected", [
    (["--seeds", "-1"], "bad seed -1"),
    (["--seeds", "0,0"], "seed 0 is given twice"),
    (["--seeds", ","], "no seeds given"),
    (["--seeds", "a"], "seeds must be integers"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--threads", "-1"], "--threads must be a whole number of at least 1"),
    (["--set", "momentum=-1"], "bad value for momentum: -1.0 (must be between 0.0 and 1.0)"),
    (["--set", "weight_decay=-1"], "bad value for weight_decay"),
    (["--set", "warmup_steps=-5"], "bad value for warmup_steps: -5 (must be at least 0)"),
    (["--set", "eval_batch_size=0"], "bad value for eval_batch_size: 0"),
    (["--datasets", ","], "expected comma-separated names"),
    (["--suite", "imagenet-rib", "--pretrain", "mini-sup"], "pretrain 'mini-sup' knows only rib-mini's 10 classes"),
    (["--suite", "imagenet-rib"], "pretrain 'mini-clip' knows only rib-mini's 10 classes"),
])
def test_bad_run_values_are_one_line_before_any_work(capsys, tmp_path, extra, expected):
    store = tmp_path / "s.sqlite"
    argv = ["run", "--include", TINY, "--method", "ft", "--no-progress", "--store", str(store), *extra]
    if "--datasets" not in extra:
        argv += ["--datasets", "sketch"]
    if "--suite" not in extra:
        argv += ["--suite", "rib-tiny"]
    code, out, err = run_cli(capsys, *argv)
    one_line_error(code, err, expected)
    assert not store.exists()


PLUGIN_FIT_RAISES = '''
from dataclasses import dataclass
from ribench.catalog import METHODS
from ribench.engine.method import Method


@METHODS.register("fit-raises")
class FitRaises(Method):
    name = "fit-raises"
    description = "a plug-in whose fit raises"
    paper = "none (a test)"

    @dataclass
    class Config:
        pass

    def fit(self, ctx):
        raise AssertionError("plug-in bug")


@METHODS.register("fit-exits")
class FitExits(FitRaises):
    name = "fit-exits"

    def fit(self, ctx):
        raise SystemExit("plug-in called sys.exit")
'''


def test_a_plugin_whose_fit_raises_is_named_by_its_cell_in_one_line(capsys, tmp_path):
    plugin = tmp_path / "fit_raises.py"
    plugin.write_text(PLUGIN_FIT_RAISES)
    code, out, err = run_cli(capsys, *tiny_run("--include", str(plugin), "--method", "fit-raises",
                                               "--store", str(tmp_path / "s.sqlite")))
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ribench: error: 1 of 1 cell(s) failed")
    assert "fit-raises on sketch, seed 0 failed: AssertionError: plug-in bug" in last
    code, out, err = run_cli(capsys, *tiny_run("--include", str(plugin), "--method", "fit-exits",
                                               "--store", str(tmp_path / "s.sqlite")))
    assert code == 2 and "fit-exits on sketch, seed 0 failed: SystemExit: plug-in called sys.exit" in err


def test_bad_json_or_changed_digits_in_a_stored_row_are_one_line(capsys, tmp_path):
    store = str(tmp_path / "s.sqlite")
    assert run_cli(capsys, *tiny_run("--method", "zeroshot", "--store", store))[0] == 0
    results = ["results", "--include", TINY, "--suite", "rib-tiny", "--store", store]
    with sqlite3.connect(store) as db:
        accuracies = db.execute("SELECT accuracies FROM cells").fetchone()[0]
        changed = accuracies.replace("0.", "0.9", 1)
        db.execute("UPDATE cells SET accuracies = ?", (changed,))
    code, out, err = run_cli(capsys, *results)
    one_line_error(code, err, "damaged", "checksum")
    with sqlite3.connect(store) as db:
        db.execute("UPDATE cells SET accuracies = ?", ("{not json",))
    code, out, err = run_cli(capsys, *results)
    one_line_error(code, err, "damaged")


def _crafted_pickle(path):
    import torch

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {path}.ran",))

    torch.save({"x": RunsCode()}, path)


def test_weights_files_that_cannot_be_loaded_are_one_line(capsys, tmp_path):
    import torch
    from safetensors.torch import load_file

    from ribench.pretrains.mini import weights_file

    crafted = tmp_path / "crafted.bin"
    _crafted_pickle(crafted)
    other = tmp_path / "mini-clip-as-bin.bin"
    torch.save(load_file(str(weights_file("mini-clip"))), other)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(weights_file("mini-clip").read_bytes()[:5000])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    cases = [
        ("laion2b", crafted, "holds pickled Python objects besides tensors"),
        ("laion2b", other, "is not an open_clip ViT-B-16 checkpoint"),
        ("mini-clip", truncated, "is not mini-clip weights"),
        ("mini-clip", garbage, "SafetensorError"),
        ("mini-clip", weights_file("mini-sup"), "KeyError"),
        ("mini-sup", weights_file("mini-clip"), "is not mini-sup weights"),
    ]
    for pretrain, path, expected in cases:
        store = tmp_path / "s.sqlite"
        code, out, err = run_cli(capsys, "run", "--method", "zeroshot", "--pretrain", pretrain, "--weights", str(path),
                                 "--store", str(store))
        one_line_error(code, err, str(path), expected)
        assert "weights_only" not in err and not store.exists()
    assert not Path(f"{crafted}.ran").exists()


# -- 7. results, leaderboard and distance only read the store -------------------------------------------
def test_results_on_a_missing_store_creates_nothing(capsys, tmp_path):
    missing = tmp_path / "no" / "such" / "results.sqlite"
    code, out, err = run_cli(capsys, "results", "--store", str(missing))
    one_line_error(code, err, f"no results store at {missing}")
    code, out, err = run_cli(capsys, "leaderboard", "submit", "--method", "ft", "--store", str(missing),
                             "--root", str(tmp_path / "lb"))
    one_line_error(code, err, "no results store at")
    assert list(tmp_path.iterdir()) == []


def test_results_read_while_another_process_writes(capsys, tmp_path):
    import time

    from ribench.store import Store

    store = tmp_path / "s.sqlite"
    assert run_cli(capsys, *tiny_run("--method", "zeroshot", "--store", str(store)))[0] == 0
    before = store.read_bytes()
    writer = sqlite3.connect(store)
    writer.execute("BEGIN IMMEDIATE")          # a run holding the write lock
    try:
        start = time.monotonic()
        code, out, err = run_cli(capsys, "results", "--include", TINY, "--suite", "rib-tiny", "--store", str(store))
        assert code == 0, err
        assert "zeroshot" in out and time.monotonic() - start < 20
        with Store(store, readonly=True) as reader:
            with pytest.raises(Exception):
                reader._conn.execute("CREATE TABLE x (y)")
    finally:
        writer.rollback()
        writer.close()
    assert store.read_bytes() == before


# -- 4. every cached artefact carries a hash; writes are atomic and leave nothing behind ------------------
def test_damaged_feature_caches_are_rebuilt_never_used(clip, tiny_suite, tmp_path, monkeypatch):
    import numpy as np

    from ribench.data.features import cached_features

    monkeypatch.setenv("RIBENCH_CACHE", str(tmp_path))
    split = tiny_suite.train_split("sketch")
    genuine = cached_features(clip, split, "train", 200)
    [path] = list((tmp_path / "features").rglob("*.npz"))
    original = path.read_bytes()
    damages = {
        "zeroed": lambda: np.savez(path, features=np.zeros_like(genuine)),       # a valid file of zeros
        "truncated": lambda: path.write_bytes(original[: len(original) // 2]),
        "bit-flipped": lambda: path.write_bytes(original[:-10] + bytes([original[-10] ^ 1]) + original[-9:]),
        "empty": lambda: path.write_bytes(b""),
    }
    for name, damage in damages.items():
        damage()
        again = cached_features(clip, split, "train", 200)
        assert np.array_equal(again, genuine), name
        assert path.read_bytes() == original, name           # rebuilt in place


def test_cache_files_detect_every_damage_and_writes_leave_no_temporary_file(tmp_path, monkeypatch):
    import numpy as np

    from ribench import cachefile

    path = tmp_path / "c" / "x.npz"
    arrays = {"images": np.arange(1000, dtype=np.uint8), "labels": np.arange(10)}
    cachefile.save_arrays(path, arrays)
    assert all(np.array_equal(cachefile.load_arrays(path)[k], v) for k, v in arrays.items())
    data = path.read_bytes()
    for damaged in (data[:100], data[:-1] + bytes([data[-1] ^ 0x80]), b"\0" * len(data)):
        path.write_bytes(damaged)
        assert cachefile.load_arrays(path) is None and not path.exists()
    # a full disk while writing: one line, the temporary file is removed, the old file stays
    cachefile.save_arrays(path, arrays)

    def full_disk(name, *args, **kwargs):
        Path(name).write_bytes(b"x" * (2 << 20))
        raise OSError(28, "No space left on device")

    with pytest.raises(cachefile.CacheError, match="No space left on device"):
        cachefile.atomic_write(path, full_disk, "feature cache")
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.npz"]
    # a temporary file of a process killed mid-write is removed by the next write
    leftover = path.parent / f".x.npz.{2 ** 22 + 7}.abc.tmp"
    leftover.write_bytes(b"half")
    cachefile.save_arrays(path, arrays)
    assert not leftover.exists()


def test_stored_weights_carry_a_hash_and_a_full_disk_is_one_line(tmp_path, monkeypatch):
    import torch
    from safetensors import SafetensorError

    from ribench.errors import StoreError
    from ribench.store import Store
    from ribench.store import weights as store_weights

    store = Store(tmp_path / "s.sqlite")
    key = "a" * 64
    path = store.save_weights(key, {"w": torch.arange(4096, dtype=torch.float32)})
    assert torch.equal(store.load_weights(key)["w"], torch.arange(4096, dtype=torch.float32))
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01                       # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        store.load_weights(key)

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"x" * (2 << 20))
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(store_weights, "save_file", full_disk)
    with pytest.raises(StoreError, match="cannot write weights .*No space left on device"):
        store.save_weights("b" * 64, {"w": torch.zeros(3)})
    assert sorted(p.name for p in store.weights_dir.iterdir()) == [path.name]


# -- 5. concurrent runs on one store ---------------------------------------------------------------------
def test_two_runs_at_once_on_a_fresh_store_store_each_cell_once(tmp_path):
    import subprocess

    import ribench

    store = tmp_path / "s.sqlite"
    tested = str(Path(ribench.__file__).resolve().parent.parent)        # the ribench under test, not another
    env = {**os.environ, "PYTHONPATH": tested + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "ribench", *tiny_run("--method", "zeroshot", "--store", str(store))]
    runs = [subprocess.Popen(argv, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err
        assert "Traceback" not in err
    assert sum("1 cell(s) run" in out for out, _ in outputs) == 1, outputs     # the work was done once
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM cells").fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM pretrained").fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM leases").fetchone() == (0,)


def test_a_cell_claimed_by_a_live_process_is_skipped_and_a_dead_ones_claim_taken_over(capsys, tmp_path):
    import socket
    import subprocess

    from ribench.run.spec import cell_for, resolve
    from ribench.store import Store

    store = tmp_path / "s.sqlite"
    assert run_cli(capsys, *tiny_run("--method", "zeroshot", "--datasets", "cartoon", "--store", str(store)))[0] == 0
    spec = resolve("zeroshot", "rib-tiny", "mini-clip", datasets=["sketch"])
    from ribench.run.cell import load_pretrained
    key = cell_for(spec, load_pretrained(spec), "sketch", 0).key
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with sqlite3.connect(store) as db:
            db.execute("INSERT INTO leases VALUES (?, ?, ?, ?)", (key, other.pid, socket.gethostname(), 1e18))
        code, out, err = run_cli(capsys, *tiny_run("--method", "zeroshot", "--store", str(store)))
        assert f"1 cell(s) are being run by another process (pid {other.pid}" in err
        with Store(store, readonly=True) as db:
            assert db.get(key) is None
    finally:
        other.kill()
        other.wait()
    # the holder was killed (kill -9): its claim is stale and taken over
    code, out, err = run_cli(capsys, *tiny_run("--method", "zeroshot", "--store", str(store)))
    assert code == 0 and "1 cell(s) run" in out
    with Store(store, readonly=True) as db:
        assert db.get(key).status == "done"
    with Store(store) as db:       # a claim past its time, of a process on another machine, is taken over too
        with db._conn:
            db._conn.execute("INSERT INTO leases VALUES ('k', 1, 'elsewhere', 0)")
        assert db.claim("k") is None
        with db._conn:
            db._conn.execute("UPDATE leases SET pid = 1, host = 'elsewhere', expires = 1e18 WHERE key = 'k'")
        assert db.claim("k") == {"pid": 1, "host": "elsewhere", "expires": 1e18}


def test_storing_the_same_result_twice_is_idempotent(tmp_path):
    from ribench.store import CellRecord, Store, cell_key

    identity = {"seed": 0}
    record = CellRecord(key=cell_key(identity), suite="s", pretrain="p", method="m", label="m", dataset="d",
                        seed=0, identity=identity, accuracies={"d": 0.5})
    with Store(tmp_path / "s.sqlite") as store:
        first = store.put(record)
        assert store.put(record) == first
        store.put_pretrained(cell_key({"p": 1}), "s", "p", {"p": 1}, {"d": 0.5}, {})
        store.put_pretrained(cell_key({"p": 1}), "s", "p", {"p": 1}, {"d": 0.5}, {})
        assert len(store.cells(status=None)) == 1 and len(store.pretrained()) == 1


# -- 8. provenance names ribench's own commit, never an enclosing repository's ------------------------------
def test_git_commit_only_when_ribench_is_its_own_checkout(tmp_path):
    import shutil
    import subprocess

    from ribench.run.cell import code_sha256, git_commit

    assert git_commit() == subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                          text=True).stdout.strip()
    outer = tmp_path / "project"
    shutil.copytree(REPO / "ribench", outer / "vendor" / "ribench",
                    ignore=shutil.ignore_patterns("__pycache__", "weights", "*.html", "assets"))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=outer, check=True)
    subprocess.run([*git, "add", "-A"], cwd=outer, check=True)
    subprocess.run([*git, "commit", "-qm", "a project that vendors ribench"], cwd=outer, check=True)
    script = ("from ribench.run.cell import git_commit, code_sha256; import ribench; "
              "print(ribench.__file__); print(git_commit()); print(code_sha256())")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(outer / "vendor")})
    where, commit, digest = out.stdout.split()
    assert where.startswith(str(outer)) and commit == "None"
    assert digest == code_sha256()          # the same code, however installed


# -- 9. the fit context reaches no test split; a plug-in that finds one anyway fails its cell ----------------
def _reachable(root):
    """Every object reachable from `root` through data: attributes, containers, closures, bound selves
    (not module globals, which reach everything importable)."""
    import functools
    import types

    import numpy as np
    import torch

    seen, stack = set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (types.ModuleType, type, str, bytes, int, float, bool,
                                                  torch.Tensor, np.ndarray)) or obj is None:
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, types.FunctionType):
            stack += [cell.cell_contents for cell in obj.__closure__ or ()] + list(obj.__defaults__ or ())
        elif isinstance(obj, types.MethodType):
            stack += [obj.__self__, obj.__func__]
        elif isinstance(obj, functools.partial):
            stack += [obj.func, *obj.args, *obj.keywords.values()]
        elif isinstance(obj, dict):
            stack += [*obj.keys(), *obj.values()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += list(obj)
        else:
            stack += list(getattr(obj, "__dict__", {}).values())
            for name in getattr(type(obj), "__slots__", ()):
                stack.append(getattr(obj, name, None))


def test_nothing_reachable_from_the_fit_context_is_a_test_split_a_suite_or_the_run(clip):
    from ribench.data.splits import TestSplit
    from ribench.run.spec import RunSpec, fit_context, resolve
    from ribench.suites.base import Suite

    for method in ("ft", "lp"):
        spec = resolve(method, "rib-tiny", "mini-clip", datasets=["sketch"])
        ctx = fit_context(spec, clip, "sketch", 0)
        leaks = [type(o).__name__ for o in _reachable(ctx) if isinstance(o, (TestSplit, Suite, RunSpec))]
        assert leaks == [], (method, leaks)


PLUGIN_READS_TEST_SPLIT = '''
from dataclasses import dataclass
from ribench.catalog import METHODS, SUITES
from ribench.engine.method import Method


@METHODS.register("peeks")
class Peeks(Method):
    name = "peeks"
    description = "trains on a test split it found through the suite registry"
    paper = "none (a test)"

    @dataclass
    class Config:
        pass

    def prepare(self, ctx):
        split = SUITES.get("rib-tiny")().test_split(ctx.train.dataset)
        ctx.state["stolen"] = split.images[:4]
'''


def test_a_plugin_that_reads_a_test_split_through_the_registry_fails_its_cell(capsys, tmp_path):
    plugin = tmp_path / "peeks.py"
    plugin.write_text(PLUGIN_READS_TEST_SPLIT)
    store = tmp_path / "s.sqlite"
    code, out, err = run_cli(capsys, *tiny_run("--include", str(plugin), "--method", "peeks", "--store", str(store),
                                               "--set", "epochs=1"))
    assert code == 2 and "Traceback" not in err
    assert "method 'peeks[epochs=1]' read the test split of 'sketch' while fitting" in err.strip().splitlines()[-1]
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM cells").fetchone() == (0,)


def test_submit_rederives_each_cell_key_from_its_identity(tmp_path):
    import importlib

    from ribench.errors import RibenchError
    from ribench.store import Store

    test_leaderboard = importlib.import_module("test_leaderboard")
    suite = test_leaderboard.SUITES.get("rib-tiny")()
    path = tmp_path / "s.sqlite"
    test_leaderboard.fill_store(path, suite)
    from ribench.leaderboard.entries import entry_from_store

    entry_from_store(path, "rib-tiny", "mini-clip", "ft")       # the genuine store makes an entry
    with Store(path) as store:
        victim = store.cells(label="ft")[0]
    with sqlite3.connect(path) as db:                 # a row whose identity was edited, checksum recomputed
        identity = dict(victim.identity, seed=victim.seed + 100)
        row = db.execute("SELECT * FROM cells WHERE key = ?", (victim.key,)).fetchone()
        names = [d[0] for d in db.execute("SELECT * FROM cells").description]
        values = dict(zip(names, row), identity=json.dumps(identity, sort_keys=True))
        from ribench.store.database import _CELL_COLUMNS, row_checksum
        values["checksum"] = row_checksum([values[n] for n in _CELL_COLUMNS])
        db.execute("UPDATE cells SET identity = ?, checksum = ? WHERE key = ?",
                   (values["identity"], values["checksum"], victim.key))
    with pytest.raises(RibenchError, match="does not match its identity"):
        entry_from_store(path, "rib-tiny", "mini-clip", "ft")
