"""The leaderboard entry schema: what an entry file may hold, checked field by field.

An entry is plain data (never executed) in a versioned schema, checked on every
load, so a hand-edited or truncated file is refused with the field named. Two
kinds never mix: ``measured`` entries (from a complete grid of stored cells, with
the provenance to trace and re-run them) and ``reported`` entries (numbers copied
from a paper, with their source). Numbers are percentages (accuracies) and
percentage points (differences). Besides types, the checker verifies the
arithmetic that ties an entry together (RI from the accuracy matrix, mRI from
RI, ...), so an edited number is caught.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from ribench.errors import RibenchError

__all__ = ["ENTRY_SCHEMA", "MIN_SEEDS", "OVERALL", "SCHEMA_VERSION", "UNITS", "EntryError", "validate_entry"]

ENTRY_SCHEMA = "ribench.leaderboard.entry"
SCHEMA_VERSION = 1
MIN_SEEDS = 3
KINDS = ("measured", "reported")
UNITS = "percent"
OVERALL = ("mRI", "ID", "ID_gain", "OOD", "forgetting", "pretrain_acc")
# Arithmetic tolerance: entries round to 4 decimals of a percentage point.
TOLERANCE = 2e-3
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# suite and pretrain name folders: one plain path component, never '.', '..', absolute or with a separator.
FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
# Every number of an entry is a percentage or a difference of percentages: far outside this is an error,
# and would break the plots (a 1e308 interval overflows the axes).
NUMBER_LIMIT = 1000.0


class EntryError(RibenchError):
    """An entry file that does not follow the schema; the message names the file and the field."""


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
            what = {id(_SHA256): "sha256 hex digest",
                    id(FOLDER_NAME): "plain folder name (letters, digits, . _ + -; not starting with a dot)"}
            self.fail(field, f"{value!r} is not a {what.get(id(pattern), 'valid value')}")
            return False
        return True

    def number(self, value: Any, field: str, nullable: bool = False) -> bool:
        if value is None and nullable:
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(field, f"expected a finite number, got {_kind(value)}")
            return False
        if abs(value) > NUMBER_LIMIT:
            self.fail(field, f"{value:g} is outside [-{NUMBER_LIMIT:g}, {NUMBER_LIMIT:g}] (entries hold percentages "
                             "and percentage points)")
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


_TOP_MEASURED = ("schema", "schema_version", "kind", "suite", "pretrain", "method", "units", "protocol", "grid",
                 "metrics", "pretrained", "matrix", "provenance")
PROTOCOLS = ("reference", "tuned")
_SELECTION_REQUIRED = ("tune", "grid", "value", "heldout_acc", "datasets", "holdout", "seed")
_SELECTION_OPTIONAL = ("pretrained_heldout_acc", "extended", "at_grid_edge")
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
    c.mapping(entry, "", _TOP_MEASURED if measured else _TOP_REPORTED, ("superseded",) if measured else ())
    if "superseded" in entry:           # why a kept row is no longer what the code measures (shown beside it)
        c.string(entry["superseded"], "superseded")
    c.string(entry.get("suite"), "suite", pattern=FOLDER_NAME)
    c.string(entry.get("pretrain"), "pretrain", pattern=FOLDER_NAME)
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


def _validate_protocol(c: _Checker, protocol: Any) -> None:
    """reference, or tuned with its selection (the grid, the chosen value in it, a held-out score per
    value) and its ingredients' selections; a tuned method that tunes nothing itself has only the latter."""
    if not c.mapping(protocol, "protocol", ("name", "description"), ("selection", "ingredients")):
        return
    name = protocol.get("name")
    if name not in PROTOCOLS:
        c.fail("protocol.name", f"expected one of {', '.join(PROTOCOLS)}, got {_kind(name)}")
        return
    c.string(protocol.get("description"), "protocol.description")
    selection = protocol.get("selection")
    ingredients = protocol.get("ingredients")
    if name == "reference":
        if selection is not None or ingredients is not None:
            c.fail("protocol.selection", "a reference entry has no selection (one recipe for every method)")
        return
    if selection is None and ingredients is None:
        c.fail("protocol.selection", "a tuned entry records its selection or its ingredients' selections")
        return
    if selection is not None:
        _validate_selection(c, selection, "protocol.selection")
    if ingredients is not None:
        if not isinstance(ingredients, dict) or not ingredients:
            c.fail("protocol.ingredients", f"expected a mapping of ingredient to selection, got {_kind(ingredients)}")
            return
        for ingredient, found in ingredients.items():
            _validate_selection(c, found, f"protocol.ingredients.{ingredient}")


def _validate_selection(c: _Checker, selection: Any, where: str) -> None:
    if not c.mapping(selection, where, _SELECTION_REQUIRED, _SELECTION_OPTIONAL):
        return
    c.string(selection.get("tune"), f"{where}.tune")
    grid = selection.get("grid")
    if not (isinstance(grid, list) and grid and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    and math.isfinite(v) and v > 0 for v in grid)):
        c.fail(f"{where}.grid", f"expected a non-empty list of positive numbers, got {_kind(grid)}")
        return
    if selection.get("value") not in grid:
        c.fail(f"{where}.value", f"{_kind(selection.get('value'))} is not one of the grid's values")
    scores = selection.get("heldout_acc")
    if not isinstance(scores, dict) or sorted(float(k) for k in scores) != sorted(float(v) for v in grid):
        c.fail(f"{where}.heldout_acc", "expected one held-out accuracy per grid value")
    elif any(v is not None and not (isinstance(v, (int, float)) and 0 <= v <= 1) for v in scores.values()):
        c.fail(f"{where}.heldout_acc", "held-out accuracies are fractions in [0, 1] (null: diverged)")
    c.string_list(selection.get("datasets"), f"{where}.datasets")


def _validate_measured(c: _Checker, entry: dict) -> None:
    _validate_protocol(c, entry.get("protocol"))
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
