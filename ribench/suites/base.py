"""What a suite is: datasets over one label space, a pretraining-domain set, a protocol."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ribench.data.splits import TestSplit, TrainSplit
from ribench.errors import RibenchError, UnknownNameError
from ribench.engine.protocol import Protocol


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    spirit_of: str                      # the ImageNet-RIB dataset it mirrors
    class_mask: tuple[int, ...]         # indices into the suite's class names
    role: str = "downstream"            # "downstream" or "pretrain-eval"


@dataclass
class Suite:
    name: str
    description: str
    class_names: tuple[str, ...]
    datasets: dict[str, DatasetInfo]
    pretrain_eval: str
    protocol: Protocol
    templates: tuple[str, ...]          # zero-shot prompt templates, "{}" = class name
    manifest_dir: Path | None = None
    selection_datasets: tuple[str, ...] = ()   # where the tuned protocol chooses (default: every downstream)
    # what a run or a report uses when no --protocol is given: each method's recipe at its chosen value
    # (a suite nothing is tuned for, like the tests' rib-tiny, may keep ImageNet-RIB's one-lr reference)
    default_protocol: str = "tuned"
    _cache: dict = field(default_factory=dict, repr=False)

    def protocol_named(self, asked: str | None) -> str:
        """The protocol a run or report asked for, or this suite's default."""
        return asked or self.default_protocol

    @property
    def downstream(self) -> list[str]:
        return [n for n, d in self.datasets.items() if d.role == "downstream"]

    @property
    def evaluated(self) -> list[str]:
        """Every dataset with a test split: downstream ones and the pretraining-domain set."""
        return list(self.datasets)

    def info(self, dataset: str) -> DatasetInfo:
        if dataset not in self.datasets:
            import difflib
            close = difflib.get_close_matches(dataset, list(self.datasets), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UnknownNameError(
                f"suite '{self.name}' has no dataset '{dataset}'{hint} (it has: {', '.join(self.datasets)})")
        return self.datasets[dataset]

    def train_split(self, dataset: str) -> TrainSplit:
        raise NotImplementedError

    def test_split(self, dataset: str) -> TestSplit:
        raise NotImplementedError

    def test_size(self, dataset: str) -> int:
        """Images in a test split: the reports' intervals carry its binomial sampling error."""
        return len(self.test_split(dataset).labels)

    def test_sizes(self) -> dict[str, int]:
        """Sizes that can be known without the data (a real suite without --data-root has none):
        intervals then cover the seeds only, and say so (`test_se` is NaN)."""
        sizes = {}
        for name in self.evaluated:
            try:
                sizes[name] = self.test_size(name)
            except (RibenchError, OSError):
                continue
        return sizes

    def attach_data(self, data_root) -> None:
        """Point a suite that reads image files at its data (--data-root); generated suites take none."""
        if data_root is not None:
            from ribench.errors import ConfigError

            raise ConfigError(f"suite '{self.name}' is generated; --data-root does not apply to it")

    def adopt_eval_transform(self, pretrained) -> None:
        """Suites that decode image files resize and crop them as the pretrained model was evaluated."""

    def manifest_hash(self) -> str:
        """sha256 over the suite's manifests: part of every cell's provenance."""
        h = hashlib.sha256()
        if self.manifest_dir is not None:
            for path in sorted(Path(self.manifest_dir).glob("*.json")):
                h.update(path.name.encode())
                h.update(json.dumps(json.loads(path.read_text()), sort_keys=True).encode())
        return h.hexdigest()
