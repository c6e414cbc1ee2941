"""`fit` and `evaluate`: one training loop, readable top to bottom.

A *step* trains on one batch and returns a dict of 0-d tensors; it is
called as ``step(model, batch, loss_fn=..., optimizer=..., clip_grad=...,
metrics=..., autocast=...)``. `supervised_step` is the default; the GAN
step in `dlcourse.gan` plugs in the same way.

A NaN or infinite loss raises `NonFiniteLossError` naming the epoch and
step. On a CPU it is caught at that very step; on a GPU it is caught at
the end of that epoch (checking every step would stall the GPU with a
host sync per step), and the error still names the first bad step.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .callbacks import Callback
from .data import TensorData, as_data
from .device import get_device
from .metrics import RunningMean, accuracy

__all__ = ["fit", "evaluate", "supervised_step", "History", "FitState",
           "NonFiniteLossError", "DEFAULT_METRICS"]

Tensor = torch.Tensor
Metric = Callable[[Tensor, Tensor], Tensor]
DEFAULT_METRICS = object()  # sentinel: accuracy when labels are classes


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite during training."""


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
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    optimizer.step()
    out = {"loss": loss.detach()}
    for name, metric in (metrics or {}).items():
        out[name] = metric(logits.detach(), y)
    return out


def fit(model: nn.Module, train_data: Any, *,
        loss_fn: Callable | None = None, optimizer: Any,
        num_epochs: int, step: Callable | None = None,
        eval_data: Any = None, callbacks: Iterable[Callback] = (),
        device: torch.device | str | None = None, batch_size: int = 64,
        clip_grad: float | None = None,
        metrics: Mapping[str, Metric] | object = DEFAULT_METRICS,
        generator: torch.Generator | None = None,
        amp: bool = True, compile: bool = False) -> History:
    """Train model for num_epochs with step; return the per-epoch History."""
    # 1. Put model and data on the device (CUDA extras never touch a CPU).
    if step is None and loss_fn is None:
        raise TypeError("fit: the default supervised step needs loss_fn")
    device = _resolve(device)
    _prepare_model(model, device, compile)
    train_data = _place(as_data(train_data), device)
    eval_data = None if eval_data is None else _place(as_data(eval_data),
                                                      device)
    step = step or supervised_step
    metrics = _resolve_metrics(metrics, train_data)
    autocast = _autocast(device, amp)
    # On a CPU a host sync is free: check each loss the step it appears.
    check_now = device.type == "cpu"
    callbacks = list(callbacks)
    state = FitState(model, optimizer, num_epochs, device, generator)
    for cb in callbacks:
        cb.on_fit_start(state)

    while state.epoch < num_epochs and not state.stop:
        # 2. One pass over the data; per-step values stay on the device.
        for cb in callbacks:
            cb.on_epoch_start(state)
        model.train()
        start, meter = time.perf_counter(), RunningMean()
        batches = _iterate(train_data, device, batch_size, True, generator)
        for i, batch in enumerate(batches):
            out = step(model, batch, loss_fn=loss_fn, optimizer=optimizer,
                       clip_grad=clip_grad, metrics=metrics,
                       autocast=autocast)
            meter.update(out, len(batch[0]))
            if check_now:
                _check_finite(out, state.epoch + 1, i + 1)
            for cb in callbacks:
                cb.on_batch_end(state, i, out)

        # 3. The epoch's one host sync; NaN on an accelerator shows here.
        logs = {f"train_{k}": v for k, v in meter.compute().items()}
        if not all(map(math.isfinite, logs.values())):
            _raise_first_nonfinite(meter, state.epoch + 1)

        # 4. Evaluate on held-out data, then log and call back.
        if eval_data is not None:
            val = evaluate(model, eval_data, loss_fn, metrics=metrics,
                           device=device, amp=amp)
            logs.update({f"val_{k}": v for k, v in val.items()})
        state.epoch += 1
        logs = {"epoch": state.epoch, **logs,
                "seconds": time.perf_counter() - start}
        state.history.append(logs)
        for cb in callbacks:
            cb.on_epoch_end(state, logs)

    for cb in callbacks:
        cb.on_fit_end(state)
    return state.history


