"""Options several subcommands share, declared once."""

from __future__ import annotations

import argparse

from ribench.engine.settings import split_top_level
from ribench.errors import ConfigError
from ribench.kernels import KERNEL_CHOICES
from ribench.run.executor import make_executor

STORE_HELP = "results database (default: $RIBENCH_STORE or ~/.local/share/ribench/results.sqlite)"


def csv_list(value: str) -> list[str]:
    """Comma-separated names; an option given with no name at all (',') is an error, not 'all'."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {value!r}")
    return names


def method_list(value: str) -> list[str]:
    """Comma-separated method specs; a comma inside [...] belongs to the spec ('saft[lr=1e-4,optimizer=adamw]')."""
    return split_top_level(value)


def seed_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers separated by commas, got '{value}'") from None


def thread_count(value: str) -> int:
    """--threads: a whole number of CPU threads, at least 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"--threads must be a whole number of at least 1, got '{value}'")
    return number


def add_retry_failed(parser) -> None:
    parser.add_argument("--retry-failed", action="store_true",
                        help="run again the cells stored as failed (diverged); finished cells are never rerun")


def add_suite_options(parser) -> None:
    """--suite, --pretrain, --store, --data-root: which results or data a command works on."""
    parser.add_argument("--suite", default="rib-mini", help="suite name (default: rib-mini)")
    parser.add_argument("--pretrain", default="mini-clip", help="pretrain preset (default: mini-clip)")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    add_data_root(parser)


def add_data_root(parser) -> None:
    parser.add_argument("--data-root", default=None, help="folder holding a real suite's datasets, e.g. "
                                                          "imagenet-rib (default: $RIBENCH_DATA_ROOT)")


def add_include(parser, what: str = "methods") -> None:
    parser.add_argument("--include", action="append", default=[], metavar="FILE.py",
                        help=f"import a Python file that registers extra {what}")


def add_executor_options(parser) -> None:
    """Where cells run: this process, or Ray tasks on a cluster."""
    parser.add_argument("--executor", default="local", choices=["local", "ray"],
                        help="local: cells one after another in this process (default); ray: one Ray task per "
                             "cell (pip install 'ribench[ray]')")
    parser.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                        help="the Ray cluster to join (default: start a local one for this run)")
    parser.add_argument("--cpus-per-cell", type=float, default=1,
                        help="Ray: CPUs each cell reserves, also its torch threads (default: 1)")
    parser.add_argument("--gpus-per-cell", type=float, default=None,
                        help="Ray: GPUs each cell reserves (default: 1 with --device cuda, else 0)")
    parser.add_argument("--kernels", default="auto", choices=KERNEL_CHOICES,
                        help="the methods' extra work (per-sample gradient statistics): auto (Triton on CUDA "
                             "when installed, else torch; the default), torch, or triton")
    parser.add_argument("--compile", action="store_true",
                        help="run each cell's model through torch.compile (model.compile()): faster steps on a "
                             "GPU after a compile of a minute or so; recorded in provenance, cells stay the same")


def make_executor_from(args, log):
    """The executor the options ask for."""
    if args.executor == "local":
        return make_executor("local", log=log)
    if args.cpus_per_cell <= 0 or (args.gpus_per_cell is not None and args.gpus_per_cell < 0):
        raise ConfigError("--cpus-per-cell must be above 0 and --gpus-per-cell not below 0")
    return make_executor("ray", address=args.ray_address, cpus_per_cell=args.cpus_per_cell,
                         gpus_per_cell=args.gpus_per_cell, device=args.device, log=log)


def add_protocol_option(parser) -> None:
    parser.add_argument("--protocol", default=None, choices=["reference", "tuned"],
                        help="tuned (the default): each method's paper recipe at the value 'ribench tune' chose "
                             "on held-out train data; reference: the suite's protocol, one lr for all "
                             "(ImageNet-RIB's published one)")
