"""Cells as Ray tasks, one task per cell, on a local or remote Ray cluster.

Ray core tasks rather than Ray Tune: ribench already has its grid, its resume and
its store. Workers are stateless (see ribench.run.tasks) and return the cell's
record and the weights it must keep; the driver alone writes the store, because
SQLite's locking does not work on network file systems. A derived cell receives
its ingredients' results as object references, so Ray starts it only when they
are done and nothing is trained twice. A worker that dies is retried
`max_retries` times; a cell that raises is reported and not retried.
"""

from __future__ import annotations

import os

import ray
import torch
from ray.exceptions import RayError, RayTaskError, TaskCancelledError

from ribench.errors import ConfigError, RibenchError
from ribench.run.cell import evaluate_pretrained, load_pretrained
from ribench.run.executor import Executor
from ribench.run.spec import resolve_request
from ribench.run.tasks import CellTask, failure_message, perform


def _cell_remote(task: CellTask, names: tuple, *ingredient_results):
    """The worker's side: the ingredients arrive as the (record, weights) results of their cells, or as
    weights the driver read from the store."""
    ingredients = {name: value[1] if isinstance(value, tuple) else value
                   for name, value in zip(names, ingredient_results)}
    record, weights = perform(task, ingredients)
    record.provenance["executor"] = {"name": "ray", "node": ray.get_runtime_context().get_node_id(),
                                     "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "pid": os.getpid()}
    return record, weights


def _pretrained_remote(request, threads: int | None, expected_weights_sha256: str) -> dict:
    if threads:
        torch.set_num_threads(threads)
    spec = resolve_request(request)
    pretrained = load_pretrained(spec)
    if pretrained.weights_sha256 != expected_weights_sha256:
        raise RibenchError(f"a Ray worker loads other weights for {spec.preset.name} than the driver "
                           f"(sha256 {pretrained.weights_sha256[:12]} vs {expected_weights_sha256[:12]}); "
                           "every node must see the same weights file")
    return evaluate_pretrained(spec, pretrained)


def check_resources(nodes: list[dict], cpus_per_cell: float, gpus_per_cell: float, address: str) -> None:
    """Refuse, in one line, a request no node can satisfy: Ray would wait for it forever."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    most_cpus = max((r.get("CPU", 0) for r in alive), default=0)
    most_gpus = max((r.get("GPU", 0) for r in alive), default=0)
    if gpus_per_cell > most_gpus:
        have = "has no GPU" if most_gpus == 0 else f"has at most {most_gpus:g} GPU(s) on one node"
        raise ConfigError(f"each cell asks for {gpus_per_cell:g} GPU(s), but the Ray cluster at {address} {have}; "
                          "add GPU nodes, or run on CPU (--device cpu --gpus-per-cell 0)")
    if cpus_per_cell > most_cpus:
        raise ConfigError(f"each cell asks for {cpus_per_cell:g} CPU(s), but no node of the Ray cluster at "
                          f"{address} has more than {most_cpus:g}; lower --cpus-per-cell")


class RayExecutor(Executor):
    name = "ray"
    plans_on_cpu = True

    def __init__(self, address: str | None = None, cpus_per_cell: float = 1, gpus_per_cell: float | None = None,
                 device: str = "cpu", max_retries: int = 2, log=print):
        self.address, self.cpus_per_cell, self.device = address, cpus_per_cell, device
        self.gpus_per_cell = (1 if device.startswith("cuda") else 0) if gpus_per_cell is None else gpus_per_cell
        if device.startswith("cuda") and self.gpus_per_cell == 0:
            raise ConfigError("--device cuda on Ray needs --gpus-per-cell above 0")
        self.max_retries, self.log = max_retries, log
        self._started = False

    # -- the cluster -------------------------------------------------------------------------
    def _connect(self) -> None:
        if ray.is_initialized():
            return
        try:
            if self.address:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            else:    # a local cluster on this machine, gone when the run ends
                ray.init(include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise RibenchError(f"cannot reach a Ray cluster at {self.address or 'this machine'}: "
                               f"{' '.join(str(error).split())}") from None
        self._started = True

    def close(self) -> None:
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def _options(self) -> dict:
        return {"num_cpus": self.cpus_per_cell, "num_gpus": self.gpus_per_cell}

    def _ready(self) -> None:
        self._connect()
        check_resources(ray.nodes(), self.cpus_per_cell, self.gpus_per_cell, self.address or "this machine")

    # -- work ----------------------------------------------------------------------------------
    def evaluate_pretrained(self, spec, pretrained) -> dict:
        self._ready()
        remote = ray.remote(_pretrained_remote).options(max_retries=self.max_retries, **self._options())
        ref = remote.remote(spec.request, int(self.cpus_per_cell), pretrained.weights_sha256)
        try:
            return ray.get(ref)
        except RayTaskError as error:
            cause = error.cause if isinstance(error.cause, Exception) else error
            raise RibenchError(f"evaluating the pretrained {spec.preset.name} on Ray failed: "
                               f"{' '.join(str(cause).split())}") from None

    def run(self, tasks, load_weights, on_result, on_failure) -> None:
        if not tasks:
            return
        self._ready()
        remote = ray.remote(_cell_remote).options(max_retries=self.max_retries, retry_exceptions=False,
                                                  **self._options())
        refs: dict[str, ray.ObjectRef] = {}
        pending: dict[ray.ObjectRef, CellTask] = {}
        for task in tasks:
            task.threads = task.threads or max(1, int(self.cpus_per_cell))
            names = tuple(task.needs)
            inputs = [refs[key] if key in refs else ray.put(load_weights(key)) for key in task.needs.values()]
            ref = remote.remote(task.shipped(), names, *inputs)
            refs[task.key] = ref
            pending[ref] = task
        self.log(f"{len(tasks)} cell(s) submitted to Ray "
                 f"({self.cpus_per_cell:g} CPU, {self.gpus_per_cell:g} GPU per cell)")
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        record, weights = ray.get(ref)
                    except RayTaskError as error:
                        on_failure(task, failure_message(task, _cause(error)))
                        continue
                    except TaskCancelledError:
                        on_failure(task, f"{task.describe()} was cancelled")
                        continue
                    except RayError as error:        # the worker died more than max_retries times
                        on_failure(task, f"{task.describe()} failed: its Ray worker died "
                                         f"({self.max_retries + 1} tries): {type(error).__name__}")
                        continue
                    on_result(task, record, weights)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise


def _cause(error: RayTaskError) -> BaseException:
    """The exception the cell raised (or, for a derived cell, the one its ingredient raised)."""
    cause = error.cause
    if isinstance(cause, RayTaskError):
        return _cause(cause)
    return cause if isinstance(cause, BaseException) else error
