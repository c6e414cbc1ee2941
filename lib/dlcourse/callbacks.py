"""Callbacks: code that runs at named moments of `fit`.

`fit` calls, in this order::

    on_fit_start
    for each epoch: on_epoch_start, on_batch_end (every step), on_epoch_end
    on_fit_end

Every hook receives the `FitState` (model, optimizer, epoch, history...);
set `state.stop = True` to end training after the current epoch.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

import torch

if TYPE_CHECKING:
    from .train import FitState

__all__ = ["Callback", "PrintProgress", "LivePlot", "in_jupyter",
           "EarlyStopping"]


class Callback:
    """Base class: override only the hooks you need."""

    def on_fit_start(self, state: FitState) -> None:
        """Called once before the first epoch (resume happens here)."""

    def on_epoch_start(self, state: FitState) -> None:
        """Called before each training epoch."""

    def on_batch_end(self, state: FitState, batch_index: int,
                     outputs: dict[str, torch.Tensor]) -> None:
        """Called after every step with its on-device outputs (no sync)."""

    def on_epoch_end(self, state: FitState, logs: dict[str, float]) -> None:
        """Called after each epoch with its logs (already host floats)."""

    def on_fit_end(self, state: FitState) -> None:
        """Called once after the last epoch."""


def _format(logs: dict[str, float]) -> str:
    parts = []
    for key, value in logs.items():
        if key in ("epoch", "seconds"):
            continue
        parts.append(f"{key} {value:.4f}")
    return "  ".join(parts)


class PrintProgress(Callback):
    """One compact line per epoch: works in a terminal, CI and notebooks."""

    def __init__(self, every: int = 1, stream: TextIO | None = None):
        self.every = every  # print every n-th epoch (and the last one)
        self.stream = stream

    def on_epoch_end(self, state: FitState, logs: dict[str, float]) -> None:
        """Print the epoch's metrics and time."""
        epoch, total = state.epoch, state.num_epochs
        if epoch % self.every and epoch != total:
            return
        width = len(str(total))
        line = (f"epoch {epoch:>{width}}/{total}  {_format(logs)}  "
                f"{logs.get('seconds', 0.0):.2f} s")
        print(line, file=self.stream or sys.stdout, flush=True)


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (where figures can update live)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


class LivePlot(Callback):
    """Redraw the loss/accuracy curves each epoch in Jupyter; else no-op."""

    def __init__(self, every: int = 1, live: bool | None = None):
        self.every = every
        self.live = in_jupyter() if live is None else live
        self.fig = self.handle = None

    def on_epoch_end(self, state: FitState, logs: dict[str, float]) -> None:
        """Redraw the figure in place."""
        if not self.live or state.epoch % self.every:
            return
        from .plot import plot_history  # matplotlib only when drawing

        if self.fig is None:
            self.fig = plot_history(state.history)
            from IPython.display import display
            self.handle = display(self.fig, display_id=True)
        else:
            plot_history(state.history, fig=self.fig)
            self.handle.update(self.fig)

    def on_fit_end(self, state: FitState) -> None:
        """Draw the final curves and release the figure."""
        if self.fig is None:
            return
        from .plot import plot_history
        import matplotlib.pyplot as plt

        plot_history(state.history, fig=self.fig)
        self.handle.update(self.fig)
        plt.close(self.fig)  # else Jupyter shows it a second time


class EarlyStopping(Callback):
    """Stop when a validation metric stops improving; keep the best weights.

    After each epoch, ``logs[monitor]`` (``val_loss`` by default, so `fit`
    needs ``eval_data``) counts as an improvement if it beats the best value
    so far by more than ``min_delta`` (lower is better for ``mode="min"``,
    higher for ``"max"``). After ``patience`` epochs without one, it sets
    ``state.stop``. With ``restore_best`` the model gets the weights of its
    best epoch back when `fit` ends, whether or not it stopped early.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5,
                 min_delta: float = 0.0, mode: str = "min",
                 restore_best: bool = True):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.monitor, self.patience = monitor, patience
        self.min_delta, self.mode = min_delta, mode
        self.restore_best = restore_best
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None  # best monitored value so far
        self.best_epoch = 0  # the epoch (counted from 1) that reached it
        self.stopped_epoch: int | None = None  # set when it stopped fit
        self.wait = 0  # epochs since the last improvement
        self._best_state: dict[str, torch.Tensor] | None = None

    def _improved(self, value: float) -> bool:
        if value != value:  # NaN never improves
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_fit_start(self, state: FitState) -> None:
        """Forget any earlier fit: the callback may be reused."""
        self._reset()

    def on_epoch_end(self, state: FitState, logs: dict[str, float]) -> None:
        """Record an improvement, or count one more epoch without one."""
        if self.monitor not in logs:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, which fit did "
                f"not log (logged: {sorted(logs)}); pass eval_data= to fit "
                "for val_ metrics")
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, state.epoch, 0
            if self.restore_best:
                self._best_state = {
                    k: v.detach().clone()
                    for k, v in state.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            state.stop = True
            self.stopped_epoch = state.epoch

    def on_fit_end(self, state: FitState) -> None:
        """Load the best epoch's weights back into the model."""
        if self.restore_best and self._best_state is not None:
            state.model.load_state_dict(self._best_state)
