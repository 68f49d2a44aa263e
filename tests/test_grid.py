"""`ribench grid` on the local executor, failures named by cell, and `ribench store merge`."""

from pathlib import Path

import pytest
import torch

from helpers import RAISING_METHOD, run_cli
from ribench.errors import StoreError
from ribench.run.spec import resolve
from ribench.store import CellRecord, Store, cell_key
from ribench.store.merge import merge_stores

HERE = Path(__file__).resolve().parent
TINY = str(HERE / "tiny_suite.py")
ONE_EPOCH = ["--set", "epochs=1"]



def grid(*extra):
    return ["grid", "--suite", "rib-tiny", "--include", TINY, "--no-progress", "--threads", "1", *ONE_EPOCH, *extra]


def test_grid_runs_ingredients_once_then_every_method_and_resumes(capsys, tmp_path):
    store = str(tmp_path / "s.sqlite")
    code, out, err = run_cli(capsys, *grid("--methods", "wiseft,soup[ingredients=pretrained,ft]", "--pretrains",
                                           "mini-clip,mini-sup", "--datasets", "sketch", "--store", store))
    assert code == 0, err
    assert "== rib-tiny / mini-clip ==" in out and "== rib-tiny / mini-sup ==" in out
    with Store(store) as db:
        for pretrain in ("mini-clip", "mini-sup"):
            labels = sorted(c.label for c in db.cells(suite="rib-tiny", pretrain=pretrain))
            assert labels == ["ft[epochs=1]", "soup[epochs=1,ingredients=pretrained,ft]", "wiseft[epochs=1]"]
    assert out.splitlines()[-1] == f"4 cell(s) run, 0 reused; store: {store}"
    code, out, err = run_cli(capsys, *grid("--methods", "wiseft,soup[ingredients=pretrained,ft]", "--pretrains",
                                           "mini-clip,mini-sup", "--datasets", "sketch", "--store", store))
    assert code == 0, err
    assert "0 cell(s) run, 4 reused" in out


def test_a_method_that_raises_fails_its_cell_by_name_and_the_rest_are_stored(capsys, tmp_path):
    plugin = tmp_path / "raises.py"
    plugin.write_text(RAISING_METHOD.replace("{name}", "raises-on-sketch"))
    store = str(tmp_path / "s.sqlite")
    code, out, err = run_cli(capsys, *grid("--methods", "raises-on-sketch,lp", "--datasets", "sketch,cartoon",
                                           "--include", str(plugin), "--store", store))
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("ribench: error: 1 of 4 cell(s) failed")
    assert "raises-on-sketch[epochs=1] on sketch, seed 0 failed: RuntimeError: boom in prepare" in last
    assert "Traceback" not in err
    with Store(store) as db:
        stored = {(c.label, c.dataset) for c in db.cells(suite="rib-tiny")}
    assert stored == {("raises-on-sketch[epochs=1]", "cartoon"), ("lp[epochs=1]", "sketch"),
                      ("lp[epochs=1]", "cartoon")}


# -- store merge ------------------------------------------------------------------------------------------
def _record(dataset: str, seed: int, accuracy: float, label: str = "ft") -> CellRecord:
    identity = {"suite": "rib-tiny", "method": label, "dataset": dataset, "seed": seed}
    return CellRecord(key=cell_key(identity), suite="rib-tiny", pretrain="mini-clip", method=label, label=label,
                      dataset=dataset, seed=seed, identity=identity, accuracies={dataset: accuracy},
                      created_at=1000.0 + seed)


def _store(path: Path, records, weights=(), pretrained_acc=0.5) -> Path:
    with Store(path) as db:
        identity = {"kind": "pretrained", "suite": "rib-tiny", "pretrain": "mini-clip"}
        db.put_pretrained(cell_key(identity), "rib-tiny", "mini-clip", identity, {"sketch": pretrained_acc}, {}, 10.0)
        for record in records:
            db.put(record)
        for record in weights:
            db.save_weights(record.key, {"w": torch.full((2,), record.accuracies[record.dataset])})
    return path


