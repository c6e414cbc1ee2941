"""`fit` and `evaluate`: one training loop, readable top to bottom.

A *step* trains on one batch and returns a dict of 0-d tensors; it is
called as ``step(model, batch, loss_fn=..., optimizer=..., clip_grad=...,
metrics=..., autocast=...)``. `supervised_step` is the default; the GAN
step in `dlcourse.gan` plugs in the same way.

A NaN or infinite loss raises `NonFiniteLossError` naming the epoch and
step, and never leaves NaN weights behind. On a CPU the built-in steps
check each loss *before* the update (a host sync is free there), so the
model keeps the weights of the step before. On an accelerator a check per
step would stall the device with a host sync, so the losses are checked at
the end of each epoch: the error names the first bad step and the model
and optimizer are put back as they were when that epoch began.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import distributed
from .callbacks import Callback, LivePlot, PrintProgress
from .data import TensorData, as_data
from .device import get_device
from .metrics import RunningMean, accuracy

__all__ = ["fit", "evaluate", "supervised_step", "History", "FitState",
           "NonFiniteLossError", "check_before_update", "DEFAULT_METRICS"]

Tensor = torch.Tensor
Metric = Callable[[Tensor, Tensor], Tensor]
DEFAULT_METRICS = object()  # sentinel: accuracy when labels are classes


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite during training."""


class _NonFiniteBeforeUpdate(NonFiniteLossError):
    """Raised by a step before its update; `fit` adds epoch and step."""

    def __init__(self, name: str, value: float) -> None:
        super().__init__(f"{name} became {value} (the weights were not "
                         f"updated with it)")
        self.name, self.value = name, value


def check_before_update(name: str, loss: Tensor) -> None:
    """On a CPU, raise `NonFiniteLossError` if loss is NaN or infinite.

    Call it between the forward pass and ``optimizer.step()``: the model
    then keeps its last finite weights. Elsewhere it does nothing (a check
    would cost a host sync per step; `fit` checks each epoch instead).
    """
    if loss.device.type == "cpu":
        value = loss.item()
        if not math.isfinite(value):
            raise _NonFiniteBeforeUpdate(name, value)


class History:
    """Per-epoch logs (train_loss, val_acc, seconds, ...) of a fit."""

    def __init__(self, epochs: Iterable[dict[str, float]] = ()) -> None:
        self.epochs: list[dict[str, float]] = [dict(e) for e in epochs]

    def append(self, logs: dict[str, float]) -> None:
        """Add one epoch's logs."""
        self.epochs.append(dict(logs))

    def __getitem__(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs if key in e]

    def __len__(self) -> int:
        return len(self.epochs)

    def keys(self) -> list[str]:
        """Every metric name logged in some epoch, in first-seen order."""
        return list(dict.fromkeys(k for e in self.epochs for k in e))

    @property
    def last(self) -> dict[str, float]:
        """The logs of the latest epoch."""
        return self.epochs[-1] if self.epochs else {}

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, keys={self.keys()})"


@dataclass
class FitState:
    """What callbacks see and may change while `fit` runs."""

    model: nn.Module
    optimizer: Any  # an Optimizer, or (opt_d, opt_g) for a GAN
    num_epochs: int
    device: torch.device
    generator: torch.Generator | None = None  # batch order when given
    epoch: int = 0  # epochs completed so far
    history: History = field(default_factory=History)
    stop: bool = False  # a callback sets it to end after this epoch


def supervised_step(model: nn.Module, batch: tuple[Tensor, ...], *,
                    loss_fn: Callable[[Tensor, Tensor], Tensor],
                    optimizer: torch.optim.Optimizer,
                    clip_grad: float | None = None,
                    metrics: Mapping[str, Metric] | None = None,
                    autocast: Callable = contextlib.nullcontext
                    ) -> dict[str, Tensor]:
    """One gradient step on (X, y): forward, loss, backward, update."""
    X, y = batch
    with autocast():
        logits = model(X)  # (B, num_classes) for a classifier
        loss = loss_fn(logits, y)
    check_before_update("loss", loss)  # NaN never reaches the weights
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    optimizer.step()
    out = {"loss": loss.detach()}
    for name, metric in (metrics or {}).items():
        out[name] = metric(logits.detach(), y)
    return out


