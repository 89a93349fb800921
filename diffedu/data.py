"""CIFAR-10 as one uint8 tensor in memory, and batches made from it on tensors.

The whole training set is 50,000 x 3 x 32 x 32 bytes = 150 MB: it fits in
memory (and on a GPU), so we skip per-image PIL pipelines, which are the
bottleneck on a 2-core machine, and flip and scale whole batches at once.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .env import home
from .errors import DataError

DATA_ENV = "DIFFEDU_DATA"
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
        # no path: notebooks get shared
        return f"ImageSet({len(self)} images {tuple(self.images.shape[1:])}, {len(self.classes)} classes)"


# A CIFAR-10 file holds 10,000 images of 3,072 bytes, 29.3 MiB: no array in a batch file may be larger than this,
# which a pickle cannot otherwise be stopped from asking for (a terabyte takes a few bytes of it).
MAX_ARRAY_BYTES = 32 * 2**20
MAX_FILE_BYTES = 64 * 2**20  # CIFAR-10's own files are 31 MB; 47 MB as Python 3 writes them at protocol 2
MAX_OPCODES = 200_000  # a full batch file is 30,000 pickle steps; a one-byte step can make a list of 64 bytes
MAX_CALLS = 12  # steps that call a function (numpy takes 6 to rebuild an array), each making one array or string
CALLS = {"REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"}
# What a damaged or foreign pickle raises (LookupError: a missing memo entry, or an index into an array; OverflowError:
# a frame longer than memory can be)
_UNREADABLE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, LookupError, OverflowError)


def _check_size(shape, dtype) -> np.dtype:
    """The dtype, having refused an array of Python objects (numpy allocates and fills those before it looks at the
    data) or one larger than MAX_ARRAY_BYTES, before numpy allocates it."""
    dtype, shape = _DType.real(dtype), (shape,) if isinstance(shape, int) else tuple(shape)
    if dtype.hasobject:
        raise pickle.UnpicklingError("it holds an array of Python objects")
    if len(shape) > 32 or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise pickle.UnpicklingError("it holds an array whose shape is not a few whole numbers")
    if any(n > MAX_ARRAY_BYTES for n in shape) or math.prod(shape) * dtype.itemsize > MAX_ARRAY_BYTES:
        raise pickle.UnpicklingError(f"it holds an array larger than any in CIFAR-10 (over {MAX_ARRAY_BYTES:,} bytes)")
    return dtype


class _DType:
    """What a batch file gets for numpy.dtype. numpy pickles a dtype as dtype("u1", False, True), then BUILD with its
    state, and numpy's own dtype.__setstate__ crashes the interpreter on some damaged states (one item short). A plain
    dtype's state says nothing but its byte order: that is all read here; the arrays take the dtype from .dtype."""

    def __init__(self, name, *flags):  # flags: align and copy, which change nothing for a dtype named by a string
        if not (isinstance(name, str) and re.fullmatch(r"[<>=|]?[a-zA-Z]\d{0,2}", name)):  # "u1"; not a structure
            raise pickle.UnpicklingError("only plain numpy dtypes are part of a CIFAR-10 batch file")
        self.dtype = np.dtype(name)

    def __setstate__(self, state) -> None:
        # ([version,] byte order, [subarray,] [names,] fields, item size, alignment[, flags][, metadata]), as numpy
        # versions wrote it: 5 to 9 items, the byte order first or second, the others None or whole numbers when plain
        if not isinstance(state, tuple) or not 5 <= len(state) <= 9:
            raise pickle.UnpicklingError(f"{type(state).__name__} is not a numpy dtype's state")
        order, rest = (state[0], state[1:]) if len(state) == 5 else (state[1], (state[0], *state[2:]))
        if order not in ("<", ">", "=", "|") or not all(x is None or isinstance(x, int) for x in rest):
            raise pickle.UnpicklingError("only plain numpy dtypes are part of a CIFAR-10 batch file")
        self.dtype = self.dtype.newbyteorder(order)

    @staticmethod
    def real(dtype) -> np.dtype:
        """The numpy dtype of a _DType, or of a type code such as the b"b" that _reconstruct is given."""
        if isinstance(dtype, bytes):
            dtype = dtype.decode("latin1")
        return (dtype if isinstance(dtype, _DType) else _DType(dtype)).dtype


class _Array(np.ndarray):
    """What a batch file gets for numpy.ndarray: numpy pickles an array as an empty one that BUILD then fills with
    __setstate__, whose shape is checked here. Calling ndarray(shape) would allocate any size: no batch file does."""

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError("numpy.ndarray(...) is not part of a CIFAR-10 batch file")

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):  # ([version,] shape, dtype, is_fortran, data)
            raise pickle.UnpicklingError(f"{type(state).__name__} is not a numpy array's state")
        *version, shape, dtype, fortran, data = state
        super().__setstate__((*version, shape, _check_size(shape, dtype), fortran, data))


