"""How distance to the pretraining-domain set relates to the stored fine-tuning results
(ImageNet-RIB's second finding); pandas only, so the leaderboard can use it without torch."""

from __future__ import annotations

import math

import pandas as pd

from ribench.distance.matrix import DistanceMatrix

__all__ = ["forgetting_relation", "rho_text", "spearman"]


def forgetting_relation(result: DistanceMatrix, summary, label: str):
    """Per downstream dataset: distance to the pretraining-domain set, forgetting and RI of `label`.

    forgetting_i = A_pre^(P) − A_i^(P) from the seed-mean accuracy matrix (ribench.report.metrics).
    """
    pretrain_eval = summary.pretrain_eval
    matrix = summary.matrix_for(label)
    a_pre = float(matrix.loc["pretrained", pretrain_eval])
    ri = summary.ri[summary.ri["label"] == label].set_index("dataset")
    rows = []
    for dataset in summary.downstream:
        if dataset not in result.names or dataset not in matrix.index:
            continue
        rows.append({"dataset": dataset, "distance": result.get(dataset, pretrain_eval),
                     "forgetting": a_pre - float(matrix.loc[dataset, pretrain_eval]),
                     "RI": float(ri.loc[dataset, "mean"]) if dataset in ri.index else math.nan,
                     "n_seeds": int(ri.loc[dataset, "n_seeds"]) if dataset in ri.index else 0})
    return pd.DataFrame(rows, columns=["dataset", "distance", "forgetting", "RI", "n_seeds"])


def spearman(x, y) -> float:
    """Rank correlation over the pairs where both values are present; NaN below 3 pairs."""
    pairs = pd.DataFrame({"x": x, "y": y}).dropna()
    if len(pairs) < 3:
        return math.nan
    return float(pairs["x"].rank().corr(pairs["y"].rank()))


def rho_text(value: float) -> str:
    """ρ as printed and plotted: signed, two decimals, n/a when undefined."""
    return "n/a" if math.isnan(value) else f"{value:+.2f}"