supervised_step.checks_before_update = True  # type: ignore[attr-defined]


def fit(model: nn.Module, train_data: Any, *,
        loss_fn: Callable | None = None, optimizer: Any,
        num_epochs: int, step: Callable | None = None,
        eval_data: Any = None, callbacks: Iterable[Callback] = (),
        device: torch.device | str | None = None, batch_size: int = 64,
        clip_grad: float | None = None,
        metrics: Mapping[str, Metric] | object = DEFAULT_METRICS,
        generator: torch.Generator | None = None,
        amp: bool = True, compile: bool = False,
        drop_last: bool | None = None) -> History:
    """Train model for num_epochs with step; return the per-epoch History.

    ``drop_last``: skip a last, smaller batch. By default (None) it is kept,
    unless it holds a single example and the model has BatchNorm layers,
    which cannot normalise one example. A DataLoader batches itself: give
    it its own ``generator``/``drop_last``; fit refuses them here.

    Under torchrun (see `dlcourse.distributed`) the model trains in
    DistributedDataParallel; ``batch_size`` is per process, and each rank
    gets its share of every batch of the shared permutation (a DataLoader
    must shard itself, e.g. with a DistributedSampler). The logged
    training metrics are means over all ranks; callbacks that display
    (PrintProgress, LivePlot, or any with ``rank_zero_only = True``) run
    on rank 0 only, and a Checkpoint saves from rank 0 only.
    """
    # 1. Put model and data on the device (CUDA extras never touch a CPU).
    if step is None and loss_fn is None:
        raise TypeError("fit: the default supervised step needs loss_fn")
    device = _resolve(device)
    nhwc = _prepare_model(model, device, compile)
    train_data = as_data(train_data)
    _refuse_loader_options(train_data, generator, drop_last)
    parallel = distributed.is_distributed()
    world = distributed.world_size()
    shard = (distributed.rank(), world) if parallel else None
    if drop_last is None:
        drop_last = _last_batch_breaks_batchnorm(model, train_data,
                                                 batch_size, world)
    train_data = _place(train_data, device)
    eval_data = None if eval_data is None else _place(as_data(eval_data),
                                                      device)
    step = step or supervised_step
    metrics = _resolve_metrics(metrics, train_data)
    autocast = _autocast(device, amp)
    # On a CPU a host sync is free: check each loss the step it appears
    # and keep the running sums as Python floats.
    on_cpu = device.type == "cpu"
    # Where a NaN may reach the weights before it is seen, keep a copy of
    # the epoch's starting state to put back.
    keep_start = not (on_cpu and getattr(step, "checks_before_update",
                                         False))
    optimizers = _as_list(optimizer)
    callbacks = [cb for cb in callbacks
                 if distributed.is_main() or not _rank_zero_only(cb)]
    state = FitState(model, optimizer, num_epochs, device, generator)
    # A checkpoint restores first, so that every other callback starts
    # from the resumed state; it saves last (on_epoch_complete, below).
    for cb in sorted(callbacks, key=lambda cb: not getattr(
            cb, "restores_state", False)):
        cb.on_fit_start(state)
    # Under torchrun the step trains a DDP wrapper (gradients averaged
    # over ranks in backward); callbacks and the caller keep the model.
    step_model = _data_parallel(model, device) if parallel else model

    while state.epoch < num_epochs and not state.stop:
        # 2. One pass over the data; per-step values stay on the device.
        for cb in callbacks:
            cb.on_epoch_start(state)
        model.train()
        start, meter = time.perf_counter(), RunningMean(on_host=on_cpu)
        epoch = state.epoch + 1
        saved = _snapshot(model, optimizers) if keep_start else None
        batches = _iterate(train_data, device, batch_size, True, generator,
                           nhwc=nhwc, drop_last=drop_last, shard=shard)
        for i, batch in enumerate(batches):
            if metrics is None:  # a DataLoader: decide from its labels
                metrics = _default_metrics(batch[1] if len(batch) > 1
                                           else None)
            try:
                out = step(step_model, batch, loss_fn=loss_fn,
                           optimizer=optimizer, clip_grad=clip_grad,
                           metrics=metrics, autocast=autocast)
            except _NonFiniteBeforeUpdate as e:
                raise NonFiniteLossError(
                    _nan_message(e.name, e.value, epoch, i + 1)
                    + " The model keeps its weights from before this "
                    "step.") from None
            values = meter.update(out, len(batch[0]))
            if values is not None:
                _check_finite(values, epoch, i + 1, model, optimizers,
                              saved)
            for cb in callbacks:
                cb.on_batch_end(state, i, out)

        # 3. The epoch's one host sync; NaN on an accelerator shows here.
        # Under torchrun: one all-reduce, the means over every rank.
        means = (distributed.all_reduce_sums(meter.weighted_sums(), device)
                 if parallel else meter.compute())
        logs = {f"train_{k}": v for k, v in means.items()}
        if not all(map(math.isfinite, logs.values())):
            if saved is not None:
                _restore(saved, model, optimizers)
            _raise_first_nonfinite(meter, epoch, restored=saved is not None)

        # 4. Evaluate on held-out data, then log and call back.
        if parallel:  # rank 0's BatchNorm statistics, as DDP trains with
            distributed.broadcast_buffers(model)
        if eval_data is not None:
            val = evaluate(model, eval_data, loss_fn, metrics=(
                DEFAULT_METRICS if metrics is None else metrics),
                device=device, amp=amp)
            logs.update({f"val_{k}": v for k, v in val.items()})
        state.epoch = epoch
        logs = {"epoch": state.epoch, **logs,
                "seconds": time.perf_counter() - start}
        state.history.append(logs)
        for cb in callbacks:
            cb.on_epoch_end(state, logs)
        for cb in callbacks:
            # after every callback's on_epoch_end (which may step a
            # scheduler or draw random numbers): what a checkpoint saves
            if hasattr(cb, "on_epoch_complete"):
                cb.on_epoch_complete(state, logs)

    for cb in callbacks:
        cb.on_fit_end(state)
    return state.history


