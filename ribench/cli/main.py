"""The `ribench` command. Every user-facing failure: one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ribench.cli import leaderboard as leaderboard_cli
from ribench.errors import RibenchError


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _seeds(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers separated by commas, got '{value}'") from None


def _add_common(p):
    p.add_argument("--suite", default="rib-mini", help="suite name (default: rib-mini)")
    p.add_argument("--pretrain", default="mini-clip", help="pretrain preset (default: mini-clip)")
    p.add_argument("--store", default=None, help="results database (default: $RIBENCH_STORE or "
                                                 "~/.local/share/ribench/results.sqlite)")
    p.add_argument("--data-root", default=None, help="folder holding a real suite's datasets, e.g. "
                                                     "imagenet-rib (default: $RIBENCH_DATA_ROOT)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ribench", description=(
        "Benchmark robust fine-tuning the ImageNet-RIB way: fine-tune on each downstream dataset, "
        "evaluate on all, report RI and mRI."))
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="fine-tune a method on every downstream dataset and seed")
    run.add_argument("--method", required=True, help="method name (see 'ribench list methods')")
    _add_common(run)
    run.add_argument("--datasets", type=_csv, default=None, help="comma-separated downstream datasets (default: all)")
    run.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated seeds (default: 0)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a method hyperparameter or protocol setting (repeatable)")
    run.add_argument("--device", default="cpu", help="cpu or cuda (cuda uses bf16 mixed precision)")
    run.add_argument("--weights", default=None, help="local weights file for the pretrain")
    run.add_argument("--include", action="append", default=[], metavar="FILE.py",
                     help="import a Python file that registers extra methods")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    res = sub.add_parser("results", help="print the stored results of a suite and pretrain")
    _add_common(res)
    res.add_argument("--method", dest="methods", type=_csv, default=None,
                     help="comma-separated methods or labels (default: all stored)")
    res.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    res.add_argument("--compare", action="store_true",
                     help="only the methods side by side (table and markdown formats)")
    res.add_argument("--include", action="append", default=[], metavar="FILE.py",
                     help="import a Python file that registers extra methods or suites")

    lst = sub.add_parser("list", help="list registered methods, suites or pretrains")
    lst.add_argument("what", choices=["methods", "suites", "pretrains"])
    lst.add_argument("--include", action="append", default=[], metavar="FILE.py")

    pre = sub.add_parser("pretrain", help="rebuild an embedded pretrain's weights (mini-clip, mini-sup)")
    pre.add_argument("name")
    pre.add_argument("--out", default=None, help="output file (default: the packaged weights)")
    pre.add_argument("--threads", type=int, default=2)
    pre.add_argument("--steps", type=int, default=None, help="override the recipe's step count")

    gen = sub.add_parser("generate", help="generate and cache rib-mini's data (done on first use anyway)")
    gen.add_argument("--manifests", action="store_true", help="also rewrite data_manifests/rib-mini")

    from ribench.cli.datasets import add_parsers as add_dataset_parsers

    add_dataset_parsers(sub)

    from ribench.distance.otdd import add_distance_parser

    add_distance_parser(sub)

    leaderboard_cli.add_parser(sub)
    return parser


def _cmd_run(args) -> int:
    import torch

    from ribench.api import results
    from ribench.report.metrics import format_summary
    from ribench.run.runner import execute, load_pretrained, resolve
    from ribench.store import Store, default_store_path

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = resolve(args.method, args.suite, args.pretrain, args.datasets, args.seeds, args.overrides,
                   args.device, args.weights, args.include, data_root=args.data_root)
    pretrained = load_pretrained(spec)
    store_path = args.store or default_store_path()
    with Store(store_path) as store:
        counts = execute(spec, store, pretrained, progress=not args.no_progress,
                         log=lambda m: print(m, file=sys.stderr))
    summary = results(spec.suite.name, spec.preset.name, [spec.label], store_path)
    print(format_summary(summary, "table"))
    print(f"{counts['ran']} cell(s) run, {counts['planned'] - counts['ran']} reused; store: {store_path}")
    return 0


def _cmd_results(args) -> int:
    from ribench.api import results
    from ribench.catalog import METHODS
    from ribench.report.metrics import format_summary

    for path in args.include:
        METHODS.include(path)
    print(format_summary(results(args.suite, args.pretrain, args.methods, args.store), args.format,
                         compare_only=args.compare))
    return 0


def _cmd_list(args) -> int:
    from ribench.catalog import METHODS, PRETRAINS, SUITES

    registry = {"methods": METHODS, "suites": SUITES, "pretrains": PRETRAINS}[args.what]
    for path in args.include:
        registry.include(path)
    entries = list(registry.entries())
    width = max([12] + [len(e.name) for e in entries])
    for entry in entries:
        defaults = entry.defaults
        if args.what == "methods" and not defaults:
            defaults = registry.get(entry.name).defaults()
        if args.what == "suites":
            defaults = registry.get(entry.name)().protocol.as_dict()
        alias = f" (aliases: {', '.join(entry.aliases)})" if entry.aliases else ""
        print(f"{entry.name:<{width}} {entry.description}{alias}")
        if defaults:
            print(f"{'':<{width}} defaults: {json.dumps(defaults, default=str)}")
    return 0


def _cmd_pretrain(args) -> int:
    from ribench.pretrains import mini
    from ribench.suites import rib_mini

    out = mini.pretrain(args.name, args.out, threads=args.threads, steps=args.steps,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    card = mini.describe(args.name, rib_mini.build(), out)
    card_path = out.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["test_accuracy"], indent=2))
    print(f"wrote {out} (sha256 {card['sha256']}) and {card_path}")
    return 0


def _cmd_generate(args) -> int:
    from ribench.suites import rib_mini

    suite = rib_mini.build()
    if args.manifests:
        rib_mini.write_manifests()
    for name in suite.datasets:
        suite.train_split(name)
        suite.test_split(name)
    suite.corpus()
    print(f"rib-mini generated and cached under {suite.cache_root()}")
    return 0


def _cmd_datasets(args) -> int:
    from ribench.cli.datasets import cmd_datasets

    return cmd_datasets(args)


def _cmd_doctor(args) -> int:
    from ribench.cli.datasets import cmd_doctor

    return cmd_doctor(args)


def _cmd_distance(args) -> int:
    from ribench.distance.otdd import run_distance_command

    return run_distance_command(args)


COMMANDS = {"run": _cmd_run, "results": _cmd_results, "list": _cmd_list,
            "pretrain": _cmd_pretrain, "generate": _cmd_generate, "distance": _cmd_distance,
            "datasets": _cmd_datasets, "doctor": _cmd_doctor}
COMMANDS["leaderboard"] = leaderboard_cli.run


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ribench import __version__

        print(f"ribench {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
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
