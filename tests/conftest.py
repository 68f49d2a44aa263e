import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# Triton decides at a kernel's definition whether it interprets: set before ribench imports, so the
# kernel tests run ribench.kernels on CPU tensors (auto still chooses torch on CPU).
os.environ.setdefault("TRITON_INTERPRET", "1")
try:    # triton finds its backends through entry points when first imported: before any test patches them
    import triton  # noqa: E402,F401
except ImportError:
    pass

# Registers suite 'rib-tiny' once; tests that pass `--include tests/tiny_suite.py`
# then reuse this module instead of registering the suite a second time.
import tiny_suite  # noqa: E402,F401


@pytest.fixture(autouse=True, scope="session")
def _threads_and_cache(tmp_path_factory):
    """Deliberate thread count; a private cache unless the caller shares one."""
    import torch

    torch.set_num_threads(int(os.environ.get("RIBENCH_TEST_THREADS", "2")))
    os.environ.setdefault("RIBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield


@pytest.fixture(scope="session")
def tiny_suite():
    return sys.modules["tiny_suite"].build()


# The tiny suite's two pretrains, loaded once per test module (tests copy before training).
@pytest.fixture(scope="module")
def clip(tiny_suite):
    from ribench.run.cell import load_pretrained
    from ribench.run.spec import resolve

    return load_pretrained(resolve("ft", "rib-tiny", "mini-clip", datasets=["sketch"]))


@pytest.fixture(scope="module")
def sup(tiny_suite):
    from ribench.run.cell import load_pretrained
    from ribench.run.spec import resolve

    return load_pretrained(resolve("ft", "rib-tiny", "mini-sup", datasets=["sketch"]))