@torch.no_grad()
def evaluate(model: nn.Module, data: Any,
             loss_fn: Callable[[Tensor, Tensor], Tensor] | None, *,
             metrics: Mapping[str, Metric] | object = DEFAULT_METRICS,
             batch_size: int = 1024, device: torch.device | str | None
             = None, amp: bool = True) -> dict[str, float]:
    """Mean loss and metrics of model on (X, y) data, without training.

    ``device``: where to evaluate; by default the device the model's
    parameters are on. A model elsewhere is moved there (in place).
    """
    device = _resolve(device if device is not None else _home(model))
    nhwc = _prepare_model(model, device, compile=False)
    data = _place(as_data(data), device)
    metrics = _resolve_metrics(metrics, data)
    autocast = _autocast(device, amp)
    was_training = model.training
    model.eval()
    meter = RunningMean(on_host=device.type == "cpu")
    try:
        for X, y in _iterate(data, device, batch_size, False, None,
                             nhwc=nhwc):
            if metrics is None:
                metrics = _default_metrics(y)
            with autocast():
                logits = model(X)
                out = ({} if loss_fn is None
                       else {"loss": loss_fn(logits, y)})
            for name, metric in metrics.items():
                out[name] = metric(logits, y)
            meter.update(out, len(X))
    finally:
        model.train(was_training)
    return meter.compute()


