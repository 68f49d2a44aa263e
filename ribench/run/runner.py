"""The driver: plan the cells of one or more runs, hand them to an executor, write each result to the store.

A cell is (suite, pretrain, method + hyperparameters, protocol, downstream
dataset, seed), identified by the hash of everything that changes its result.
Finished cells are skipped, so a re-run trains nothing and an interrupted run
(even `kill -9`) resumes: a cell reaches the store whole or not at all. A
derived method's ingredients are planned first and keep their weights; a cell
needed by two runs of one grid is planned once.
"""

from __future__ import annotations

import functools

from tqdm import tqdm

from ribench.catalog import METHODS
from ribench.engine.compose import resolve_method
from ribench.errors import RibenchError
from ribench.run.cell import FAILED, load_pretrained, pretrained_identity, provenance
from ribench.run.executor import Executor, LocalExecutor
from ribench.run.labels import method_label
from ribench.run.spec import RunSpec, ingredient_spec, ingredient_specs, plan
from ribench.run.tasks import CellTask, code_version
from ribench.store import Store, cell_key


class CellsFailed(RibenchError):
    """Some cells raised; every other cell was run and stored."""


@functools.lru_cache(maxsize=1)
def _default_ingredient_labels() -> frozenset:
    """Labels of the cells registered derived methods need by default, from what the registry declares:
    no other method (a plugin's included) is imported or built to learn it."""
    labels = set()
    for spec in METHODS.declared_needs():
        try:
            labels.add(method_label(*resolve_method(spec)))
        except RibenchError:          # a plugin's declared need that does not resolve keeps nothing
            continue
    return frozenset(labels)


def keeps_weights(spec: RunSpec) -> bool:
    """Cells that a registered derived method needs by default store their weights (under any protocol).

    By the method as requested ('ewc'), not with the settings the tuned protocol chose for it
    ('ewc[lam=0.1]'), nor with protocol changes ('ft[lr=0.05]' is an 'ft' cell)."""
    return method_label(*resolve_method(spec.request.method)) in _default_ingredient_labels()


def pretrained_accuracies(spec: RunSpec, pretrained, store: Store, executor: Executor) -> dict:
    """A_pre on every test split, computed once per (suite, manifests, pretrain, weights) and stored."""
    identity = pretrained_identity(spec, pretrained)
    key = cell_key(identity)
    found = store.get_pretrained(key)
    if found is not None:
        return found["accuracies"]
    accuracies = executor.evaluate_pretrained(spec, pretrained)
    found = store.get_pretrained(key)      # another run may have stored it meanwhile
    if found is not None:
        return found["accuracies"]
    store.put_pretrained(key, spec.suite.name, spec.preset.name, identity, accuracies, provenance(spec, pretrained))
    return accuracies


FINISHED = ("done", "selection")     # a selection cell is finished too; it is kept out of reports
# A cell stored as FAILED (it diverged) is not finished: it is skipped, not recomputed, unless retried.


def _status(store: Store, key: str) -> str | None:
    record = store.get(key)
    return None if record is None else record.status


def _done(store: Store, key: str) -> bool:
    return _status(store, key) in FINISHED


def _max_difference(a: dict, b: dict) -> float:
    return max((abs(a[k] - b[k]) for k in a.keys() & b.keys()), default=0.0)


