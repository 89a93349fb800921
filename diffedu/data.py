"""CIFAR-10 as one uint8 tensor in memory, and batches made from it on tensors.

The whole training set is 50,000 x 3 x 32 x 32 bytes = 150 MB: it fits in
memory (and on a GPU), so we skip per-image PIL pipelines, which are the
bottleneck on a 2-core machine, and flip and scale whole batches at once.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

DATA_ENV = "DIFFEDU_DATA"
_CHECKOUT = Path(__file__).resolve().parent.parent
# data/ of the course checkout; for a pip-installed package (Colab), a cache folder in the home directory
DEFAULT_ROOT = _CHECKOUT / "data" if (_CHECKOUT / "pyproject.toml").exists() else Path.home() / ".cache" / "diffedu"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class ImageSet:
    """Images as uint8 (N, 3, 32, 32), labels as int64 (N,), and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"ImageSet({len(self)} images {tuple(self.images.shape[1:])}, {len(self.classes)} classes, from {self.source})"


class _ArraysOnly(pickle.Unpickler):
    """CIFAR-10 ships as pickles, and unpickling can run arbitrary code. Allow
    only what a CIFAR batch file needs to rebuild numpy arrays, nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR-10 batch file")
        return super().find_class(module, name)


def read_batch(path: Path) -> dict:
    """One file of the original layout: a dict with `data` (N x 3072 uint8) and `labels`."""
    with open(path, "rb") as f:
        batch = _ArraysOnly(f, encoding="latin1").load()
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 batch file (expected a dict with 'data' and 'labels')")
    return batch


def find_folder(root: str | Path | None = None) -> Path | None:
    """The `cifar-10-batches-py` folder under root (or root itself), or None."""
    root = Path(root or os.environ.get(DATA_ENV) or DEFAULT_ROOT).expanduser()
    for candidate in (root / FOLDER, root):
        if (candidate / "test_batch").is_file() and (candidate / "data_batch_1").is_file():
            return candidate
    return None


def _missing(root: Path, why: str = "") -> FileNotFoundError:
    return FileNotFoundError(
        f"CIFAR-10 was not found under {root}{why}.\n"
        "Get it one of two ways:\n"
        f"  1. download it (needs internet, 170 MB): with {DATA_ENV} unset, load_cifar10() has torchvision save it to {DEFAULT_ROOT}\n"
        f"  2. point {DATA_ENV} (or the `root` argument) at a folder holding `{FOLDER}/` in the original layout,\n"
        f"     e.g.  export {DATA_ENV}=/path/to/cifar10"
    )


def load_cifar10(root: str | Path | None = None, train: bool = True, download: bool = True) -> ImageSet:
    """CIFAR-10 train (or test) split as an ImageSet.

    Where from, in order: the `root` argument, the DIFFEDU_DATA environment
    variable, then `data/` of this project (downloaded there by torchvision on
    first use when `download` is true). Any number of rows per file works, so
    the same reader takes a full download or a small sample.
    """
    explicit = root or os.environ.get(DATA_ENV)
    folder = find_folder(root)
    if folder is None and download and not explicit:
        folder = _download(DEFAULT_ROOT)
    if folder is None:
        raise _missing(Path(explicit or DEFAULT_ROOT))
    batches = [read_batch(folder / name) for name in (TRAIN_FILES if train else TEST_FILES) if (folder / name).is_file()]
    data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
    images = torch.from_numpy(data).reshape(-1, 3, 32, 32)
    return ImageSet(images, torch.from_numpy(labels), _class_names(folder), source=str(folder))


def _class_names(folder: Path) -> list[str]:
    meta = folder / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as f:
            return list(_ArraysOnly(f, encoding="latin1").load()["label_names"])
    return list(CLASSES)


def _download(root: Path) -> Path:
    """Fetch the official archive with torchvision (which checks its MD5) into root."""
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as error:  # no network, a proxy, a full disk: say what to do instead
        raise _missing(root, f" and downloading it failed ({type(error).__name__}: {error})") from error
    return root / FOLDER


# ---- tensors in, tensors out -------------------------------------------------

def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range the diffusion models work in."""
    return images.float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (values outside are clipped)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2, the whole batch at once."""
    flip = torch.rand(len(x), generator=generator) < 0.5  # drawn on the CPU: cheap, reproducible
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def batches(
    images: torch.Tensor,
    batch_size: int,
    *,
    flip: bool = True,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Iterator[torch.Tensor]:
    """Endless shuffled batches on `device`: uint8 images come out scaled to [-1, 1],
    float tensors (latents) as they are. The set moves to the device once; each
    batch is indexed, flipped and scaled there."""
    if len(images) < batch_size:
        raise ValueError(f"batch_size {batch_size} is larger than the data set ({len(images)} images)")
    images = images.to(device)
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):  # drop the ragged last batch
            x = images[order[start:start + batch_size].to(images.device)]
            x = to_float(x) if x.dtype == torch.uint8 else x
            yield random_hflip(x, generator) if flip else x


# ---- computed once, kept on disk ------------------------------------------------

def fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of the tensors' contents: the key of a cache that must change when they do."""
    h = hashlib.sha1()
    for tensor in tensors:
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_tensor(path: str | Path, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """compute() the first time, then read back from `path` (a .safetensors file of one tensor).
    A damaged file (say, from an interrupted run) is computed again."""
    path = Path(path)
    if path.exists():
        try:
            (value,) = load_file(str(path)).values()
            return value
        except Exception:  # truncated or not safetensors: compute it again, below
            pass
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file({"tensor": value.contiguous()}, str(partial))
    partial.replace(path)  # appears whole or not at all
    return value
