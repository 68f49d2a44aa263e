"""The `ribench` command: one module per subcommand. Every user-facing failure: one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import os
import sys

from ribench import __version__
from ribench.cli import datasets, distance, doctor, generate, leaderboard, listing, pretrain, results, run
from ribench.errors import RibenchError

# Subcommand name -> its module (each has add_parser(subparsers) and run(args) -> exit code), in --help order.
COMMANDS = {"run": run, "results": results, "list": listing, "pretrain": pretrain, "generate": generate,
            "datasets": datasets, "doctor": doctor, "distance": distance, "leaderboard": leaderboard}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ribench", description=(
        "Benchmark robust fine-tuning the ImageNet-RIB way: fine-tune on each downstream dataset, "
        "evaluate on all, report RI and mRI."))
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command")
    for module in COMMANDS.values():
        module.add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(f"ribench {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except RibenchError as exc:
        print(f"ribench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ribench: interrupted; finished cells are stored, run the same command to resume",
              file=sys.stderr)
        return 130


def entry() -> None:  # console script
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
