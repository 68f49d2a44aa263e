"""A cell as a task: plain data a worker can rebuild the cell from, and the worker's side of running it.

Workers are stateless: from the task's names they resolve the run again, load
the pretrained weights, and re-check that the cell they would compute has the
key the driver planned (same manifests, weights sha256, method config and
protocol). They return the record and, when asked, the weights it must keep;
only the driver writes the store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from ribench import __version__
from ribench.errors import RibenchError
from ribench.run.cell import FAILED, git_commit, load_pretrained, run_cell
from ribench.run.spec import RunRequest, cell_for, resolve_request
from ribench.store import CellRecord
from ribench.toolkit.weights import changed_tensors


@dataclass
class CellTask:
    request: RunRequest
    label: str
    method: str
    dataset: str
    seed: int
    key: str
    pretrained_accuracies: dict
    keep_weights: bool = False
    needs: dict = field(default_factory=dict)     # ingredient method spec -> that cell's key
    threads: int | None = None                    # torch CPU threads on the worker
    code: tuple = ()                              # the driver's (ribench version, git commit)
    # The driver's own resolved (spec, pretrained), for in-process execution; never shipped.
    local: Any = field(default=None, repr=False, compare=False)

    def shipped(self) -> "CellTask":
        return dataclasses.replace(self, local=None)

    def describe(self) -> str:
        return f"{self.label} on {self.dataset}, seed {self.seed}"


class CellFailed(RibenchError):
    """A cell that raised; the message names method, dataset and seed."""


_resolved: dict[RunRequest, tuple] = {}   # per worker process: a run is resolved and loaded once


def _spec_and_pretrained(task: CellTask):
    if task.local is not None:
        return task.local
    if task.request not in _resolved:
        r = task.request
        spec = resolve_request(r)
        _resolved[task.request] = (spec, load_pretrained(spec))
    return _resolved[task.request]


def code_version() -> tuple:
    """(ribench version, git commit or None) of the code running here."""
    return (__version__, git_commit())


def perform(task: CellTask, ingredients: dict | None = None) -> tuple[CellRecord, dict | None]:
    """Run one cell; returns (record, the tensors that changed from θ0 when the task keeps weights)."""
    if task.threads:
        torch.set_num_threads(task.threads)
    here = code_version()
    if task.code and (task.code[0] != here[0] or None not in (task.code[1], here[1]) and task.code[1] != here[1]):
        raise CellFailed(f"{task.describe()}: this worker runs ribench {here[0]} ({here[1] or 'no git commit'}), "
                         f"the driver {task.code[0]} ({task.code[1] or 'no git commit'}); install the same "
                         "version on every node")
    spec, pretrained = _spec_and_pretrained(task)
    cell = cell_for(spec, pretrained, task.dataset, task.seed)
    if cell.key != task.key:
        raise CellFailed(f"{task.describe()}: this worker computes another cell than the driver planned "
                         "(its ribench version, data manifests or pretrained weights differ)")
    absent = [name for name, tensors in (ingredients or {}).items() if tensors is None]
    if absent:           # its ingredient's cell failed (diverged) and kept no weights
        raise CellFailed(f"{task.describe()} not run: its ingredient {', '.join(absent)} failed and kept no weights")
    ingredients = {name: {k: v.to(spec.device) for k, v in tensors.items()}
                   for name, tensors in (ingredients or {}).items()}
    try:
        model, record = run_cell(spec, pretrained, cell, task.pretrained_accuracies, ingredients)
    except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
        raise CellFailed(f"{task.describe()}: out of GPU memory: {exc}") from exc
    keep = task.keep_weights and record.status != FAILED      # a diverged cell's weights are no ingredient
    weights = changed_tensors(model, pretrained.model) if keep else None
    return record, weights


def failure_message(task: CellTask, error: BaseException) -> str:
    """One line naming the cell and what went wrong."""
    if isinstance(error, CellFailed):
        return str(error)
    text = " ".join(str(error).split()) or type(error).__name__
    kind = "" if isinstance(error, RibenchError) else f"{type(error).__name__}: "
    return f"{task.describe()} failed: {kind}{text}"
