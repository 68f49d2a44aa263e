"""The distance figures: the matrix as a heatmap, and distance against forgetting and RI."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ribench.distance.matrix import DistanceMatrix
from ribench.distance.relation import rho_text

__all__ = ["save_heatmap", "save_relation_plot"]


def _figure(width, height):
    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)     # no pyplot: no global state, no display needed
    return figure


def save_heatmap(result: DistanceMatrix, path: Path) -> Path:
    k = len(result.names)
    figure = _figure(1.2 + 0.75 * k, 0.8 + 0.7 * k)
    axes = figure.add_subplot()
    image = axes.imshow(result.values, cmap="viridis")
    axes.set_xticks(range(k), result.names, rotation=45, ha="right")
    axes.set_yticks(range(k), result.names)
    threshold = result.values.max() / 2 if k else 0
    for i in range(k):
        for j in range(k):
            value = result.values[i, j]
            axes.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7,
                      color="black" if value > threshold else "white")
    figure.colorbar(image, ax=axes, label=result.options.quantity.split(" (")[0])
    axes.set_title(f"{result.context.get('suite', '')} / {result.context.get('pretrain', '')}: "
                   f"{result.options.solver} OTDD²", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    return path


def save_relation_plot(relation, correlations: dict, label: str, pretrain_eval: str, path: Path) -> Path:
    figure = _figure(9, 3.8)
    for number, metric in enumerate(("forgetting", "RI")):
        axes = figure.add_subplot(1, 2, number + 1)
        axes.scatter(relation["distance"], relation[metric] * 100)
        for _, row in relation.iterrows():
            axes.annotate(row["dataset"], (row["distance"], row[metric] * 100), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
        axes.set_xlabel(f"OTDD² to {pretrain_eval} (train splits)")
        axes.set_ylabel(f"{metric} of {label} (percentage points)")
        axes.set_title(f"Spearman ρ = {rho_text(correlations[metric])}", fontsize=9)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path
