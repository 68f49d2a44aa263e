"""`ribench datasets verify` and `ribench doctor`: what is on this machine, checked against the manifests."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ribench.errors import DataError, RibenchError


def add_parsers(sub) -> None:
    ds = sub.add_parser("datasets", help="check a suite's data folder against its manifests")
    ds_sub = ds.add_subparsers(dest="datasets_command", required=True)
    verify = ds_sub.add_parser("verify", help="report missing folders, wrong counts and unreadable images")
    verify.add_argument("--suite", default="imagenet-rib", help="suite name (default: imagenet-rib)")
    verify.add_argument("--data-root", default=None, help="the data folder (default: $RIBENCH_DATA_ROOT)")
    verify.add_argument("--no-decode", action="store_true",
                        help="check folders and counts only, do not decode every image")
    verify.add_argument("--threads", type=int, default=None, help="threads that decode images (default: all cores)")

    doc = sub.add_parser("doctor", help="list the pretrains and data roots usable on this machine")
    doc.add_argument("--data-root", action="append", default=[], metavar="DIR",
                     help="a data folder to check (repeatable; $RIBENCH_DATA_ROOT is checked too)")
    doc.add_argument("--weights", default=None, help="a weights file or folder to try for every pretrain")


def cmd_datasets(args) -> int:
    import torch

    from ribench.catalog import SUITES

    if args.threads:
        torch.set_num_threads(args.threads)
    suite = SUITES.get(args.suite)()
    if not hasattr(suite, "verify"):
        raise RibenchError(f"suite '{suite.name}' is generated; it has no data folder to verify")
    root = args.data_root or os.environ.get("RIBENCH_DATA_ROOT")
    if not root:
        raise RibenchError("give the data folder: --data-root DIR (or set $RIBENCH_DATA_ROOT)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"--data-root {root} is not a directory")
    suite.data_root = root
    start = time.perf_counter()
    print(f"verifying {suite.name} under {root} against {suite.manifest_dir}"
          + (" (folders and counts only)" if args.no_decode else " (decoding every image used)"))
    problems = suite.verify(decode=not args.no_decode)
    took = time.perf_counter() - start
    if problems:
        raise DataError(f"{len(problems)} problem(s) in {root} ({took:.1f} s); each is listed above")
    print(f"{root}: every dataset matches its manifest ({took:.1f} s)")
    return 0


def cmd_doctor(args) -> int:
    from ribench.catalog import PRETRAINS, SUITES

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