def _reconstruct(cls, shape, dtype) -> _Array:
    """numpy.core.multiarray._reconstruct(ndarray, (0,), b"b"): the empty array that BUILD fills."""
    if cls is not _Array:
        raise pickle.UnpicklingError(f"_reconstruct of a {type(cls).__name__}, not of a numpy array")
    return np.ndarray.__new__(_Array, shape, _check_size(shape, dtype))


def _frombuffer(buffer, dtype, shape, order) -> _Array:
    """numpy.core.numeric._frombuffer, how pickle protocol 5 rebuilds an array from its bytes."""
    dtype = _check_size(shape, dtype)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order).view(_Array)  # BUILD on it is checked too


def _latin1(text, encoding) -> bytes:
    """_codecs.encode(text, "latin1"), how Python 3 writes bytes at pickle protocol 2: as long as the text. Other
    codecs can grow what they are given (hex doubles it: forty in a row make a terabyte)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            "_codecs.encode of anything but text to latin1 is not part of a CIFAR-10 batch file"
        )
    return text.encode("latin1")


class _ArraysOnly(pickle.Unpickler):
    """CIFAR-10 ships as pickles, and unpickling can run arbitrary code. Allow only what a CIFAR batch file needs
    to rebuild numpy arrays, through stand-ins that check each array's size before it is allocated, nothing else."""

    ALLOWED: dict[tuple[str, str], Callable[..., object]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): _Array,
        ("numpy", "dtype"): _DType,
        ("_codecs", "encode"): _latin1,
    }

    def find_class(self, module: str, name: str) -> Callable[..., object]:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR-10 batch file")
        return self.ALLOWED[module, name]


