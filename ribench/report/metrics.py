"""ImageNet-RIB metrics from stored cells: RI, mRI, ID, forgetting, across seeds.

Definitions (accuracies are fractions in [0, 1]):
  A_pre^(j)  the pretrained model's accuracy on dataset j;
  A_i^(j)    accuracy on j after fine-tuning on downstream dataset i;
  RI_i       mean over downstream j != i of (A_i^(j) - A_pre^(j)); the
             pretraining-domain set P is not part of it;
  mRI        mean over i of RI_i, computed per seed;
  ID_i = A_i^(i), ID_gain_i = A_i^(i) - A_pre^(i), pretrain_acc_i = A_i^(P),
  forgetting_i = A_pre^(P) - A_i^(P), each averaged over i like RI;
  OOD_i      mean over downstream j != i of A_i^(j) (leaderboard entries show it).
Per-seed values are summarised by mean, sample std and a 95% percentile
bootstrap interval over seeds. With the test splits' sizes, the interval also
carries the test sets' own sampling error, which seeds cannot show (every seed
meets the same test images): each accuracy p on N test images has the binomial
standard error √(p(1 − p)/N); a mean over different test sets adds them in
quadrature, a mean over cells that share one test set (mRI over i, pretrain_acc,
forgetting) takes their mean (fully correlated, the conservative choice); the
pretrained accuracies are the fixed reference every method is measured against.
The half-widths combine as √(seed half-width² + (1.96·se)²). The maths takes
plain inputs so it can be tested without a store.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ribench.errors import ConfigError
from ribench.store import CellRecord

__all__ = [
    "OVERALL_METRICS",
    "Summary",
    "accuracy_frame",
    "binomial_se",
    "bootstrap_interval",
    "describe",
    "ood",
    "summarize",
]

OVERALL_METRICS = ("mRI", "ID", "ID_gain", "pretrain_acc", "forgetting")
PRETRAINED_ROW = "pretrained"
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

STAT_COLUMNS = ["mean", "std", "ci_low", "ci_high", "n_seeds", "test_se"]
Z95 = 1.959964


# -- statistics ---------------------------------------------------------------------
def bootstrap_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap of the mean over seeds; fixed seed so reports are reproducible."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (math.nan, math.nan)
    if data.size == 1:
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    picks = rng.integers(0, data.size, size=(BOOTSTRAP_RESAMPLES, data.size))
    means = data[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return (float(low), float(high))


def describe(values: Iterable[float], test_se: float = math.nan) -> dict[str, Any]:
    """mean, std, interval and count of per-seed values (NaN left out): one row of every table.

    `test_se`: the test-set sampling standard error of the mean (module docstring); it widens
    the bootstrap interval over seeds when known."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    low, high = bootstrap_interval(data)
    mean = float(data.mean()) if data.size else math.nan
    if data.size and math.isfinite(test_se):
        extra = (Z95 * test_se) ** 2
        low, high = mean - math.sqrt((mean - low) ** 2 + extra), mean + math.sqrt((high - mean) ** 2 + extra)
    return {
        "mean": mean,
        "std": float(data.std(ddof=1)) if data.size > 1 else math.nan,
        "ci_low": low,
        "ci_high": high,
        "n_seeds": int(data.size),
        "test_se": test_se,
    }


def binomial_se(accuracy: float, test_images: int | None) -> float:
    """Standard error of an accuracy measured on `test_images` images."""
    if not test_images or math.isnan(accuracy):
        return math.nan
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / test_images)


def _independent(errors: Sequence[float]) -> float:
    """se of a mean over different test sets."""
    return math.sqrt(sum(e * e for e in errors)) / len(errors) if errors else math.nan


def _shared(errors: Sequence[float]) -> float:
    """se of a mean over cells that share test sets: fully correlated, the conservative bound."""
    return sum(errors) / len(errors) if errors else math.nan


def ood(accuracies: Mapping[str, float], downstream: Sequence[str], trained: str) -> float:
    """OOD_i: mean accuracy on the downstream datasets other than the trained one (P left out, as in RI)."""
    return sum(accuracies[j] for j in downstream if j != trained) / (len(downstream) - 1)


