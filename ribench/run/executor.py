"""Where cells run. The driver hands an executor tasks in dependency order (ingredients first) and
two callbacks; the executor runs them and reports each result or failure. Only the driver writes
the store, whatever the executor.

    local  in this process, one cell after another (the default)
    ray    Ray tasks on a local or remote Ray cluster (`pip install 'ribench[ray]'`)
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable

from ribench.errors import ConfigError
from ribench.run.cell import evaluate_pretrained
from ribench.run.tasks import CellTask, failure_message, perform
from ribench.store import CellRecord

OnResult = Callable[[CellTask, CellRecord, "dict | None"], None]
OnFailure = Callable[[CellTask, str], None]
LoadWeights = Callable[[str], dict]

EXECUTORS = {"local": "ribench.run.executor:LocalExecutor", "ray": "ribench.run.ray_executor:RayExecutor"}


class Executor:
    """Runs cell tasks; `run` returns when every task has reported a result or a failure."""

    name = ""
    plans_on_cpu = False      # True: the driver need not have the cells' device (workers have it)

    def run(self, tasks: list[CellTask], load_weights: LoadWeights, on_result: OnResult,
            on_failure: OnFailure) -> None:
        raise NotImplementedError

    def evaluate_pretrained(self, spec, pretrained) -> dict:
        """A_pre of a run's pretrained model, where its cells would run."""
        return evaluate_pretrained(spec, pretrained)

    def close(self) -> None:
        """Release what the executor started (a local Ray cluster)."""


class LocalExecutor(Executor):
    """One cell after another in this process; a cell that raises is reported and the rest go on."""

    name = "local"

    def __init__(self, log=print):
        self.log = log

    def run(self, tasks, load_weights, on_result, on_failure) -> None:
        failed: set[str] = set()
        for task in tasks:
            missing = [name for name, key in task.needs.items() if key in failed]
            if missing:
                failed.add(task.key)
                on_failure(task, f"{task.describe()} not run: its ingredient {', '.join(missing)} failed")
                continue
            try:
                ingredients = {name: load_weights(key) for name, key in task.needs.items()}
                record, weights = perform(task, ingredients)
            except (Exception, SystemExit) as error:   # a cell's failure (a plug-in's sys.exit too) is reported;
                # the other cells go on
                failed.add(task.key)
                on_failure(task, failure_message(task, error))
                continue
            on_result(task, record, weights)


def make_executor(name: str, **options) -> Executor:
    """The executor called `name`; Ray's is imported only when asked for, with a hint if it is missing."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor '{name}' (choose {' or '.join(EXECUTORS)})")
    if name == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("--executor ray needs Ray: pip install 'ribench[ray]'")
    module, attr = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), attr)(**options)
