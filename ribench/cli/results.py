"""`ribench results`: the stored results of a suite and pretrain, as a table, Markdown, CSV or JSON."""

from __future__ import annotations

from ribench.api import results
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
    print(format_summary(results(args.suite, args.pretrain, args.methods, args.store, args.protocol), args.format,
                         compare_only=args.compare))
    return 0