@torch.no_grad()
def evaluate(model: nn.Module, data: Any,
             loss_fn: Callable[[Tensor, Tensor], Tensor] | None, *,
             metrics: Mapping[str, Metric] | object = DEFAULT_METRICS,
             batch_size: int = 1024, device: torch.device | str | None
             = None, amp: bool = True) -> dict[str, float]:
    """Mean loss and metrics of model on (X, y) data, without training."""
    device = _resolve(device)
    data = _place(as_data(data), device)
    metrics = _resolve_metrics(metrics, data)
    autocast = _autocast(device, amp)
    was_training = model.training
    model.eval()
    meter = RunningMean()
    for X, y in _iterate(data, device, batch_size, False, None):
        with autocast():
            logits = model(X)
            out = {} if loss_fn is None else {"loss": loss_fn(logits, y)}
        for name, metric in metrics.items():
            out[name] = metric(logits, y)
        meter.update(out, len(X))
    model.train(was_training)
    return meter.compute()


# ----------------------------------------------------------- helpers
def _resolve(device: torch.device | str | None) -> torch.device:
    device = torch.device(device) if device is not None else get_device()
    if device.type == "cuda" and device.index is None:
        # "cuda" != "cuda:0" for torch.device, but tensors report cuda:0
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _autocast(device: torch.device, amp: bool) -> Callable:
    if device.type == "cuda" and amp:
        # bf16 needs no loss scaling (same exponent range as float32).
        return functools.partial(torch.autocast, "cuda",
                                 dtype=torch.bfloat16)
    return contextlib.nullcontext  # CPU numbers never depend on amp


def _prepare_model(model: nn.Module, device: torch.device,
                   compile: bool) -> None:
    model.to(device)  # in place: the optimizer keeps the same parameters
    if device.type != "cuda":
        return
    if any(p.dim() == 4 for p in model.parameters()):
        # conv kernels run fastest on NHWC tensors on CUDA tensor cores
        model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()  # in place: state_dict keys stay the same


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
    if device.type == "cuda":  # too big: pinned memory, async copies
        return TensorData(data.X.pin_memory(), None if data.y is None
                          else data.y.pin_memory(), data.transform)
    return data


def _iterate(data: Any, device: torch.device, batch_size: int,
             shuffle: bool, generator: torch.Generator | None
             ) -> Iterator[tuple[Tensor, ...]]:
    nhwc = device.type == "cuda"
    if isinstance(data, TensorData):
        it = data.batches(batch_size, shuffle, generator)
        if data.X.device == device and not nhwc:
            return it  # already resident: nothing to do per batch
    else:
        it = data  # e.g. a DataLoader: it batches and shuffles itself
    return _to_device(it, device, nhwc)


def _to_device(it: Iterable, device: torch.device, nhwc: bool
               ) -> Iterator[tuple[Tensor, ...]]:
    for batch in it:
        if isinstance(batch, Tensor):
            batch = (batch,)
        if batch[0].device != device:
            batch = tuple(t.to(device, non_blocking=True) for t in batch)
        if nhwc and batch[0].dim() == 4 and batch[0].is_floating_point():
            X = batch[0].contiguous(memory_format=torch.channels_last)
            batch = (X, *batch[1:])
        yield tuple(batch)


def _resolve_metrics(metrics: Any, data: Any) -> Mapping[str, Metric]:
    if metrics is not DEFAULT_METRICS:
        return metrics or {}
    y = getattr(data, "y", None)
    is_class = (y is not None and not y.is_floating_point()
                and not y.is_complex() and y.dim() == 1)
    return {"acc": accuracy} if is_class else {}


def _check_finite(out: dict[str, Tensor], epoch: int, step: int) -> None:
    for name, value in out.items():
        if "loss" in name and not math.isfinite(value.item()):
            raise NonFiniteLossError(_nan_message(name, value.item(),
                                                  epoch, step))


def _raise_first_nonfinite(meter: RunningMean, epoch: int) -> None:
    for name, values in meter.stacked().items():
        bad = (~torch.isfinite(values)).nonzero()
        if "loss" in name and len(bad):
            i = int(bad[0])
            raise NonFiniteLossError(_nan_message(name, float(values[i]),
                                                  epoch, i + 1))
    raise NonFiniteLossError(f"a training metric is not finite in epoch "
                             f"{epoch}")


def _nan_message(name: str, value: float, epoch: int, step: int) -> str:
    return (f"{name} became {value} at epoch {epoch}, step {step} "
            f"(both counted from 1): lower the learning rate, clip "
            f"gradients (clip_grad=1.0) or check the inputs for NaN/inf.")
