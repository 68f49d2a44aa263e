"""`ribench leaderboard build`: a suite's entries -> README.md, plots/ (PNG + SVG), index.html.

Measured and reported entries are shown in separate tables and never share a
figure. Everything written here is derived from the entry files, so it can be
deleted and rebuilt; rebuilding unchanged entries gives unchanged files.
Distances for the forgetting-vs-OTDD figure are optional (see
``ribench.leaderboard.distances`` for the files read).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ribench.errors import RibenchError
from ribench.leaderboard import plots
from ribench.leaderboard.distances import load_distances
from ribench.leaderboard.html import render_page
from ribench.leaderboard.markdown import render_markdown
from ribench.leaderboard.rows import trains_nothing
from ribench.leaderboard.schema import FOLDER_NAME
from ribench.leaderboard.tree import inside

__all__ = ["build_suite"]


OUTPUTS = ("README.md", "index.html", "plots")


def build_suite(root: Path, suite: str, entries: list[dict], extra_distances=(), log=None) -> list[Path]:
    """Write README.md, plots/ and index.html for one suite; returns the files written.

    Everything is made in a temporary folder beside them and moved into place only once all of it
    succeeded, so a failure leaves the previous pages and plots as they were; nothing is written or
    deleted outside ``root/<suite>``."""
    folder = root / suite
    if not FOLDER_NAME.match(suite) or folder.is_symlink() or not folder.is_dir() or not inside(folder, root):
        raise RibenchError(f"{folder}: not a suite folder inside the leaderboard folder {root}")
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=folder))
    try:
        try:
            _render(building, folder, root, suite, entries, extra_distances, log)
        except RibenchError:
            raise
        except Exception as error:       # a plot or page that cannot be made: one line, nothing changed
            text = " ".join(str(error).split()) or "no message"
            raise RibenchError(f"building the {suite} leaderboard failed ({type(error).__name__}: {text}); "
                               f"nothing was changed under {folder}") from None
        _swap_in(building, folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    written = sorted((folder / "plots").iterdir()) if (folder / "plots").is_dir() else []
    return [*written, folder / "README.md", folder / "index.html"]


def _swap_in(building: Path, folder: Path) -> None:
    """Move the new outputs over the old ones: each a rename; figures of removed entries go with the old plots/."""
    old_plots = folder / "plots"
    retired = building / "plots-old"
    if old_plots.is_symlink():
        old_plots.unlink()                  # the link goes, never what it points to
    elif old_plots.is_dir():
        os.replace(old_plots, retired)
    if (building / "plots").is_dir():
        os.replace(building / "plots", old_plots)
    for name in ("README.md", "index.html"):
        os.replace(building / name, folder / name)


def _render(out: Path, folder: Path, root: Path, suite: str, entries: list[dict], extra_distances, log) -> None:
    """Every output of one suite, written under `out` (plots/, README.md, index.html)."""
    plot_folder = out / "plots"
    plot_folder.mkdir()
    measured_entries = [e for e in entries if e["kind"] == "measured"]
    reported_entries = [e for e in entries if e["kind"] == "reported"]
    views = _views(measured_entries)
    measured = _group(measured_entries, several_views=len(views) > 1)
    reported = _group(reported_entries)
    written: list[Path] = []
    figures: list[tuple[str, str]] = []
    skipped: dict[str, list[str]] = {}
    distances: dict[str, dict] = {}
    if measured_entries:
        palette = plots.colours(sorted({e["method"]["label"] for e in measured_entries}))
        distance_files = sorted((folder / "distances").glob("*.json")) + sorted((folder / "distances").glob("*.csv"))
        distances = load_distances([*distance_files, *extra_distances], suite, measured_entries, log)
        for view, view_entries in views:
            written += _plot_view(view_entries, view, plot_folder, palette, distances, figures, skipped)
        if not distances and log:
            log(f"note: no distances for {suite} (put the JSON of `ribench distance --out DIR` in {folder / 'distances'}); "
                "forgetting-vs-OTDD plot skipped")
    if reported_entries:
        written += plots.reported_mri(reported_entries, plot_folder)
        figures.append(("reported-mri", f"mRI as reported by {reported_entries[0]['source']['title']} "
                                        "(not measured by ribench)"))
    pretrains = {e["pretrain"] for e in measured_entries}
    used = {p: d for p, d in distances.items() if p in pretrains}
    (out / "README.md").write_text(render_markdown(suite, measured, reported, figures, skipped, root, used),
                                   encoding="utf-8")
    (out / "index.html").write_text(render_page(suite, measured, reported, figures, plot_folder), encoding="utf-8")


def _protocol(entry: dict) -> str:
    return (entry.get("protocol") or {}).get("name", "reference")


def _views(entries: list[dict]) -> list[tuple[str, list[dict]]]:
    """[(protocol, its entries)], tuned first: each protocol is its own view, with its own tables and
    figures (a tuned row and a reference row of one method are different measurements). The view is
    named "" when there is only one, so a single-protocol leaderboard keeps its plain figure names."""
    by: dict[str, list[dict]] = {}
    for entry in entries:
        by.setdefault(_protocol(entry), []).append(entry)
    order = sorted(by, key=lambda name: (name != "tuned", name))
    return [(name if len(by) > 1 else "", by[name]) for name in order]


def _plot_view(entries, view: str, plot_folder: Path, palette, distances, figures, skipped) -> list[Path]:
    """One protocol's figures, their (stem, caption) appended to `figures`."""
    suffix = plots.stem_suffix(view)
    where = f" ({view} protocol)" if view else ""
    written = plots.mri_per_method(entries, plot_folder, palette, view=view)
    figures.append(("mri" + suffix, f"mRI per method with 95% bootstrap intervals, one panel per pretrain{where}"))
    heatmaps = plots.ri_heatmaps(entries, plot_folder, view=view)
    written += heatmaps
    for pretrain, group in _group(entries).items():
        if any(p.name == f"ri-heatmap-{pretrain}{suffix}.png" for p in heatmaps):
            figures.append((f"ri-heatmap-{pretrain}{suffix}", f"{pretrain}{where}: accuracy change A_i^(j) − A_pre^(j) "
                                                              "per method, trained-on dataset × evaluated dataset"))
        nothing = [e["method"]["label"] for e in group if trains_nothing(e)]
        if nothing:
            skipped[pretrain] = sorted(set(skipped.get(pretrain, [])) | set(nothing))
    written += plots.id_gain_vs_mri(entries, plot_folder, palette, view=view)
    figures.append(("id-gain-vs-mri" + suffix, "ID gain against mRI with 95% intervals and the Pareto front; a "
                                               f"method whose ID gain is not above 0 did not adapt (hollow){where}"))
    written += plots.id_vs_ood(entries, plot_folder, palette, view=view)
    figures.append(("id-vs-ood" + suffix, "ID accuracy against mean OOD accuracy (95% intervals); the star is the "
                                          f"pretrained model{where}"))
    drawn = plots.forgetting_vs_distance(entries, distances, plot_folder, palette, view=view)
    written += drawn
    if drawn:
        figures.append(("forgetting-vs-otdd" + suffix, "forgetting of the pretraining domain after fine-tuning on "
                                                       f"each downstream dataset against that dataset's OTDD² to it{where}"))
    return written


def _group(entries: list[dict], several_views: bool = False) -> dict[str, list[dict]]:
    """Entries per table: per pretrain, and per protocol when the leaderboard holds several."""
    grouped: dict[str, list[dict]] = {}
    for entry in sorted(entries, key=lambda e: (e["pretrain"], _protocol(e) != "tuned", e["method"]["label"])):
        key = f"{entry['pretrain']} · {_protocol(entry)} protocol" if several_views else entry["pretrain"]
        grouped.setdefault(key, []).append(entry)
    return grouped
