import os
from pathlib import Path

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
