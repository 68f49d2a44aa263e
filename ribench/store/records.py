"""One stored cell: what it is (its identity), what it measured, and how it was made."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class CellRecord:
    """One row of ``cells``; accuracies are fractions in [0, 1] keyed by evaluated dataset."""

    key: str
    suite: str
    pretrain: str
    method: str
    label: str
    dataset: str
    seed: int
    identity: dict[str, Any]
    accuracies: dict[str, float]
    status: str = "done"
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    timings: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: float | None = None  # set by Store.put when None

    def describe(self) -> str:
        return f"{self.label} on {self.dataset}, seed {self.seed}"

    def failure(self) -> str:
        """Why a failed cell failed: 'diverged at step 3 (loss became non-finite)'."""
        found = self.details.get("diverged") or {}
        return f"diverged at step {found.get('step', '?')} ({found.get('what', 'training')} became non-finite)"