def _nanmean(values: Sequence[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return float(sum(present) / len(present)) if present else math.nan


# -- frames -----------------------------------------------------------------------
def accuracy_frame(cells: Iterable[CellRecord]) -> pd.DataFrame:
    """Long format: one row per (cell, evaluated dataset)."""
    rows = [
        {
            "label": cell.label,
            "method": cell.method,
            "dataset": cell.dataset,
            "seed": cell.seed,
            "evaluated": evaluated,
            "accuracy": float(accuracy),
        }
        for cell in cells
        for evaluated, accuracy in cell.accuracies.items()
    ]
    return pd.DataFrame(rows, columns=["label", "method", "dataset", "seed", "evaluated", "accuracy"])


@dataclasses.dataclass
class Summary:
    """Every table a report shows; accuracies and differences are fractions.

    matrix:   index (label, trained_on) with a "pretrained" row per label, columns =
              downstream datasets then the pretraining-domain set; seed-mean A_i^(j).
    ri:       label, dataset, mean, std, ci_low, ci_high, n_seeds.
    overall:  label, metric, mean, std, ci_low, ci_high, n_seeds, complete.
    per_seed: label, seed, metric, value, complete (the inputs to ``overall``).
    """

    matrix: pd.DataFrame
    ri: pd.DataFrame
    overall: pd.DataFrame
    per_seed: pd.DataFrame
    downstream: list[str]
    pretrain_eval: str

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(self.overall["label"]))

    def matrix_for(self, label: str) -> pd.DataFrame:
        return self.matrix.xs(label, level="label")


def _index_cells(cells: Iterable[CellRecord], downstream: Sequence[str]) -> dict[tuple[str, int, str], CellRecord]:
    """(label, seed, trained_on) -> cell; two results for one slot is ambiguous, so refused."""
    wanted = set(downstream)
    indexed: dict[tuple[str, int, str], CellRecord] = {}
    for cell in cells:
        if cell.dataset not in wanted:
            continue
        slot = (cell.label, int(cell.seed), cell.dataset)
        if slot in indexed:
            raise ConfigError(
                f"two results for label {cell.label!r}, dataset {cell.dataset!r}, seed {cell.seed} "
                f"(cells {indexed[slot].key[:12]} and {cell.key[:12]}); give each configuration its own label"
            )
        indexed[slot] = cell
    return indexed


def _test_errors(rows: Sequence[dict], downstream: Sequence[str], pretrain_eval: str,
                 test_sizes: Mapping[str, int]) -> dict[str, Any]:
    """Test-set standard errors of RI_i and of each overall metric, from the seed-mean accuracies."""
    nan = {"RI": {}, **{metric: math.nan for metric in OVERALL_METRICS}}
    if not test_sizes:
        return nan
    by_trained = {row["trained_on"]: row for row in rows}
    ri, in_domain, on_pretrain = {}, [], []
    for trained in downstream:
        row = by_trained.get(trained)
        if row is None:
            continue
        others = [binomial_se(row[j], test_sizes.get(j)) for j in downstream if j != trained]
        ri[trained] = _independent(others)
        in_domain.append(binomial_se(row[trained], test_sizes.get(trained)))
        on_pretrain.append(binomial_se(row[pretrain_eval], test_sizes.get(pretrain_eval)))
    shared_pretrain = _shared(on_pretrain)
    return {"RI": ri, "mRI": _shared(list(ri.values())), "ID": _independent(in_domain),
            "ID_gain": _independent(in_domain), "pretrain_acc": shared_pretrain, "forgetting": shared_pretrain}


def summarize(
    cells: Iterable[CellRecord],
    pretrained_accuracies: dict[str, float],
    downstream: Sequence[str],
    pretrain_eval: str,
    test_sizes: Mapping[str, int] | None = None,
) -> Summary:
    """All ImageNet-RIB metrics for every label among ``cells``.

    ``test_sizes`` (images per test split) adds the test sets' sampling error to every
    interval (module docstring); without it the intervals cover the seeds only.

    Cells trained on a dataset outside ``downstream`` are ignored. A seed with
    missing cells (or cells missing an evaluated dataset) still gets metrics over
    what is present, and the label's overall rows are marked ``complete=False``.
    """
    downstream = list(downstream)
    if not downstream:
        raise ConfigError("no downstream datasets given to summarise")
    if pretrain_eval in downstream:
        raise ConfigError(f"pretraining-domain set {pretrain_eval!r} is also listed as a downstream dataset")
    missing = [name for name in [*downstream, pretrain_eval] if name not in pretrained_accuracies]
    if missing:
        raise ConfigError(f"no pretrained accuracy for {', '.join(missing)}; evaluate the pretrained model first")
    a_pre = {name: float(pretrained_accuracies[name]) for name in [*downstream, pretrain_eval]}
    indexed = _index_cells(cells, downstream)
    labels = sorted({label for label, _, _ in indexed})
    columns = [*downstream, pretrain_eval]

    matrix_rows, ri_rows, overall_rows, per_seed_rows = [], [], [], []
    for label in labels:
        seeds = sorted({seed for lab, seed, _ in indexed if lab == label})
        ri_by_dataset: dict[str, list[float]] = {name: [] for name in downstream}
        per_seed_metrics: dict[str, list[float]] = {metric: [] for metric in OVERALL_METRICS}
        label_complete = True
        for seed in seeds:
            seed_complete = True
            per_dataset: dict[str, list[float]] = {metric: [] for metric in ("RI", *OVERALL_METRICS[1:])}
            for trained in downstream:
                cell = indexed.get((label, seed, trained))
                if cell is None:
                    seed_complete = False
                    continue
                acc = {name: float(value) for name, value in cell.accuracies.items()}
                if any(name not in acc for name in columns):
                    seed_complete = False
                others = [acc[j] - a_pre[j] for j in downstream if j != trained and j in acc]
                ri = _nanmean(others)
                in_domain = acc.get(trained, math.nan)
                after_pretrain = acc.get(pretrain_eval, math.nan)
                ri_by_dataset[trained].append(ri)
                per_dataset["RI"].append(ri)
                per_dataset["ID"].append(in_domain)
                per_dataset["ID_gain"].append(in_domain - a_pre[trained])
                per_dataset["pretrain_acc"].append(after_pretrain)
                per_dataset["forgetting"].append(a_pre[pretrain_eval] - after_pretrain)
            label_complete = label_complete and seed_complete
            for metric in OVERALL_METRICS:
                source = "RI" if metric == "mRI" else metric
                value = _nanmean(per_dataset[source])
                per_seed_metrics[metric].append(value)
                per_seed_rows.append(
                    {"label": label, "seed": seed, "metric": metric, "value": value, "complete": seed_complete}
                )

        matrix_rows.append({"label": label, "trained_on": PRETRAINED_ROW, **{c: a_pre[c] for c in columns}})
        for trained in downstream:
            row = {"label": label, "trained_on": trained}
            for evaluated in columns:
                values = [
                    float(indexed[(label, seed, trained)].accuracies[evaluated])
                    for seed in seeds
                    if (label, seed, trained) in indexed and evaluated in indexed[(label, seed, trained)].accuracies
                ]
                row[evaluated] = float(np.mean(values)) if values else math.nan
            matrix_rows.append(row)
        errors = _test_errors(matrix_rows[-len(downstream):], downstream, pretrain_eval, test_sizes or {})
        for trained in downstream:
            ri_rows.append({"label": label, "dataset": trained,
                            **describe(ri_by_dataset[trained], errors["RI"].get(trained, math.nan))})
        for metric in OVERALL_METRICS:
            overall_rows.append(
                {"label": label, "metric": metric, **describe(per_seed_metrics[metric], errors[metric]),
                 "complete": label_complete}
            )

    matrix = pd.DataFrame(matrix_rows, columns=["label", "trained_on", *columns]).set_index(["label", "trained_on"])
    ri_frame = pd.DataFrame(ri_rows, columns=["label", "dataset", *STAT_COLUMNS])
    overall = pd.DataFrame(overall_rows, columns=["label", "metric", *STAT_COLUMNS, "complete"])
    per_seed = pd.DataFrame(per_seed_rows, columns=["label", "seed", "metric", "value", "complete"])
    return Summary(matrix, ri_frame, overall, per_seed, downstream, pretrain_eval)
