"""Decoding image files for batches: threads or worker processes, one or more batches ahead.

Whatever decodes them, the batches come in the order asked for with the same bytes, a file that
cannot be decoded stops with its path, and a generator dropped midway stops its pool.
"""

import numpy as np
import pytest
import torch

from ribench.data import images as images_module
from ribench.data.images import Decoding, ImageFiles, ImageGeometry, decoding_for
from ribench.data.splits import TrainSplit, to_device
from ribench.errors import ConfigError, DataError

GEOMETRY = ImageGeometry(24, 0.9, "bicubic")
KINDS = ("threads", "processes")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Seven small pictures of different sizes, JPEG and PNG, in a temporary folder."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(7):
        size = (40 + 7 * k, 30 + 5 * k)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"picture{k}.{'png' if k % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return ImageFiles(paths, GEOMETRY)


@pytest.fixture
def pools(monkeypatch):
    """Every pool a Decoding starts during the test, to look at after its generator is gone."""
    started = []
    original = Decoding.pool

    def recording(self):
        started.append(original(self))
        return started[-1]

    monkeypatch.setattr(Decoding, "pool", recording)
    return started


def _all_batches(files, order, decoding, batch_size=3):
    return [(idx.copy(), batch) for idx, batch in files.prefetched(order, batch_size, decoding)]


def test_threads_and_processes_give_the_same_batches_in_order_at_any_depth(files):
    order = np.random.default_rng(1).permutation(len(files))
    expected = [files[int(i)] for i in order]                 # one file at a time, no pool
    for kind in KINDS:
        for ahead in (1, 3, 10):
            got = _all_batches(files, order, Decoding(kind, workers=2, ahead=ahead))
            assert [len(idx) for idx, _ in got] == [3, 3, 1]
            assert np.array_equal(np.concatenate([idx for idx, _ in got]), order)
            decoded = np.concatenate([batch for _, batch in got])
            assert decoded.dtype == np.uint8 and decoded.shape == (7, 24, 24, 3)
            assert all(np.array_equal(a, b) for a, b in zip(decoded, expected)), (kind, ahead)


def test_a_split_decodes_the_same_in_processes(files, monkeypatch):
    split = TrainSplit("pictures", files, np.arange(len(files)) % 2, np.array([0, 1]))
    order = np.array([6, 0, 3, 1, 5, 2, 4])
    preprocess = lambda x: x.float() / 255  # noqa: E731
    monkeypatch.setenv("RIBENCH_DECODE", "threads")
    threads = list(split.model_inputs(4, preprocess, "cpu", order))
    monkeypatch.setenv("RIBENCH_DECODE", "processes")
    monkeypatch.setenv("RIBENCH_PREFETCH", "2")
    processes = list(split.model_inputs(4, preprocess, "cpu", order))
    for (x1, y1, i1), (x2, y2, i2) in zip(threads, processes, strict=True):
        assert torch.equal(x1, x2) and np.array_equal(y1, y2) and np.array_equal(i1, i2)


@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupt_file_stops_with_its_path(files, tmp_path, kind):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    paths = list(files.paths[:4]) + [str(broken)] + list(files.paths[4:])
    with pytest.raises(DataError, match=f"cannot read image {broken}") as raised:
        _all_batches(ImageFiles(paths, GEOMETRY), np.arange(len(paths)), Decoding(kind, 2, 2))
    assert len(str(raised.value).splitlines()) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_generator_dropped_midway_stops_its_pool(files, pools, kind):
    many = ImageFiles(list(files.paths) * 6, GEOMETRY)
    batches = many.prefetched(np.arange(len(many)), 2, Decoding(kind, workers=2, ahead=3))
    next(batches)
    workers = list(pools[0]._processes.values()) if kind == "processes" else []
    del batches                                           # dropped, not exhausted: CPython closes it now
    with pytest.raises(RuntimeError, match="shutdown"):
        pools[0].submit(print)
    assert not any(worker.is_alive() for worker in workers)


def test_a_split_closes_its_pool_when_its_batches_are_dropped(files, pools):
    split = TrainSplit("pictures", files, np.zeros(len(files), np.int64), np.array([0]))
    inputs = split.model_inputs(2, lambda x: x, "cpu")
    next(inputs)
    inputs.close()
    with pytest.raises(RuntimeError, match="shutdown"):
        pools[0].submit(print)


def test_decoding_defaults_follow_the_device_and_the_environment(monkeypatch):
    for name in ("RIBENCH_DECODE", "RIBENCH_PREFETCH", "RIBENCH_DECODE_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert decoding_for("cpu") == Decoding("threads", 3, 1)          # as before: one batch ahead in threads
    assert decoding_for("cuda:1") == Decoding("processes", 3, 4)
    assert Decoding("processes", 3).task_size(64) == 22 and Decoding("threads", 3).task_size(64) == 1
    monkeypatch.setenv("RIBENCH_DECODE", "threads")
    monkeypatch.setenv("RIBENCH_PREFETCH", "2")
    monkeypatch.setenv("RIBENCH_DECODE_THREADS", "5")
    assert decoding_for("cuda") == Decoding("threads", 5, 2)
    monkeypatch.setenv("RIBENCH_DECODE", "forks")
    with pytest.raises(ConfigError, match="RIBENCH_DECODE must be threads or processes, got 'forks'"):
        decoding_for("cpu")
    monkeypatch.setenv("RIBENCH_DECODE", "processes")
    monkeypatch.setenv("RIBENCH_PREFETCH", "0")
    with pytest.raises(ConfigError, match="RIBENCH_PREFETCH must be a whole number of at least 1, got '0'"):
        decoding_for("cpu")


def test_a_dead_worker_process_is_one_line(monkeypatch):
    class Died:
        def result(self):
            raise images_module.BrokenExecutor("a child process terminated abruptly")

    with pytest.raises(DataError, match="worker process died.*RIBENCH_DECODE=threads"):
        images_module._gathered([Died()])


def test_images_reach_the_cpu_unchanged():
    images = np.arange(2 * 3 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 3)
    tensor = to_device(images, "cpu")
    assert tensor.dtype == torch.uint8 and np.array_equal(tensor.numpy(), images)
