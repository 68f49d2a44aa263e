"""The README's table of one pretrain under one protocol, from the leaderboard entries (nothing typed by
hand): mRI, ID gain and forgetting as mean ± std over seeds, best mRI first, the pretrained model as
`zeroshot`, and a method whose ID gain interval is not above 0 marked "did not adapt".

    .venv/bin/python docs/results/readme_table.py mini-clip [tuned|reference]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ribench.leaderboard.rows import did_not_adapt

BOARD = Path(__file__).resolve().parents[2] / "leaderboards" / "rib-mini"
METRICS = ("mRI", "ID_gain", "forgetting")


def shown(stat: dict) -> str:
    return f"{stat['mean']:+.1f} ± {stat['std']:.1f}".replace("-", "\u2212")


def entries(pretrain: str, protocol: str) -> list[dict]:
    found = []
    for path in sorted((BOARD / pretrain).glob("*.json")):
        entry = json.loads(path.read_text())
        if entry.get("kind") == "measured" and (entry.get("protocol") or {}).get("name") == protocol \
                and not entry.get("superseded"):
            found.append(entry)
    return found


def table(pretrain: str, protocol: str) -> str:
    zero = {"mean": 0.0, "std": 0.0}
    rows = [("zeroshot", {m: zero for m in METRICS})]
    for entry in entries(pretrain, protocol):
        label = entry["method"]["label"]
        if label == "zeroshot":
            continue
        if did_not_adapt(entry):             # the leaderboard's own marker
            label += " (did not adapt)"
        rows.append((label, entry["metrics"]))
    rows.sort(key=lambda row: -row[1]["mRI"]["mean"])
    lines = ["| method | mRI | ID gain | forgetting |", "|---|---|---|---|"]
    lines += [f"| {label} | " + " | ".join(shown(metrics[m]) for m in METRICS) + " |" for label, metrics in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: readme_table.py PRETRAIN [tuned|reference]")
    print(table(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "tuned"))
