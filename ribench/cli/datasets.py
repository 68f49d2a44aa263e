"""`ribench datasets verify`: a suite's data folder checked against its manifests."""

from __future__ import annotations

import os
from pathlib import Path
import time

import torch

from ribench.catalog import SUITES
from ribench.errors import DataError, RibenchError


def add_arguments(ds) -> None:
    ds_sub = ds.add_subparsers(dest="datasets_command", required=True)
    verify = ds_sub.add_parser("verify", help="report missing folders, wrong counts and unreadable images")
    verify.add_argument("--suite", default="imagenet-rib", help="suite name (default: imagenet-rib)")
    verify.add_argument("--data-root", default=None, help="the data folder (default: $RIBENCH_DATA_ROOT)")
    verify.add_argument("--no-decode", action="store_true",
                        help="check folders and counts only, do not decode every image")
    verify.add_argument("--threads", type=int, default=None, help="threads that decode images (default: all cores)")


def run(args) -> int:
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
