"""The distance files a leaderboard build reads, for its forgetting-vs-OTDD figure.

Distances are optional. They are read from ``<root>/<suite>/distances/*.json|*.csv``
and any ``--distances FILE``:

- the JSON ``ribench distance`` writes (``suite``, ``pretrain``, ``pretrain_eval``,
  ``quantity``, ``matrix[a][b]``; the column of the pretraining-domain set is used);
- or ``{"suite": ..., "pretrain": ..., "quantity": "OTDD²", "to_pretrain_domain": {dataset: value}}``;
- or a CSV with a header ``pretrain,dataset,distance`` (optional columns ``suite``, ``quantity``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ribench.errors import RibenchError

__all__ = ["load_distances"]

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
