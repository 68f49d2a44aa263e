"""Summaries as text: terminal tables, Markdown, CSV and JSON, in percent and percentage points."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pandas as pd

from ribench.engine.compose import method_class
from ribench.engine.settings import parse_spec
from ribench.errors import ConfigError, RibenchError
from ribench.report.metrics import STAT_COLUMNS, Summary
from ribench.tables import aligned, markdown

FORMATS = ("table", "csv", "json", "markdown")


def _pct(value: float, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


_SIGNED_METRICS = {"mRI", "RI", "ID_gain", "forgetting"}


def _stat_text(row: pd.Series | dict, signed: bool) -> str:
    """mean ± std [ci_low, ci_high] (n seeds), in percentage points."""
    n = int(row["n_seeds"])
    seeds = f"({n} seed{'s' if n != 1 else ''})"
    interval = f"[{_pct(row['ci_low'], signed)}, {_pct(row['ci_high'], signed)}]"
    text = f"{_pct(row['mean'], signed):>6} ± {_pct(row['std'])} {interval} {seeds}"
    if "complete" in row and not bool(row["complete"]):
        text += " incomplete"
    return text


def _label_tables(summary: Summary, label: str) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """Header + rows (as strings) of the three tables shown for one label."""
    matrix = summary.matrix_for(label)
    columns = list(matrix.columns)
    matrix_table = [["trained on \\ evaluated", *columns]]
    for trained, row in matrix.iterrows():
        matrix_table.append([str(trained), *(_pct(row[c]) for c in columns)])
    ri_table = [["dataset", "RI (mean ± std [95% CI])"]]
    for _, row in summary.ri[summary.ri["label"] == label].iterrows():
        ri_table.append([row["dataset"], _stat_text(row, signed=True)])
    overall_table = [["metric", "mean ± std [95% CI]"]]
    for _, row in summary.overall[summary.overall["label"] == label].iterrows():
        overall_table.append([row["metric"], _stat_text(row, signed=row["metric"] in _SIGNED_METRICS)])
    return matrix_table, ri_table, overall_table


def _none_if_nan(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _stats_dict(row: pd.Series) -> dict[str, Any]:
    out = {
        "mean": _none_if_nan(row["mean"]),
        "std": _none_if_nan(row["std"]),
        "ci95": [_none_if_nan(row["ci_low"]), _none_if_nan(row["ci_high"])],
        "n_seeds": int(row["n_seeds"]),
    }
    if "complete" in row:
        out["complete"] = bool(row["complete"])
    return out


def _as_json(summary: Summary) -> str:
    labels = {}
    for label in summary.labels:
        matrix = summary.matrix_for(label)
        labels[label] = {
            "matrix": {
                str(trained): {col: _none_if_nan(row[col]) for col in matrix.columns} for trained, row in matrix.iterrows()
            },
            "ri": {row["dataset"]: _stats_dict(row) for _, row in summary.ri[summary.ri["label"] == label].iterrows()},
            "overall": {
                row["metric"]: _stats_dict(row) for _, row in summary.overall[summary.overall["label"] == label].iterrows()
            },
        }
    document = {
        "units": "fraction (accuracies and differences in [0, 1]; multiply by 100 for percent)",
        "downstream": summary.downstream,
        "pretrain_eval": summary.pretrain_eval,
        "labels": labels,
    }
    return json.dumps(document, indent=2, allow_nan=False)


def _as_csv(summary: Summary) -> str:
    """One long table so that a single ``pandas.read_csv`` gets everything."""
    rows = []
    for (label, trained), row in summary.matrix.iterrows():
        for evaluated in summary.matrix.columns:
            rows.append({"table": "matrix", "label": label, "trained_on": trained, "evaluated": evaluated,
                         "metric": "accuracy", "mean": row[evaluated]})
    for _, row in summary.ri.iterrows():
        rows.append({"table": "ri", "label": row["label"], "trained_on": row["dataset"], "metric": "RI",
                     **{c: row[c] for c in STAT_COLUMNS}})
    for _, row in summary.overall.iterrows():
        rows.append({"table": "overall", "label": row["label"], "metric": row["metric"],
                     **{c: row[c] for c in STAT_COLUMNS}, "complete": bool(row["complete"])})
    columns = ["table", "label", "trained_on", "evaluated", "metric", *STAT_COLUMNS, "complete", "units"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["units"] = "fraction"
    frame["n_seeds"] = frame["n_seeds"].astype("Int64")
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue()


_COMPARED = [("mRI", True), ("ID", False), ("ID_gain", True), ("forgetting", True)]


def did_not_adapt(overall, label: str) -> bool:
    """A method that trains but whose ID gain is not above zero (the low end of its 95% interval at 0 or
    below): mRI alone would reward it. zeroshot, which evaluates the pretrained model by design, is
    not marked, as on the leaderboard."""
    return not _evaluates_the_pretrained_model(label) and not overall.loc[(label, "ID_gain"), "ci_low"] > 0


def _evaluates_the_pretrained_model(label: str) -> bool:
    try:
        return method_class(parse_spec(label)[0]).uses_pretrained_eval
    except RibenchError:          # a method registered elsewhere and not included: judged by its numbers
        return False


def _comparison_tables(summary: Summary) -> tuple[list[list[str]], list[list[str]]]:
    """Methods side by side: headline metrics with intervals, and mean RI per downstream dataset.

    Rows are ordered by mean mRI, best first."""
    overall = summary.overall.set_index(["label", "metric"])
    mri = {label: overall.loc[(label, "mRI"), "mean"] for label in summary.labels}
    order = sorted(summary.labels, key=lambda l: (math.isnan(mri[l]), -mri[l] if not math.isnan(mri[l]) else 0))
    headline = [["method", *(m for m, _ in _COMPARED), "seeds"]]
    for label in order:
        cells = []
        for metric, signed in _COMPARED:
            row = overall.loc[(label, metric)]
            cells.append(f"{_pct(row['mean'], signed)} ± {_pct(row['std'])} "
                         f"[{_pct(row['ci_low'], signed)}, {_pct(row['ci_high'], signed)}]")
        row = overall.loc[(label, "mRI")]
        cells.append(f"{int(row['n_seeds'])}" + ("" if bool(row["complete"]) else " (incomplete)"))
        headline.append([label + (" (did not adapt)" if did_not_adapt(overall, label) else ""), *cells])
    ri = summary.ri.set_index(["label", "dataset"])
    per_dataset = [["method", *summary.downstream, "mRI"]]
    for label in order:
        per_dataset.append([label, *(_pct(ri.loc[(label, d), "mean"], True) for d in summary.downstream),
                            _pct(mri[label], True)])
    return headline, per_dataset


def format_summary(summary: Summary, fmt: str = "table", compare_only: bool = False) -> str:
    """Render a summary as table (terminal), markdown, csv or json.

    With several methods, table and markdown start with them side by side;
    `compare_only` shows just that."""
    if fmt == "json":
        return _as_json(summary)
    if fmt == "csv":
        return _as_csv(summary)
    if fmt not in ("table", "markdown"):
        raise ConfigError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    render = aligned if fmt == "table" else markdown
    blocks = []
    note = (
        f"Accuracies in %, trained on the row's dataset, evaluated on the column's; "
        f"RI excludes the trained dataset and {summary.pretrain_eval}; CI = 95% bootstrap over seeds."
    )
    if len(summary.labels) > 1 or compare_only:
        headline, per_dataset = _comparison_tables(summary)
        title = "== methods side by side ==" if fmt == "table" else "### Methods side by side"
        blocks.append("\n\n".join([
            title,
            "Mean ± std [95% CI] over seeds, percentage points; best mRI first\n" + render(headline, True),
            "Mean RI per downstream dataset\n" + render(per_dataset, True)]))
    for label in ([] if compare_only else summary.labels):
        matrix_table, ri_table, overall_table = _label_tables(summary, label)
        title = f"== {label} ==" if fmt == "table" else f"### {label}"
        blocks.append(
            "\n\n".join(
                [
                    title,
                    "Accuracy matrix A_i^(j)\n" + render(matrix_table, True),
                    "Robustness improvement RI_i (percentage points)\n" + render(ri_table, False),
                    "Overall\n" + render(overall_table, False),
                ]
            )
        )
    if not blocks:
        return "no results to report\n"
    return note + "\n\n" + "\n\n".join(blocks) + "\n"
