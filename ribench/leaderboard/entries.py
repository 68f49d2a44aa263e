"""Leaderboard entries: one JSON file per method configuration, made from stored cells.

An entry lives at ``leaderboards/<suite>/<pretrain>/<entry>.json``. It is plain
data (never executed) in a versioned schema, checked on every load, so a
hand-edited or truncated file is refused with the file and the field named.
Two kinds never mix:

- ``measured`` entries are written by ``ribench leaderboard submit`` from a
  complete grid of cells (every downstream dataset, at least 3 seeds, the
  suite's protocol) and carry the provenance needed to trace and re-run them;
- ``reported`` entries hold numbers copied from a paper, with their source;
  their file names start with ``reported-``.

Numbers are percentages (accuracies) and percentage points (differences).
Besides types, ``check`` verifies the arithmetic that ties an entry together
(RI from the accuracy matrix, mRI from RI, ...), so an edited number is caught.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from ribench.errors import RibenchError

__all__ = [
    "ENTRY_SCHEMA",
    "SCHEMA_VERSION",
    "EntryError",
    "add_leaderboard_parser",
    "check_tree",
    "entry_filename",
    "entry_from_cells",
    "entry_from_store",
    "load_entry",
    "load_tree",
    "run_leaderboard_command",
    "validate_entry",
]

ENTRY_SCHEMA = "ribench.leaderboard.entry"
SCHEMA_VERSION = 1
MIN_SEEDS = 3
KINDS = ("measured", "reported")
REPORTED_PREFIX = "reported-"
UNITS = "percent"
OVERALL = ("mRI", "ID", "ID_gain", "OOD", "forgetting", "pretrain_acc")
# Arithmetic tolerance: entries round to 4 decimals of a percentage point.
TOLERANCE = 2e-3
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class EntryError(RibenchError):
    """An entry file that does not follow the schema; the message names the file and the field."""


# -- file names -------------------------------------------------------------------------
def entry_slug(label: str) -> str:
    """'lp[fit=lbfgs]' -> 'lp_fit_lbfgs': safe in paths and URLs on every platform."""
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", label).strip("_.")
    if not slug:
        raise EntryError(f"method label {label!r} gives an empty file name")
    return slug


def entry_filename(entry: dict) -> str:
    prefix = REPORTED_PREFIX if entry.get("kind") == "reported" else ""
    return prefix + entry_slug(entry["method"]["label"]) + ".json"


# -- validation ---------------------------------------------------------------------------
class _Checker:
    """Collects field problems of one entry, each as 'field: what is wrong'."""

    def __init__(self):
        self.problems: list[str] = []

    def fail(self, field: str, message: str) -> None:
        self.problems.append(f"field '{field}': {message}")

    def mapping(self, value: Any, field: str, required: Iterable[str], optional: Iterable[str] = ()) -> bool:
        if not isinstance(value, dict):
            self.fail(field, f"expected an object, got {_kind(value)}")
            return False
        required, optional = list(required), list(optional)
        prefix = f"{field}." if field else ""
        for key in required:
            if key not in value:
                self.fail(f"{prefix}{key}", "missing")
        for key in value:
            if key not in required and key not in optional:
                self.fail(f"{prefix}{key}", "unknown field (typo? the schema has: "
                                            f"{', '.join(required + optional)})")
        return True

    def string(self, value: Any, field: str, nullable: bool = False, pattern: re.Pattern | None = None) -> bool:
        if value is None and nullable:
            return True
        if not isinstance(value, str) or not value:
            self.fail(field, f"expected a non-empty string, got {_kind(value)}")
            return False
        if pattern is not None and not pattern.match(value):
            self.fail(field, f"{value!r} is not a {'sha256 hex digest' if pattern is _SHA256 else 'valid value'}")
            return False
        return True

    def number(self, value: Any, field: str, nullable: bool = False) -> bool:
        if value is None and nullable:
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(field, f"expected a finite number, got {_kind(value)}")
            return False
        return True

    def integer(self, value: Any, field: str, minimum: int | None = None, nullable: bool = False) -> bool:
        if value is None and nullable:
            return True
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"expected an integer, got {_kind(value)}")
            return False
        if minimum is not None and value < minimum:
            self.fail(field, f"{value} is below the minimum {minimum}")
            return False
        return True

    def string_list(self, value: Any, field: str, pattern: re.Pattern | None = None) -> bool:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(field, f"expected a list of strings, got {_kind(value)}")
            return False
        for i, item in enumerate(value):
            if pattern is not None and not pattern.match(item):
                self.fail(f"{field}[{i}]", f"{item!r} is not a sha256 hex digest")
        return True

    def close(self, field: str, value: float, expected: float, why: str) -> None:
        if abs(value - expected) > TOLERANCE:
            self.fail(field, f"{value:g} does not match {expected:.4f} ({why})")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}" if len(value) < 40 else "a string"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _check_stat(c: _Checker, stat: Any, field: str, measured: bool, seeds: int | None) -> bool:
    """mean, std, ci95 [low, high], n_seeds; a reported number may leave all but the mean null."""
    if not c.mapping(stat, field, ("mean", "std", "ci95", "n_seeds")):
        return False
    ok = c.number(stat.get("mean"), f"{field}.mean")
    ok &= c.number(stat.get("std"), f"{field}.std", nullable=not measured)
    if stat.get("std") is not None and ok and stat["std"] < 0:
        c.fail(f"{field}.std", f"{stat['std']} is negative")
    ci = stat.get("ci95")
    if ci is None and not measured:
        pass
    elif not (isinstance(ci, list) and len(ci) == 2):
        c.fail(f"{field}.ci95", f"expected [low, high], got {_kind(ci)}")
        ok = False
    elif all([c.number(v, f"{field}.ci95[{k}]") for k, v in enumerate(ci)]):
        if ci[0] > ci[1]:
            c.fail(f"{field}.ci95", f"low {ci[0]:g} is above high {ci[1]:g}")
            ok = False
        elif ok and not (ci[0] - TOLERANCE <= stat["mean"] <= ci[1] + TOLERANCE):
            c.fail(f"{field}.ci95", f"[{ci[0]:g}, {ci[1]:g}] does not contain the mean {stat['mean']:g}")
            ok = False
    else:
        ok = False
    n = stat.get("n_seeds")
    if measured:
        if c.integer(n, f"{field}.n_seeds", minimum=MIN_SEEDS) and seeds is not None and n != seeds:
            c.fail(f"{field}.n_seeds", f"{n} differs from the {seeds} seeds listed in grid.seeds")
    else:
        c.integer(n, f"{field}.n_seeds", minimum=1, nullable=True)
    return ok


_TOP_MEASURED = ("schema", "schema_version", "kind", "suite", "pretrain", "method", "units", "grid",
                 "metrics", "pretrained", "matrix", "provenance")
_TOP_REPORTED = ("schema", "schema_version", "kind", "suite", "pretrain", "method", "units", "metrics", "source")


def validate_entry(entry: Any) -> list[str]:
    """Every schema problem of one entry as 'field 'x.y': what is wrong' (empty when valid)."""
    c = _Checker()
    if not isinstance(entry, dict):
        c.fail("", f"an entry is a JSON object, got {_kind(entry)}")
        return c.problems
    if entry.get("schema") != ENTRY_SCHEMA:
        c.fail("schema", f"expected {ENTRY_SCHEMA!r}, got {_kind(entry.get('schema'))}")
        return c.problems
    version = entry.get("schema_version")
    if version != SCHEMA_VERSION:
        c.fail("schema_version", f"this ribench reads version {SCHEMA_VERSION}, got {_kind(version)}")
        return c.problems
    kind = entry.get("kind")
    if kind not in KINDS:
        c.fail("kind", f"expected one of {', '.join(KINDS)}, got {_kind(kind)}")
        return c.problems
    measured = kind == "measured"
    c.mapping(entry, "", _TOP_MEASURED if measured else _TOP_REPORTED)
    c.string(entry.get("suite"), "suite")
    c.string(entry.get("pretrain"), "pretrain")
    if entry.get("units") != UNITS:
        c.fail("units", f"expected {UNITS!r} (accuracies in %, differences in percentage points), "
                        f"got {_kind(entry.get('units'))}")
    method = entry.get("method")
    method_fields = ("name", "label", "description", "hyperparameters", "paper")
    if c.mapping(method, "method", method_fields, () if measured else ("reported_as",)):
        c.string(method.get("name"), "method.name")
        c.string(method.get("label"), "method.label")
        c.string(method.get("description"), "method.description", nullable=True)
        c.string(method.get("paper"), "method.paper", nullable=True)
        if method.get("paper") and not str(method["paper"]).startswith(("https://", "http://")):
            c.fail("method.paper", f"expected a URL, got {_kind(method['paper'])}")
        params = method.get("hyperparameters")
        if not (isinstance(params, dict) or (params is None and not measured)):
            c.fail("method.hyperparameters", f"expected an object, got {_kind(params)}")
        if "reported_as" in method:
            c.string(method.get("reported_as"), "method.reported_as")
    if measured:
        _validate_measured(c, entry)
    else:
        _validate_reported(c, entry)
    return c.problems


def _validate_reported(c: _Checker, entry: dict) -> None:
    metrics = entry.get("metrics")
    if c.mapping(metrics, "metrics", (), OVERALL):
        if not metrics:
            c.fail("metrics", "a reported entry needs at least one metric")
        for name, stat in metrics.items():
            if name in OVERALL:
                _check_stat(c, stat, f"metrics.{name}", measured=False, seeds=None)
    source = entry.get("source")
    if c.mapping(source, "source", ("title", "document", "location"), ("url", "pretrain_reported_as",
                                                                          "architecture", "note")):
        for key, value in source.items():
            c.string(value, f"source.{key}")


def _validate_measured(c: _Checker, entry: dict) -> None:
    grid = entry.get("grid")
    downstream, pretrain_eval, n_seeds = [], None, None
    if c.mapping(grid, "grid", ("downstream", "pretrain_eval", "seeds")):
        if c.string_list(grid.get("downstream"), "grid.downstream"):
            downstream = grid["downstream"]
            if not downstream:
                c.fail("grid.downstream", "empty")
        if c.string(grid.get("pretrain_eval"), "grid.pretrain_eval"):
            pretrain_eval = grid["pretrain_eval"]
            if pretrain_eval in downstream:
                c.fail("grid.pretrain_eval", f"{pretrain_eval!r} is also a downstream dataset")
        seeds = grid.get("seeds")
        if not (isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
            c.fail("grid.seeds", f"expected a list of integers, got {_kind(seeds)}")
        elif len(set(seeds)) < MIN_SEEDS:
            c.fail("grid.seeds", f"{len(set(seeds))} distinct seed(s); an entry needs at least {MIN_SEEDS}")
        else:
            n_seeds = len(set(seeds))
    columns = [*downstream, pretrain_eval] if pretrain_eval else list(downstream)

    metrics = entry.get("metrics")
    means: dict[str, float] = {}
    ri_means: dict[str, float] = {}
    if c.mapping(metrics, "metrics", (*OVERALL, "RI")):
        for name in OVERALL:
            if name in metrics and _check_stat(c, metrics[name], f"metrics.{name}", True, n_seeds):
                means[name] = metrics[name]["mean"]
        ri = metrics.get("RI")
        if c.mapping(ri, "metrics.RI", downstream):
            for dataset in downstream:
                if dataset in ri and _check_stat(c, ri[dataset], f"metrics.RI.{dataset}", True, n_seeds):
                    ri_means[dataset] = ri[dataset]["mean"]

    pretrained = entry.get("pretrained")
    a_pre: dict[str, float] = {}
    if c.mapping(pretrained, "pretrained", ("accuracy", "ID", "OOD")):
        accuracy = pretrained.get("accuracy")
        if c.mapping(accuracy, "pretrained.accuracy", columns):
            for name in columns:
                if name in accuracy and _check_accuracy(c, accuracy[name], f"pretrained.accuracy.{name}"):
                    a_pre[name] = accuracy[name]
        for key in ("ID", "OOD"):
            c.number(pretrained.get(key), f"pretrained.{key}")

    matrix = entry.get("matrix")
    rows: dict[str, dict[str, float]] = {}
    if c.mapping(matrix, "matrix", downstream):
        for trained in downstream:
            row = matrix.get(trained)
            if trained in matrix and c.mapping(row, f"matrix.{trained}", columns):
                values = {name: row[name] for name in columns
                          if name in row and _check_accuracy(c, row[name], f"matrix.{trained}.{name}")}
                if len(values) == len(columns):
                    rows[trained] = values

    if downstream and pretrain_eval and len(a_pre) == len(columns) and len(rows) == len(downstream):
        _check_arithmetic(c, downstream, pretrain_eval, a_pre, rows, means, ri_means, pretrained)

    provenance = entry.get("provenance")
    fields = ("ribench_versions", "git_commits", "manifests_sha256", "weights_sha256", "protocol", "cells",
              "finished")
    if c.mapping(provenance, "provenance", fields, ("torch_versions", "devices", "pretrained_evaluation")):
        c.string_list(provenance.get("ribench_versions"), "provenance.ribench_versions")
        c.string_list(provenance.get("git_commits"), "provenance.git_commits")
        c.string(provenance.get("manifests_sha256"), "provenance.manifests_sha256", pattern=_SHA256)
        c.string(provenance.get("weights_sha256"), "provenance.weights_sha256", pattern=_SHA256)
        c.string(provenance.get("finished"), "provenance.finished")
        protocol = provenance.get("protocol")
        if not isinstance(protocol, dict) or not protocol:
            c.fail("provenance.protocol", f"expected the protocol's settings as an object, got {_kind(protocol)}")
        _check_cells(c, provenance.get("cells"), downstream, grid.get("seeds") if isinstance(grid, dict) else None)


def _check_accuracy(c: _Checker, value: Any, field: str) -> bool:
    if not c.number(value, field):
        return False
    if not 0.0 <= value <= 100.0:
        c.fail(field, f"{value:g} is not an accuracy in percent [0, 100]")
        return False
    return True


def _check_arithmetic(c, downstream, pretrain_eval, a_pre, rows, means, ri_means, pretrained) -> None:
    """The numbers of an entry must agree with its own accuracy matrix."""
    for trained in downstream:
        others = [rows[trained][j] - a_pre[j] for j in downstream if j != trained]
        if trained in ri_means:
            c.close(f"metrics.RI.{trained}.mean", ri_means[trained], sum(others) / len(others),
                    f"mean over evaluated datasets other than {trained} of matrix minus pretrained accuracy")
    if "mRI" in means and len(ri_means) == len(downstream):
        c.close("metrics.mRI.mean", means["mRI"], sum(ri_means.values()) / len(ri_means),
                "mean of metrics.RI")
    n = len(downstream)
    checks = {
        "ID": (sum(rows[i][i] for i in downstream) / n, "mean of matrix.<i>.<i>"),
        "ID_gain": (sum(rows[i][i] - a_pre[i] for i in downstream) / n,
                    "mean of matrix.<i>.<i> minus pretrained.accuracy.<i>"),
        "pretrain_acc": (sum(rows[i][pretrain_eval] for i in downstream) / n, f"mean of matrix.<i>.{pretrain_eval}"),
        "forgetting": (sum(a_pre[pretrain_eval] - rows[i][pretrain_eval] for i in downstream) / n,
                       f"pretrained.accuracy.{pretrain_eval} minus the mean of matrix.<i>.{pretrain_eval}"),
        "OOD": (sum(sum(rows[i][j] for j in downstream if j != i) / (n - 1) for i in downstream) / n,
                "mean of matrix.<i>.<j> over downstream j != i"),
    }
    for name, (expected, why) in checks.items():
        if name in means:
            c.close(f"metrics.{name}.mean", means[name], expected, why)
    if isinstance(pretrained, dict):
        if isinstance(pretrained.get("ID"), (int, float)):
            c.close("pretrained.ID", pretrained["ID"], sum(a_pre[i] for i in downstream) / n,
                    "mean pretrained accuracy over downstream datasets")
        if isinstance(pretrained.get("OOD"), (int, float)):
            expected = sum(sum(a_pre[j] for j in downstream if j != i) / (n - 1) for i in downstream) / n
            c.close("pretrained.OOD", pretrained["OOD"], expected, "pretrained accuracy averaged like OOD")


def _check_cells(c: _Checker, cells: Any, downstream: list[str], seeds: Any) -> None:
    field = "provenance.cells"
    if not isinstance(cells, list):
        c.fail(field, f"expected a list of {{dataset, seed, key}}, got {_kind(cells)}")
        return
    seen = set()
    for i, cell in enumerate(cells):
        if c.mapping(cell, f"{field}[{i}]", ("dataset", "seed", "key")):
            c.string(cell.get("key"), f"{field}[{i}].key", pattern=_SHA256)
            seen.add((cell.get("dataset"), cell.get("seed")))
    if isinstance(seeds, list):
        missing = [f"{d}/seed {s}" for s in seeds for d in downstream if (d, s) not in seen]
        if missing:
            c.fail(field, f"no cell listed for {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")


# -- loading --------------------------------------------------------------------------------
def load_entry(path: str | Path, root: str | Path | None = None) -> dict:
    """Read and validate one entry; with ``root``, its place in the tree must match its content."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise EntryError(f"{path}: cannot read: {error}") from None
    try:
        entry = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as error:
        raise EntryError(f"{path}: not valid JSON: {error}") from None
    problems = validate_entry(entry)
    if not problems and root is not None:
        problems = _placement_problems(entry, path, Path(root))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise EntryError(f"{path}: {problems[0]}{more}")
    return entry


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not allowed in an entry (use null)")


