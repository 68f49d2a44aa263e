"""The distance matrix as a record, and its text forms: the JSON record `ribench distance`
writes and the leaderboard reads, CSV, and the aligned and markdown tables."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ribench.tables import aligned, markdown
from ribench.distance.options import DistanceOptions
from ribench.errors import ConfigError

__all__ = ["FORMATS", "DistanceMatrix", "aligned", "record_json", "write_record"]

FORMATS = ("table", "csv", "json", "markdown")


def record_json(document: dict) -> str:
    """One JSON layout for stdout and files; NaN is refused, as JSON has none."""
    return json.dumps(document, indent=2, allow_nan=False)


def write_record(document: dict, path: Path) -> Path:
    path.write_text(record_json(document) + "\n")
    return path


@dataclass
class DistanceMatrix:
    """OTDD² between every pair of datasets, with what is needed to trust and re-run it."""

    names: list[str]
    values: np.ndarray                     # (k, k), symmetric, 0 on the diagonal
    options: DistanceOptions
    samples: dict[str, int]                # points used per dataset
    epsilon: np.ndarray | None = None      # absolute ε per pair (Sinkhorn only)
    error_bound: np.ndarray | None = None  # certified relative error per pair (fast solver only)
    context: dict = field(default_factory=dict)    # suite, pretrain, weights, feature split
    seconds: dict = field(default_factory=dict)

    def frame(self):
        return pd.DataFrame(self.values, index=self.names, columns=self.names)

    def get(self, a: str, b: str) -> float:
        return float(self.values[self.names.index(a), self.names.index(b)])

    def as_dict(self) -> dict:
        return {
            **self.context,
            "quantity": self.options.quantity,
            "options": self.options.as_dict(),
            "datasets": self.names,
            "samples": self.samples,
            "matrix": {a: {b: float(self.values[i, j]) for j, b in enumerate(self.names)}
                       for i, a in enumerate(self.names)},
            "epsilon_absolute": None if self.epsilon is None else
            {a: {b: _finite_or_none(self.epsilon[i, j]) for j, b in enumerate(self.names)}
             for i, a in enumerate(self.names)},
            "relative_error_bound": None if self.error_bound is None else
            {a: {b: _finite_or_none(self.error_bound[i, j]) for j, b in enumerate(self.names)}
             for i, a in enumerate(self.names)},
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }

    def format(self, fmt: str = "table") -> str:
        if fmt == "json":
            return record_json(self.as_dict())
        if fmt == "csv":
            buffer = io.StringIO()
            self.frame().to_csv(buffer, index_label="dataset", float_format="%.10g")
            return buffer.getvalue()
        if fmt not in ("table", "markdown"):
            raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        cells = [["", *self.names]] + [[a, *(f"{v:.4g}" for v in self.values[i])] for i, a in enumerate(self.names)]
        what = self.context.get("pretrain", "")
        header = (f"{self.options.quantity} between {self.context.get('feature_split', '')} splits in "
                  f"{what}'s feature space; {_options_text(self)}")
        return header + "\n\n" + (markdown(cells) if fmt == "markdown" else aligned(cells, rule=False)) + "\n"


def _finite_or_none(value) -> float | None:
    return float(value) if np.isfinite(value) else None


def _options_text(result: DistanceMatrix) -> str:
    o = result.options
    sizes = sorted(set(result.samples.values()))
    points = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    text = f"{points} points per dataset, seed {o.seed}, λx={o.lambda_x:g}, λy={o.lambda_y:g}"
    if o.solver == "sinkhorn":
        text += f", ε={o.epsilon:g}×median cost"
    if o.solver == "fast" and result.error_bound is not None and np.isfinite(result.error_bound).any():
        text += f", each value within {100 * np.nanmax(result.error_bound):.2g}% of the exact OT (certified)"
    return text
