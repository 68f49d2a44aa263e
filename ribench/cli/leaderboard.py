"""`ribench leaderboard submit|check|build`: the command-line face of ribench.leaderboard."""

from __future__ import annotations

import sys
from pathlib import Path

from ribench.catalog import METHODS
from ribench.errors import RibenchError
from ribench.leaderboard.build import build_suite
from ribench.leaderboard.entries import entry_from_store
from ribench.leaderboard.tree import check_tree, load_tree, write_entry
from ribench.store import default_store_path

__all__ = ["add_arguments", "run"]


def add_arguments(board) -> None:
    actions = board.add_subparsers(dest="leaderboard_command", required=True)
    root_help = "leaderboard folder (default: ./leaderboards)"

    submit = actions.add_parser("submit", help="write an entry from a complete grid of stored cells")
    submit.add_argument("--method", required=True, help="method spec, e.g. ft or 'lp[fit=lbfgs]'")
    submit.add_argument("--suite", default="rib-mini", help="suite name (default: rib-mini)")
    submit.add_argument("--pretrain", default="mini-clip", help="pretrain preset (default: mini-clip)")
    submit.add_argument("--store", default=None, help="results database (default: $RIBENCH_STORE or "
                                                      "~/.local/share/ribench/results.sqlite)")
    submit.add_argument("--data-root", default=None, help="folder holding a real suite's datasets, e.g. "
                                                          "imagenet-rib (default: $RIBENCH_DATA_ROOT)")
    submit.add_argument("--root", default="leaderboards", help=root_help)
    submit.add_argument("--paper", default=None, help="paper URL (default: the method's own)")
    submit.add_argument("--replace", action="store_true", help="overwrite an existing entry with new numbers")
    submit.add_argument("--protocol", default=None, choices=["reference", "tuned"],
                        help="the cells to submit: tuned (each method's recipe at its selected value; the "
                             "suite's default) or reference (ImageNet-RIB's one recipe)")
    submit.add_argument("--include", action="append", default=[], metavar="FILE.py",
                        help="import a Python file that registers extra methods or suites")

    check = actions.add_parser("check", help="validate every entry (schema, placement, arithmetic)")
    check.add_argument("--root", default="leaderboards", help=root_help)

    build = actions.add_parser("build", help="Markdown tables, plots (PNG, SVG) and one HTML page per suite")
    build.add_argument("--root", default="leaderboards", help=root_help)
    build.add_argument("--suite", default=None, help="only this suite (default: every suite folder)")
    build.add_argument("--distances", action="append", default=[], metavar="FILE",
                       help="OTDD to the pretraining-domain set (JSON or CSV, see docs/adding-a-method.md); "
                            "also read from <root>/<suite>/distances/")



def run(args) -> int:
    if args.leaderboard_command == "submit":
        return _submit(args)
    if args.leaderboard_command == "check":
        return _check(args)
    return _build(args)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _submit(args) -> int:
    for path in args.include:
        METHODS.include(path)
    entry = entry_from_store(args.store or default_store_path(), args.suite, args.pretrain, args.method,
                             args.paper, log=_stderr, data_root=args.data_root, protocol=args.protocol)
    path, state = write_entry(entry, args.root, args.replace)
    mri = entry["metrics"]["mRI"]
    print(f"{state} {path}: mRI {mri['mean']:+.2f} [{mri['ci95'][0]:+.2f}, {mri['ci95'][1]:+.2f}] "
          f"over {mri['n_seeds']} seeds")
    return 0


def _check(args) -> int:
    count, problems = check_tree(args.root)
    for problem in problems:
        _stderr(f"ribench: error: {problem}")
    if problems:
        return 2
    print(f"{count} leaderboard entr{'y' if count == 1 else 'ies'} under {args.root}: all valid")
    return 0


def _build(args) -> int:
    root = Path(args.root)
    entries = load_tree(root, args.suite)
    suites = sorted({e["suite"] for e in entries})
    if args.suite and not suites:
        raise RibenchError(f"no entries for suite '{args.suite}' under {root}")
    if not suites:
        raise RibenchError(f"no entries under {root}; write some with 'ribench leaderboard submit'")
    for suite in suites:
        written = build_suite(root, suite, [e for e in entries if e["suite"] == suite],
                              extra_distances=[Path(p) for p in args.distances], log=_stderr)
        print(f"{suite}: wrote {len(written)} files under {root / suite}")
    return 0