def _placement_problems(entry: dict, path: Path, root: Path) -> list[str]:
    """leaderboards/<suite>/<pretrain>/<slug>.json must agree with the entry's fields."""
    problems = []
    try:
        parts = path.resolve().relative_to(root.resolve()).parts
    except ValueError:
        return []
    if len(parts) == 3:
        suite, pretrain, name = parts
        if entry["suite"] != suite:
            problems.append(f"field 'suite': {entry['suite']!r} but the file is in folder {suite!r}")
        if entry["pretrain"] != pretrain:
            problems.append(f"field 'pretrain': {entry['pretrain']!r} but the file is in folder {pretrain!r}")
        expected = entry_filename(entry)
        if name != expected:
            problems.append(f"field 'method.label': {entry['method']['label']!r} ({entry['kind']}) "
                            f"belongs in a file named {expected!r}")
    return problems


def entry_paths(root: str | Path) -> list[Path]:
    """Every entry file: <root>/<suite>/<pretrain>/*.json (distances/ holds no entries)."""
    root = Path(root)
    return sorted(p for p in root.glob("*/*/*.json") if p.parent.name != "distances")


def load_tree(root: str | Path, suite: str | None = None) -> list[dict]:
    """Every entry under ``root`` (of one suite if given), validated; the first bad file stops it."""
    root = Path(root)
    if not root.is_dir():
        raise RibenchError(f"no leaderboard folder at {root}")
    entries = []
    for path in entry_paths(root):
        if suite is None or path.parent.parent.name == suite:
            entry = load_entry(path, root)
            entry["_path"] = str(path)
            entries.append(entry)
    return entries


