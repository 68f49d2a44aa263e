"""The one renderer of text tables (terminal and Markdown) that reports, distances and leaderboards share."""

from __future__ import annotations


def aligned(table: list[list[str]], numeric: bool = True, rule: bool = True) -> str:
    """Plain text columns, the first left-aligned; the others right-aligned when `numeric`, else
    left-aligned (so "mean ± std ..." texts line up at ±); a dashed rule under the header when `rule`."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    pad = str.rjust if numeric else str.ljust
    lines = []
    for number, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [pad(cell, width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if number == 0 and rule:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown(table: list[list[str]], numeric: bool = True, text_columns: int = 1) -> str:
    """A Markdown table: the first `text_columns` columns left-aligned, the rest right-aligned when
    `numeric`; a '|' inside a cell is escaped."""
    width = len(table[0])
    rules = ["---"] * text_columns + ["---:" if numeric else "---"] * (width - text_columns)
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table[1:]]
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """`markdown` of a header and rows given apart (numbers right-aligned)."""
    return markdown([header, *rows], True, text_columns)
