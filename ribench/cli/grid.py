"""`ribench grid`: a whole benchmark grid in one command — methods x pretrains x downstream datasets x
seeds — planned as one (ingredients first, stored cells skipped), run on an executor, and summarised
per pretrain."""

from __future__ import annotations

import sys

import torch

from ribench.api import results
from ribench.cli.options import (STORE_HELP, add_data_root, add_executor_options, add_include, add_protocol_option,
                                 add_retry_failed, csv_list, make_executor_from, method_list, seed_list,
                                 thread_count)
from ribench.errors import ConfigError
from ribench.report.format import format_summary
from ribench.run.runner import run_specs
from ribench.run.spec import resolve
from ribench.store import Store, default_store_path


def add_arguments(parser) -> None:
    parser.add_argument("--methods", type=method_list, required=True,
                        help="comma-separated method specs, e.g. ft,lp,'lora[rank=4]'")
    parser.add_argument("--pretrains", type=csv_list, default=["mini-clip"],
                        help="comma-separated pretrain presets (default: mini-clip)")
    parser.add_argument("--suite", default="rib-mini", help="suite name (default: rib-mini)")
    parser.add_argument("--datasets", type=csv_list, default=None,
                        help="comma-separated downstream datasets (default: all; see 'ribench list datasets')")
    parser.add_argument("--seeds", type=seed_list, default=[0], help="comma-separated seeds (default: 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a protocol or method setting for every run of the grid (repeatable)")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    add_data_root(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda uses bf16 mixed precision)")
    parser.add_argument("--weights", action="append", default=[], metavar="PRETRAIN=FILE",
                        help="a local weights file for one pretrain (repeatable)")
    add_include(parser)
    parser.add_argument("--threads", type=thread_count, default=None,
                        help="torch CPU threads of the local executor (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_protocol_option(parser)
    add_retry_failed(parser)
    add_executor_options(parser)


def _weights(pairs: list[str], pretrains: list[str]) -> dict[str, str]:
    files = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or name not in pretrains:
            raise ConfigError(f"bad --weights '{pair}': expected PRETRAIN=FILE with PRETRAIN one of "
                              f"{', '.join(pretrains)}")
        files[name] = path
    return files


def run(args) -> int:
    if not args.methods or not args.pretrains:
        raise ConfigError("give at least one method (--methods) and one pretrain (--pretrains)")
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    executor = make_executor_from(args, log)
    weights = _weights(args.weights, args.pretrains)
    specs = [resolve(method, args.suite, pretrain, args.datasets, args.seeds, args.overrides, args.device,
                     weights.get(pretrain), args.include, data_root=args.data_root,
                     check_device=not executor.plans_on_cpu, protocol=args.protocol, kernels=args.kernels,
                     compile=args.compile)
             for pretrain in dict.fromkeys(args.pretrains) for method in dict.fromkeys(args.methods)]
    store_path = args.store or default_store_path()
    with Store(store_path) as store:
        counts = run_specs(specs, store, executor, progress=not args.no_progress, log=log,
                           retry_failed=args.retry_failed)
    suite = specs[0].suite.name
    for pretrain in dict.fromkeys(s.preset.name for s in specs):
        labels = [s.label for s in specs if s.preset.name == pretrain]
        print(f"== {suite} / {pretrain} ==")
        print(format_summary(results(suite, pretrain, labels, store_path, protocol=args.protocol), "table",
                             compare_only=True))
    busy = f", {counts['busy']} left to the process running them" if counts["busy"] else ""
    print(f"{counts['ran']} cell(s) run, {counts['planned'] - counts['ran'] - counts['busy']} reused{busy}; "
          f"store: {store_path}")
    return 0
