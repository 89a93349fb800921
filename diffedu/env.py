"""Where diffedu keeps its files and where it computes: the home folder for downloads and caches,
results computed once and kept there, the device and the machine, and seeds.

    DIFFEDU_HOME   the home folder (default: data/ of the course checkout; for a pip-installed
                   package, ~/.cache/diffedu). CIFAR-10 downloads there; caches live in its
                   subfolders latents/, fid/ and bench/, and the models the lessons train in runs/.
    DIFFEDU_DEVICE the device to compute on when none is named: cpu, cuda or mps (default: CUDA when
                   PyTorch sees a GPU, else Apple's MPS, else the CPU)
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import random
import re
import secrets
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import DiffeduError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

HOME_ENV = "DIFFEDU_HOME"
DEVICE_ENV = "DIFFEDU_DEVICE"
DEVICES = ("cpu", "cuda", "mps")
_CHECKOUT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """$DIFFEDU_HOME, else data/ of the course checkout, else (a pip install, as on Colab) ~/.cache/diffedu."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    return _CHECKOUT / "data" if (_CHECKOUT / "pyproject.toml").exists() else Path.home() / ".cache" / "diffedu"


def shown(path: str | Path) -> str:
    """A path as a lesson prints it: from the course checkout, or from ~, never this machine's full path
    (notebooks get shared, and a learner's folders are nobody's business)."""
    path = Path(path)
    for base, name in ((_CHECKOUT, ""), (Path.home(), "~/")):
        if path.is_absolute() and path.is_relative_to(base):
            return name + str(path.relative_to(base))
    return str(path)


def get_device(name: str | torch.device | int | None = None) -> torch.device:
    """The named device (else $DIFFEDU_DEVICE's), checked; with neither, CUDA when PyTorch sees a GPU, else
    Apple's MPS, else the CPU. A whole number N is what it is to torch: the GPU cuda:N."""
    if name is None:  # (not `name or ...`: device 0, the first GPU, would quietly be the default)
        name = os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "mps" if _mps() else "cpu")
    try:
        if isinstance(name, bool) or not isinstance(name, (str, torch.device, int)):
            raise TypeError
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DiffeduError(
            f"unknown device {str(name)!r} (the argument, else ${DEVICE_ENV}): use cpu, cuda (or cuda:N "
            "for the N-th GPU) or mps"
        ) from None
    if device.type not in DEVICES:
        raise DiffeduError(f"diffedu runs on cpu, cuda or mps, not {device.type}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DiffeduError(f"device {str(name)!r} asked for, but torch sees no CUDA GPU on this machine: use cpu")
    if device.type == "mps" and not _mps():
        raise DiffeduError(f"device {str(name)!r} asked for, but torch sees no Apple MPS device here: use cpu")
    return device


def _mps() -> bool:
    return torch.backends.mps.is_available()


def seed_everything(seed: int = 0) -> None:
    """Same seed, same figures: Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---- what a tool may write over -------------------------------------------------


def check_replaceable(path: str | Path, ours: Callable[[Path], bool], force: bool = False) -> str | None:
    """Whether a tool may write `path`: when nothing is there, or what is there is recognisably its own (`ours`,
    e.g. a result file of its own format); anything else only with `force`. Raises a DiffeduError that says so,
    before any work. Returns a note to print when `force` replaces what diffedu did not write, else None.
    A symbolic link is not ours (writing through it would change a file in another folder): the tools write a
    new file and rename it over `path`, which replaces the link itself."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not ours(path)):
        what = f"a link to {os.readlink(path)}" if path.is_symlink() else "a file diffedu did not write"
        if not force:
            raise DiffeduError(f"{path} is {what}: choose another --out, or replace it with --force")
        check_writable(path)
        return f"replaced {path}, {what} (--force)"
    check_writable(path)
    return None


def json_result(*keys: str) -> Callable[[Path], bool]:
    """`ours` for check_replaceable: a JSON object holding a "format" and these keys (a tool's result file)."""

    def ours(path: Path) -> bool:
        try:
            result = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            return False
        return isinstance(result, dict) and {"format", *keys} <= result.keys()

    return ours


LOCK_TEXT = re.compile(r"(\d+ on [^\n]*)?")  # what a lock holds: its holder's process id and machine, or nothing yet
_NOT_OURS = "it is left as it is; choose another --out, or move that file away"


@contextmanager
def held(path: str | Path, what: str = "run"):
    """Hold `path` (a run's output) for this process while the block runs: a second process asking for it is
    refused at once, with the first one's process id. The lock is the operating system's (flock on `path`.lock),
    so a process that crashes or is killed cannot leave it stuck."""
    if fcntl is None:  # (Windows: no flock; runs are not held there)
        yield
        return
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:  # never through a link, and never a file of someone else's (`train --out poetry` and poetry.lock)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as error:
            if lock.is_symlink():
                raise DiffeduError(f"{lock} is a link: {_NOT_OURS}") from None
            raise DiffeduError(f"cannot write {lock} ({error.strerror or error}): choose another place") from None
        if not LOCK_TEXT.fullmatch(os.read(fd, 200).decode(errors="replace")):
            os.close(fd)
            raise DiffeduError(f"{lock} is not a lock of diffedu's: {_NOT_OURS}")
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 100).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DiffeduError(
                f"another {what} (process {holder}) is writing {path} right now: wait for it to end, "
                "or choose another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file while we waited for it: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} on {platform.node()}".encode())
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # (before the lock is let go: no one can lock a file that is being removed)
        os.close(fd)


def check_writable(path: str | Path) -> None:
    """Fail now, not after an hour of work, when a file cannot be written at `path` (its folder is
    made if need be)."""
    path = Path(path)
    check_name(path)
    probe = path.with_name(f"diffedu-{os.getpid()}.probe")  # processes checking at once each probe their own
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise DiffeduError(f"cannot write {path} ({error.strerror or error}): choose another place") from error


def check_name(path: str | Path) -> None:
    """An error that says so when a file's name is longer than its file system allows (usually 255 bytes)."""
    path, longest = Path(path), 255
    folder = next((p for p in path.absolute().parents if p.is_dir()), None)
    if folder is not None and hasattr(os, "pathconf"):
        longest = os.pathconf(folder, "PC_NAME_MAX")
    if len(os.fsencode(path.name)) > longest:
        raise DiffeduError(f"cannot write {path}: its name is longer than this folder allows ({longest}): shorten it")


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
    partial = path.with_name(
        f"{path.name}.{os.getpid()}.partial"
    )  # processes computing it at once each write their own
    save_file({"tensor": value.contiguous()}, str(partial))
    partial.chmod(0o666 & ~_umask())  # as write_whole's files (safetensors writes 0600)
    partial.replace(path)  # appears whole or not at all
    return value


def machine(device: torch.device) -> dict:
    """What `device` is, for a measurement's record: its name, threads, and the versions that ran."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "device": str(device),
        "name": name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def hardware() -> str:
    """What this machine trains on, in words, for a model card."""
    where = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"{os.cpu_count()}-core CPU ({platform.machine()})"
    )
    return f"{where}, PyTorch {torch.__version__.split('+')[0]}"


def rewrite_block(path: Path, start: str, end: str, content: str) -> bool:
    """Replace what stands between the marker lines `start` and `end` in a text file (README.md's generated parts)
    by `content`; whether the file changed."""
    text = path.read_text()
    first, last = text.find(start), text.find(end)
    if first < 0 or last < first:
        raise DiffeduError(f"{path.name} has no {start} ... {end} block: put one back")
    updated = text[: first + len(start)] + "\n" + content + "\n" + text[last:]
    if updated != text:
        path.write_text(updated)
    return updated != text


_NUMBERS = re.compile(r"\[\n\s+(-?[\d.eE+-]+(?:,\n\s+-?[\d.eE+-]+)*)\n\s*\]")  # a list of numbers, one per line


def write_json(result: dict, path: str | Path) -> Path:
    """A measurement's result as indented JSON at `path` (written whole or not at all), its folder made if need be;
    a list of numbers (a row's per-image influences) on one line."""
    text = _NUMBERS.sub(lambda numbers: "[" + re.sub(r",\n\s+", ", ", numbers[1]) + "]", json.dumps(result, indent=2))
    return write_whole(path, lambda partial: partial.write_text(text))


def write_whole(path: str | Path, write: Callable[[Path], object]) -> Path:
    """write(a new file beside `path`), then rename it over `path`: whole or not at all (a full disk never leaves
    half a table of hours of measurement), and a link at `path` is replaced, not written through. Its folder is made
    if need be."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # its own name: two writers at once never share one (the last rename wins, whole); what a killed one left names
    # its file and this process, or only the process where the file's own name is near the longest allowed
    mine = f"{os.getpid()}-{secrets.token_hex(4)}.partial"
    partial = path.with_name(f"{path.name}.{mine}" if len(os.fsencode(path.name)) < 200 else f"diffedu-{mine}")
    try:
        write(partial)
        partial.chmod(0o666 & ~_umask())  # the mode any file of the user's gets (safetensors writes 0600)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())  # on the disk before it takes the old file's place
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    _clear_left(path)
    return path


def _clear_left(path: Path) -> None:
    """Remove what writes of `path` by processes that are gone (killed mid-write) left behind; a live writer's
    temporary file stays."""
    for left in path.parent.glob(f"{glob.escape(path.name)}.*.partial"):
        pid = left.name[len(path.name) + 1 :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            left.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if os.name == "nt":  # (there os.kill would end the process: leave its file)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