def test_merge_of_disjoint_stores_is_their_union_with_weights(tmp_path):
    a, b = _record("sketch", 0, 0.6), _record("cartoon", 0, 0.7)
    _store(tmp_path / "a.sqlite", [a], weights=[a])
    _store(tmp_path / "b.sqlite", [b])
    counts = merge_stores([tmp_path / "a.sqlite", tmp_path / "b.sqlite"], tmp_path / "c.sqlite")
    assert (counts.cells, counts.duplicates, counts.weights, counts.pretrained) == (2, 0, 1, 1)
    with Store(tmp_path / "c.sqlite") as db:
        assert {c.key: c.accuracies for c in db.cells()} == {a.key: a.accuracies, b.key: b.accuracies}
        assert [c.created_at for c in db.cells()] == [1000.0, 1000.0]
        assert torch.equal(db.load_weights(a.key)["w"], torch.full((2,), 0.6)) and not db.has_weights(b.key)
        assert db.pretrained("rib-tiny", "mini-clip")[0]["created_at"] == 10.0


def test_merge_keeps_an_identical_overlap_once(capsys, tmp_path):
    a, b = _record("sketch", 0, 0.6), _record("sketch", 1, 0.65)
    _store(tmp_path / "a.sqlite", [a, b])
    _store(tmp_path / "b.sqlite", [b], weights=[b])
    code, out, err = run_cli(capsys, "store", "merge", str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite"),
                             "-o", str(tmp_path / "c.sqlite"))
    assert code == 0, err
    assert "2 cell(s)" in out and "1 duplicate cell(s) merged once" in out and "1 weights file(s)" in out
    with Store(tmp_path / "c.sqlite") as db:
        assert len(db.cells()) == 2 and db.has_weights(b.key)


def test_merge_refuses_a_conflict_and_writes_nothing(capsys, tmp_path):
    _store(tmp_path / "a.sqlite", [_record("sketch", 0, 0.6)])
    _store(tmp_path / "b.sqlite", [_record("sketch", 0, 0.61)], weights=[_record("sketch", 0, 0.61)])
    code, _, err = run_cli(capsys, "store", "merge", str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite"),
                           "-o", str(tmp_path / "c.sqlite"))
    assert code == 2 and "1 conflicting result(s), nothing written: ft sketch/seed 0" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.sqlite", "b-weights", "b.sqlite"]
    with pytest.raises(StoreError, match="exists; merge writes a new store"):
        merge_stores([tmp_path / "a.sqlite"], tmp_path / "b.sqlite")


def test_ingredient_runs_are_requests_a_worker_can_resolve_again():
    from ribench.run.spec import ingredient_spec

    spec = resolve("wiseft[alpha=0.3]", "rib-tiny", overrides=["lr=0.05"], includes=[TINY])
    base = ingredient_spec(spec, "ft")
    again = resolve(base.request.method, base.request.suite, overrides=base.request.overrides,
                    includes=base.request.includes)
    assert again.label == base.label == "ft[lr=0.05]" and again.protocol == base.protocol


def test_a_worker_with_another_ribench_version_refuses_the_cell(clip):
    from ribench.run.spec import plan
    from ribench.run.tasks import CellFailed, CellTask, perform

    spec = resolve("lp", "rib-tiny", "mini-clip", datasets=["sketch"], includes=[TINY])
    cell = plan(spec, clip)[0]
    task = CellTask(spec.request, spec.label, "lp", "sketch", 0, cell.key, {}, code=("0.0.1", None))
    with pytest.raises(CellFailed, match="this worker runs ribench 0.1.0 .*, the driver 0.0.1 .*same version"):
        perform(task)
    other = CellTask(spec.request, spec.label, "lp", "sketch", 0, "0" * 64, {})
    with pytest.raises(CellFailed, match="another cell than the driver planned"):
        perform(other)
