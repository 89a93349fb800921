"""The training loop: AdamW, an EMA of the weights, gradient clipping, bf16 on
CUDA, a progress bar with the loss, and checkpoints that resume exactly.

It takes any `loss_fn(model, batch) -> scalar`, so the VAE and the latent
model train through the same loop as the pixel UNet.

On a GPU the course's small nets are launch-bound: each of a step's hundreds of
small kernels costs more to launch than to run. So the step never waits for the
GPU (the loss is read back once per log, not per step), AdamW is fused on CUDA,
the EMA is one `_foreach_lerp_` call, and `compile=` captures the forward and
backward (mode "reduce-overhead": CUDA graphs, one launch for the lot).
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint, distributed
from .captions import random_captions
from .env import get_device
from .measure import synchronize
from .schedules import Schedule
from .text import CLIP


def drop_labels(
    labels: torch.Tensor, no_label: int, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Each label replaced by `no_label` (the index after the classes) with probability p, on its own."""
    dropped = distributed.rand(len(labels), generator=generator).to(labels.device) < p
    return torch.where(dropped, torch.full_like(labels, no_label), labels)


def _images_and_labels(
    model: nn.Module, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor], drop: float, drop_labels: Callable
) -> tuple[torch.Tensor, tuple]:
    """The losses' batch, unlabelled or (x0, labels): its images x0, and what the model is given after (x_t, t):
    nothing, or the labels with some dropped (`drop_labels` at rate `drop`, as `eps_loss` says why)."""
    x0, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)
    # config: a plain attribute (the model's, or its DDP wrapper's copy), not the Tensor | Module of torch's stubs
    return x0, (() if labels is None else (drop_labels(labels, model.config.num_classes, drop),))  # type: ignore[union-attr]


def eps_loss(
    model: nn.Module,
    batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    schedule: Schedule,
    drop: float = 0.1,
    drop_labels: Callable = drop_labels,
) -> torch.Tensor:
    """DDPM's simple loss (Ho et al. eq. 14): noise x0 to a random step t and
    ask the model for the noise: || eps - eps_theta(sqrt(ab) x0 + sqrt(1-ab) eps, t) ||^2.

    A class-conditional model trains on (x0, labels) batches, each label replaced by "no label" with
    probability `drop` (by `drop_labels`: lesson 07 passes the learner's), so that one model learns both
    predictions that classifier-free guidance mixes, the conditional and the unconditional one (Ho & Salimans 2022)."""
    x0, labels = _images_and_labels(model, batch, drop, drop_labels)
    # torch.randint and torch.randn_like, drawn alike on any number of processes (diffedu.distributed)
    t = distributed.randint(schedule.T, len(x0), device=x0.device)
    noise = distributed.randn_like(x0)
    return F.mse_loss(model(schedule.q_sample(x0, t, noise), t, *labels), noise)


def flow_loss(
    model: nn.Module,
    batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    drop: float = 0.1,
    drop_labels: Callable = drop_labels,
) -> torch.Tensor:
    """Flow matching's loss (rectified flow: Lipman et al. 2023, Liu et al. 2023): put x0 at a uniform time t on
    the straight line to its noise, x_t = (1 - t) x0 + t eps (t = 0 the data, t = 1 pure noise), and ask the model
    for the line's velocity: || (eps - x0) - v_theta(x_t, t) ||^2. The best answer is E[eps - x0 | x_t], the
    velocity of an ODE that carries noise to data (lesson 09). Labels as in `eps_loss`."""
    x0, labels = _images_and_labels(model, batch, drop, drop_labels)
    t = distributed.rand(len(x0), device=x0.device)  # torch.rand and torch.randn_like, as in eps_loss
    noise = distributed.randn_like(x0)
    t_ = t.view(-1, *[1] * (x0.dim() - 1)).to(x0.dtype)
    return F.mse_loss(model((1 - t_) * x0 + t_ * noise, t, *labels), noise - x0)


def text_eps_loss(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], schedule: Schedule, clip: CLIP, drop: float = 0.1
) -> torch.Tensor:
    """`eps_loss` for a text-conditioned UNet (lesson 11), on (latents, attributes) batches: each latent gets a
    random caption written from its image's class, colour and brightness (diffedu.captions), replaced by the empty
    prompt with probability `drop`, read by the frozen text encoder of `clip`; the UNet attends to its token states."""
    x0, attrs = batch
    texts = random_captions(*attrs.cpu().T)
    dropped = (distributed.rand(len(texts)) < drop).tolist()
    with torch.no_grad():
        context, mask = clip.encode_prompts(["" if d else text for text, d in zip(texts, dropped)])
    t = distributed.randint(schedule.T, len(x0), device=x0.device)
    noise = distributed.randn_like(x0)
    return F.mse_loss(model(schedule.q_sample(x0, t, noise), t, context=context, mask=mask), noise)