def check_tree(root: str | Path) -> tuple[int, list[str]]:
    """(number of entries, one problem line per bad file) for every entry under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise RibenchError(f"no leaderboard folder at {root}")
    paths = entry_paths(root)
    stray = sorted(p for p in root.rglob("*.json")
                   if p not in paths and p.parent.name != "distances")
    problems = [f"{p}: not an entry's place; entries live at <root>/<suite>/<pretrain>/<entry>.json"
                for p in stray]
    for path in paths:
        try:
            load_entry(path, root)
        except EntryError as error:
            problems.append(str(error))
    return len(paths), problems


# -- making a measured entry from the store ----------------------------------------------------
def _pct(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value) * 100.0, 4)


def _stat(row) -> dict:
    return {"mean": _pct(row["mean"]), "std": _pct(row["std"]),
            "ci95": [_pct(row["ci_low"]), _pct(row["ci_high"])], "n_seeds": int(row["n_seeds"])}


def _describe_percent(values: list[float]) -> dict:
    from ribench.report.metrics import _describe

    stats = _describe(values)
    return _stat(stats)


def _protocol_difference(found: dict, expected: dict) -> str:
    changed = [f"{k}={found.get(k)!r} instead of {expected.get(k)!r}"
               for k in sorted(set(found) | set(expected)) if found.get(k) != expected.get(k)]
    return ", ".join(changed)


def resolve_label(method: str) -> tuple[type, str, dict]:
    """(method class, canonical label, hyperparameters) of a method spec such as 'lp[fit=lbfgs]'."""
    from ribench.engine.compose import method_class
    from ribench.engine.settings import parse_spec
    from ribench.run.labels import method_label

    name, inline = parse_spec(method)
    cls = method_class(name)
    config = cls.configure(inline)
    return cls, method_label(cls, config), cls.settings(config)


def entry_from_cells(suite, pretrain: str, method_cls, label: str, cells: list, pretrained: dict,
                     paper: str | None = None) -> dict:
    """A measured entry from the cells of one label; refuses incomplete grids.

    ``pretrained`` is a row of the store's ``pretrained`` table (identity, accuracies).
    Seeds whose grid is partial are left out; at least ``MIN_SEEDS`` complete seeds are required.
    """
    from ribench.report.metrics import summarize

    where = f"{label} on {suite.name}/{pretrain}"
    expected_protocol = suite.protocol.as_dict()
    on_protocol = [c for c in cells if c.identity.get("protocol") == expected_protocol]
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
    chosen = [by_seed[s][d] for s in complete for d in suite.downstream]
    a_pre = {name: float(pretrained["accuracies"][name]) for name in columns}
    summary = summarize(chosen, a_pre, suite.downstream, suite.pretrain_eval)
    overall = summary.overall.set_index("metric")
    ri = summary.ri.set_index("dataset")
    downstream = list(suite.downstream)
    n = len(downstream)

    def ood(accuracy: dict, trained: str) -> float:
        return sum(accuracy[j] for j in downstream if j != trained) / (n - 1)

    ood_per_seed = [sum(ood(by_seed[s][i].accuracies, i) for i in downstream) / n for s in complete]
    metrics = {name: _stat(overall.loc[name]) for name in ("mRI", "ID", "ID_gain")}
    metrics["OOD"] = _describe_percent(ood_per_seed)
    metrics["forgetting"] = _stat(overall.loc["forgetting"])
    metrics["pretrain_acc"] = _stat(overall.loc["pretrain_acc"])
    metrics["RI"] = {d: _stat(ri.loc[d]) for d in downstream}
    matrix = summary.matrix_for(label)
    provenance_rows = [c.provenance for c in chosen]
    finished = max(c.created_at or 0.0 for c in chosen)
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
            "hyperparameters": chosen[0].identity.get("config", {}),
            "paper": paper or getattr(method_cls, "paper", "") or None,
        },
        "units": UNITS,
        "grid": {"downstream": downstream, "pretrain_eval": suite.pretrain_eval, "seeds": complete},
        "metrics": metrics,
        "pretrained": {
            "accuracy": {name: _pct(a_pre[name]) for name in columns},
            "ID": _pct(sum(a_pre[d] for d in downstream) / n),
            "OOD": _pct(sum(ood(a_pre, i) for i in downstream) / n),
        },
        "matrix": {d: {name: _pct(matrix.loc[d, name]) for name in columns} for d in downstream},
        "provenance": {
            "ribench_versions": sorted({str(p.get("ribench")) for p in provenance_rows if p.get("ribench")}),
            "git_commits": sorted({p["git_commit"] for p in provenance_rows if p.get("git_commit")}),
            "manifests_sha256": chosen[0].identity["manifests"],
            "weights_sha256": chosen[0].identity["weights_sha256"],
            "protocol": expected_protocol,
            "torch_versions": sorted({str(p["torch"]) for p in provenance_rows if p.get("torch")}),
            "devices": sorted({str(p["device"]) for p in provenance_rows if p.get("device")}),
            "pretrained_evaluation": pretrained["key"],
            "finished": datetime.datetime.fromtimestamp(finished, datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cells": [{"dataset": c.dataset, "seed": int(c.seed), "key": c.key} for c in chosen],
        },
    }


def entry_from_store(store_path: str | Path, suite_name: str, pretrain: str, method: str,
                     paper: str | None = None, log=None) -> dict:
    """The measured entry of one method spec, from the newest pretrained evaluation's cells."""
    from ribench.catalog import SUITES
    from ribench.store import Store

    store_path = Path(store_path).expanduser()
    if not store_path.is_file():
        raise RibenchError(f"no results store at {store_path}")
    suite = SUITES.get(suite_name)()
    method_cls, label, _ = resolve_label(method)
    with Store(store_path) as store:
        evaluations = store.pretrained(suite.name, pretrain)
        if not evaluations:
            raise RibenchError(f"no results for suite '{suite.name}' and pretrain '{pretrain}' in {store_path}")
        latest = evaluations[-1]
        cells = [c for c in store.cells(suite=suite.name, pretrain=pretrain, label=label)
                 if c.identity.get("weights_sha256") == latest["identity"]["weights_sha256"]
                 and c.identity.get("manifests") == latest["identity"]["manifests"]]
    if latest["identity"]["manifests"] != suite.manifest_hash():
        raise RibenchError(f"cannot submit {label}: the stored results of {suite.name}/{pretrain} were made "
                           "with other data manifests than this ribench's")
    entry = entry_from_cells(suite, pretrain, method_cls, label, cells, latest, paper)
    left_out = {c.seed for c in cells} - set(entry["grid"]["seeds"])
    if left_out and log is not None:
        log(f"note: seed(s) {', '.join(map(str, sorted(left_out)))} of {label} have a partial grid; left out")
    return entry


def dumps_entry(entry: dict, width: int = 110) -> str:
    """JSON with small objects and lists on one line, so an entry reads (and diffs) like a table."""
    def render(value, indent: int, column: int) -> str:
        flat = json.dumps(value, ensure_ascii=False, allow_nan=False)
        if not isinstance(value, (dict, list)) or column + len(flat) <= width:
            return flat
        pad, inner = " " * indent, " " * (indent + 2)
        if isinstance(value, list):
            items = [inner + render(item, indent + 2, indent + 2) for item in value]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        items = []
        for key, item in value.items():
            name = json.dumps(key, ensure_ascii=False) + ": "
            items.append(inner + name + render(item, indent + 2, indent + 2 + len(name)))
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"

    return render({k: v for k, v in entry.items() if not k.startswith("_")}, 0, 0) + "\n"


def write_entry(entry: dict, root: str | Path, replace: bool = False) -> tuple[Path, str]:
    """Write ``entry`` at its place under ``root``; returns (path, 'written' | 'unchanged' | 'replaced')."""
    problems = validate_entry(entry)
    if problems:
        raise EntryError(f"entry for {entry.get('method', {}).get('label')}: {problems[0]}")
    path = Path(root) / entry["suite"] / entry["pretrain"] / entry_filename(entry)
    text = dumps_entry(entry)
    state = "written"
    if path.exists():
        if path.read_text(encoding="utf-8") == text:
            return path, "unchanged"
        if not replace:
            raise RibenchError(f"{path} exists with other numbers; pass --replace to overwrite it")
        state = "replaced"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path, state


