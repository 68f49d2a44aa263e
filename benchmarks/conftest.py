import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _threads():
    """Benchmarks run with a deliberate thread count (default: 2, this project's CI machine)."""
    torch.set_num_threads(int(os.environ.get("RIBENCH_BENCH_THREADS", "2")))
