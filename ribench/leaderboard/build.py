"""`ribench leaderboard build`: a suite's entries -> README.md, plots/ (PNG + SVG), index.html.

Measured and reported entries are shown in separate tables and never share a
figure. Everything written here is derived from the entry files, so it can be
deleted and rebuilt; rebuilding unchanged entries gives unchanged files.

Distances for the forgetting-vs-OTDD figure are optional. They are read from
``<root>/<suite>/distances/*.json|*.csv`` and any ``--distances FILE``:

- the JSON ``ribench distance`` writes (``suite``, ``pretrain``, ``pretrain_eval``,
  ``quantity``, ``matrix[a][b]``; the column of the pretraining-domain set is used);
- or ``{"suite": ..., "pretrain": ..., "quantity": "OTDD²", "to_pretrain_domain": {dataset: value}}``;
- or a CSV with a header ``pretrain,dataset,distance`` (optional columns ``suite``, ``quantity``).
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

from ribench.errors import RibenchError
from ribench.leaderboard.entries import OVERALL
from ribench.leaderboard import plots

__all__ = ["build_suite", "load_distances"]


# -- distances ------------------------------------------------------------------------------------
def load_distances(paths: list[Path], suite: str, entries: list[dict], log=None) -> dict[str, dict]:
    """pretrain -> {"quantity", "values": {dataset: distance to the pretraining-domain set}, "source"}."""
    weights = {e["pretrain"]: e["provenance"]["weights_sha256"] for e in entries if e["kind"] == "measured"}
    found: dict[str, dict] = {}
    for path in paths:
        for record in _read_distance_file(path):
            if record.get("suite", suite) != suite:
                continue
            pretrain = record["pretrain"]
            if record.get("weights_sha256") and pretrain in weights and record["weights_sha256"] != weights[pretrain]:
                if log:
                    log(f"note: {path} was computed with other {pretrain} weights than the entries; not used")
                continue
            found[pretrain] = {"quantity": record.get("quantity", "distance"), "values": record["values"],
                               "source": str(path), "detail": record.get("detail", "")}
    return found


def _read_distance_file(path: Path) -> list[dict]:
    def bad(reason: str) -> RibenchError:
        return RibenchError(f"distance file {path}: {reason} (see 'ribench leaderboard build --help')")

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise bad(f"cannot read: {error.strerror}") from None
    if path.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or not {"pretrain", "dataset", "distance"} <= set(rows[0]):
            raise bad("expected a header with pretrain, dataset, distance")
        records: dict[tuple, dict] = {}
        for number, row in enumerate(rows, start=2):
            try:
                value = float(row["distance"])
            except ValueError:
                raise bad(f"line {number}: distance {row['distance']!r} is not a number") from None
            key = (row.get("suite") or None, row["pretrain"])
            record = records.setdefault(key, {"pretrain": row["pretrain"], "values": {},
                                              "quantity": row.get("quantity") or "distance"})
            if key[0]:
                record["suite"] = key[0]
            record["values"][row["dataset"]] = value
        return list(records.values())
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise bad(f"not valid JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("pretrain"), str):
        raise bad("expected an object with a 'pretrain' field")
    if isinstance(document.get("to_pretrain_domain"), dict):
        values = document["to_pretrain_domain"]
    elif isinstance(document.get("matrix"), dict) and document.get("pretrain_eval"):
        target = document["pretrain_eval"]
        values = {name: row.get(target) for name, row in document["matrix"].items() if name != target}
    else:
        raise bad("expected 'to_pretrain_domain' or 'matrix' with 'pretrain_eval'")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values()):
        raise bad("every distance must be a finite number")
    record = {"pretrain": document["pretrain"], "values": {k: float(v) for k, v in values.items()},
              "quantity": str(document.get("quantity", "distance")).split(" (")[0]}
    for key in ("suite", "weights_sha256"):
        if document.get(key):
            record[key] = document[key]
    options = document.get("options")
    if isinstance(options, dict):     # as written by `ribench distance`: say how it was computed
        record["detail"] = ", ".join(f"{k} {options[k]}" for k in ("solver", "samples", "seed") if k in options)
        if document.get("feature_split"):
            record["detail"] += f", {document['feature_split']} splits"
    return [record]


# -- Markdown ------------------------------------------------------------------------------------
def _number(value: float, signed: bool) -> str:
    """One decimal; two where one decimal would print a misleading -0.0 or +0.0."""
    if signed and value != 0 and abs(value) < 0.05:
        return f"{value:+.2f}"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _pp(stat: dict | None, signed: bool = True) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    mean = _number(stat["mean"], signed)
    if stat.get("ci95"):
        low, high = stat["ci95"]
        return f"{mean} [{_number(low, signed)}, {_number(high, signed)}]"
    return mean


def measured_rows(group: list[dict]) -> list[dict]:
    """Table rows of one pretrain's measured entries, best mRI first (shared by Markdown and HTML)."""
    rows = []
    for entry in sorted(group, key=lambda e: -e["metrics"]["mRI"]["mean"]):
        m = entry["metrics"]
        rows.append({
            "entry": entry,
            "method": entry["method"]["label"],
            "cells": [
                ("mRI", _pp(m["mRI"]), m["mRI"]["mean"]),
                ("ID", _pp(m["ID"], False), m["ID"]["mean"]),
                ("ID gain", _pp(m["ID_gain"]), m["ID_gain"]["mean"]),
                ("mean OOD", _pp(m["OOD"], False), m["OOD"]["mean"]),
                ("forgetting", _pp(m["forgetting"]), m["forgetting"]["mean"]),
                ("seeds", str(m["mRI"]["n_seeds"]), m["mRI"]["n_seeds"]),
            ],
            "ri": [(d, _number(m["RI"][d]["mean"], True), m["RI"][d]["mean"]) for d in entry["grid"]["downstream"]],
        })
    return rows


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """Markdown table; the first `text_columns` columns left-aligned, numbers right-aligned."""
    rules = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _short(sha: str) -> str:
    return sha[:12]


