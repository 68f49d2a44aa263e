"""`ribench leaderboard submit|check|build`."""

from __future__ import annotations

from ribench.leaderboard.entries import add_leaderboard_parser, run_leaderboard_command


def add_parser(subparsers) -> None:
    add_leaderboard_parser(subparsers)


def run(args) -> int:
    return run_leaderboard_command(args)
