"""Options several subcommands share, declared once."""

from __future__ import annotations

import argparse

from ribench.engine.settings import split_top_level

STORE_HELP = "results database (default: $RIBENCH_STORE or ~/.local/share/ribench/results.sqlite)"


def csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def method_list(value: str) -> list[str]:
    """Comma-separated method specs; a comma inside [...] belongs to the spec ('saft[lr=1e-4,optimizer=adamw]')."""
    return split_top_level(value)


def seed_list(value: str) -> list[int]:
    try:
        return [int(v) for v in csv_list(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers separated by commas, got '{value}'") from None


def add_suite_options(parser) -> None:
    """--suite, --pretrain, --store, --data-root: which results or data a command works on."""
    parser.add_argument("--suite", default="rib-mini", help="suite name (default: rib-mini)")
    parser.add_argument("--pretrain", default="mini-clip", help="pretrain preset (default: mini-clip)")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    add_data_root(parser)


def add_data_root(parser) -> None:
    parser.add_argument("--data-root", default=None, help="folder holding a real suite's datasets, e.g. "
                                                          "imagenet-rib (default: $RIBENCH_DATA_ROOT)")


def add_include(parser, what: str = "methods") -> None:
    parser.add_argument("--include", action="append", default=[], metavar="FILE.py",
                        help=f"import a Python file that registers extra {what}")
