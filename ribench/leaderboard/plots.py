"""Leaderboard figures from validated entries (matplotlib, no pyplot: no display, no global state).

Every figure is written as PNG (200 dpi) and SVG, sized for a paper column
(about 7 inches wide) with fonts that stay readable when printed. Only measured
entries are drawn, except ``reported_mri`` which draws reported numbers alone.
Methods keep one colour across all figures of a suite.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ribench.distance.relation import spearman
from ribench.leaderboard.rows import did_not_adapt, shown_label, trains_nothing

__all__ = ["colours", "forgetting_vs_distance", "id_gain_vs_mri", "id_vs_ood", "mri_per_method", "pareto_front",
           "reported_mri", "ri_heatmaps"]

_STYLE = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
          "legend.fontsize": 8, "svg.hashsalt": "ribench", "svg.fonttype": "none"}


def _figure(width: float, height: float):
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, folder: Path, stem: str) -> list[Path]:
    """PNG and SVG without timestamps, so rebuilding unchanged entries gives unchanged files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png", folder / f"{stem}.svg"]
    with matplotlib.rc_context(_STYLE):
        # "tight": a legend below the axes is never cut off, however many methods it lists
        figure.savefig(paths[0], dpi=200, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.05)
        figure.savefig(paths[1], metadata={"Date": None, "Creator": None}, bbox_inches="tight", pad_inches=0.05)
    return paths


def stem_suffix(view: str) -> str:
    """File-name suffix of a protocol's figures: none for the default view (tuned, or a single one)."""
    return "" if view in ("", "tuned") else f"-{view}"


def _title(entries: list[dict], view: str) -> str:
    return entries[0]["suite"] + (f", {view} protocol" if view else "")


