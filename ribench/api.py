"""The Python face of ribench: run cells and read results as pandas DataFrames."""

from __future__ import annotations

from ribench.catalog import SUITES
from ribench.errors import RibenchError
from ribench.report.cells import latest_cells
from ribench.report.metrics import Summary, summarize
from ribench.run.cell import load_pretrained
from ribench.run.runner import execute
from ribench.run.spec import resolve
from ribench.store import CellRecord, Store, default_store_path


def run(method: str, suite: str = "rib-mini", pretrain: str = "mini-clip", datasets=None, seeds=(0,),
        overrides=(), store=None, device: str = "cpu", weights=None, includes=(), progress=False, log=print,
        data_root=None, protocol: str | None = None, retry_failed: bool = False, kernels: str = "auto",
        compile: bool = False):
    """Run (or resume) the cells of one method; returns the run's counts. Cells stored as failed (diverged)
    are skipped unless `retry_failed`. `kernels` and `compile` are the CLI's --kernels and --compile."""
    spec = resolve(method, suite, pretrain, datasets, seeds, overrides, device, weights, includes, data_root,
                   protocol=protocol, kernels=kernels, compile=compile)
    pretrained = load_pretrained(spec)
    with Store(store or default_store_path()) as db:
        return execute(spec, db, pretrained, progress=progress, log=log, retry_failed=retry_failed)


def failed_cells(suite: str = "rib-mini", pretrain: str = "mini-clip", methods=None, store=None,
                 protocol: str | None = None) -> list[CellRecord]:
    """The stored cells of a suite and pretrain that failed (diverged): never part of a result."""
    suite_obj = SUITES.get(suite)()
    with Store(store or default_store_path(), readonly=True) as db:
        _, cells = latest_cells(db, suite_obj.name, pretrain, protocol=suite_obj.protocol_named(protocol),
                                status="failed")
    wanted = {m.strip() for m in methods or ()}
    return [c for c in cells if not wanted or c.method in wanted or c.label in wanted]


def results(suite: str = "rib-mini", pretrain: str = "mini-clip", methods=None, store=None,
            protocol: str | None = None) -> Summary:
    """Summary (A matrix, RI, mRI, ID, forgetting) of the stored cells of one suite and pretrain.

    `methods` are method names or run labels ('saft[lr=0.0001,optimizer=adamw]'), matched exactly.
    """
    suite_obj = SUITES.get(suite)()
    with Store(store or default_store_path(), readonly=True) as db:
        latest, cells = latest_cells(db, suite_obj.name, pretrain, protocol=suite_obj.protocol_named(protocol))
    if methods:
        wanted = {m.strip() for m in methods}
        cells = [c for c in cells if c.method in wanted or c.label in wanted]
        if not cells:
            raise RibenchError(f"no stored cells for {', '.join(methods)} on {suite_obj.name}/{pretrain}")
    return summarize(cells, latest["accuracies"], suite_obj.downstream, suite_obj.pretrain_eval,
                     suite_obj.test_sizes())
