"""A measured leaderboard entry, made from the stored cells of one method configuration.

``ribench leaderboard submit`` calls this: only a complete grid (every downstream
dataset, at least ``MIN_SEEDS`` seeds, the suite's protocol) becomes an entry, and
the entry carries the provenance needed to trace and re-run it. The metrics are
the report's (``ribench.report.metrics``), converted to percent.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

from ribench.catalog import SUITES
from ribench.errors import RibenchError
from ribench.leaderboard.schema import ENTRY_SCHEMA, MIN_SEEDS, SCHEMA_VERSION, UNITS
from ribench.report.cells import latest_cells
from ribench.report.metrics import describe, ood, summarize
from ribench.run.choices import chosen
from ribench.run.labels import resolve_label
from ribench.store import Store, cell_key

__all__ = ["entry_from_cells", "entry_from_store"]


def _pct(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value) * 100.0, 4)


def _stat(row) -> dict:
    return {"mean": _pct(row["mean"]), "std": _pct(row["std"]),
            "ci95": [_pct(row["ci_low"]), _pct(row["ci_high"])], "n_seeds": int(row["n_seeds"])}


def _linkable(paper: str) -> str | None:
    """A class's paper as an entry stores it: its URL, or null for a citation of a paper without one."""
    return paper if str(paper).startswith(("https://", "http://")) else None


def _protocol_difference(found: dict, expected: dict) -> str:
    changed = [f"{k}={found.get(k)!r} instead of {expected.get(k)!r}"
               for k in sorted(set(found) | set(expected)) if found.get(k) != expected.get(k)]
    return ", ".join(changed)


def _rederive(cell, where: str) -> None:
    """What submit can re-derive of a stored cell: its key from its identity, and the columns the report
    groups by from that identity (a row edited by hand, checksum and all, is refused)."""
    identity = cell.identity
    if cell_key(identity) != cell.key:
        raise RibenchError(f"cannot submit {where}: stored cell {cell.key[:12]} does not match its identity "
                           "(its key is not the hash of what it says it is); the store was edited")
    for column in ("suite", "pretrain", "dataset", "seed"):
        if column in identity and identity[column] != getattr(cell, column):
            raise RibenchError(f"cannot submit {where}: stored cell {cell.key[:12]} has {column} "
                               f"{getattr(cell, column)!r} but its identity says {identity[column]!r}")


REFERENCE_DESCRIPTION = "ImageNet-RIB's published protocol: one SGD recipe and lr for every method"
TUNED_DESCRIPTION = ("each method under its paper's recipe, its lr (or defining strength) chosen on held-out "
                     "25% of the downstream train splits, never on a test split")
SELECTION_FIELDS = ("tune", "grid", "value", "heldout_acc", "pretrained_heldout_acc", "datasets", "holdout", "seed",
                    "extended", "at_grid_edge")


def _protocol_record(suite, pretrain: str, label: str, protocol: str, cells: list) -> dict:
    """What an entry says about how it was trained: the protocol and, when tuned, its selection, and the
    selections of the ingredients it was made from (wiseft's ft, a soup's members, lpft's probe has none).
    A method that tunes nothing itself (wiseft, soup) has only the ingredients'."""
    if protocol == "reference":
        return {"name": "reference", "description": REFERENCE_DESCRIPTION}
    used = {json.dumps(c.identity.get("selection"), sort_keys=True) for c in cells}
    values = json.loads(used.pop()) if len(used) == 1 else None
    choices = {name: chosen(suite.name, pretrain, name) for name in values or {}}
    if (not values or any(choice is None or choice["value"] != values[name] for name, choice in choices.items())
            or (label not in values and not _tunes_nothing(label))):
        raise RibenchError(f"cannot submit {label} on {suite.name}/{pretrain} under the tuned protocol: its cells "
                           "were not trained at the choice the selections hold now; rerun them with "
                           f"'ribench grid --protocol tuned --methods {label}'")
    record = {"name": "tuned", "description": TUNED_DESCRIPTION}
    if label in choices:
        record["selection"] = _selection(choices.pop(label))
    if choices:
        record["ingredients"] = {name: _selection(choice) for name, choice in sorted(choices.items())}
    return record


def _selection(choice: dict) -> dict:
    selection = {k: choice[k] for k in SELECTION_FIELDS if k in choice}
    selection.setdefault("extended", [])
    return selection


