import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from ribench.errors import StoreError
from ribench.store import CellRecord, Store, cell_key, default_store_path
from ribench.store import weights as store_weights

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_identity(**changes):
    identity = {
        "suite": "rib-mini",
        "pretrain": {"name": "mini-clip", "weights_sha256": "ab" * 32},
        "method": "l2sp",
        "hyperparameters": {"lam": 0.1, "layers": ["head", "blocks"]},
        "protocol": {"lr": 1e-3, "epochs": 10, "optimizer": "sgd"},
        "dataset": "sketch",
        "seed": 0,
    }
    identity.update(changes)
    return identity


def make_record(**identity_changes):
    identity = make_identity(**identity_changes)
    return CellRecord(
        key=cell_key(identity),
        suite=identity["suite"],
        pretrain=identity["pretrain"]["name"],
        method=identity["method"],
        label="l2sp[lam=0.1]",
        dataset=identity["dataset"],
        seed=identity["seed"],
        identity=identity,
        accuracies={"sketch": 0.8, "cartoon": 0.55, "pretrain-val": 0.7},
        details={"corruptions": {"noise": 0.4}},
        timings={"train_s": 12.5},
        provenance={"ribench": "0.1.0", "git": "abc"},
    )


def test_cell_key_is_stable_and_sensitive():
    identity = make_identity()
    reordered = dict(reversed(list(identity.items())))
    reordered["protocol"] = {"optimizer": "sgd", "epochs": 10, "lr": 0.001}  # 1e-3 spelled otherwise
    assert cell_key(identity) == cell_key(reordered)
    assert len(cell_key(identity)) == 64
    changed = make_identity(hyperparameters={"lam": 0.01, "layers": ["head", "blocks"]})
    assert cell_key(changed) != cell_key(identity)
    assert cell_key(make_identity(seed=1)) != cell_key(identity)
    assert cell_key(make_identity(dataset="cartoon")) != cell_key(identity)
    assert cell_key({"x": (1, 2)}) == cell_key({"x": [1, 2]})
    with pytest.raises(ValueError):
        cell_key({"lam": float("nan")})


def test_put_get_round_trip(tmp_path):
    path = tmp_path / "nested" / "results.sqlite"
    with Store(path) as store:
        record = make_record()
        assert not store.has(record.key)
        assert store.get(record.key) is None
        stored = store.put(record)
        assert stored.created_at is not None
        assert store.has(record.key)
        assert store.get(record.key) == stored
    with Store(path) as reopened:  # persisted, decoded back into dicts
        got = reopened.get(record.key)
        assert got == stored
        assert got.accuracies["cartoon"] == 0.55 and got.details["corruptions"]["noise"] == 0.4


