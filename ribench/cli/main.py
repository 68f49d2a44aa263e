"""The `ribench` command: one module per subcommand, imported only when that subcommand runs, so that
`ribench --help` or `ribench list` does not pay for torch, POT and matplotlib.

Every user-facing failure: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ribench import __version__
from ribench.errors import RibenchError

# name -> (module with add_arguments(parser) and run(args) -> exit code, one-line help), in --help order.
COMMANDS = {
    "run": ("ribench.cli.run", "fine-tune a method on every downstream dataset and seed"),
    "grid": ("ribench.cli.grid", "run a whole grid: methods x pretrains x datasets x seeds, locally or on Ray"),
    "tune": ("ribench.cli.tune", "choose a method's lr for the tuned protocol on held-out train data"),
    "results": ("ribench.cli.results", "print the stored results of a suite and pretrain"),
    "list": ("ribench.cli.listing", "list registered methods, suites or pretrains, or a suite's datasets"),
    "pretrain": ("ribench.cli.pretrain", "rebuild an embedded pretrain's weights (mini-clip, mini-sup)"),
    "generate": ("ribench.cli.generate", "generate and cache rib-mini's data (done on first use anyway)"),
    "datasets": ("ribench.cli.datasets", "check a suite's data folder against its manifests"),
    "doctor": ("ribench.cli.doctor", "list the pretrains and data roots usable on this machine"),
    "distance": ("ribench.cli.distance", "OTDD between every pair of a suite's datasets in a pretrain's "
                                         "feature space; relation to forgetting"),
    "leaderboard": ("ribench.cli.leaderboard", "leaderboard entries: submit, check, build"),
    "store": ("ribench.cli.store", "results stores: merge stores made on separate machines"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit 2, like every other user error."""

    def error(self, message: str):
        self.exit(2, f"ribench: error: {self.prog.removeprefix('ribench ')}: {message}\n")


def _chosen(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the chosen subcommand's module is imported to declare its options."""
    parser = OneLineParser(prog="ribench", description=(
        "Benchmark robust fine-tuning the ImageNet-RIB way: fine-tune on each downstream dataset, "
        "evaluate on all, report RI and mRI."))
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command")
    chosen = _chosen(sys.argv[1:] if argv is None else argv)
    for name, (module, text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=text)
        if name == chosen:
            importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # --help, or a bad option already reported on one line
        return exc.code if isinstance(exc.code, int) else 2
    if args.version:
        print(f"ribench {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return importlib.import_module(COMMANDS[args.command][0]).run(args)
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
