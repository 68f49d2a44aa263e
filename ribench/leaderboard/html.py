"""The static leaderboard page: one self-contained HTML file (tables, figures, sorting), no network.

Figures are embedded as base64 PNG; the style sheet and the sorting script
(``assets/page.css``, ``assets/page.js``) are inlined. The page is
readable without JavaScript (rows start best mRI first); with it, a click on a
column header sorts by that column, and ``#sort=<column>`` in the address
sorts on load (e.g. ``index.html#sort=forgetting``).
"""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path

from ribench.leaderboard.rows import measured_rows, reported_by_method, reported_sources, superseded_reasons

__all__ = ["render_page"]

ASSETS = "assets"          # page.css and page.js, package data next to this module


def _asset(name: str) -> str:
    return resources.files("ribench.leaderboard").joinpath(ASSETS).joinpath(name).read_text(encoding="utf-8")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _header(key: str, label: str, name: bool = False, order: str = "desc") -> str:
    cls = ' class="name"' if name else ""
    return f'<th{cls} data-key="{_e(key)}" data-order="{order}">{_e(label)}</th>'


def _measured_table(pretrain: str, group: list[dict]) -> str:
    rows = measured_rows(group)
    downstream = group[0]["grid"]["downstream"]
    head = [_header("method", "method", name=True, order="asc")]
    head += [_header(key, key, order="asc" if key == "forgetting" else "desc") for key, _, _ in rows[0]["cells"]]
    head += [_header(f"RI:{d}", f"RI {d}") for d in downstream]
    body = []
    for row in rows:
        entry = row["entry"]
        method = entry["method"]
        title = method["description"] or ""
        name = _e(row["method"])
        if method.get("paper"):
            name = f'<a href="{_e(method["paper"])}" title="{_e(title)}">{name}</a>'
        cells = [f'<td class="name" data-value="" data-entry="{_e(row["method"])}">{name}</td>']
        cells += [f'<td data-value="{value}">{_e(text)}</td>' for _, text, value in row["cells"]]
        cells += [f'<td data-value="{value}">{_e(text)}</td>' for _, text, value in row["ri"]]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="wide"><table class="sortable measured" data-pretrain="{_e(pretrain)}"><thead><tr>'
            f'{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _provenance(group: list[dict]) -> str:
    items = []
    for entry in group:
        prov = entry["provenance"]
        params = json.dumps(entry["method"]["hyperparameters"], sort_keys=True)
        items.append(
            f"<details><summary><code>{_e(entry['method']['label'])}</code>: seeds "
            f"{_e(', '.join(map(str, entry['grid']['seeds'])))}, commit(s) "
            f"{_e(', '.join(c[:12] for c in prov['git_commits']) or 'unknown')}</summary>"
            f"<p>{_e(entry['method']['description'] or '')}</p>"
            f"<p>hyperparameters <code>{_e(params)}</code>; protocol <code>"
            f"{_e(json.dumps(prov['protocol'], sort_keys=True))}</code></p>"
            f"<p>weights sha256 <code>{_e(prov['weights_sha256'])}</code>; manifests sha256 "
            f"<code>{_e(prov['manifests_sha256'])}</code>; ribench {_e(', '.join(prov['ribench_versions']))}; "
            f"finished {_e(prov['finished'])}; {len(prov['cells'])} cells</p></details>")
    return "".join(items)


def _reported_table(reported: dict[str, list[dict]]) -> str:
    pretrains = list(reported)
    names, by_method = reported_by_method(reported)
    head = [_header("method", "method", name=True, order="asc")]
    head += [_header(f"mRI:{p}", f"{p} ({names[p]})") for p in pretrains]
    body = []
    for label, found in by_method.items():
        cells = [f'<td class="name" data-value="">{_e(label)}<span class="badge">reported</span></td>']
        for p in pretrains:
            stat = found.get(p, {}).get("metrics", {}).get("mRI")
            if stat is None:
                cells.append('<td data-value="-1e9">—</td>')
            else:
                cells.append(f'<td data-value="{stat["mean"]}">{stat["mean"]:+.1f}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f'<p class="note">Source: {_e(line)}.</p><ul class="note">'
                    + "".join(f"<li>{_e(note)}</li>" for note in sentences) + "</ul>"
                    for line, sentences in reported_sources(reported))
    return (f'<p class="note">mRI (percentage points) per pretrain, as reported.</p><div class="wide">'
            f'<table class="sortable reported"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{notes}')


def _figure(folder: Path, stem: str, caption: str) -> str:
    data = base64.b64encode((folder / f"{stem}.png").read_bytes()).decode("ascii")
    return (f'<figure id="fig-{_e(stem)}"><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def render_page(suite: str, measured: dict[str, list[dict]], reported: dict[str, list[dict]],
                figures: list[tuple[str, str]], plot_folder: Path) -> str:
    """The page; ``measured`` and ``reported`` map each pretrain to its entries, as for the Markdown."""
    parts = [f"<h1>{_e(suite)} leaderboard</h1>",
             '<p class="note">Accuracies in %, differences in percentage points; <code>mean [95% CI]</code> over '
             "seeds (percentile bootstrap). mRI: mean robustness improvement over downstream datasets; ID: "
             "accuracy on the trained dataset; mean OOD: accuracy on the other downstream datasets; forgetting: "
             "drop on the pretraining-domain set. Generated by <code>ribench leaderboard build</code>.</p>",
             '<p id="status" class="note">Sorted best mRI first (enable JavaScript to sort by other columns).</p>']
    for pretrain, group in measured.items():
        pre = group[0]["pretrained"]
        reasons = superseded_reasons(group)
        parts += [f"<h2>{_e(pretrain)} <small>(measured)</small></h2>", _measured_table(pretrain, group),
                  *(f'<p class="note">Rows marked (superseded): {_e(reason)}</p>' for reason in reasons),
                  f'<p class="note">Pretrained model: ID {pre["ID"]:.1f}, mean OOD {pre["OOD"]:.1f}.</p>',
                  _provenance(group)]
    if figures:
        parts.append("<h2>Plots</h2>")
        parts += [_figure(plot_folder, stem, caption) for stem, caption in figures]
    if reported:
        parts += ["<h2>Reported in papers <small>(not measured by ribench; not comparable cell for cell)</small>"
                  "</h2>", _reported_table(reported)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(suite)} "
            f"leaderboard</title><style>\n{_asset('page.css')}</style></head>\n<body>\n" + "\n".join(parts)
            + f"\n<script>\n{_asset('page.js')}</script>\n</body></html>\n")
