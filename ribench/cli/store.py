"""`ribench store merge A.sqlite B.sqlite -o C.sqlite`: one store from stores made on separate machines."""

from __future__ import annotations

from ribench.store.merge import merge_stores


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="store_command", required=True)
    merge = actions.add_parser("merge", help="merge stores into a new one; refuses conflicting results")
    merge.add_argument("stores", nargs="+", metavar="STORE", help="results stores to merge")
    merge.add_argument("-o", "--out", required=True, help="the merged store to write (must not exist)")


def run(args) -> int:
    counts = merge_stores(args.stores, args.out)
    print(f"{args.out}: {counts.cells} cell(s), {counts.pretrained} pretrained evaluation(s), "
          f"{counts.weights} weights file(s); {counts.duplicates} duplicate cell(s) merged once")
    return 0
