"""The Ray executor on one session-wide local cluster (2 CPUs, 2 fake GPUs, a small object store).

Skipped, with the reason, where Ray is not installed (`pip install 'ribench[ray]'`).
"""

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'ribench[ray]'")

import torch  # noqa: E402

from helpers import RAISING_METHOD, run_cli  # noqa: E402
from ribench.errors import ConfigError  # noqa: E402
from ribench.run.executor import LocalExecutor  # noqa: E402
from ribench.run.ray_executor import RayExecutor, check_resources  # noqa: E402
from ribench.run.runner import run_specs  # noqa: E402
from ribench.run.spec import resolve  # noqa: E402
from ribench.store import Store  # noqa: E402

HERE = Path(__file__).resolve().parent
TINY = str(HERE / "tiny_suite.py")

# Methods that act on their worker, for the tests below; each is told a folder through the environment.
WORKER_METHODS = '''
import os, signal, time
from dataclasses import dataclass
from pathlib import Path

from ribench.catalog import METHODS
from ribench.engine.method import Method


@METHODS.register("dies-once")
class DiesOnce(Method):
    name = "dies-once"
    description = "kill -9 of its own worker on the first try of each cell, then trains as ft"
    paper = "none (a test)"

    @dataclass
    class Config:
        pass

    def prepare(self, ctx):
        marker = Path(os.environ["RIBENCH_TEST_DIR"]) / f"tried-{ctx.train.dataset}"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


@METHODS.register("waits-for-peer")
class WaitsForPeer(Method):
    name = "waits-for-peer"
    description = "starts, then waits until the other cell has started too, so two cells run at once"
    paper = "none (a test)"

    @dataclass
    class Config:
        pass

    def prepare(self, ctx):
        folder = Path(os.environ["RIBENCH_TEST_DIR"])
        (folder / f"started-{ctx.train.dataset}").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        deadline = time.time() + 60
        while len(list(folder.glob("started-*"))) < 2 and time.time() < deadline:
            time.sleep(0.1)

'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-methods")
    (folder / "worker_methods.py").write_text(WORKER_METHODS + RAISING_METHOD.replace("{name}", "raises-on-sketch-ray"))
    os.environ["RIBENCH_TEST_DIR"] = str(folder / "state")
    (folder / "state").mkdir()
    return folder


@pytest.fixture(scope="module")
def cluster(workdir):
    """One local cluster for this module; workers inherit the cache and test folder from the environment."""
    ray.init(num_cpus=2, num_gpus=2, object_store_memory=96 * 1024 ** 2, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


def _state(workdir) -> Path:
    folder = workdir / "state"
    for path in folder.iterdir():
        path.unlink()
    return folder


def _grid(methods, datasets, includes=(TINY,)):
    return [resolve(m, "rib-tiny", "mini-clip", datasets=datasets, seeds=[0], overrides=["epochs=1"],
                    includes=includes) for m in methods]


def _cells(path):
    with Store(path) as db:
        return {c.key: (c.label, c.dataset, c.accuracies) for c in db.cells()}


def test_local_and_ray_store_identical_results(cluster, tmp_path):
    threads = torch.get_num_threads()
    try:
        for name, executor in (("local", LocalExecutor()), ("ray", RayExecutor(cpus_per_cell=1))):
            with Store(tmp_path / f"{name}.sqlite") as store:
                run_specs(_grid(["lp", "wiseft"], ["sketch", "cartoon"]), store, executor, progress=False,
                          log=lambda m: None, threads=1)
    finally:
        torch.set_num_threads(threads)
    local, on_ray = _cells(tmp_path / "local.sqlite"), _cells(tmp_path / "ray.sqlite")
    assert len(local) == 6       # lp, ft (wiseft's ingredient) and wiseft on two datasets
    assert on_ray == local
    with Store(tmp_path / "ray.sqlite") as store:
        ft = [c for c in store.cells() if c.method == "ft"]
        assert all(store.has_weights(c.key) for c in ft)
        assert all(c.provenance["executor"]["name"] == "ray" for c in store.cells())


def test_a_worker_killed_mid_cell_is_retried_and_the_store_ends_complete(cluster, workdir, tmp_path):
    state = _state(workdir)
    specs = _grid(["dies-once"], ["sketch", "cartoon"], includes=(TINY, str(workdir / "worker_methods.py")))
    with Store(tmp_path / "s.sqlite") as store:
        counts = run_specs(specs, store, RayExecutor(max_retries=2), progress=False, log=lambda m: None)
        cells = store.cells(status=None)
    assert counts["ran"] == 2 and sorted(p.name for p in state.iterdir()) == ["tried-cartoon", "tried-sketch"]
    assert sorted(c.dataset for c in cells) == ["cartoon", "sketch"] and {c.status for c in cells} == {"done"}
    assert all(c.provenance["executor"]["pid"] != int((state / f"tried-{c.dataset}").read_text()) for c in cells)


def test_two_gpu_cells_get_distinct_devices(cluster, workdir, tmp_path):
    state = _state(workdir)
    specs = _grid(["waits-for-peer"], ["sketch", "cartoon"], includes=(TINY, str(workdir / "worker_methods.py")))
    with Store(tmp_path / "s.sqlite") as store:
        run_specs(specs, store, RayExecutor(gpus_per_cell=1), progress=False, log=lambda m: None)
        assigned = [c.provenance["executor"]["gpu_ids"] for c in store.cells()]
    assert sorted(len(ids) for ids in assigned) == [1, 1]
    assert sorted(ids[0] for ids in assigned) == ["0", "1"]
    assert sorted((state / f"started-{d}").read_text() for d in ("sketch", "cartoon")) == ["0", "1"]


def test_resources_no_node_has_are_refused_in_one_line(cluster, capsys, tmp_path):
    with pytest.raises(ConfigError, match="asks for 1 GPU\\(s\\), but the Ray cluster at head:6379 has no GPU"):
        check_resources([{"Alive": True, "Resources": {"CPU": 16.0}}], 1, 1, "head:6379")
    with pytest.raises(ConfigError, match="needs --gpus-per-cell above 0"):
        RayExecutor(device="cuda", gpus_per_cell=0)
    code, _, err = run_cli(capsys, "run", "--method", "lp", "--suite", "rib-tiny", "--include", TINY, "--datasets",
                           "sketch", "--store", str(tmp_path / "s.sqlite"), "--no-progress", "--executor", "ray",
                           "--gpus-per-cell", "3")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "each cell asks for 3 GPU(s), but the Ray cluster at this machine has at most 2 GPU(s) on one node" in err


def test_a_method_that_raises_on_a_worker_names_its_cell(cluster, workdir, capsys, tmp_path):
    store = str(tmp_path / "s.sqlite")
    code, _, err = run_cli(capsys, "grid", "--methods", "raises-on-sketch-ray", "--suite", "rib-tiny", "--include",
                           TINY, "--include", str(workdir / "worker_methods.py"), "--datasets", "sketch,cartoon",
                           "--set", "epochs=1", "--store", store, "--no-progress", "--executor", "ray")
    assert code == 2
    assert ("1 of 2 cell(s) failed, the others are stored: raises-on-sketch-ray[epochs=1] on sketch, seed 0 "
            "failed: RuntimeError: boom in prepare") in err
    assert [c.dataset for c in Store(store).cells()] == ["cartoon"]


def test_selection_cells_run_on_ray_as_the_driver_plans_them(cluster, tmp_path, monkeypatch):
    """A worker resolves a tuned-protocol selection run again from its request (protocol and holdout too)."""
    from ribench.run.selection import tune

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with Store(tmp_path / "s.sqlite") as store:
        choice = tune("ft", "rib-tiny", "mini-clip", store, RayExecutor(), overrides=["epochs=1"],
                      datasets=["sketch"], includes=[TINY], progress=False, log=lambda m: None)
        cells = store.cells(status="selection")
    assert len(cells) == 5 and {c.provenance["executor"]["name"] for c in cells} == {"ray"}
    assert choice["value"] in choice["grid"]
