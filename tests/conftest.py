import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def cifar_root() -> Path:
    """The CIFAR-10 folder named by DIFFEDU_DATA (CI points it at the shared sample)."""
    root = os.environ.get("DIFFEDU_DATA")
    if not root or not Path(root).exists():
        pytest.skip("DIFFEDU_DATA is not set to a CIFAR-10 folder (CI sets it to the CIFAR-10 sample beside the clone)")
    return Path(root)


def write_batch(folder: Path, name: str, n: int, seed: int = 0, **replace) -> dict:
    """A CIFAR-10 batch file of n random images in the original layout (entries overridden by `replace`)."""
    rng = np.random.default_rng(seed)
    batch = {
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "labels": rng.integers(0, 10, n).tolist(),
        "batch_label": name,
        "filenames": [f"{i}.png" for i in range(n)],
        **replace,
    }
    (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return batch


@pytest.fixture
def tiny_cifar(tmp_path) -> Path:
    """A small CIFAR-10 folder (40 training images in two files, 8 test images), for tests that train."""
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    write_batch(folder, "data_batch_1", 24, seed=1)
    write_batch(folder, "data_batch_2", 16, seed=2)
    write_batch(folder, "test_batch", 8, seed=3)
    return folder.parent
