"""Training on several processes (torchrun) that equals training on one.

    torchrun --standalone --nproc_per_node=4 -m diffedu train --recipe ldm-cifar10

torchrun starts one process per GPU (or per CPU worker) with RANK, LOCAL_RANK and WORLD_SIZE in its environment;
`setup` joins them into a process group (NCCL between GPUs, gloo between CPUs), and the Trainer calls its model
through DistributedDataParallel (`wrap`), which averages the gradients over the processes during the backward pass.

What makes N processes train exactly as one does: the recipe's batch is the *global* batch, and each process
takes its rows of it (`rows`), cut from the same seeded permutation. Every random draw made per image (the
diffusion step, the noise, the flips, the dropped labels, dropout's masks) is drawn for the whole global batch,
from the same seed on every process, and cut to this process's rows (`randn_like`, `rand_like`, `rand`,
`randint`). Every decision (when to stop, the learning rate of a timed run) is taken alike on every process,
from process 0's clock (`agree`); only process 0 prints and writes checkpoints.

Without torchrun nothing here does anything: WORLD is 1 and each helper is the torch call it stands for.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .errors import DiffeduError

RANK, WORLD = 0, 1  # this process's index, and how many processes train together (set by `setup`)
_stop_asked = False  # Ctrl-C or torchrun's SIGTERM arrived: every process stops together at the next log
T = TypeVar("T")
# The signals that end a run, each saved first: Ctrl-C, a scheduler's or `timeout`'s stop, a closed terminal
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def setup(device: torch.device) -> torch.device:
    """Join the processes torchrun started (once; without torchrun, nothing) and return this process's device:
    on CUDA, the GPU of its LOCAL_RANK."""
    global RANK, WORLD
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # (a script of one's own may have joined them already)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # A signal stops one process wherever it is, perhaps halfway through a collective the others wait in;
        # so it only asks, and all of them stop at the same step (Trainer.fit), where they can save. (torchrun
        # kills the processes that have not stopped 30 s after it passed on the signal.)
        for signum in STOP_SIGNALS:
            signal.signal(signum, _ask_to_stop)
    RANK, WORLD = dist.get_rank(), dist.get_world_size()
    return device


def _ask_to_stop(signum, frame) -> None:
    global _stop_asked
    _stop_asked = True


def is_main() -> bool:
    """Whether this is the process that prints and writes (process 0; the only one without torchrun)."""
    return RANK == 0 and launched_main()


def launched_main() -> bool:
    """Whether torchrun started this process as process 0 (or did not start it): known before `setup`."""
    return os.environ.get("RANK", "0") == "0"


def print_main(*args, **kwargs) -> None:
    """print, on process 0 only: one line per event, not one per process."""
    if is_main():
        print(*args, **kwargs)


def rows(batch_size: int) -> slice:
    """This process's rows of a global batch of `batch_size` (all of them on one process)."""
    check_split(batch_size, WORLD)
    return _mine(batch_size // WORLD)


def check_split(batch_size: int, processes: int) -> None:
    """Refuse a global batch that does not split evenly over the processes."""
    if batch_size % processes:
        raise DiffeduError(
            f"a batch of {batch_size} does not split evenly over {processes} processes: "
            f"choose a batch size divisible by {processes} (--batch-size)"
        )


def _mine(n: int) -> slice:
    """This process's n rows of what was drawn for all WORLD * n."""
    return slice(RANK * n, (RANK + 1) * n)


# Per-image randomness: drawn for the global batch, from the same generator state on every process, then cut.
def randn_like(x: torch.Tensor, **kwargs) -> torch.Tensor:
    """torch.randn_like(x) for this process's rows x of the global batch."""
    return _like(torch.randn_like, x, **kwargs)


def rand_like(x: torch.Tensor, **kwargs) -> torch.Tensor:
    """torch.rand_like(x) for this process's rows x of the global batch."""
    return _like(torch.rand_like, x, **kwargs)


def _like(draw: Callable[..., torch.Tensor], x: torch.Tensor, **kwargs) -> torch.Tensor:
    """draw(x) on one process; on several, drawn like all the processes' rows and cut to x's."""
    if WORLD == 1:
        return draw(x, **kwargs)
    return draw(torch.cat([x] * WORLD), **kwargs)[_mine(len(x))]  # cat keeps x's memory layout, which the draw follows


def rand(n: int, *shape: int, **kwargs) -> torch.Tensor:
    """torch.rand(n, *shape) for this process's n images."""
    return torch.rand(n * WORLD, *shape, **kwargs)[_mine(n)] if WORLD > 1 else torch.rand(n, *shape, **kwargs)


def randint(high: int, n: int, **kwargs) -> torch.Tensor:
    """torch.randint(0, high, (n,)) for this process's n images."""
    return (
        torch.randint(0, high, (n * WORLD,), **kwargs)[_mine(n)]
        if WORLD > 1
        else torch.randint(0, high, (n,), **kwargs)
    )


# Collectives: each is the identity on one process.
def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """The module itself, or on several processes DDP's wrapper of it: calling it (forward, then backward)
    averages the gradients of its weights over the processes."""
    if WORLD == 1:
        return module
    wrapped = nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)
    if hasattr(module, "config"):
        wrapped.config = module.config  # the losses read it (a model's number of classes)
    return wrapped


def mean(x: torch.Tensor) -> torch.Tensor:
    """x averaged over the processes (a loss, a gradient: the global batch's, when each is its rows' mean)."""
    if WORLD == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / WORLD


def agree(seconds: float, late: bool) -> tuple[float, bool, bool]:
    """What every process acts on at a log: process 0's training seconds and whether its deadline has passed,
    and whether any process was asked to stop (on one process Ctrl-C raises KeyboardInterrupt instead)."""
    if WORLD == 1:
        return seconds, late, False
    mine = [seconds, float(late)] if is_main() else [0.0, 0.0]
    agreed = torch.tensor(mine + [float(_stop_asked)], dtype=torch.float64, device=_device())
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)  # process 0's values, which are >= 0, and anyone's stop
    seconds, late, stop = agreed.tolist()
    return seconds, bool(late), bool(stop)


def barrier() -> None:
    """Wait until every process is here (after process 0 has written a checkpoint the others may read)."""
    if WORLD > 1:
        dist.barrier()


def main_first(compute: Callable[[], T]) -> T:
    """compute() on process 0, then on the others: for work that is cached on disk (the latents), done once."""
    if not is_main():
        barrier()
    value = compute()
    if is_main():
        barrier()
    return value


def _device() -> torch.device:
    """Where the process group's tensors live: NCCL's on this process's GPU, gloo's on the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