def _unpickle(path: Path):
    """The objects in a batch file, taking at most a few times a CIFAR-10 batch's size in memory, or one of
    _UNREADABLE that says why not."""
    with open(path, "rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise pickle.UnpicklingError(f"it is over {MAX_FILE_BYTES:,} bytes, more than any CIFAR-10 batch file")
    # Pickle allocates bytes of the length the file states before it reads them (a protocol 5 array's buffer is
    # such bytes); pickletools reads only what is there, so this first pass refuses a length longer than the file.
    # It also makes room for every memo entry below the one a PUT names, 8 bytes each, at once.
    calls = 0
    for step, (op, arg, _) in enumerate(pickletools.genops(io.BytesIO(raw))):
        calls += op.name in CALLS
        if (
            step > MAX_OPCODES
            or calls > MAX_CALLS
            or (op.name.endswith("PUT") and isinstance(arg, int) and arg > MAX_OPCODES)  # (a PUT's arg: an int)
        ):
            raise pickle.UnpicklingError("it holds more objects or arrays than a CIFAR-10 batch")
    return _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()


def read_batch(path: Path) -> dict:
    """One file of the original layout, checked: `data` as uint8 (N, 3072) and `labels` as N ints in 0..9."""
    try:
        batch = _unpickle(path)
    except _UNREADABLE as error:
        raise DataError(
            f"{path} could not be read as a CIFAR-10 batch file ({error}): it is damaged, or not one of "
            "CIFAR-10's; delete it and download CIFAR-10 again"
        ) from error
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DataError(f"{path} is not a CIFAR-10 batch file (expected a dict with 'data' and 'labels')")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(
            f"{path}: 'data' must be uint8 of shape (N, 3072), pixel values 0..255 with the 1024 red, "
            f"then green, then blue values of each image in a row; got {what}"
        )
    # Each label looked at on its own before numpy sees the list: a nested, ragged or huge-integer list would make
    # np.asarray fail or build an object array.
    small = (
        isinstance(labels, (list, tuple, np.ndarray))
        and len(labels) == len(data)
        and all(isinstance(y, (int, np.integer)) and not isinstance(y, bool) and 0 <= y <= 9 for y in labels)
    )
    if not small:
        what = type(labels).__name__ + (f" of {len(labels)}" if isinstance(labels, (list, tuple, np.ndarray)) else "")
        raise DataError(
            f"{path}: 'labels' must be a list of {len(data)} whole numbers in 0..9, one per image; got {what}"
        )
    return {**batch, "data": np.asarray(data), "labels": np.asarray(labels, dtype=np.int64)}  # plain arrays


def _files(train: bool) -> list[str]:
    return TRAIN_FILES if train else TEST_FILES


def find_folder(root: str | Path | None = None, train: bool = True) -> Path | None:
    """The `cifar-10-batches-py` folder under root (or root itself) that holds the split's files, or None."""
    root = Path(root or os.environ.get(DATA_ENV) or home()).expanduser()
    for candidate in (root / FOLDER, root):
        if any((candidate / name).is_file() for name in _files(train)):
            return candidate
    return None


def _missing(root: Path, train: bool, why: str = "") -> FileNotFoundError:
    return FileNotFoundError(
        f"CIFAR-10 ({'data_batch_1..5' if train else 'test_batch'}) was not found under {root}{why}.\n"
        "Get it one of two ways:\n"
        f"  1. download it (needs internet, 170 MB): with {DATA_ENV} unset, load_cifar10() has torchvision save it "
        f"to {home()}\n"
        f"  2. point {DATA_ENV} (or the `root` argument) at a folder holding `{FOLDER}/` in the original layout,\n"
        f"     e.g.  export {DATA_ENV}=/path/to/cifar10"
    )


def load_cifar10(root: str | Path | None = None, train: bool = True, download: bool = True) -> ImageSet:
    """CIFAR-10 train (or test) split as an ImageSet.

    Where from, in order: the `root` argument, the DIFFEDU_DATA environment
    variable, then the diffedu home folder (`data/` of this project, where
    torchvision downloads it on first use when `download` is true). Any number
    of rows per file up to CIFAR-10's 10,000 works (MAX_ARRAY_BYTES), so the same
    reader takes a full download or a small sample; a split whose files are
    missing does not stop the other.
    """
    explicit = root or os.environ.get(DATA_ENV)
    folder = find_folder(root, train)
    if folder is None and download and not explicit:
        folder = _download(home(), train)
    if folder is None:
        raise _missing(Path(explicit or home()), train)
    batches = [read_batch(folder / name) for name in _files(train) if (folder / name).is_file()]
    images = torch.from_numpy(np.concatenate([b["data"] for b in batches])).reshape(-1, 3, 32, 32)
    labels = torch.from_numpy(np.concatenate([b["labels"] for b in batches]))
    return ImageSet(images, labels, _class_names(folder), source=str(folder))


def _class_names(folder: Path) -> list[str]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return list(CLASSES)
    try:
        names = list(_unpickle(meta)["label_names"])
    except _UNREADABLE as error:
        raise DataError(
            f"{meta} could not be read for the class names ({error}): delete it to use the built-in ones"
        ) from error
    if len(names) != len(CLASSES):
        raise DataError(
            f"{meta} names {len(names)} classes, CIFAR-10 has {len(CLASSES)}: delete it to use the built-in ones"
        )
    return names


def _download(root: Path, train: bool) -> Path:
    """Fetch the official archive with torchvision (which checks its MD5) into root."""
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as error:  # no network, a proxy, a full disk: say what to do instead
        raise _missing(root, train, f" and downloading it failed ({type(error).__name__}: {error})") from error
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
    return _mirror(x, torch.rand(len(x), generator=generator, device=generator.device if generator else x.device) < 0.5)


def _mirror(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """x with the images where `flips` is True mirrored left-right."""
    return torch.where(flips.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def batches(
    images: torch.Tensor,
    batch_size: int,
    *,
    labels: torch.Tensor | None = None,
    flip: bool = True,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Iterator[torch.Tensor]:
    """Endless shuffled batches on `device`: uint8 images come out scaled to [-1, 1],
    float tensors (latents) as they are; with `labels`, (images, labels) pairs. The set
    moves to the device once; each batch is drawn, indexed, flipped and scaled there, so
    that a GPU never waits for the host (a copy from the host would be a sync per step).
    Under torchrun each process gets its rows of every batch (diffedu.distributed)."""
    if not 1 <= batch_size <= len(images):  # checked now, not at the first next(): a bad size must not hang
        raise DataError(f"batch size must be between 1 and the size of the data set ({len(images)}), got {batch_size}")
    if labels is not None and len(labels) != len(images):
        raise DataError(f"{len(labels)} labels for {len(images)} images: one label per image")
    mine = distributed.rows(batch_size)  # this process's rows of each batch: all of them on one process
    labels = None if labels is None else labels.to(device)
    images = images.to(device)
    return _endless_batches(images, labels, batch_size, mine, flip, torch.Generator(images.device).manual_seed(seed))


def _endless_batches(images, labels, batch_size: int, mine: slice, flip: bool, generator: torch.Generator) -> Iterator:
    while True:
        # every process draws the same order and flips (the same seed), for the whole batch, and keeps its rows
        order = torch.randperm(len(images), generator=generator, device=images.device)
        for start in range(0, len(order) - batch_size + 1, batch_size):  # drop the ragged last batch
            picked = order[start : start + batch_size][mine]
            flips = torch.rand(batch_size, generator=generator, device=generator.device)[mine] < 0.5 if flip else None
            x = images[picked]
            x = to_float(x) if x.dtype == torch.uint8 else x
            x = x if flips is None else _mirror(x, flips)
            yield x if labels is None else (x, labels[picked])