class Plan:
    """The tasks of one or more runs, ingredients before the cells that need them, each cell once."""

    def __init__(self, store: Store, log=print, threads: int | None = None, retry_failed: bool = False):
        self.store, self.log, self.threads, self.retry_failed = store, log, threads, retry_failed
        self.tasks: dict[str, CellTask] = {}
        self.busy = 0                  # cells skipped because another process is running them
        self.finished_elsewhere = 0    # cells another process stored after they were planned here
        self.refit: set[str] = set()   # stored cells trained again if their weights are missing

    def _refits(self, key: str) -> bool:
        return key in self.refit and not self.store.has_weights(key)

    def add(self, spec: RunSpec, pretrained, pre_acc: dict, keep: bool | None = None) -> tuple[int, int]:
        """Plan `spec`'s missing cells (after its ingredients'); returns (cells, of which pending)."""
        needs = {}
        for name in ingredient_specs(spec):
            sub = ingredient_spec(spec, name)
            self.add(sub, pretrained, pre_acc, keep=True)
            needs[name] = {(c.dataset, c.seed): c.key for c in plan(sub, pretrained)}
        # Weights are refitted for a stored cell only when a derived cell of this plan needs them (or the
        # caller asks): a cell a derived method may need later keeps the weights of a new fit, but one
        # stored without them (a store restored from docs/results/cells.sqlite.gz) is not trained again.
        refit_missing = keep is True
        keep = keeps_weights(spec) if keep is None else keep
        cells = plan(spec, pretrained)
        failed = [c for c in cells if _status(self.store, c.key) == FAILED]
        if failed and not self.retry_failed:
            self.log(f"{len(failed)} {spec.label} cell(s) are stored as failed (diverged); skipping them "
                     "(pass --retry-failed to run them again)")
            cells = [c for c in cells if c not in failed]
        if refit_missing:
            self.refit.update(c.key for c in cells)
        pending = [c for c in cells if not _done(self.store, c.key) or self._refits(c.key)]
        refits_now = sum(1 for c in pending if _done(self.store, c.key))
        if len(pending) < len(cells):
            self.log(f"{len(cells) - len(pending)} of {len(cells)} {spec.label} cells already in the store; "
                     "skipping them")
        if refits_now:
            self.log(f"{refits_now} stored {spec.label} cell(s) have no saved weights; training them again to keep them")
        for cell in pending:
            if cell.key in self.tasks:
                self.tasks[cell.key].keep_weights |= keep
                continue
            self.tasks[cell.key] = CellTask(
                request=spec.request, label=spec.label, method=spec.method_cls.name, dataset=cell.dataset,
                seed=cell.seed, key=cell.key, pretrained_accuracies=pre_acc, keep_weights=keep,
                needs={name: keys[(cell.dataset, cell.seed)] for name, keys in needs.items()},
                threads=self.threads, code=code_version(), local=(spec, pretrained))
        return len(cells), len(pending)

    def _claimed(self, tasks: list[CellTask]) -> list[CellTask]:
        """The tasks this process may run: each claimed in the store; a cell another live process is running
        (and the cells that need it) is skipped, one finished meanwhile is dropped."""
        busy: dict[str, dict] = {}
        mine = []
        for task in tasks:
            missing = [key for key in task.needs.values() if key in busy]
            holder = busy[missing[0]] if missing else self.store.claim(task.key)
            if holder is not None:
                busy[task.key] = holder
                continue
            if _done(self.store, task.key) and not self._refits(task.key):
                self.store.release(task.key)          # another process finished it since it was planned
                self.finished_elsewhere += 1
                continue
            mine.append(task)
        self.busy = len(busy)
        if busy:
            holder = next(iter(busy.values()))
            self.log(f"{len(busy)} cell(s) are being run by another process (pid {holder['pid']} on {holder['host']}); "
                     "skipping them here: run the same command again after it finished to see their results")
        return mine

    def run(self, executor: Executor, progress: bool = True, desc: str = "cells") -> int:
        """Run every planned task; writes each result; raises CellsFailed after all ran if any failed."""
        tasks = self._claimed(list(self.tasks.values()))
        failures: list[str] = []
        bar = tqdm(total=len(tasks), unit="cell", desc=desc, leave=True) if progress and tasks else None

        def on_result(task: CellTask, record, weights) -> None:
            if weights is not None:
                self.store.save_weights(task.key, weights)
            stored = self.store.get(task.key)
            if record.status == FAILED:
                self.log(f"warning: {task.describe()} {record.failure()}; stored as failed, not as a result")
            if stored is None or stored.status not in FINISHED:
                try:
                    self.store.put(record, replace_failed=stored is not None and stored.status == FAILED)
                except ValueError:            # another process stored it meanwhile (its lease had run out)
                    self.log(f"note: {task.describe()} was stored meanwhile by another process; its row is kept")
            elif _max_difference(stored.accuracies, record.accuracies) > 0:
                self.log(f"note: {task.describe()} trained again for its weights differs from the stored cell by "
                         f"up to {_max_difference(stored.accuracies, record.accuracies):.2%}; "
                         "the stored accuracies are kept")
            if bar is not None:
                bar.set_postfix_str(f"{task.label} {task.dataset} seed {task.seed}")
                bar.update(1)

        def on_failure(task: CellTask, message: str) -> None:
            failures.append(message)
            self.log(f"error: {message}")
            if bar is not None:
                bar.update(1)

        try:
            executor.run(tasks, lambda key: self.store.load_weights(key), on_result, on_failure)
        finally:
            if bar is not None:
                bar.close()
            for task in tasks:
                self.store.release(task.key)
        if failures:       # each was logged as it happened; the last line names the first few
            shown = "; ".join(failures[:3]) + (f"; and {len(failures) - 3} more" if len(failures) > 3 else "")
            raise CellsFailed(f"{len(failures)} of {len(tasks)} cell(s) failed, the others are stored: {shown}")
        return len(tasks)


def run_specs(specs: list[RunSpec], store: Store, executor: Executor | None = None, progress: bool = True,
              log=print, threads: int | None = None, pretrained=None, keep_weights: bool | None = None,
              retry_failed: bool = False) -> dict:
    """Run every missing cell of several runs as one plan (each pretrained model loaded and evaluated once).

    Returns {"planned": cells asked for, "ran": cells run, "busy": cells left to another process running them,
    "pretrained": {pretrain: A_pre}}.
    """
    executor = executor or LocalExecutor()
    loaded: dict[tuple, object] = {}
    work = Plan(store, log, threads, retry_failed)
    planned = ran = 0
    accuracies = {}
    try:
        for spec in specs:
            source = (spec.suite.name, spec.preset.name, spec.weights)
            if source not in loaded:
                loaded[source] = pretrained or load_pretrained(spec, "cpu" if executor.plans_on_cpu else None)
            if spec.holdout is None:
                pre_acc = pretrained_accuracies(spec, loaded[source], store, executor)
                accuracies[spec.preset.name] = pre_acc
            else:                   # a selection run reads no test split, not even for A_pre
                pre_acc = {}
            cells, pending = work.add(spec, loaded[source], pre_acc, keep_weights)
            planned, ran = planned + cells, ran + pending
        work.run(executor, progress, desc=specs[0].label if len(specs) == 1 else "grid")
    finally:
        executor.close()
    ran -= work.busy + work.finished_elsewhere
    return {"planned": planned, "ran": ran, "busy": work.busy, "pretrained": accuracies}


def execute(spec: RunSpec, store: Store, pretrained=None, progress: bool = True, log=print,
            keep_weights: bool | None = None, executor: Executor | None = None, threads: int | None = None,
            retry_failed: bool = False) -> dict:
    """Run every planned cell of one run not yet in the store; returns counts and the pretrained accuracies."""
    counts = run_specs([spec], store, executor, progress, log, threads, pretrained, keep_weights, retry_failed)
    return {**counts, "pretrained": counts["pretrained"][spec.preset.name]}
