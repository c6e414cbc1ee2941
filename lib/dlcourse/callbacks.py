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

__all__ = ["Callback", "PrintProgress", "LivePlot", "in_jupyter"]


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
