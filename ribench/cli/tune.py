"""`ribench tune`: choose a method's learning rate (or defining strength) for the `tuned` protocol, on
held-out parts of the downstream train splits; stored as selection cells, written to a selections file."""

from __future__ import annotations

import sys

import torch

from ribench.cli.options import (STORE_HELP, add_data_root, add_executor_options, add_include, csv_list,
                                 make_executor_from, method_list, thread_count)
from ribench.errors import ConfigError
from ribench.report.selections import format_selections
from ribench.run.choices import load_selections
from ribench.run.selection import tune, write_selection
from ribench.store import Store, default_store_path


def add_arguments(parser) -> None:
    parser.add_argument("--methods", "--method", dest="methods", type=method_list, default=None,
                        help="comma-separated method specs to tune, e.g. ft,lora (in order: tune ft before "
                             "methods that train at its lr, such as l2sp and ewc)")
    parser.add_argument("--show", choices=["table", "markdown"], default=None,
                        help="print the suite's chosen values (shipped and your own) instead of tuning")
    parser.add_argument("--pretrains", "--pretrain", dest="pretrains", type=csv_list, default=["mini-clip"],
                        help="comma-separated pretrain presets (default: mini-clip)")
    parser.add_argument("--suite", default="rib-mini", help="suite name (default: rib-mini)")
    parser.add_argument("--datasets", type=csv_list, default=None,
                        help="downstream datasets to choose on (default: the suite's selection datasets)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every candidate, e.g. epochs=1 (the tuned runs must use it too)")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    add_data_root(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--weights", default=None, help="a local weights file for the pretrain")
    add_include(parser)
    parser.add_argument("--threads", type=thread_count, default=None, help="torch CPU threads of the local executor")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--ship", action="store_true",
                        help="maintainers: write the choice into the selections that ship with ribench")
    add_executor_options(parser)


def run(args) -> int:
    if args.show:
        print(format_selections(load_selections(args.suite), args.show))
        return 0
    if not args.methods:
        raise ConfigError("name the methods to tune with --methods (or print the chosen values with --show)")
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    store_path = args.store or default_store_path()
    with Store(store_path) as store:
        for pretrain in dict.fromkeys(args.pretrains):
            for method in dict.fromkeys(args.methods):
                executor = make_executor_from(args, log)
                choice = tune(method, args.suite, pretrain, store, executor, args.overrides, args.datasets,
                              args.include, progress=not args.no_progress, log=log, device=args.device,
                              weights=args.weights, data_root=args.data_root,
                              check_device=not executor.plans_on_cpu, kernels=args.kernels,
                              compile=args.compile)
                path = write_selection(args.suite, pretrain, choice, shipped=args.ship)
                scores = ", ".join(f"{v}: " + ("diverged" if a is None else f"{100 * float(a):.1f}")
                                   for v, a in choice["heldout_acc"].items())
                edge = " (at the grid's edge)" if choice["at_grid_edge"] else ""
                print(f"{args.suite}/{pretrain} {choice['method']}: {choice['tune']} = {choice['value']:g}{edge}; "
                      f"held-out accuracy % by value: {scores} (pretrained "
                      f"{100 * choice['pretrained_heldout_acc']:.1f}); written to {path}")
    return 0