def _styled(function):
    """Build the figure under the leaderboard style (fonts are read when artists are made)."""
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            return function(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = function.__name__, function.__doc__
    return wrapper


def colours(labels: list[str]) -> dict[str, tuple]:
    """One stable colour per method label, by sorted label: tab10, else tab20, else tab20 + tab20b + tab20c.

    Distinct for up to 60 methods, so no two methods of one legend share a colour.
    """
    names = sorted(set(labels))
    if len(names) <= 10:
        palette = [colormaps["tab10"](i) for i in range(10)]
    elif len(names) <= 20:
        palette = [colormaps["tab20"](i) for i in range(20)]
    else:
        palette = [colormaps[name](i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    return {label: palette[i % len(palette)] for i, label in enumerate(names)}


_LEGEND_COLUMNS = 2
_LEGEND_ROW_INCHES = 0.19      # one row of a 7-pt legend, with its spacing
_LEGEND_LABEL_CHARACTERS = 34  # a 7-pt label that fits half a 3.5-inch panel, so columns and panels never overlap


def _legend_height(entries_per_panel: int) -> float:
    """Inches a below-the-axes legend of that many entries needs, so the axes keep their size."""
    return _LEGEND_ROW_INCHES * math.ceil(entries_per_panel / _LEGEND_COLUMNS) + 0.3


def _legend_below(axes, offset: float) -> None:
    """Long labels (a soup's ingredients and their choices) are wrapped onto lines of their own."""
    handles, labels = axes.get_legend_handles_labels()
    wrapped = [textwrap.fill(label, _LEGEND_LABEL_CHARACTERS, subsequent_indent="  ") for label in labels]
    axes.legend(handles, wrapped, loc="upper center", bbox_to_anchor=(0.5, offset), ncol=_LEGEND_COLUMNS,
                fontsize=7, frameon=False)


def _by_pretrain(entries: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for entry in sorted(entries, key=lambda e: e["pretrain"]):
        grouped.setdefault(entry["pretrain"], []).append(entry)
    return grouped


def _label(entry: dict) -> str:
    return entry["method"]["label"]


@_styled
def mri_per_method(entries: list[dict], folder: Path, palette: dict, view: str = "") -> list[Path]:
    """Horizontal bars of mRI with 95% interval bars, best first, one panel per pretrain."""
    grouped = _by_pretrain(entries)
    rows = max(len(group) for group in grouped.values())
    figure = _figure(3.4 * len(grouped) + 0.6, 0.45 + 0.32 * rows + 0.6)
    axes_list = figure.subplots(1, len(grouped), sharex=True, squeeze=False)[0]
    for axes, (pretrain, group) in zip(axes_list, grouped.items()):
        group = sorted(group, key=lambda e: e["metrics"]["mRI"]["mean"])
        means = [e["metrics"]["mRI"]["mean"] for e in group]
        lows = [m - e["metrics"]["mRI"]["ci95"][0] for m, e in zip(means, group)]
        highs = [e["metrics"]["mRI"]["ci95"][1] - m for m, e in zip(means, group)]
        ypos = np.arange(len(group))
        axes.barh(ypos, means, color=[palette[_label(e)] for e in group], height=0.65, alpha=0.85)
        axes.errorbar(means, ypos, xerr=[lows, highs], fmt="none", ecolor="black", capsize=3, linewidth=1)
        axes.axvline(0, color="black", linewidth=0.8)
        axes.set_yticks(ypos, [shown_label(e) for e in group])
        for y, mean, low, high in zip(ypos, means, lows, highs):
            # beyond the interval's outer end, so the number never sits on a whisker
            axes.annotate(_signed(mean), (mean + high if mean >= 0 else mean - low, y),
                          xytext=(4 if mean >= 0 else -4, 0), textcoords="offset points", va="center", ha="left" if mean >= 0 else "right", fontsize=7)
        axes.set_title(pretrain)
        axes.set_xlabel("mRI (percentage points)")
        axes.grid(axis="x", alpha=0.3)
        axes.set_ylim(-0.6, rows - 0.4)
    lo = min(e["metrics"]["mRI"]["ci95"][0] for e in entries)
    hi = max(e["metrics"]["mRI"]["ci95"][1] for e in entries)
    span = max(hi - lo, 1.0)
    axes_list[0].set_xlim(min(lo, 0) - 0.25 * span, max(hi, 0) + 0.22 * span)   # room for labels both sides
    seeds = sorted({e["metrics"]["mRI"]["n_seeds"] for e in entries})
    figure.suptitle(f"{_title(entries, view)}: mRI per method, bars = 95% bootstrap interval over "
                    f"{'/'.join(map(str, seeds))} seeds")
    return _save(figure, folder, "mri" + stem_suffix(view))


@_styled
def ri_heatmaps(entries: list[dict], folder: Path, view: str = "") -> list[Path]:
    """Per pretrain, one panel per method: A_i^(j) − A_pre^(j) for trained-on i (rows), evaluated j (columns)."""
    written = []
    for pretrain, group in _by_pretrain(entries).items():
        group = sorted((e for e in group if not trains_nothing(e)), key=lambda e: -e["metrics"]["mRI"]["mean"])
        if not group:
            continue
        downstream = group[0]["grid"]["downstream"]
        columns = [*downstream, group[0]["grid"]["pretrain_eval"]]
        grids = []
        for entry in group:
            a_pre = entry["pretrained"]["accuracy"]
            grids.append(np.array([[entry["matrix"][i][j] - a_pre[j] for j in columns] for i in downstream]))
        limit = max(1.0, max(float(np.abs(g).max()) for g in grids))
        ncols = min(3, len(group))
        nrows = math.ceil(len(group) / ncols)
        figure = _figure(2.6 * ncols + 0.9, 2.75 * nrows + 0.5)
        axes_grid = figure.subplots(nrows, ncols, squeeze=False)
        norm = TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)
        image = None
        for number, (entry, grid) in enumerate(zip(group, grids)):
            axes = axes_grid[number // ncols][number % ncols]
            image = axes.imshow(grid, cmap="RdBu", norm=norm, aspect="auto")
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    value = grid[i, j]
                    text = f"{value:.0f}"
                    axes.text(j, i, "0" if text == "-0" else text, ha="center", va="center", fontsize=6,
                              color="white" if abs(value) > 0.6 * limit else "black")
                axes.add_patch(_outline(i, i))
            axes.axvline(len(downstream) - 0.5, color="black", linewidth=1.2)
            axes.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
            axes.set_yticks(range(len(downstream)), downstream if number % ncols == 0 else [""] * len(downstream),
                            fontsize=7)
            mri = entry["metrics"]["mRI"]["mean"]
            axes.set_title(f"{_label(entry)}  (mRI {_signed(mri)})")
        for number in range(len(group), nrows * ncols):
            axes_grid[number // ncols][number % ncols].set_axis_off()
        figure.colorbar(image, ax=axes_grid, shrink=0.8, label="accuracy − pretrained (pp)")
        figure.suptitle(f"{group[0]['suite']} / {pretrain}: change in accuracy after fine-tuning "
                        f"(rows: trained on; columns: evaluated; boxed: ID)")
        written += _save(figure, folder, f"ri-heatmap-{pretrain}" + stem_suffix(view))
    return written


def _signed(value: float) -> str:
    """+1.2 / −0.04: two decimals where one would print a misleading −0.0."""
    if value == 0:
        return "0"
    return f"{value:+.2f}" if abs(value) < 0.05 else f"{value:+.1f}"


def _outline(row: int, column: int):
    return Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.0)


def _scatter_panels(entries: list[dict]):
    """(figure, [(axes, pretrain, its entries, those that train)]): one scatter panel per pretrain, with room
    below for a legend of every method."""
    grouped = _by_pretrain(entries)
    largest = max(sum(not trains_nothing(e) for e in group) for group in grouped.values()) + 2
    figure = _figure(3.5 * len(grouped) + 0.3, 3.5 + _legend_height(largest))
    axes_list = figure.subplots(1, len(grouped), squeeze=False)[0]
    return figure, [(axes, pretrain, group, [e for e in group if not trains_nothing(e)])
                    for axes, (pretrain, group) in zip(axes_list, grouped.items())]


def _interval_point(axes, entry: dict, x: str, y: str, colour, label: str, **style) -> None:
    """One entry at its means of metrics x and y, with their 95% intervals as bars."""
    mx, my = entry["metrics"][x], entry["metrics"][y]
    axes.errorbar(mx["mean"], my["mean"], xerr=[[mx["mean"] - mx["ci95"][0]], [mx["ci95"][1] - mx["mean"]]],
                  yerr=[[my["mean"] - my["ci95"][0]], [my["ci95"][1] - my["mean"]]], fmt="o", color=colour,
                  capsize=2, markersize=6, label=label, zorder=3, **style)


@_styled
def id_vs_ood(entries: list[dict], folder: Path, palette: dict, view: str = "") -> list[Path]:
    """Mean ID accuracy against mean OOD accuracy (95% intervals), the pretrained model as a star."""
    figure, panels = _scatter_panels(entries)
    for axes, pretrain, group, trained in panels:
        pre = group[0]["pretrained"]
        axes.scatter([pre["OOD"]], [pre["ID"]], marker="*", s=220, color="black", zorder=2,
                     label="pretrained")
        for entry in trained:
            _interval_point(axes, entry, "OOD", "ID", palette[_label(entry)], _label(entry))
        xs = [pre["OOD"], *(e["metrics"]["OOD"]["mean"] for e in trained)]
        ys = [pre["ID"], *(e["metrics"]["ID"]["mean"] for e in trained)]
        pad_x, pad_y = max(1.0, 0.15 * (max(xs) - min(xs))), max(1.0, 0.15 * (max(ys) - min(ys)))
        axes.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
        axes.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
        low, high = min(xs + ys) - 50, max(xs + ys) + 50
        axes.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=0.8, zorder=1,
                  label="ID = OOD")
        axes.set_xlabel("mean OOD accuracy (%)\n(other downstream test sets)")
        axes.set_ylabel("ID accuracy (%)\n(trained dataset's test set)")
        axes.set_title(pretrain)
        axes.grid(alpha=0.3)
        _legend_below(axes, -0.3)
    figure.suptitle(f"{_title(entries, view)}: in-distribution vs out-of-distribution accuracy, mean over "
                    "downstream datasets\n(the pretrained model lies on ID = OOD by construction; bars: 95% intervals)")
    return _save(figure, folder, "id-vs-ood" + stem_suffix(view))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (higher is better), by x."""
    front = [i for i, (x, y) in enumerate(points)
             if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)]
    return sorted(front, key=lambda i: points[i][0])


@_styled
def id_gain_vs_mri(entries: list[dict], folder: Path, palette: dict, view: str = "") -> list[Path]:
    """ID gain against mRI (95% intervals), the Pareto front of the methods that adapted drawn: adapting
    and staying robust trade off, and a method that did not adapt is no point of it however good its mRI."""
    figure, panels = _scatter_panels(entries)
    for axes, pretrain, group, trained in panels:
        for entry in trained:
            _interval_point(axes, entry, "ID_gain", "mRI", palette[_label(entry)], shown_label(entry),
                            mfc="white" if did_not_adapt(entry) else None)
        adapted = [e for e in trained if not did_not_adapt(e)]     # standing still is no trade-off
        points = [(e["metrics"]["ID_gain"]["mean"], e["metrics"]["mRI"]["mean"]) for e in adapted]
        front = pareto_front(points)
        if front:
            axes.plot([points[i][0] for i in front], [points[i][1] for i in front], color="black", linewidth=1.2,
                      zorder=2, label="Pareto front")
        axes.axvline(0, color="grey", linestyle="--", linewidth=0.8, zorder=1)
        axes.axhline(0, color="grey", linewidth=0.8, zorder=1)
        axes.set_xlabel("ID gain (percentage points)")
        axes.set_ylabel("mRI (percentage points)")
        axes.set_title(pretrain)
        axes.grid(alpha=0.3)
        _legend_below(axes, -0.3)
    figure.suptitle(f"{_title(entries, view)}: ID gain against mRI, the line the Pareto front of the methods that "
                    "adapted\n(bars: 95% intervals; hollow: did not adapt)")
    return _save(figure, folder, "id-gain-vs-mri" + stem_suffix(view))


@_styled
def forgetting_vs_distance(entries: list[dict], distances: dict[str, dict], folder: Path,
                           palette: dict, view: str = "") -> list[Path]:
    """Forgetting of the pretraining domain per downstream dataset against its distance to that domain.

    ``distances``: pretrain -> {"quantity": str, "values": {dataset: distance}}; pretrains without
    distances get no panel, and with none the figure is not written.
    """
    grouped = {p: [e for e in g if not trains_nothing(e)] for p, g in _by_pretrain(entries).items()
               if p in distances}
    grouped = {p: g for p, g in grouped.items() if g}
    if not grouped:
        return []
    largest = max(len(group) for group in grouped.values())
    figure = _figure(3.6 * len(grouped) + 0.3, 3.6 + _legend_height(largest))
    axes_list = figure.subplots(1, len(grouped), squeeze=False)[0]
    for axes, (pretrain, group) in zip(axes_list, grouped.items()):
        values = distances[pretrain]["values"]
        pretrain_eval = group[0]["grid"]["pretrain_eval"]
        datasets = [d for d in group[0]["grid"]["downstream"] if d in values]
        for entry in group:
            a_pre = entry["pretrained"]["accuracy"][pretrain_eval]
            forgetting = [a_pre - entry["matrix"][d][pretrain_eval] for d in datasets]
            rho = spearman([values[d] for d in datasets], forgetting)
            rho_text = "n/a" if math.isnan(rho) else f"{rho:+.2f}"
            axes.plot([values[d] for d in datasets], forgetting, "o", color=palette[_label(entry)],
                      label=f"{_label(entry)} (ρ {rho_text})")
        span = max(values[d] for d in datasets) - min(values[d] for d in datasets) or 1.0
        ticks: list[list] = []                       # [position, names]; near-equal distances share a tick
        for d in sorted(datasets, key=lambda name: values[name]):
            if ticks and values[d] - ticks[-1][0] < 0.03 * span:
                ticks[-1][1].append(d)
            else:
                ticks.append([values[d], [d]])
        top_axis = axes.secondary_xaxis("top")
        top_axis.set_xticks([t[0] for t in ticks], [" / ".join(t[1]) for t in ticks], rotation=45, ha="left",
                            fontsize=7)
        for position, _ in ticks:
            axes.axvline(position, color="lightgrey", linewidth=0.6, zorder=0)
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xlabel(f"{distances[pretrain]['quantity']} to {pretrain_eval}")
        axes.set_ylabel(f"forgetting of {pretrain_eval} (pp)")
        axes.set_title(pretrain)
        axes.grid(axis="y", alpha=0.3)
        _legend_below(axes, -0.2)
    figure.suptitle(f"{_title(entries, view)}: forgetting after fine-tuning on each downstream dataset\nvs its "
                    "distance to the pretraining domain (seed means; ρ = Spearman over datasets)")
    return _save(figure, folder, "forgetting-vs-otdd" + stem_suffix(view))


@_styled
def reported_mri(entries: list[dict], folder: Path) -> list[Path]:
    """Reported mRI as a method × pretrain table of coloured cells (no intervals: papers give none)."""
    pretrains = sorted({e["pretrain"] for e in entries}, key=lambda p: _pretrain_order(entries, p))
    methods = list(dict.fromkeys(e["method"]["label"] for e in entries))
    grid = np.full((len(methods), len(pretrains)), np.nan)
    for entry in entries:
        if "mRI" in entry["metrics"]:
            grid[methods.index(entry["method"]["label"]), pretrains.index(entry["pretrain"])] = \
                entry["metrics"]["mRI"]["mean"]
    limit = max(1.0, float(np.nanmax(np.abs(grid))))
    figure = _figure(1.1 * len(pretrains) + 2.2, 0.36 * len(methods) + 1.4)
    axes = figure.add_subplot()
    image = axes.imshow(grid, cmap="RdBu", norm=TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit), aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if not np.isnan(grid[i, j]):
                axes.text(j, i, f"{grid[i, j]:+.1f}", ha="center", va="center", fontsize=7,
                          color="white" if abs(grid[i, j]) > 0.6 * limit else "black")
    names = {e["pretrain"]: e["source"].get("pretrain_reported_as", e["pretrain"]) for e in entries}
    axes.set_xticks(range(len(pretrains)), [f"{p}\n({names[p]})" for p in pretrains], fontsize=7)
    axes.set_yticks(range(len(methods)), methods)
    figure.colorbar(image, ax=axes, label="mRI (pp)")
    source = entries[0]["source"]
    figure.suptitle(f"{entries[0]['suite']}: mRI reported by {source['title']} (not measured by ribench)")
    return _save(figure, folder, "reported-mri")


def _pretrain_order(entries: list[dict], pretrain: str) -> int:
    for number, entry in enumerate(entries):
        if entry["pretrain"] == pretrain:
            return number
    return len(entries)
