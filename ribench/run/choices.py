"""The `tuned` protocol's chosen values, per suite: shipped with ribench, and the user's own from
`ribench tune` (which take precedence)."""

from __future__ import annotations

import json
from pathlib import Path

from ribench.errors import RibenchError
from ribench.paths import data_home

SHIPPED = Path(__file__).resolve().parent.parent / "suites" / "selections"


def selections_path(suite: str, shipped: bool = False) -> Path:
    """Where a suite's chosen values live: the user's file (written by `ribench tune`) or the shipped one."""
    return (SHIPPED if shipped else data_home() / "selections") / f"{suite}.json"


def load_selections(suite: str) -> dict:
    """{pretrain: {method label: choice}}: the user's choices over the shipped ones."""
    merged: dict = {}
    for path in (selections_path(suite, shipped=True), selections_path(suite)):
        if path.is_file():
            try:
                found = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise RibenchError(f"cannot read the selections file {path}: {error}") from None
            for pretrain, choices in found.items():
                merged.setdefault(pretrain, {}).update(choices)
    return merged


def chosen(suite: str, pretrain: str, label: str) -> dict | None:
    """The stored choice for a method label on a suite and pretrain, or None."""
    return load_selections(suite).get(pretrain, {}).get(label)
