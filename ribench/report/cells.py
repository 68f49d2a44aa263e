"""Which stored cells a report reads: those of the newest pretrained evaluation of a suite and pretrain.

Cells made with replaced weights or other manifests never mix into a report or a leaderboard entry.
"""

from __future__ import annotations

from ribench.errors import RibenchError
from ribench.store import CellRecord, Store


def latest_cells(store: Store, suite: str, pretrain: str, label: str | None = None,
                 protocol: str = "reference", status: str = "done") -> tuple[dict, list[CellRecord]]:
    """(the newest pretrained evaluation, the cells made with its weights and manifests under `protocol`).

    `status` "failed" gives the cells that diverged instead of the finished ones."""
    evaluations = store.pretrained(suite, pretrain)
    if not evaluations:
        raise RibenchError(f"no results for suite '{suite}' and pretrain '{pretrain}' in {store.path}; "
                           f"run 'ribench run --method ft --suite {suite} --pretrain {pretrain}' first")
    latest = evaluations[-1]
    made_with = latest["identity"]
    cells = [c for c in store.cells(suite=suite, pretrain=pretrain, label=label, status=status)
             if c.identity.get("weights_sha256") == made_with["weights_sha256"]
             and c.identity.get("manifests") == made_with["manifests"]
             and c.identity.get("protocol_name", "reference") == protocol]
    return latest, cells
