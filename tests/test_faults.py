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
    code, out, err = run_cli(capsys, *tiny_run("--method", "ft", "--set", "lr=1e6", "--store", store))
    assert "diverged at step" in err and "stored as failed" in err
    assert code == 2 and err.strip().splitlines()[-1].startswith("ribench: error: 1 cell(s) of ft[lr=1000000.0] diverged")
    [(label, status, details)] = rows(store)
    assert status == "failed"
    step = json.loads(details)["diverged"]["step"]
    assert isinstance(step, int) and step >= 0 and json.loads(details)["diverged"]["what"] == "loss"
    # results does not count it and names it
    code, out, err = run_cli(capsys, "results", "--include", TINY, "--suite", "rib-tiny", "--store", store)
    assert f"failed: {label} on sketch, seed 0: diverged at step {step}" in err
    # a rerun skips it, a retry runs it again (it diverges again: the row stays one failed row)
    code, out, err = run_cli(capsys, *tiny_run("--method", "ft", "--set", "lr=1e6", "--store", store))
    assert "stored as failed (diverged); skipping" in err and "0 cell(s) run" in out
    code, out, err = run_cli(capsys, *tiny_run("--method", "ft", "--set", "lr=1e6", "--store", store,
                                               "--retry-failed"))
    assert "1 cell(s) run" in out and [r[1] for r in rows(store)] == ["failed"]


def test_weights_that_hold_nan_after_fit_fail_the_cell(clip):
    import torch

    from ribench.engine.method import Method
    from ribench.run.cell import run_cell
    from ribench.run.spec import cell_for, resolve

    spec = resolve("ft", "rib-tiny", "mini-clip", datasets=["sketch"], overrides=["epochs=1"])

    class PoisonsHead(spec.method_cls):
        def finish(self, ctx):
            with torch.no_grad():
                next(ctx.model.parameters()).view(-1)[0] = float("inf")

    spec.method_cls = PoisonsHead
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
