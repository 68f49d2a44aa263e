"""`ribench generate`: render and cache rib-mini's data ahead of first use."""

from __future__ import annotations

from ribench.suites import rib_mini


def add_arguments(gen) -> None:
    gen.add_argument("--manifests", action="store_true", help="also rewrite data_manifests/rib-mini")


def run(args) -> int:
    suite = rib_mini.build()
    if args.manifests:
        rib_mini.write_manifests()
    for name in suite.datasets:
        suite.train_split(name)
        suite.test_split(name)
    suite.corpus()
    print(f"rib-mini generated and cached under {suite.cache_root()}")
    return 0
