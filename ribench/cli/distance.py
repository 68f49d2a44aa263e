"""`ribench distance`: the OTDD matrix of a suite in a pretrain's feature space, printed in
one format, with its relation to stored fine-tuning results; files only under --out."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from ribench.api import results
from ribench.catalog import PRETRAINS, SUITES
from ribench.cli.options import add_data_root
from ribench.distance.matrix import FORMATS, DistanceMatrix, record_json, write_record
from ribench.distance.options import CONVENTIONS, SOLVERS, DistanceOptions
from ribench.distance.plots import save_heatmap, save_relation_plot
from ribench.distance.relation import forgetting_relation, rho_text, spearman
from ribench.distance.suite import suite_distances
from ribench.errors import ConfigError, RibenchError
from ribench.registry import include
from ribench.store import default_store_path
from ribench.tables import aligned

__all__ = ["add_arguments", "run"]


def add_arguments(p) -> None:
    defaults = DistanceOptions()
    p.add_argument("--suite", default="rib-mini", help="suite name (default: rib-mini)")
    p.add_argument("--pretrain", default="mini-clip", help="pretrain preset (default: mini-clip)")
    p.add_argument("--solver", default=defaults.solver, choices=SOLVERS,
                   help="fast (default: auction, certified within --tolerance of the exact value, on "
                        "equal-size samples), exact (network simplex) or sinkhorn (debiased Sinkhorn divergence)")
    p.add_argument("--tolerance", type=float, default=defaults.tolerance,
                   help=f"fast solver: bound on each value's relative error (default: {defaults.tolerance:g})")
    p.add_argument("--samples", type=int, default=defaults.samples,
                   help=f"points per dataset, stratified by class; 0 for all (default: {defaults.samples})")
    p.add_argument("--epsilon", type=float, default=defaults.epsilon,
                   help=f"Sinkhorn ε as a fraction of the median ground cost (default: {defaults.epsilon})")
    p.add_argument("--lambda-x", type=float, default=defaults.lambda_x, help="weight of the feature cost")
    p.add_argument("--lambda-y", type=float, default=defaults.lambda_y, help="weight of the label cost")
    p.add_argument("--seed", type=int, default=defaults.seed, help="subsampling seed (default: 0)")
    p.add_argument("--convention", default=defaults.convention, choices=CONVENTIONS,
                   help="otdd2: full cost (default); half: microsoft/otdd's half-cost number")
    p.add_argument("--max-iterations", type=int, default=None, help="solver iteration cap")
    p.add_argument("--format", default="table", choices=list(FORMATS))
    p.add_argument("--out", default=None, help="folder (created if missing) to write the heatmap, the JSON record "
                                               "and, with stored results, the distance-vs-forgetting plot; "
                                               "without --out nothing is written, only printed")
    p.add_argument("--store", default=None, help="results database with ft results (default: $RIBENCH_STORE or "
                                                 "~/.local/share/ribench/results.sqlite, if it exists)")
    p.add_argument("--method", default="ft", help="stored method to relate distances to (default: ft)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_data_root(p)
    p.add_argument("--weights", default=None, help="a local weights file for the pretrain (real pretrains)")
    p.add_argument("--include", action="append", default=[], metavar="FILE.py",
                   help="import a Python file that registers extra suites or pretrains")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")



def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args) -> int:
    """Print the matrix (with ft results, Spearman ρ too); under --out, write the heatmap, JSON and scatter."""
    if args.threads:
        torch.set_num_threads(args.threads)
    for path in args.include:
        include(path)
    options = DistanceOptions(args.solver, args.samples or None, args.epsilon, args.lambda_x, args.lambda_y,
                              args.seed, args.convention, args.max_iterations, args.tolerance).validate()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device} asked for, but no CUDA device is available here")
    store_path = Path(args.store).expanduser() if args.store else default_store_path()
    if args.store and not store_path.is_file():
        raise ConfigError(f"no results store at {store_path}")
    out = _output_folder(args.out)
    suite = SUITES.get(args.suite)()
    suite.attach_data(args.data_root)
    pretrained = PRETRAINS.get(args.pretrain).load(suite, args.weights)
    pretrained.model.to(args.device).eval()
    suite.adopt_eval_transform(pretrained)
    result = suite_distances(suite, pretrained, options, args.device, suite.protocol.eval_batch_size)

    stem = f"distance-{suite.name}-{pretrained.name}-{options.solver}"
    document = result.as_dict()
    relation_text = None
    if store_path.is_file():
        relation_text, document["relation"] = _relation(result, suite, pretrained, store_path, args.method, out, stem)
    elif args.store is None:
        _stderr(f"note: no results store at {store_path}; pass --store to relate distances to forgetting")
    written = []
    if out is not None:
        written = [save_heatmap(result, out / f"{stem}.png"), write_record(document, out / f"{stem}.json")]

    if args.format == "json":
        print(record_json(document))
    else:
        print(result.format(args.format), end="")
        if relation_text:
            print("\n" + relation_text, file=sys.stdout if args.format != "csv" else sys.stderr)
    timings = f"features {result.seconds['features']:.1f} s, distances {result.seconds['distances']:.1f} s"
    _stderr(timings + (f"; wrote {written[0]} and {written[1]}" if written else ""))
    return 0


def _output_folder(out: str | None) -> Path | None:
    """Created before any work, so that a bad --out fails in a second, not after the distances."""
    if out is None:
        return None
    folder = Path(out).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create output folder {folder}: {error.strerror}") from None
    return folder


def _relation(result: DistanceMatrix, suite, pretrained, store_path: Path, method: str, out: Path | None,
              stem: str):
    """(text to print, JSON record) relating distance-to-pretraining-data to forgetting and RI."""
    try:
        summary = results(suite.name, pretrained.name, methods=[method], store=store_path)
    except RibenchError as error:
        _stderr(f"note: {error}; no distance/forgetting plot")
        return None, None
    label = method if method in summary.labels else summary.labels[0]
    relation = forgetting_relation(result, summary, label)
    correlations = {metric: spearman(relation["distance"], relation[metric]) for metric in ("forgetting", "RI")}
    plot = None
    if out is not None:
        plot = save_relation_plot(relation, correlations, label, suite.pretrain_eval,
                                  out / f"{stem}-vs-{label.replace('/', '_')}.png")
    seeds = sorted(set(relation["n_seeds"]))
    lines = [f"Distance to {suite.pretrain_eval} vs {label} ({'/'.join(map(str, seeds))} seed(s), store {store_path})",
             aligned([["dataset", "OTDD²", "forgetting", "RI"]] +
                     [[r.dataset, f"{r.distance:.4g}", f"{r.forgetting * 100:+.1f}", f"{r.RI * 100:+.1f}"]
                      for r in relation.itertuples()], rule=False),
             f"Spearman ρ(distance, forgetting) = {rho_text(correlations['forgetting'])}, "
             f"ρ(distance, RI) = {rho_text(correlations['RI'])} over {len(relation)} downstream datasets"
             + (f"; plot: {plot}" if plot else "")]
    record = {"label": label, "store": str(store_path), "units": "fraction",
              "per_dataset": json.loads(relation.to_json(orient="records")),
              "spearman": {k: None if math.isnan(v) else v for k, v in correlations.items()}}
    return "\n".join(lines), record