def _tunes_nothing(label: str) -> bool:
    method_cls, config, _ = resolve_label(label)
    return method_cls.tunes_nothing_with(config)


def _on_protocol(cells: list, protocol: str, suite) -> tuple[list, dict | None]:
    """(the cells trained under `protocol`, the protocol settings they share)."""
    if protocol == "reference":
        expected = suite.protocol.as_dict()
        return [c for c in cells if c.identity.get("protocol") == expected
                and c.identity.get("protocol_name", "reference") == "reference"], expected
    tuned = [c for c in cells if c.identity.get("protocol_name") == "tuned"]
    settings = {json.dumps(c.identity.get("protocol"), sort_keys=True) for c in tuned}
    return tuned, (json.loads(settings.pop()) if len(settings) == 1 else None)


def entry_from_cells(suite, pretrain: str, method_cls, label: str, cells: list, pretrained: dict,
                     paper: str | None = None, protocol: str = "reference") -> dict:
    """A measured entry from the cells of one label; refuses incomplete grids.

    ``pretrained`` is a row of the store's ``pretrained`` table (identity, accuracies).
    Seeds whose grid is partial are left out; at least ``MIN_SEEDS`` complete seeds are required.
    ``protocol``: "reference" (the suite's) or "tuned" (the recipe at the shipped or the user's choice).
    """
    where = f"{label} on {suite.name}/{pretrain}"
    for cell in cells:
        _rederive(cell, where)
    on_protocol, expected_protocol = _on_protocol(cells, protocol, suite)
    if on_protocol and expected_protocol is None:
        raise RibenchError(f"cannot submit {where}: its tuned cells were trained under more than one protocol")
    if not on_protocol and protocol == "tuned":
        raise RibenchError(f"cannot submit {where} under the tuned protocol: no tuned cells; run 'ribench grid "
                           f"--protocol tuned --methods {label} --suite {suite.name} --pretrains {pretrain}' first")
    if not on_protocol:
        if cells:
            other = _protocol_difference(cells[0].identity.get("protocol") or {}, expected_protocol)
            raise RibenchError(f"cannot submit {where}: its {len(cells)} cell(s) use another protocol than "
                               f"{suite.name}'s ({other}); entries use the suite's protocol")
        raise RibenchError(f"cannot submit {where}: no stored cells; run 'ribench run --method {label} "
                           f"--suite {suite.name} --pretrain {pretrain} --seeds 0,1,2' first")
    configs = {json.dumps(c.identity.get("config"), sort_keys=True) for c in on_protocol}
    if len(configs) > 1:
        raise RibenchError(f"cannot submit {where}: its cells hold {len(configs)} different configurations")
    columns = [*suite.downstream, suite.pretrain_eval]
    by_seed: dict[int, dict[str, Any]] = {}
    for cell in on_protocol:
        if cell.dataset in suite.downstream and all(name in cell.accuracies for name in columns):
            by_seed.setdefault(int(cell.seed), {})[cell.dataset] = cell
    complete = sorted(s for s, found in by_seed.items() if len(found) == len(suite.downstream))
    if len(complete) < MIN_SEEDS:
        missing = []
        for seed in sorted(by_seed):
            absent = [d for d in suite.downstream if d not in by_seed[seed]]
            if absent:
                missing.append(f"seed {seed}: {', '.join(absent)}")
        if len(by_seed) < MIN_SEEDS:
            missing.append(f"{MIN_SEEDS - len(by_seed)} more seed(s) with all {len(suite.downstream)} datasets")
        raise RibenchError(
            f"cannot submit {where}: incomplete grid, {len(complete)} of the {MIN_SEEDS} seeds needed have every "
            f"downstream dataset; missing {'; '.join(missing)}")
    chosen_cells = [by_seed[s][d] for s in complete for d in suite.downstream]
    a_pre = {name: float(pretrained["accuracies"][name]) for name in columns}
    summary = summarize(chosen_cells, a_pre, suite.downstream, suite.pretrain_eval, suite.test_sizes())
    overall = summary.overall.set_index("metric")
    ri = summary.ri.set_index("dataset")
    downstream = list(suite.downstream)
    n = len(downstream)
    ood_per_seed = [sum(ood(by_seed[s][i].accuracies, downstream, i) for i in downstream) / n for s in complete]
    metrics = {name: _stat(overall.loc[name]) for name in ("mRI", "ID", "ID_gain")}
    metrics["OOD"] = _stat(describe(ood_per_seed))
    metrics["forgetting"] = _stat(overall.loc["forgetting"])
    metrics["pretrain_acc"] = _stat(overall.loc["pretrain_acc"])
    metrics["RI"] = {d: _stat(ri.loc[d]) for d in downstream}
    matrix = summary.matrix_for(label)
    provenance_rows = [c.provenance for c in chosen_cells]
    finished = max(c.created_at or 0.0 for c in chosen_cells)
    return {
        "schema": ENTRY_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": "measured",
        "suite": suite.name,
        "pretrain": pretrain,
        "method": {
            "name": method_cls.name,
            "label": label,
            "description": method_cls.description or None,
            "hyperparameters": chosen_cells[0].identity.get("config", {}),
            "paper": paper or _linkable(getattr(method_cls, "paper", "")),
        },
        "units": UNITS,
        "protocol": _protocol_record(suite, pretrain, label, protocol, chosen_cells),
        "grid": {"downstream": downstream, "pretrain_eval": suite.pretrain_eval, "seeds": complete},
        "metrics": metrics,
        "pretrained": {
            "accuracy": {name: _pct(a_pre[name]) for name in columns},
            "ID": _pct(sum(a_pre[d] for d in downstream) / n),
            "OOD": _pct(sum(ood(a_pre, downstream, i) for i in downstream) / n),
        },
        "matrix": {d: {name: _pct(matrix.loc[d, name]) for name in columns} for d in downstream},
        "provenance": {
            "ribench_versions": sorted({str(p.get("ribench")) for p in provenance_rows if p.get("ribench")}),
            "git_commits": sorted({p["git_commit"] for p in provenance_rows if p.get("git_commit")}),
            "manifests_sha256": chosen_cells[0].identity["manifests"],
            "weights_sha256": chosen_cells[0].identity["weights_sha256"],
            "protocol": expected_protocol,
            "torch_versions": sorted({str(p["torch"]) for p in provenance_rows if p.get("torch")}),
            "devices": sorted({str(p["device"]) for p in provenance_rows if p.get("device")}),
            "pretrained_evaluation": pretrained["key"],
            "finished": datetime.datetime.fromtimestamp(finished, datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cells": [{"dataset": c.dataset, "seed": int(c.seed), "key": c.key} for c in chosen_cells],
        },
    }


def entry_from_store(store_path: str | Path, suite_name: str, pretrain: str, method: str,
                     paper: str | None = None, log=None, data_root: str | Path | None = None,
                     protocol: str | None = None) -> dict:
    """The measured entry of one method spec, from the newest pretrained evaluation's cells.

    ``data_root`` is attached as ``ribench run`` attaches it: a suite that reads image files
    counts them in its identity, which the stored cells must share.
    """
    store_path = Path(store_path).expanduser()
    if not store_path.is_file():
        raise RibenchError(f"no results store at {store_path}")
    suite = SUITES.get(suite_name)()
    suite.attach_data(data_root)
    protocol = suite.protocol_named(protocol)
    method_cls, _, label = resolve_label(method)
    with Store(store_path, readonly=True) as store:
        latest, cells = latest_cells(store, suite.name, pretrain, label, protocol=protocol)
        _, failed = latest_cells(store, suite.name, pretrain, label, protocol=protocol, status="failed")
    if failed:
        first = failed[0]
        raise RibenchError(f"cannot submit {label}: {len(failed)} of its cells failed ({first.dataset}, seed "
                           f"{first.seed}: {first.failure()}); an entry is made from finished cells only "
                           "(rerun them with 'ribench run --retry-failed' or change the settings)")
    if latest["identity"]["manifests"] != suite.manifest_hash():
        raise RibenchError(f"cannot submit {label}: the stored results of {suite.name}/{pretrain} were made "
                           "with other data manifests than this ribench's")
    entry = entry_from_cells(suite, pretrain, method_cls, label, cells, latest, paper, protocol)
    left_out = {c.seed for c in cells} - set(entry["grid"]["seeds"])
    if left_out and log is not None:
        log(f"note: seed(s) {', '.join(map(str, sorted(left_out)))} of {label} have a partial grid; left out")
    return entry
