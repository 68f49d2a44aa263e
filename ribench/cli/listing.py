"""`ribench list`: the registered methods, suites and pretrains, and the datasets of a suite."""

from __future__ import annotations

import json

from ribench.catalog import METHODS, PRETRAINS, SUITES
from ribench.cli.options import add_include

KINDS = ("methods", "suites", "pretrains", "datasets")


def add_arguments(lst) -> None:
    lst.add_argument("what", choices=list(KINDS))
    lst.add_argument("--suite", default="rib-mini",
                     help="the suite whose datasets 'list datasets' shows (default: rib-mini)")
    add_include(lst, "methods, suites or pretrains")


def run(args) -> int:
    if args.what == "datasets":
        return _datasets(args)
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
        recipe = registry.get(entry.name).recipe if args.what == "methods" else None
        if recipe is not None:
            print(f"{'':<{width}} recipe: {recipe.describe()}")
    return 0


def _datasets(args) -> int:
    """The names `--datasets` accepts, with their role, classes and what each mirrors."""
    for path in args.include:
        SUITES.include(path)
    suite = SUITES.get(args.suite)()
    width = max(len(n) for n in suite.datasets)
    print(f"{suite.name}: {suite.description}")
    for name, info in suite.datasets.items():
        role = "downstream" if info.role == "downstream" else "pretraining domain (evaluated, not a --datasets choice)"
        mirrors = f"; mirrors {info.spirit_of}" if info.spirit_of else ""
        print(f"  {name:<{width}}  {len(info.class_mask):>4} classes  {role}{mirrors}: {info.description}")
    return 0