# -- the `ribench leaderboard` commands ----------------------------------------------------------
def add_leaderboard_parser(subparsers) -> argparse.ArgumentParser:
    """Register `ribench leaderboard submit|check|build` on the CLI's subparsers."""
    board = subparsers.add_parser("leaderboard", help="leaderboard entries: submit, check, build")
    actions = board.add_subparsers(dest="leaderboard_command", required=True)
    root_help = "leaderboard folder (default: ./leaderboards)"

    submit = actions.add_parser("submit", help="write an entry from a complete grid of stored cells")
    submit.add_argument("--method", required=True, help="method spec, e.g. ft or 'lp[fit=lbfgs]'")
    submit.add_argument("--suite", default="rib-mini", help="suite name (default: rib-mini)")
    submit.add_argument("--pretrain", default="mini-clip", help="pretrain preset (default: mini-clip)")
    submit.add_argument("--store", default=None, help="results database (default: $RIBENCH_STORE or "
                                                      "~/.local/share/ribench/results.sqlite)")
    submit.add_argument("--root", default="leaderboards", help=root_help)
    submit.add_argument("--paper", default=None, help="paper URL (default: the method's own)")
    submit.add_argument("--replace", action="store_true", help="overwrite an existing entry with new numbers")
    submit.add_argument("--include", action="append", default=[], metavar="FILE.py",
                        help="import a Python file that registers extra methods or suites")

    check = actions.add_parser("check", help="validate every entry (schema, placement, arithmetic)")
    check.add_argument("--root", default="leaderboards", help=root_help)

    build = actions.add_parser("build", help="Markdown tables, plots (PNG, SVG) and one HTML page per suite")
    build.add_argument("--root", default="leaderboards", help=root_help)
    build.add_argument("--suite", default=None, help="only this suite (default: every suite folder)")
    build.add_argument("--distances", action="append", default=[], metavar="FILE",
                       help="OTDD to the pretraining-domain set (JSON or CSV, see docs/adding-a-method.md); "
                            "also read from <root>/<suite>/distances/")
    return board


