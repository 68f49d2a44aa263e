"""Images/s of the real suites' decoding (files -> 224 px uint8 batches), in threads and in worker processes.

64 generated JPEGs of 500x375 (ImageNet's typical size and quality 90), decoded the way a split is
read while a model trains (`ImageFiles.prefetched`: resize the short side, centre-crop 224, batches
of 32, two ahead). One round decodes each file 4 times (256 images) and includes its pool's start,
as each epoch and each evaluated split starts one. `extra_info["images_per_s"]` is the figure to set
against a GPU's training images/s; `driver_cpu_ms_per_image` is the CPU the driver (the process that
also drives the GPU) spends per image: the whole decode with threads, the hand-over with processes.

Run: python -m pytest benchmarks/test_decode_speed.py --benchmark-only
(workers 1 and 2 are measured, whatever RIBENCH_BENCH_THREADS says.)
"""

import time

import numpy as np
import pytest

from ribench.data.images import Decoding, ImageFiles, ImageGeometry

FILES, REPEATS, BATCH, AHEAD = 64, 4, 32, 2


def _gpu_benchmark():
    """benchmarks/gpu/bench.py, whose photo-like JPEG generator the GPU run's decoding row uses too."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent / "gpu" / "bench.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    paths = _gpu_benchmark().photo_like_jpegs(tmp_path_factory.mktemp("jpegs"), FILES)
    return ImageFiles(paths, ImageGeometry(224, 0.875, "bicubic"))


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_decode_images_per_second(benchmark, files, kind, workers):
    decoding = Decoding(kind, workers, AHEAD)
    order = np.tile(np.arange(len(files)), REPEATS)

    driver_cpu = []

    def one_pass():
        start = time.process_time()
        decoded = sum(len(idx) for idx, _ in files.prefetched(order, BATCH, decoding))
        driver_cpu.append(time.process_time() - start)
        return decoded

    assert benchmark.pedantic(one_pass, rounds=5, warmup_rounds=1) == len(order)
    if benchmark.disabled:          # --benchmark-disable: the pass ran once, untimed
        return
    benchmark.extra_info.update(kind=kind, workers=workers, images=len(order), batch=BATCH, ahead=AHEAD,
                                images_per_s=round(len(order) / benchmark.stats.stats.median, 1),
                                driver_cpu_ms_per_image=round(1000 * float(np.median(driver_cpu)) / len(order), 2))
