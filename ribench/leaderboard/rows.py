"""The rows of the leaderboard tables, shared by the Markdown page and the HTML page.

Both pages show the same numbers in the same order and the same text, so they
are computed once here.
"""

from __future__ import annotations

import re

__all__ = ["interval_text", "measured_rows", "number_text", "reported_by_method", "reported_sources"]


def number_text(value: float, signed: bool) -> str:
    """One decimal; two where one decimal would print a misleading -0.0 or +0.0."""
    if signed and value != 0 and abs(value) < 0.05:
        return f"{value:+.2f}"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def interval_text(stat: dict | None, signed: bool = True) -> str:
    """'mean [low, high]', or the mean alone where a source gave no interval; '—' where it gave nothing."""
    if not stat or stat.get("mean") is None:
        return "—"
    mean = number_text(stat["mean"], signed)
    if stat.get("ci95"):
        low, high = stat["ci95"]
        return f"{mean} [{number_text(low, signed)}, {number_text(high, signed)}]"
    return mean


def trains_nothing(entry: dict) -> bool:
    """An entry whose every accuracy equals the pretrained model's (e.g. zeroshot)."""
    a_pre = entry["pretrained"]["accuracy"]
    return all(value == a_pre[name] for row in entry["matrix"].values() for name, value in row.items())


def did_not_adapt(entry: dict) -> bool:
    """A method that trains but whose ID gain is not above zero (its 95% interval reaches 0 or below):
    mRI alone would rank it first for standing still."""
    return not trains_nothing(entry) and entry["metrics"]["ID_gain"]["ci95"][0] <= 0


def shown_label(entry: dict) -> str:
    """The method's label as tables and plots show it: tuned entries say so (a reference row and a tuned
    row of one method sit side by side), a method that did not adapt is marked, and so is a row the code
    no longer measures (`superseded`: kept for comparison until it is rerun)."""
    protocol = entry.get("protocol") or {}
    tuned = f" · tuned ({chosen_text(protocol)})" if protocol.get("name") == "tuned" else ""
    return (entry["method"]["label"] + tuned + (" (did not adapt)" if did_not_adapt(entry) else "")
            + (" (superseded)" if entry.get("superseded") else ""))


def superseded_reasons(entries: list[dict]) -> list[str]:
    """The distinct reasons a table's superseded rows give, shown once under the table."""
    return sorted({e["superseded"] for e in entries if e.get("superseded")})


def chosen_text(protocol: dict) -> str:
    """The chosen values a tuned entry trained at: 'lr 0.005', 'λ 0.01', or its ingredients' ('ft: lr 0.001')."""
    def one(selection: dict) -> str:
        name = {"lr": "lr", "lam": "λ"}.get(selection["tune"], selection["tune"])
        return f"{name} {selection['value']:g}"

    parts = [one(protocol["selection"])] if protocol.get("selection") else []
    parts += [f"{name}: {one(s)}" for name, s in (protocol.get("ingredients") or {}).items()]
    return "; ".join(parts)


def measured_rows(group: list[dict]) -> list[dict]:
    """Table rows of one pretrain's measured entries, best mRI first (shared by Markdown and HTML)."""
    rows = []
    for entry in sorted(group, key=lambda e: -e["metrics"]["mRI"]["mean"]):
        m = entry["metrics"]
        rows.append({
            "entry": entry,
            "method": shown_label(entry),
            "cells": [
                ("mRI", interval_text(m["mRI"]), m["mRI"]["mean"]),
                ("ID", interval_text(m["ID"], False), m["ID"]["mean"]),
                ("ID gain", interval_text(m["ID_gain"]), m["ID_gain"]["mean"]),
                ("mean OOD", interval_text(m["OOD"], False), m["OOD"]["mean"]),
                ("forgetting", interval_text(m["forgetting"]), m["forgetting"]["mean"]),
                ("seeds", str(m["mRI"]["n_seeds"]), m["mRI"]["n_seeds"]),
            ],
            "ri": [(d, number_text(m["RI"][d]["mean"], True), m["RI"][d]["mean"])
                   for d in entry["grid"]["downstream"]],
        })
    return rows


def reported_by_method(reported: dict[str, list[dict]]) -> tuple[dict[str, str], dict[str, dict[str, dict]]]:
    """(pretrain -> the name its source gives it, label -> pretrain -> entry) of the reported entries."""
    names = {p: group[0]["source"].get("pretrain_reported_as", p) for p, group in reported.items()}
    by_method: dict[str, dict[str, dict]] = {}
    for pretrain, group in reported.items():
        for entry in group:
            by_method.setdefault(entry["method"]["label"], {})[pretrain] = entry
    return names, by_method


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