def test_put_refuses_existing_key_and_keeps_old_row(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    original = store.put(make_record())
    replacement = make_record()
    replacement.accuracies = {"sketch": 0.1}
    with pytest.raises(ValueError, match="already stored"):
        store.put(replacement)
    assert store.get(original.key) == original
    assert len(store.cells(status=None)) == 1


def test_put_refuses_key_not_matching_identity(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    record = make_record()
    record.key = "0" * 64
    with pytest.raises(ValueError, match="does not match its identity"):
        store.put(record)
    assert store.cells(status=None) == []


def test_cells_filters(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    a = store.put(make_record(seed=0))
    b = store.put(make_record(seed=1))
    other = make_record(method="ft", seed=0)
    other.method, other.label = "ft", "ft"
    c = store.put(other)
    failed = make_record(seed=2)
    failed.status = "failed"
    store.put(failed)
    assert [r.key for r in store.cells()] == [a.key, b.key, c.key]
    assert [r.key for r in store.cells(method="l2sp")] == [a.key, b.key]
    assert [r.key for r in store.cells(label="ft")] == [c.key]
    assert [r.key for r in store.cells(status="failed")] == [failed.key]
    assert len(store.cells(status=None)) == 4
    assert store.cells(suite="imagenet-rib") == []


def test_pretrained_round_trip_and_refusal(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    identity = {"suite": "rib-mini", "pretrain": "mini-clip", "weights_sha256": "cd" * 32}
    key = cell_key(identity)
    assert store.get_pretrained(key) is None
    store.put_pretrained(key, "rib-mini", "mini-clip", identity, {"sketch": 0.5}, {"git": "abc"})
    got = store.get_pretrained(key)
    assert got["accuracies"] == {"sketch": 0.5} and got["identity"] == identity and got["suite"] == "rib-mini"
    assert [row["key"] for row in store.pretrained("rib-mini", "mini-clip")] == [key]
    assert store.pretrained("rib-mini", "mini-sup") == []
    with pytest.raises(ValueError, match="already stored"):
        store.put_pretrained(key, "rib-mini", "mini-clip", identity, {"sketch": 0.9}, {})
    assert store.get_pretrained(key)["accuracies"] == {"sketch": 0.5}


def test_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(StoreError) as info:
        Store(tmp_path)
    assert str(info.value) == f"cannot write results store {tmp_path}: it is a directory"


def test_parent_that_is_a_file_is_refused_and_nothing_created(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    path = blocker / "sub" / "results.sqlite"
    with pytest.raises(StoreError, match=f"cannot write results store {path}: "):
        Store(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write read-only folders")
def test_read_only_folder_is_refused_and_nothing_created(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for path in (folder / "results.sqlite", folder / "deeper" / "results.sqlite"):
            with pytest.raises(StoreError) as info:
                Store(path)
            assert str(info.value).startswith(f"cannot write results store {path}: ")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


@pytest.mark.skipif(not (hasattr(os, "geteuid") and os.geteuid() == 0), reason="only needed when running as root")
def test_read_only_folder_is_refused_for_an_unprivileged_user(tmp_path):
    """As root, the permission check can only be exercised as another user (via setpriv)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv not available")
    base = Path(tempfile.mkdtemp(prefix="ribench-ro-"))  # pytest's tmp_path is private to root
    try:
        base.chmod(0o755)
        folder = base / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        script = textwrap.dedent(
            """
            import sys
            sys.path.insert(0, sys.argv[1])
            from ribench.errors import StoreError
            from ribench.store import Store
            for path in sys.argv[2:]:
                try:
                    Store(path)
                except StoreError as error:
                    print(error)
            """
        )
        paths = [str(folder / "results.sqlite"), str(folder / "deeper" / "results.sqlite")]
        result = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script,
             str(REPO_ROOT), *paths],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot run as an unprivileged user here: {result.stderr.strip()[-200:]}")
        lines = result.stdout.splitlines()
        assert len(lines) == 2
        for line, path in zip(lines, paths):
            assert line.startswith(f"cannot write results store {path}: ")
        assert list(folder.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "results.sqlite"
    path.write_text("hello, I am not SQLite" * 100)
    with pytest.raises(StoreError, match="not an SQLite database"):
        Store(path)
    assert path.read_text().startswith("hello")


def test_default_store_path(monkeypatch, tmp_path):
    monkeypatch.setenv("RIBENCH_STORE", str(tmp_path / "x.sqlite"))
    assert default_store_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("RIBENCH_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_store_path() == tmp_path / "data" / "ribench" / "results.sqlite"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_store_path() == Path.home() / ".local" / "share" / "ribench" / "results.sqlite"


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from ribench.store import CellRecord, Store, cell_key

    class DieAfterInsert:
        # Wraps the connection so the process dies inside put's transaction, before commit.
        def __init__(self, conn):
            self.conn = conn
        def __enter__(self):
            return self.conn.__enter__()
        def __exit__(self, *exc):
            return self.conn.__exit__(*exc)
        def execute(self, sql, *args):
            cursor = self.conn.execute(sql, *args)
            if sql.lstrip().upper().startswith("INSERT"):
                os.kill(os.getpid(), signal.SIGKILL)
            return cursor

    store = Store(sys.argv[1])
    store._conn = DieAfterInsert(store._conn)
    identity = {"seed": 0}
    store.put(CellRecord(key=cell_key(identity), suite="s", pretrain="p", method="m", label="m",
                         dataset="d", seed=0, identity=identity, accuracies={"d": 0.5}))
    print("not killed")
    """
)


def test_writer_killed_mid_put_leaves_no_row(tmp_path):
    path = tmp_path / "r.sqlite"
    with Store(path) as store:
        kept = store.put(make_record())
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path), str(REPO_ROOT)], capture_output=True, text=True
    )
    assert result.returncode == -9, result.stderr
    assert "not killed" not in result.stdout
    with Store(path) as store:  # opens, rolls the hot journal back
        assert [r.key for r in store.cells(status=None)] == [kept.key]
        assert not store.has(cell_key({"seed": 0}))
        assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # The cell can now be written for real.
        identity = {"seed": 0}
        store.put(CellRecord(key=cell_key(identity), suite="s", pretrain="p", method="m", label="m",
                             dataset="d", seed=0, identity=identity, accuracies={"d": 0.5}))
        assert store.has(cell_key(identity))


def test_weights_round_trip_atomic(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    store = Store(tmp_path / "results.sqlite")
    key = "k" * 64
    shared = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    state = {"a": shared, "tied": shared, "t": shared.t(), "i": torch.tensor([1, 2], dtype=torch.int64)}
    path = store.save_weights(key, state)
    assert path == tmp_path / "results-weights" / f"{key}.safetensors" == store.weights_path(key)
    loaded = store.load_weights(key)
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor)
    assert sorted(p.name for p in store.weights_dir.iterdir()) == [f"{key}.safetensors"]

    # An interrupted write leaves the previous file and no temp file behind.
    def exploding_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(store_weights, "save_file", exploding_save)
    with pytest.raises(StoreError, match="cannot write weights .*disk full"):
        store.save_weights(key, {"a": torch.zeros(1)})
    assert sorted(p.name for p in store.weights_dir.iterdir()) == [f"{key}.safetensors"]
    assert torch.equal(store.load_weights(key)["a"], shared)

    with pytest.raises(StoreError, match="no stored weights for cell"):
        store.load_weights("missing")
