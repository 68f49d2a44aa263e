"""`ribench run`: fine-tune one method on every downstream dataset and seed, then print its summary."""

from __future__ import annotations

import sys

import torch

from ribench.api import failed_cells, results
from ribench.cli.options import (add_executor_options, add_include, add_protocol_option, add_retry_failed,
                                 add_suite_options, csv_list, make_executor_from, seed_list, thread_count)
from ribench.cli.results import report_failed
from ribench.errors import RibenchError
from ribench.report.format import format_summary
from ribench.run.cell import load_pretrained
from ribench.run.runner import execute
from ribench.run.spec import resolve
from ribench.store import Store, default_store_path


def add_arguments(parser) -> None:
    parser.add_argument("--method", required=True, help="method name (see 'ribench list methods')")
    add_suite_options(parser)
    parser.add_argument("--datasets", type=csv_list, default=None,
                        help="comma-separated downstream datasets (default: all; see 'ribench list datasets')")
    parser.add_argument("--seeds", type=seed_list, default=[0], help="comma-separated seeds (default: 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a method hyperparameter or protocol setting (repeatable)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda uses bf16 mixed precision)")
    parser.add_argument("--weights", default=None, help="local weights file for the pretrain")
    add_include(parser)
    parser.add_argument("--threads", type=thread_count, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_protocol_option(parser)
    add_retry_failed(parser)
    add_executor_options(parser)


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    executor = make_executor_from(args, log)
    spec = resolve(args.method, args.suite, args.pretrain, args.datasets, args.seeds, args.overrides,
                   args.device, args.weights, args.include, data_root=args.data_root,
                   check_device=not executor.plans_on_cpu, protocol=args.protocol, kernels=args.kernels,
                   compile=args.compile)
    pretrained = load_pretrained(spec, "cpu" if executor.plans_on_cpu else None)   # a missing file fails first
    store_path = args.store or default_store_path()
    with Store(store_path) as store:
        counts = execute(spec, store, pretrained, progress=not args.no_progress, log=log, executor=executor,
                         retry_failed=args.retry_failed)
    failed = [c for c in failed_cells(spec.suite.name, spec.preset.name, [spec.label], store_path, spec.protocol_name)
              if c.dataset in spec.datasets and c.seed in spec.seeds]
    if len(failed) + counts["busy"] < len(spec.datasets) * len(spec.seeds):
        summary = results(spec.suite.name, spec.preset.name, [spec.label], store_path, protocol=spec.protocol_name)
        print(format_summary(summary, "table"))
    busy = f", {counts['busy']} left to the process running them" if counts["busy"] else ""
    print(f"{counts['ran']} cell(s) run, {counts['planned'] - counts['ran'] - counts['busy']} reused{busy}; "
          f"store: {store_path}")
    if failed:
        report_failed(failed)
        raise RibenchError(f"{len(failed)} cell(s) of {spec.label} diverged and are stored as failed, not as "
                           "results; change the settings, or pass --retry-failed to run them again")
    return 0
