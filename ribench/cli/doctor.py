"""`ribench doctor`: which pretrains and data roots are usable on this machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ribench.catalog import PRETRAINS, SUITES
from ribench.errors import RibenchError


def add_arguments(doc) -> None:
    doc.add_argument("--data-root", action="append", default=[], metavar="DIR",
                     help="a data folder to check (repeatable; $RIBENCH_DATA_ROOT is checked too)")
    doc.add_argument("--weights", default=None, help="a weights file or folder to try for every pretrain")


def run(args) -> int:
    print("pretrains:")
    for entry in PRETRAINS.entries():
        preset = PRETRAINS.get(entry.name)
        if preset.embedded:
            status = "usable (ships with ribench)"
        elif preset.locate is None:
            status = "unknown (no local file lookup)"
        else:
            try:
                status = f"usable: {preset.locate(args.weights)}"
            except RibenchError as exc:
                status = f"missing: {exc}"
        print(f"  {entry.name:<13} {status}")
    roots = list(args.data_root)
    if os.environ.get("RIBENCH_DATA_ROOT"):
        roots.append(os.environ["RIBENCH_DATA_ROOT"])
    print("data roots:")
    if not roots:
        print("  none given (pass --data-root DIR or set $RIBENCH_DATA_ROOT); rib-mini needs none")
    suite = SUITES.get("imagenet-rib")()
    for root in roots:
        path = Path(root).expanduser()
        if not path.is_dir():
            print(f"  {path}: not a directory")
            continue
        suite.data_root = path
        found = {name: suite.dataset_dir(name, required=False) for name in suite.datasets}
        have = [n for n, d in found.items() if d is not None]
        lacking = [n for n, d in found.items() if d is None]
        verdict = "usable for imagenet-rib" if not lacking else f"incomplete: lacks {', '.join(lacking)}"
        print(f"  {path}: {verdict}" + (f" (has {', '.join(have)})" if have and lacking else ""))
    print("('ribench datasets verify --data-root DIR' checks counts and decodes every image)")
    sys.stdout.flush()
    return 0
