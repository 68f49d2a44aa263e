"""Merge results stores made on separate machines (array jobs of a batch scheduler, one slice each).

Cells are de-duplicated by key, with their weights. Two different results under
one key (other accuracies or status) are a conflict: reported, never silently
resolved, and then nothing is written. The merged store is built beside the
output and renamed into place only when complete.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ribench.errors import StoreError
from ribench.store.database import Store
from ribench.store.location import weights_dir_of


@dataclass
class MergeCounts:
    cells: int = 0
    duplicates: int = 0
    weights: int = 0
    pretrained: int = 0
    conflicts: list[str] = field(default_factory=list)


def _copy_weights(source: Store, target: Store, key: str, counts: MergeCounts) -> None:
    if source.has_weights(key) and not target.has_weights(key):
        target.weights_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.weights_path(key), target.weights_path(key))
        counts.weights += 1


def _merge_one(source: Store, target: Store, counts: MergeCounts) -> None:
    for evaluation in source.pretrained():
        found = target.get_pretrained(evaluation["key"])
        if found is None:
            target.put_pretrained(evaluation["key"], evaluation["suite"], evaluation["pretrain"],
                                  evaluation["identity"], evaluation["accuracies"], evaluation["provenance"],
                                  evaluation["created_at"])
            counts.pretrained += 1
        elif found["accuracies"] != evaluation["accuracies"]:
            counts.conflicts.append(f"pretrained evaluation of {evaluation['suite']}/{evaluation['pretrain']} "
                                    f"({evaluation['key'][:12]}) differs in {source.path}")
    for cell in source.cells(status=None):
        found = target.get(cell.key)
        if found is None:
            target.put(cell)
            counts.cells += 1
        elif found.accuracies != cell.accuracies or found.status != cell.status:
            counts.conflicts.append(f"{cell.label} {cell.dataset}/seed {cell.seed} ({cell.key[:12]}) differs in "
                                    f"{source.path}")
            continue
        else:
            counts.duplicates += 1
        _copy_weights(source, target, cell.key, counts)


def merge_stores(sources: list[str | Path], out: str | Path) -> MergeCounts:
    """Merge `sources` into a new store at `out`; raises StoreError (writing nothing) on any conflict."""
    out = Path(out).expanduser()
    paths = [Path(p).expanduser() for p in sources]
    for path in paths:
        if not path.is_file():
            raise StoreError(f"no results store at {path}")
    if out.exists() or out.resolve() in {p.resolve() for p in paths}:
        raise StoreError(f"{out} exists; merge writes a new store (choose another -o)")
    building = out.parent / f".merging-{os.getpid()}-{out.name}"
    counts = MergeCounts()
    try:
        with Store(building) as target:
            for path in paths:
                with Store(path, readonly=True) as source:
                    _merge_one(source, target, counts)
        if counts.conflicts:
            shown = "; ".join(counts.conflicts[:5]) + ("; ..." if len(counts.conflicts) > 5 else "")
            raise StoreError(f"{len(counts.conflicts)} conflicting result(s), nothing written: {shown}")
        weights_dir, final_weights = weights_dir_of(building), weights_dir_of(out)
        if weights_dir.exists():
            if final_weights.exists():
                raise StoreError(f"{final_weights} exists; merge writes a new store (choose another -o)")
            os.replace(weights_dir, final_weights)
        os.replace(building, out)
    finally:
        if building.exists():
            building.unlink()
        leftover = weights_dir_of(building)
        if leftover.exists():
            shutil.rmtree(leftover)
    return counts