def _markdown(suite: str, measured: dict[str, list[dict]], reported: dict[str, list[dict]],
              figures: list[tuple[str, str]], skipped_heatmap: dict[str, list[str]], root: Path,
              distances: dict[str, dict] | None = None) -> str:
    if not measured:
        out = [f"# {suite} leaderboard", "",
               "Generated by `ribench leaderboard build` from the entry files in this folder; do not edit by hand. "
               "No measured entries yet: every number here is reported by its source, not measured by ribench. "
               "Static page: [index.html](index.html).", ""]
    else:
        out = _intro(suite)
    return _markdown_body(out, measured, reported, figures, skipped_heatmap, root, distances)


def _intro(suite: str) -> list[str]:
    return [f"# {suite} leaderboard", "",
           "Generated by `ribench leaderboard build` from the entry files in this folder; do not edit by hand. "
           "Accuracies in %, differences in percentage points; `mean [95% CI]` over seeds "
           "(percentile bootstrap, 10 000 resamples). mRI = mean over downstream datasets of RI, RI = mean "
           "accuracy change on the other downstream test sets; ID = accuracy on the trained dataset's test set; "
           "mean OOD = mean accuracy on the other downstream test sets; forgetting = drop on the pretraining-"
           "domain set. Static page with every table, sortable: [index.html](index.html).", ""]


