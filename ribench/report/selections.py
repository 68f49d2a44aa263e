"""The tuned protocol's chosen values as a table: what `ribench tune --show` prints and docs/protocols.md
quotes, so the shipped choices are never retyped by hand."""

from __future__ import annotations

from ribench.tables import aligned, markdown

HEADER = ["pretrain", "method", "tuned", "grid", "chosen", "pretrained", "held-out accuracy by value (%)"]


def _g(value: float) -> str:
    return f"{value:g}"


def selection_rows(selections: dict) -> list[list[str]]:
    """One row per (pretrain, method): the grid's ends, the choice (bold in the scores) and the
    pretrained model's held-out accuracy, all on the same held-out parts of the train splits."""
    rows = []
    for pretrain in sorted(selections):
        for method, choice in sorted(selections[pretrain].items()):
            grid = choice["grid"]
            tuned = "lr" if choice["tune"] == "lr" else f"{'λ' if choice['tune'] == 'lam' else choice['tune']}"
            if choice["tune"] != "lr" and choice.get("recipe", {}).get("lr") is not None:
                tuned += f" at lr {_g(choice['recipe']['lr'])}"
            scores = []
            for value in grid:
                score = choice["heldout_acc"].get(repr(value))
                text = "diverged" if score is None else f"{100 * score:.1f}"
                scores.append(f"**{text}**" if value == choice["value"] else text)
            rows.append([pretrain, method, tuned, f"{_g(grid[0])} … {_g(grid[-1])}", _g(choice["value"]),
                         f"{100 * choice['pretrained_heldout_acc']:.1f}", ", ".join(scores)])
    return rows


def format_selections(selections: dict, fmt: str = "table") -> str:
    table = [HEADER, *selection_rows(selections)]
    return markdown(table, text_columns=4) if fmt == "markdown" else aligned(table)
