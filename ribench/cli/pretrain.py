"""`ribench pretrain NAME`: rebuild an embedded pretrain's weights and its card."""

from __future__ import annotations

import json
import sys

from ribench.pretrains import mini
from ribench.suites import rib_mini


def add_arguments(pre) -> None:
    pre.add_argument("name")
    pre.add_argument("--out", default=None, help="output file (default: the packaged weights)")
    pre.add_argument("--threads", type=int, default=2)
    pre.add_argument("--steps", type=int, default=None, help="override the recipe's step count")


def run(args) -> int:
    out = mini.pretrain(args.name, args.out, threads=args.threads, steps=args.steps,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    card = mini.describe(args.name, rib_mini.build(), out)
    card_path = out.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["test_accuracy"], indent=2))
    print(f"wrote {out} (sha256 {card['sha256']}) and {card_path}")
    return 0
