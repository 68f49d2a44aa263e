"""`ribench distance`: OTDD between a suite's datasets in a pretrain's feature space."""

from __future__ import annotations

from ribench.distance.otdd import add_distance_parser, run_distance_command


def add_parser(subparsers) -> None:
    add_distance_parser(subparsers)


def run(args) -> int:
    return run_distance_command(args)