def run_leaderboard_command(args) -> int:
    if args.leaderboard_command == "submit":
        return _submit(args)
    if args.leaderboard_command == "check":
        return _check(args)
    return _build(args)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _submit(args) -> int:
    from ribench.catalog import METHODS
    from ribench.store import default_store_path

    for path in args.include:
        METHODS.include(path)
    entry = entry_from_store(args.store or default_store_path(), args.suite, args.pretrain, args.method,
                             args.paper, log=_stderr)
    path, state = write_entry(entry, args.root, args.replace)
    mri = entry["metrics"]["mRI"]
    print(f"{state} {path}: mRI {mri['mean']:+.2f} [{mri['ci95'][0]:+.2f}, {mri['ci95'][1]:+.2f}] "
          f"over {mri['n_seeds']} seeds")
    return 0


def _check(args) -> int:
    count, problems = check_tree(args.root)
    for problem in problems:
        _stderr(f"ribench: error: {problem}")
    if problems:
        return 2
    print(f"{count} leaderboard entr{'y' if count == 1 else 'ies'} under {args.root}: all valid")
    return 0


def _build(args) -> int:
    from ribench.leaderboard.build import build_suite

    root = Path(args.root)
    entries = load_tree(root, args.suite)
    suites = sorted({e["suite"] for e in entries})
    if args.suite and not suites:
        raise RibenchError(f"no entries for suite '{args.suite}' under {root}")
    if not suites:
        raise RibenchError(f"no entries under {root}; write some with 'ribench leaderboard submit'")
    for suite in suites:
        written = build_suite(root, suite, [e for e in entries if e["suite"] == suite],
                              extra_distances=[Path(p) for p in args.distances], log=_stderr)
        print(f"{suite}: wrote {len(written)} files under {root / suite}")
    return 0
