"""`ribench results`: the stored results of a suite and pretrain, as a table, Markdown, CSV or JSON."""

from __future__ import annotations

import sys

from ribench.api import failed_cells, results
from ribench.catalog import METHODS
from ribench.cli.options import add_include, add_protocol_option, add_suite_options, method_list
from ribench.report.format import FORMATS, format_summary


def add_arguments(res) -> None:
    add_suite_options(res)
    res.add_argument("--method", dest="methods", type=method_list, default=None,
                     help="comma-separated methods or labels (default: all stored)")
    res.add_argument("--format", default="table", choices=list(FORMATS))
    res.add_argument("--compare", action="store_true",
                     help="only the methods side by side (table and markdown formats)")
    add_protocol_option(res)
    add_include(res, "methods or suites")


def run(args) -> int:
    for path in args.include:
        METHODS.include(path)
    summary = results(args.suite, args.pretrain, args.methods, args.store, args.protocol)
    print(format_summary(summary, args.format, compare_only=args.compare))
    report_failed(failed_cells(args.suite, args.pretrain, args.methods, args.store, args.protocol))
    return 0


def report_failed(cells) -> None:
    """One line per failed cell, on stderr (the table on stdout stays parseable): they are not results."""
    for cell in cells:
        print(f"failed: {cell.describe()}: {cell.failure()}; not part of any result (rerun with --retry-failed)",
              file=sys.stderr)
