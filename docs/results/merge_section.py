"""Merge a pretrain's section of a results page, regenerated from a store that holds only some of its
methods' cells, into the section as it stands: the store's methods replace their rows and their
`### method` sections, every other method keeps what was generated before (from the store of its own
run; its leaderboard entry records that run's provenance), and the side-by-side tables are sorted again
by mRI, best first, as `ribench results` sorts them. A kept row or section whose label ends in
" (superseded)" was measured by older code (the reference page's rows from before issue 15's method
fixes): it keeps the mark until the store holds that method again.

    python3 merge_section.py OLD_SECTION NEW_SECTION > MERGED_SECTION
"""
from __future__ import annotations

import sys

SIDE_BY_SIDE = "Methods side by side"
NOT_ADAPTED = " (did not adapt)"
SUPERSEDED = " (superseded)"


def base_label(label: str) -> str:
    """The method's label without the marks a table adds after it."""
    while label.endswith((NOT_ADAPTED, SUPERSEDED)):
        label = label.removesuffix(NOT_ADAPTED).removesuffix(SUPERSEDED)
    return label


def blocks(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The lines before the first `### ` heading, and each `### name` block by its name, in order."""
    head: list[str] = []
    named: dict[str, list[str]] = {}
    current = head
    for line in lines:
        if line.startswith("### "):
            current = named.setdefault(base_label(line[4:].strip()), [])
        current.append(line)
    return head, named


def pieces(block: list[str]) -> list[list[str]]:
    """The block as runs of table lines (`|...`) and runs of other lines."""
    runs: list[list[str]] = []
    for line in block:
        is_table = line.startswith("|")
        if runs and runs[-1][0].startswith("|") == is_table:
            runs[-1].append(line)
        else:
            runs.append([line])
    return runs


def row_label(row: str) -> str:
    return base_label(row.split("|")[1].strip())


def mri_of(row: str, column: int) -> float:
    cell = row.split("|")[column + 1].strip()
    try:
        return float(cell.split()[0].replace("\u2212", "-"))
    except (IndexError, ValueError):
        return float("-inf")


def merge_table(old: list[str], new: list[str]) -> list[str]:
    """Header of `new`; its rows, and the rows of `old` whose method `new` lacks; best mRI first."""
    header, rows = new[:2], new[2:]
    measured = {row_label(r) for r in rows}
    rows += [r for r in old[2:] if row_label(r) not in measured]
    column = [c.strip() for c in header[0].split("|")[1:-1]].index("mRI")
    return header + sorted(rows, key=lambda r: -mri_of(r, column))


def merge_side_by_side(old: list[str], new: list[str]) -> list[str]:
    old_tables = [p for p in pieces(old) if p[0].startswith("|")]
    merged, table_number = [], 0
    for piece in pieces(new):
        if piece[0].startswith("|") and table_number < len(old_tables):
            piece = merge_table(old_tables[table_number], piece)
            table_number += 1
        merged += piece
    return merged


def merge(old_lines: list[str], new_lines: list[str]) -> list[str]:
    _, old_blocks = blocks(old_lines)
    head, new_blocks = blocks(new_lines)
    methods = {**{k: v for k, v in old_blocks.items() if k != SIDE_BY_SIDE},
               **{k: v for k, v in new_blocks.items() if k != SIDE_BY_SIDE}}
    side = new_blocks.get(SIDE_BY_SIDE, [])
    if SIDE_BY_SIDE in old_blocks and side:
        side = merge_side_by_side(old_blocks[SIDE_BY_SIDE], side)
    merged = _trimmed(head + side)
    for name in sorted(methods):
        merged += [""] + _trimmed(methods[name])
    return merged


def _trimmed(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def main(old_path: str, new_path: str) -> None:
    with open(old_path) as old, open(new_path) as new:
        merged = merge(old.read().splitlines(), new.read().splitlines())
    sys.stdout.write("\n".join(merged) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: merge_section.py OLD_SECTION NEW_SECTION")
    main(*sys.argv[1:])