# ----------------------------------------------------------- helpers
def _resolve(device: torch.device | str | None) -> torch.device:
    device = torch.device(device) if device is not None else get_device()
    if device.type == "cuda" and device.index is None:
        # "cuda" != "cuda:0" for torch.device, but tensors report cuda:0
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _home(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter (or buffer), if any."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None  # nothing to place: get_device() decides


def _bf16_is_fast(device: torch.device) -> bool:
    # Ampere (compute capability 8.0) and later run bf16 on tensor cores;
    # on a T4 or V100 it is emulated and slower than float32.
    return torch.cuda.get_device_capability(device) >= (8, 0)


def _autocast(device: torch.device, amp: bool) -> Callable:
    if device.type == "cuda" and amp and _bf16_is_fast(device):
        # bf16 needs no loss scaling (same exponent range as float32).
        return functools.partial(torch.autocast, "cuda",
                                 dtype=torch.bfloat16)
    # CPU numbers never depend on amp; pre-Ampere GPUs train in float32.
    return contextlib.nullcontext


def _wants_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Conv models on CUDA run fastest on NHWC tensors (tensor cores)."""
    return device.type == "cuda" and any(p.dim() == 4
                                         for p in model.parameters())


def _prepare_model(model: nn.Module, device: torch.device,
                   compile: bool) -> bool:
    """Move model to device; return whether batches go channels_last."""
    model.to(device)  # in place: the optimizer keeps the same parameters
    if device.type != "cuda":
        return False
    nhwc = _wants_channels_last(model, device)
    if nhwc:
        model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()  # in place: state_dict keys stay the same
    return nhwc


def _as_list(optimizer: Any) -> list[Any]:
    if optimizer is None:
        return []
    if isinstance(optimizer, (list, tuple)):
        return list(optimizer)  # e.g. (opt_d, opt_g) for a GAN
    return [optimizer]


def _snapshot(model: nn.Module, optimizers: list[Any]) -> tuple:
    """Copies (on the device) of model and optimizer states."""
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [copy.deepcopy(o.state_dict()) for o in optimizers])


def _restore(saved: tuple, model: nn.Module, optimizers: list[Any]) -> None:
    weights, states = saved
    with torch.no_grad():
        model.load_state_dict(weights)
    for opt, st in zip(optimizers, states):
        opt.load_state_dict(st)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm)
               for m in model.modules())


def _last_batch_breaks_batchnorm(model: nn.Module, data: Any,
                                 batch_size: int, world: int = 1) -> bool:
    # under torchrun the last batch's share on the smallest rank decides
    size = batch_size * world
    return (isinstance(data, TensorData) and len(data) > size
            and len(data) % size // world == 1 and _has_batchnorm(model))


def _rank_zero_only(cb: Callback) -> bool:
    flag = getattr(cb, "rank_zero_only", None)
    return (isinstance(cb, (PrintProgress, LivePlot)) if flag is None
            else bool(flag))


def _data_parallel(model: nn.Module, device: torch.device) -> Any:
    """model in DDP; a model with its own recipe (a GAN) wraps its parts."""
    wrap = functools.partial(distributed.wrap, device=device)
    if hasattr(model, "data_parallel"):
        return model.data_parallel(wrap)  # e.g. G and D each in DDP
    return wrap(model)


def _refuse_loader_options(data: Any, generator: Any,
                           drop_last: bool | None) -> None:
    if isinstance(data, TensorData):
        return
    for name, value in (("generator", generator), ("drop_last", drop_last)):
        if value is not None:
            raise ValueError(
                f"fit: {name}= applies to tensors only; a "
                f"{type(data).__name__} batches and shuffles itself: pass "
                f"{name}= to it instead (DataLoader(..., {name}=...)).")


def _fits_on(nbytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < free // 2  # leave half for activations


def _place(data: Any, device: torch.device) -> Any:
    if not isinstance(data, TensorData) or data.X.device == device:
        return data
    nbytes = data.X.nbytes + (0 if data.y is None else data.y.nbytes)
    if _fits_on(nbytes, device):
        return data.to(device)  # resident: batches are slices, no copies
    # Too big: it stays where it is, and each gathered batch is pinned
    # and copied asynchronously (see _to_device). Pinning the whole set
    # would not help: indexing a pinned tensor returns pageable memory.
    return data


def _iterate(data: Any, device: torch.device, batch_size: int,
             shuffle: bool, generator: torch.Generator | None, *,
             nhwc: bool = False, drop_last: bool = False,
             pin: bool | None = None, shard: tuple[int, int] | None = None
             ) -> Iterator[tuple[Tensor, ...]]:
    if isinstance(data, TensorData):
        it = data.batches(batch_size, shuffle, generator, drop_last, shard)
        if data.X.device == device and not nhwc:
            return it  # already resident: nothing to do per batch
    else:
        it = data  # e.g. a DataLoader: it batches and shuffles itself
    pin = device.type == "cuda" if pin is None else pin
    return _to_device(it, device, nhwc, pin)


def _to_device(it: Iterable, device: torch.device, nhwc: bool,
               pin: bool = False) -> Iterator[tuple[Tensor, ...]]:
    for batch in it:
        if isinstance(batch, Tensor):
            batch = (batch,)
        batch = tuple(_copy(t, device, pin) for t in batch)
        if nhwc and batch[0].dim() == 4 and batch[0].is_floating_point():
            X = batch[0].contiguous(memory_format=torch.channels_last)
            batch = (X, *batch[1:])
        yield batch


def _copy(t: Tensor, device: torch.device, pin: bool) -> Tensor:
    if t.device == device:
        return t
    if pin and t.device.type == "cpu":
        # page-locked: the copy runs asynchronously beside the GPU's work
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _default_metrics(y: Tensor | None) -> dict[str, Metric]:
    is_class = (isinstance(y, Tensor) and not y.is_floating_point()
                and not y.is_complex() and y.dim() == 1)
    return {"acc": accuracy} if is_class else {}


def _resolve_metrics(metrics: Any, data: Any) -> Mapping[str, Metric] | None:
    """The metrics to log; None: decide from the first batch's labels."""
    if metrics is not DEFAULT_METRICS:
        return metrics or {}
    if not isinstance(data, TensorData):
        return None  # e.g. a DataLoader: look at its first batch
    return _default_metrics(data.y)


def _check_finite(values: dict[str, float], epoch: int, step: int,
                  model: nn.Module, optimizers: list[Any],
                  saved: tuple | None) -> None:
    for name, value in values.items():
        if "loss" in name and not math.isfinite(value):
            if saved is not None:
                _restore(saved, model, optimizers)
            raise NonFiniteLossError(
                _nan_message(name, value, epoch, step)
                + _restored_note(saved is not None))


def _restored_note(restored: bool) -> str:
    return (f" The model and optimizer were put back as they were when "
            f"this epoch began." if restored else "")


def _raise_first_nonfinite(meter: RunningMean, epoch: int,
                           restored: bool = False) -> None:
    first = None  # (step, name, value) of the earliest bad loss
    for name, (values, steps) in meter.per_step().items():
        if "loss" not in name:
            continue
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            i = int(bad[0])
            if first is None or int(steps[i]) < first[0]:
                first = (int(steps[i]), name, float(values[i]))
    if first is not None:
        step, name, value = first
        raise NonFiniteLossError(_nan_message(name, value, epoch, step + 1)
                                 + _restored_note(restored))
    raise NonFiniteLossError(f"a training metric is not finite in epoch "
                             f"{epoch}" + _restored_note(restored))


def _nan_message(name: str, value: float, epoch: int, step: int) -> str:
    return (f"{name} became {value} at epoch {epoch}, step {step} "
            f"(both counted from 1): lower the learning rate, clip "
            f"gradients (clip_grad=1.0) or check the inputs for NaN/inf.")