class EMA:
    """An exponential moving average of the weights. Its copy of the model samples
    better than the raw weights, which jitter from batch to batch."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.model.config = (
            model.config
        )  # one architecture, one config: a change to it (a VAE's scale factor) reaches both

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up: early on, average over the few steps there are, not 1/(1-decay) of them.
        decay = min(self.decay, (1 + step) / (10 + step))
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        floats = [(ema, raw) for ema, raw in pairs if ema.is_floating_point()]
        # ema += (1 - decay) (raw - ema) for every tensor at once: one call, not one per tensor
        torch._foreach_lerp_([ema for ema, _ in floats], [raw for _, raw in floats], 1 - decay)
        for ema, raw in pairs:
            if not ema.is_floating_point():
                ema.copy_(raw)


DIVERGED = 1000  # a loss this many times the untrained model's has blown up (--lr 1e12 reached 1e27)


@contextmanager
def _ctrl_c_between_steps() -> Iterator[list[bool]]:
    """Ctrl-C (and, from the command line, SIGTERM and SIGHUP, which it turns into Ctrl-C), while this holds, only
    marks the list it yields; the loop raises KeyboardInterrupt once the step in hand is finished, logged and
    saved. One landing in the middle of a step would leave the weights, the EMA, the step count and the loss
    history out of step. (Only where Python's own handler is in place: under torchrun a signal already just sets a
    flag, seen at the next log.)"""
    caught: list[bool] = []
    ours = [signum for signum in distributed.STOP_SIGNALS if signal.getsignal(signum) is signal.default_int_handler]
    if threading.current_thread() is not threading.main_thread():
        ours = []
    for signum in ours:
        signal.signal(signum, lambda *_: caught.append(True))
    try:
        yield caught
    finally:
        for signum in ours:
            signal.signal(signum, signal.default_int_handler)


class Trainer:
    """Holds the model, its EMA, the optimizer, the step count and the loss history."""

    autocast = True  # bf16 on CUDA (a subclass whose loss needs float32 turns it off)

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor] | None,
        *,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        ema_decay: float = 0.999,
        grad_clip: float = 1.0,
        device: str | torch.device | None = None,
        meta: dict | None = None,
        compile: str | None = None,
        channels_last: bool = False,
    ) -> None:
        """`compile`: a torch.compile mode for the forward and backward ("default", "reduce-overhead" for CUDA
        graphs, "max-autotune"); `channels_last`: convolutions on NHWC tensors (faster on tensor cores)."""
        self.meta = dict(meta or {})  # saved with every checkpoint, e.g. which noise schedule the model learned
        self.device = get_device(device)
        self.channels_last = channels_last
        self.model = model.to(self.device).to(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
        self.loss_fn, self.grad_clip, self.lr = loss_fn, grad_clip, lr
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=lr, weight_decay=weight_decay, fused=self.device.type == "cuda"
        )  # one kernel for every parameter's update
        self.ema = EMA(self.model, ema_decay)
        # What the loss calls: on several processes (torchrun) DDP's wrapper, which averages the gradients.
        # (A subclass with its own step, and no loss_fn, wraps what it trains itself.)
        self._net = distributed.wrap(self.model, self.device) if loss_fn else self.model
        self.step, self.seconds = 0, 0.0
        self.history: list[float] = []  # the loss at every step
        self.watching: dict[str, torch.Tensor] = {}  # fixed batches whose loss is logged as training goes (`watch`)
        self.watch_every = 100
        self.watched: list[dict[str, float]] = []  # {"step": s, "training": loss, "held-out": loss}, ...
        # The model stays uncompiled (its weights, names and checkpoints do not change); the loss calls it compiled.
        self.compile = compile
        self._loss = torch.compile(self._model_loss, mode=compile) if compile else self._model_loss

    def watch(self, batches: dict[str, torch.Tensor], every: int = 100) -> None:
        """Log the EMA model's loss on these fixed batches (of one size) every `every` steps, at the start and at the
        end of each `fit`, into `watched`: with {"training": some training images, "held-out": as many it never
        trains on}, the two curves part when the model starts to fit its data rather than learn from it."""
        self.watching, self.watch_every = {name: batch.to(self.device) for name, batch in batches.items()}, every

    def watched_losses(self) -> dict[str, float]:
        """The EMA model's loss on each watched batch now: with dropout off, and the same timesteps and noise for
        every batch at every step (seeded, the global random state left as it was), so that only the model changes."""
        assert self.loss_fn is not None
        model, was_training = self.ema.model, self.ema.model.training
        model.eval()
        losses = {}
        with torch.no_grad(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for name, batch in self.watching.items():
                torch.manual_seed(0)
                losses[name] = self.loss_fn(model, batch).item()
        model.train(was_training)
        return losses

    def _watch(self) -> None:
        if self.watching and (not self.watched or self.watched[-1]["step"] != self.step):
            self.watched.append({"step": self.step, **self.watched_losses()})

    def _model_loss(self, batch) -> torch.Tensor:
        assert self.loss_fn is not None  # (a Trainer without one is a subclass with its own train_step)
        return self.loss_fn(self._net, batch)

    def fit(
        self,
        batches: Iterator[torch.Tensor],
        steps: int,
        *,
        log_every: int = 10,
        callback: Callable[[Trainer], None] | None = None,
        save_to: str | Path | None = None,
        save_every: int = 0,
        progress: bool = True,
        deadline: float | None = None,
        budget_seconds: float | None = None,
    ) -> Trainer:
        """Train for `steps` more steps, or until `time.monotonic()` passes `deadline` (seen at a log). Every
        `log_every` steps: update the bar and call `callback(self)`; every `save_every` steps, at the end, and on
        Ctrl-C: save. `budget_seconds`: train for this much training time in all (earlier runs' included) instead,
        the learning rate decaying with the fraction of it used (see `budget_lr`), so that any machine ends with a
        finished model."""
        self.model.train()
        self._watch()  # where this fit starts
        pending, start = [], time.perf_counter()
        optimizers = list(self.parts()[1].values())  # a timed run anneals every one of them
        # a timed run's bar counts the budget's seconds (its steps are not known in advance), any other's the steps
        progress = progress and distributed.is_main()
        bar = (
            tqdm(
                total=round(budget_seconds),
                initial=min(round(self.seconds), round(budget_seconds)),
                unit="s",
                desc="training (time budget)",
                disable=not progress,
            )
            if budget_seconds
            else tqdm(total=steps, desc="training", disable=not progress)
        )
        # The clock is read at each log, and on several processes taken from process 0 (`distributed.agree`):
        # all of them must stop at the same step and anneal alike.
        used = self.seconds  # training seconds so far
        try:
            with _ctrl_c_between_steps() as interrupted:  # Ctrl-C lands between steps: weights, EMA and history agree
                for i in range(steps):
                    if budget_seconds:
                        if used >= budget_seconds:
                            break
                        for optimizer in optimizers:
                            for group in optimizer.param_groups:
                                group["lr"] = budget_lr(self.lr, used / budget_seconds)
                    else:
                        bar.update(1)
                    loss = self.train_step(next(batches))
                    # a copy: a CUDA graph's output is overwritten by its next run
                    pending.append(loss.detach().clone())
                    if self.step % self.watch_every == 0:
                        self._watch()
                    saving = bool(save_to and save_every and self.step % save_every == 0)
                    stop = False
                    if len(pending) == log_every or i == steps - 1 or saving:  # a save holds the whole history
                        self._log(pending, bar, log_every)
                        pending = []
                        late = deadline is not None and time.monotonic() > deadline
                        used, stop, asked = distributed.agree(self.seconds + time.perf_counter() - start, late)
                        if asked:  # Ctrl-C on some process (torchrun): every process is here, at the same step
                            raise KeyboardInterrupt
                        if budget_seconds:
                            bar.update(min(round(used), bar.total) - bar.n)
                        if callback:
                            callback(self)
                    if saving and save_to:  # (saving implies save_to)
                        self._save_timed(save_to, start)
                        start = time.perf_counter()
                    if stop or interrupted:
                        break
                if interrupted:  # (also one that came during the last step)
                    raise KeyboardInterrupt
        except KeyboardInterrupt:  # keep every finished step: the next run can --resume from here
            if save_to:
                self._log(pending, bar, log_every)
                self._save_timed(save_to, start)
            raise
        if pending:  # what a budget's end left unlogged
            self._log(pending, bar, log_every)
        self._watch()  # where it ends
        bar.close()
        self.seconds += time.perf_counter() - start
        if save_to:
            self.save(save_to)
        return self

    def _log(self, pending: list[torch.Tensor], bar, window: int) -> None:
        # one device sync per log; on several processes, the global batch's losses (their rows' averaged)
        losses = distributed.mean(torch.stack(pending).float()).cpu().tolist() if pending else []
        first = (self.history or losses or [0.0])[0]  # the untrained model's loss
        bad = [i for i, loss in enumerate(losses) if not math.isfinite(loss) or 0 < DIVERGED * first < loss]
        if bad:  # found before the next save, so no checkpoint ever holds the broken weights
            loss = losses[bad[0]]
            why = f", over {DIVERGED}x the first step's {first:.4g}" if math.isfinite(loss) else ""
            raise FloatingPointError(
                f"loss became {loss:.4g} at step {self.step - len(losses) + bad[0] + 1}{why}: "
                "the training diverged; lower the learning rate"
            )
        self.history += losses
        recent = self.history[-window:]
        if recent:
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")

    def _save_timed(self, path: str | Path, start: float) -> None:
        """Save with the training time so far counted in."""
        self.seconds += time.perf_counter() - start
        self.save(path)

    def train_step(self, batch: torch.Tensor) -> torch.Tensor:
        inputs = _channels_last(batch) if self.channels_last else batch
        if self.compile:
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the CUDA graphs may reuse the last one's memory
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.autocast and self.device.type == "cuda"
        ):
            loss = self._loss(inputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.ema.update(self.model, self.step)
        return loss

    def images_per_second(self, batches: Iterator, steps: int = 20, warmup: int = 3) -> float:
        """Training throughput: examples per second over `steps` steps, after `warmup` (which compiles).
        It trains the model: measure on a throwaway trainer."""
        for _ in range(warmup):
            self.train_step(next(batches))
        synchronize(self.device)
        start, n = time.perf_counter(), 0
        for _ in range(steps):
            batch = next(batches)
            n += len(batch[0] if isinstance(batch, (tuple, list)) else batch)
            self.train_step(batch)
        synchronize(self.device)
        return n / (time.perf_counter() - start)

    # ---- checkpoints -----------------------------------------------------------
    def parts(self) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer]]:
        """What a checkpoint holds, by prefix: weights of modules, states of optimizers (a subclass adds its own)."""
        return {"model": self.model, "ema": self.ema.model}, {"optim": self.optimizer}

    def save(self, path: str | Path, **meta) -> Path:
        """Everything needed to resume: raw and EMA weights, optimizer state, step, history. On several processes
        process 0 writes it (they all hold the same), and all return once it is written."""
        if distributed.is_main():
            self._write(path, **meta)
        distributed.barrier()
        return checkpoint.paths(path)[0].with_suffix("")  # as checkpoint.save returns it

    def _write(self, path: str | Path, **meta) -> Path:
        modules, optimizers = self.parts()
        tensors = {f"{prefix}.{k}": v for prefix, module in modules.items() for k, v in module.state_dict().items()}
        groups = {}
        for prefix, optimizer in optimizers.items():
            state = optimizer.state_dict()
            tensors |= {f"{prefix}.{i}.{k}": v for i, s in state["state"].items() for k, v in s.items()}
            groups[prefix] = state["param_groups"]
        return checkpoint.save(
            path,
            tensors,
            {
                "kind": checkpoint.model_kind(self.model),
                "config": self.model.config.to_dict(),  # type: ignore[union-attr, operator]  # a plain attribute
                "step": self.step,
                "seconds": self.seconds,
                "history": self.history,
                **({"watched": self.watched} if self.watched else {}),
                "optimizer": groups.pop("optim"),
                **({"optimizers": groups} if groups else {}),
                **self.meta,
                **meta,
            },
        )

    def load(self, path: str | Path) -> Trainer:
        """Resume from a checkpoint written by `save` (the model must match its config)."""
        tensors, meta = checkpoint.load(path)
        modules, optimizers = self.parts()
        for prefix, module in modules.items():
            checkpoint.load_weights(module, checkpoint.with_prefix(tensors, prefix), str(path))
        groups = {"optim": meta["optimizer"], **meta.get("optimizers", {})}
        for prefix, optimizer in optimizers.items():
            state: dict = {}
            for key, value in checkpoint.with_prefix(tensors, prefix).items():
                index, name = key.split(".", 1)
                state.setdefault(int(index), {})[name] = value
            optimizer.load_state_dict(
                {"state": state, "param_groups": [{**g, "betas": tuple(g["betas"])} for g in groups[prefix]]}
            )
        self.step, self.history, self.seconds = meta["step"], meta["history"], meta.get("seconds", 0.0)
        self.watched = meta.get("watched", [])
        return self


def budget_lr(lr: float, used: float) -> float:
    """The learning rate when a fraction `used` of a time budget is spent: a cosine from `lr` down to 0 (SGDR's
    curve without restarts), so a run that trains for N minutes ends as annealed as one planned in steps."""
    return lr * 0.5 * (1 + math.cos(math.pi * min(max(used, 0.0), 1.0)))


def _channels_last(batch) -> torch.Tensor | tuple | list:
    """The image tensors of a batch (or an (images, labels) pair) in NHWC memory order."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(_channels_last(b) for b in batch)
    return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch
