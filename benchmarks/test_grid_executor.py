"""Cells per hour of one rib-mini grid slice, locally with 2 threads and on Ray with 2 workers x 1 thread.

The same 8 `ft` cells (4 downstream datasets x 2 seeds, mini-clip) run in a fresh store each
time, in one pytest run, so the two figures are measured side by side; Ray's fixed start-up
(`ray.init` of a local cluster) is measured apart. `extra_info` holds cells/hour, and the Ray
benchmark also the ratio to the local one.

Run: python -m pytest benchmarks/test_grid_executor.py --benchmark-only -s
"""

import time

import pytest
import torch

from ribench.run.executor import LocalExecutor
from ribench.run.runner import run_specs
from ribench.run.spec import resolve
from ribench.store import Store

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'ribench[ray]'")

from ribench.run.ray_executor import RayExecutor  # noqa: E402

DATASETS, SEEDS = ["resample", "sketch", "cartoon", "drawing"], [0, 1]
CELLS = len(DATASETS) * len(SEEDS)
_seconds: dict[str, float] = {}


def _grid(store_path, executor, threads=None) -> float:
    spec = resolve("ft", "rib-mini", "mini-clip", datasets=DATASETS, seeds=SEEDS, protocol="reference")
    start = time.perf_counter()
    with Store(store_path) as store:
        counts = run_specs([spec], store, executor, progress=False, log=lambda m: None, threads=threads)
    assert counts["ran"] == CELLS
    return time.perf_counter() - start


def _report(benchmark, name: str, seconds: float) -> None:
    _seconds[name] = seconds
    benchmark.extra_info["cells"] = CELLS
    benchmark.extra_info["cells_per_hour"] = round(CELLS * 3600 / seconds, 1)
    print(f"\n{name}: {CELLS} cells in {seconds:.1f} s = {CELLS * 3600 / seconds:.0f} cells/hour")


def test_local_two_threads(benchmark, tmp_path):
    threads = torch.get_num_threads()
    try:
        seconds = benchmark.pedantic(lambda: _grid(tmp_path / "local.sqlite", LocalExecutor(), threads=2),
                                     rounds=1, iterations=1)
    finally:
        torch.set_num_threads(threads)
    _report(benchmark, "local, 2 threads", seconds)


def test_ray_two_workers_one_thread(benchmark, tmp_path):
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - start
    try:
        seconds = benchmark.pedantic(lambda: _grid(tmp_path / "ray.sqlite", RayExecutor(cpus_per_cell=1)),
                                     rounds=1, iterations=1)
    finally:
        ray.shutdown()
    _report(benchmark, "ray, 2 workers x 1 thread", seconds)
    benchmark.extra_info["ray_init_s"] = round(startup, 2)
    print(f"ray.init of a local 2-CPU cluster: {startup:.1f} s")
    if "local, 2 threads" in _seconds:
        ratio = _seconds["local, 2 threads"] / seconds
        benchmark.extra_info["speedup_vs_local"] = round(ratio, 2)
        print(f"ray / local throughput: {ratio:.2f}x (Ray start-up excluded; with it "
              f"{_seconds['local, 2 threads'] / (seconds + startup):.2f}x)")
