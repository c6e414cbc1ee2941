"""Figures for the book: training curves, image grids, decision regions.

The only module that imports matplotlib, so `import dlcourse` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_history", "show_images", "plot_decision_boundary"]

Tensor = torch.Tensor


def plot_history(history: Any, fig: Figure | None = None) -> Figure:
    """Loss curves (left) and accuracy curves (right) of a fit's History."""
    keys = [k for k in history.keys() if k not in ("epoch", "seconds")]
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if k not in losses]
    ncols = 2 if others else 1
    if fig is None:
        fig = plt.figure(figsize=(4.5 * ncols, 3.2))
    fig.clear()
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax, group, label in zip(axes, (losses, others), ("loss", "metric")):
        for key in group:
            values = history[key]
            ax.plot(range(1, len(values) + 1), values, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    return fig


def show_images(images: Tensor, nrow: int = 8, ax: Axes | None = None,
                title: str | None = None,
                value_range: tuple[float, float] | None = None) -> Axes:
    """Show a (C, H, W) grid, or tile and show a (N, C, H, W) batch."""
    from .gan import sample_grid

    if images.dim() == 4:
        images = sample_grid(images, nrow, value_range=value_range)
    grid = images.detach().float().cpu().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    if grid.shape[0] == 1:
        ax.imshow(grid[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(grid.transpose(1, 2, 0).clip(0, 1))  # (H, W, C)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def plot_decision_boundary(model_or_fn: Callable[[Tensor], Tensor],
                           X: Tensor, y: Tensor, ax: Axes | None = None,
                           resolution: int = 200) -> Axes:
    """Colour the plane by predicted class and scatter the (N, 2) points."""
    X, y = X.detach().float().cpu(), y.detach().cpu()
    lo, hi = X.min(0).values - 0.5, X.max(0).values + 0.5
    xs = torch.linspace(lo[0].item(), hi[0].item(), resolution)
    ys = torch.linspace(lo[1].item(), hi[1].item(), resolution)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)  # (R*R, 2)
    pred = _predict(model_or_fn, grid).reshape(resolution, resolution)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    num_classes = int(max(y.max(), pred.max())) + 1
    levels = [c - 0.5 for c in range(num_classes + 1)]  # one per class
    colours = dict(cmap="coolwarm", vmin=0, vmax=max(num_classes - 1, 1))
    ax.contourf(gx.numpy(), gy.numpy(), pred.numpy(), levels=levels,
                alpha=0.3, **colours)  # same colour per class as points
    ax.scatter(X[:, 0].numpy(), X[:, 1].numpy(), c=y.numpy(), s=8,
               edgecolors="k", linewidths=0.2, **colours)
    return ax


@torch.no_grad()
def _predict(model_or_fn: Callable[[Tensor], Tensor], grid: Tensor
             ) -> Tensor:
    params = getattr(model_or_fn, "parameters", None)
    p = next(params(), None) if params else None
    device = p.device if p is not None else torch.device("cpu")
    out = model_or_fn(grid.to(device)).float().cpu()
    if out.dim() == 2 and out.shape[1] > 1:
        return out.argmax(1)  # (N, C) logits
    return (out.reshape(-1) > 0).long()  # one logit: positive is class 1