def _markdown_body(out: list[str], measured, reported, figures, skipped_heatmap, root: Path, distances) -> str:
    for pretrain, group in measured.items():
        out += [f"## {pretrain} (measured)", ""]
        rows = measured_rows(group)
        out.append(_table(["#", "method", *(c[0] for c in rows[0]["cells"])],
                          [[str(n), r["method"], *(c[1] for c in r["cells"])] for n, r in enumerate(rows, 1)],
                          text_columns=2))
        out += ["", "RI per downstream dataset (mean over seeds):", ""]
        out.append(_table(["method", *(c[0] for c in rows[0]["ri"]), "mRI"],
                          [[r["method"], *(c[1] for c in r["ri"]), r["cells"][0][1].split(" ")[0]] for r in rows]))
        pre = group[0]["pretrained"]
        out += ["", f"Pretrained model: ID {pre['ID']:.1f}, mean OOD {pre['OOD']:.1f}, "
                    f"{group[0]['grid']['pretrain_eval']} {pre['accuracy'][group[0]['grid']['pretrain_eval']]:.1f}.",
                ""]
    if measured:
        out += ["## Provenance", "",
                _table(["pretrain", "method", "hyperparameters", "seeds", "git commit(s)", "weights sha256",
                        "manifests sha256", "entry"],
                       [[e["pretrain"], e["method"]["label"],
                         json.dumps(e["method"]["hyperparameters"], sort_keys=True) if e["method"]["hyperparameters"]
                         else "defaults",
                         ",".join(map(str, e["grid"]["seeds"])),
                         ", ".join(_short(c) for c in e["provenance"]["git_commits"]) or "—",
                         _short(e["provenance"]["weights_sha256"]), _short(e["provenance"]["manifests_sha256"]),
                         f"[{Path(e['_path']).name}]({Path(e['_path']).relative_to(root / e['suite']).as_posix()})"]
                        for group in measured.values() for e in group], text_columns=8), ""]
    if figures:
        out += ["## Plots", ""]
        for stem, caption in figures:
            out += [f"![{caption}](plots/{stem}.png)", "", f"*{caption}* ([SVG](plots/{stem}.svg))", ""]
        for pretrain, found in (distances or {}).items():
            out += [f"Distances for {pretrain}: {found['quantity']} from `{Path(found['source']).name}`"
                    + (f" ({found['detail']})" if found.get("detail") else "") + ".", ""]
        for pretrain, names in skipped_heatmap.items():
            out += [f"Not drawn in the heatmap of {pretrain}: {', '.join(names)} (trains nothing: every change "
                    "is zero by definition).", ""]
    if reported:
        out += ["## Reported in papers (not measured by ribench)", "",
                "Numbers copied from their source, kept apart from measured entries: other code, other data "
                "splits and no intervals; they are not comparable cell for cell with ribench's measurements.", ""]
        pretrains = list(reported)
        by_method: dict[str, dict[str, dict]] = {}
        for pretrain, group in reported.items():
            for entry in group:
                by_method.setdefault(entry["method"]["label"], {})[pretrain] = entry
        metrics = sorted({name for group in reported.values() for e in group for name in e["metrics"]},
                         key=lambda n: OVERALL.index(n) if n in OVERALL else len(OVERALL))
        for metric in metrics:
            names = {p: reported[p][0]["source"].get("pretrain_reported_as", p) for p in pretrains}
            out += [f"{metric}:", "", _table(["method", *(f"{p} ({names[p]})" for p in pretrains)],
                                             [[label, *(_pp(found[p]["metrics"].get(metric)) if p in found else "—"
                                                        for p in pretrains)]
                                              for label, found in by_method.items()]), ""]
        for source, notes in reported_sources(reported):
            out += [f"Source: {source}.", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(out).rstrip() + "\n"


def reported_sources(reported: dict[str, list[dict]]) -> list[tuple[str, list[str]]]:
    """(source line, its distinct note sentences) once per source, however many entries cite it."""
    found: dict[str, list[str]] = {}
    for group in reported.values():
        for entry in group:
            source = entry["source"]
            line = f"{source['title']} — {source.get('url') or source['document']}, {source['location']}"
            notes = found.setdefault(line, [])
            for sentence in re.split(r"(?<=\.)\s+(?=[A-Z])", source.get("note", "")):
                if sentence.strip() and sentence.strip() not in notes:
                    notes.append(sentence.strip())
    return list(found.items())


# -- the build -------------------------------------------------------------------------------------
def build_suite(root: Path, suite: str, entries: list[dict], extra_distances=(), log=None) -> list[Path]:
    """Write README.md, plots/ and index.html for one suite; returns the files written."""
    from ribench.leaderboard.html import render_page

    folder = root / suite
    plot_folder = folder / "plots"
    for old in list(plot_folder.glob("*.png")) + list(plot_folder.glob("*.svg")):
        old.unlink()                                     # figures of removed entries must not linger
    measured_entries = [e for e in entries if e["kind"] == "measured"]
    reported_entries = [e for e in entries if e["kind"] == "reported"]
    measured = _group(measured_entries)
    reported = _group(reported_entries)
    written: list[Path] = []
    figures: list[tuple[str, str]] = []
    skipped: dict[str, list[str]] = {}
    distances: dict[str, dict] = {}
    if measured_entries:
        palette = plots.colours([e["method"]["label"] for e in measured_entries])
        written += plots.mri_per_method(measured_entries, plot_folder, palette)
        figures.append(("mri", "mRI per method with 95% bootstrap intervals, one panel per pretrain"))
        heatmaps = plots.ri_heatmaps(measured_entries, plot_folder)
        written += heatmaps
        for pretrain, group in measured.items():
            if any(p.name == f"ri-heatmap-{pretrain}.png" for p in heatmaps):
                figures.append((f"ri-heatmap-{pretrain}", f"{pretrain}: accuracy change A_i^(j) − A_pre^(j) per "
                                                          "method, trained-on dataset × evaluated dataset"))
            nothing = [e["method"]["label"] for e in group if plots.trains_nothing(e)]
            if nothing:
                skipped[pretrain] = nothing
        written += plots.id_vs_ood(measured_entries, plot_folder, palette)
        figures.append(("id-vs-ood", "ID accuracy against mean OOD accuracy (95% intervals); the star is the "
                                     "pretrained model"))
        distance_files = sorted((folder / "distances").glob("*.json")) + sorted((folder / "distances").glob("*.csv"))
        distances = load_distances([*distance_files, *extra_distances], suite, measured_entries, log)
        drawn = plots.forgetting_vs_distance(measured_entries, distances, plot_folder, palette)
        written += drawn
        if drawn:
            figures.append(("forgetting-vs-otdd", "forgetting of the pretraining domain after fine-tuning on each "
                                                  "downstream dataset against that dataset's OTDD² to it"))
        elif log:
            log(f"note: no distances for {suite} (put `ribench distance` JSON in {folder / 'distances'}); "
                "forgetting-vs-OTDD plot skipped")
    if reported_entries:
        written += plots.reported_mri(reported_entries, plot_folder)
        figures.append(("reported-mri", f"mRI as reported by {reported_entries[0]['source']['title']} "
                                        "(not measured by ribench)"))
    readme = folder / "README.md"
    used = {p: d for p, d in distances.items() if p in measured} if measured_entries else {}
    readme.write_text(_markdown(suite, measured, reported, figures, skipped, root, used), encoding="utf-8")
    page = folder / "index.html"
    page.write_text(render_page(suite, measured, reported, figures, plot_folder), encoding="utf-8")
    return [*written, readme, page]


def _group(entries: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for entry in sorted(entries, key=lambda e: (e["pretrain"], e["method"]["label"])):
        grouped.setdefault(entry["pretrain"], []).append(entry)
    return grouped
