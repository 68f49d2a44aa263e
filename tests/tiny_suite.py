"""A small rib-mini for tests: the real generator and styles, fewer images per class.

Registered as suite 'rib-tiny'; importable through `ribench run --include`.
"""

import numpy as np

from ribench.catalog import SUITES
from ribench.data.splits import TestSplit, TrainSplit
from ribench.engine.protocol import Protocol
from ribench.suites import rib_mini

TRAIN_PER_CLASS, TEST_PER_CLASS = 8, 6


class RibTiny(rib_mini.RibMini):
    def _load(self, dataset, split):
        key = (dataset, split)
        if key not in self._cache:
            per_class = TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS
            images, labels, details = rib_mini.generate(dataset, split, per_class=per_class)
            cls = TrainSplit if split == "train" else TestSplit
            self._cache[key] = cls(dataset, images, labels, np.array(self.info(dataset).class_mask), details)
        return self._cache[key]

    def test_size(self, dataset):
        return TEST_PER_CLASS * len(self.class_names)


def build():
    suite = rib_mini.build()
    tiny = RibTiny(**{k: getattr(suite, k) for k in (
        "description", "class_names", "datasets", "pretrain_eval", "templates", "manifest_dir")},
        name="rib-tiny", default_protocol="reference",     # nothing is tuned for a test suite
        protocol=Protocol(lr=1e-2, warmup_steps=2, epochs=2, batch_size=16, eval_batch_size=200))
    return tiny


SUITES.register("rib-tiny", build, description="rib-mini with 8 train / 6 test images per class (tests)")
