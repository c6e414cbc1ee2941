"""Atomic checkpoints that resume a run bit for bit.

A checkpoint holds the model, the optimizer(s), the epoch count and every
random generator's state (Python, NumPy, torch CPU and CUDA), so a run
interrupted and resumed on a CPU ends with exactly the weights of a run
never interrupted.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .callbacks import Callback

__all__ = ["save_checkpoint", "load_checkpoint", "load_extra",
           "Checkpoint"]


def _optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    if optimizer is None:
        return []
    if isinstance(optimizer, (list, tuple)):
        return list(optimizer)  # e.g. (opt_d, opt_g) for a GAN
    return [optimizer]


def _rng_state() -> dict[str, Any]:
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        # plain ints and lists: loadable with torch.load(weights_only=True)
        "numpy": [name, key.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": (torch.cuda.get_rng_state_all()
                 if torch.cuda.is_available() else []),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), pos,
                         has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: Any,
                    epoch: int, extra: dict[str, Any] | None = None) -> Path:
    """Save model, optimizer(s), epoch and RNG states atomically to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimizers": [o.state_dict() for o in _optimizers(optimizer)],
        "epoch": epoch,
        "rng": _rng_state(),
        "extra": extra or {},
    }
    # Write a temporary file in the same directory, then rename it over
    # the old one: a crash mid-write leaves the last good file intact.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def _read(path: str | Path) -> dict[str, Any]:
    # weights_only: a checkpoint cannot run code when it is loaded.
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path, model: nn.Module,
                    optimizer: Any = None, restore_rng: bool = True) -> int:
    """Restore model, optimizer(s) and RNG states; return the saved epoch."""
    return _restore(_read(path), path, model, optimizer, restore_rng)


def _restore(payload: dict[str, Any], path: str | Path, model: nn.Module,
             optimizer: Any, restore_rng: bool) -> int:
    model.load_state_dict(payload["model"])
    optimizers = _optimizers(optimizer)
    if optimizers and len(optimizers) != len(payload["optimizers"]):
        raise ValueError(f"{path} holds {len(payload['optimizers'])} "
                         f"optimizer(s), got {len(optimizers)}")
    for opt, state in zip(optimizers, payload["optimizers"]):
        opt.load_state_dict(state)  # moves state to the params' device
    if restore_rng:
        _set_rng_state(payload["rng"])
    return payload["epoch"]


def load_extra(path: str | Path) -> dict[str, Any]:
    """The `extra` dict saved with a checkpoint."""
    return _read(path)["extra"]


class Checkpoint(Callback):
    """Save every `every` epochs; with resume=True, continue from path."""

    def __init__(self, path: str | Path, every: int = 1,
                 resume: bool = True) -> None:
        self.path = Path(path)
        self.every = every
        self.resume = resume

    def on_fit_start(self, state: Any) -> None:
        """Restore model, optimizer, RNG, history and epoch if path exists."""
        if not (self.resume and self.path.exists()):
            return
        from .train import History

        payload = _read(self.path)  # one read: the file may be large
        state.epoch = _restore(payload, self.path, state.model,
                               state.optimizer, restore_rng=True)
        extra = payload["extra"]
        state.history = History(extra.get("history", []))
        if state.generator is not None and "generator" in extra:
            state.generator.set_state(extra["generator"])

    def on_epoch_end(self, state: Any, logs: dict[str, float]) -> None:
        """Save after every `every` epochs and after the last one."""
        if state.epoch % self.every and state.epoch != state.num_epochs:
            return
        extra: dict[str, Any] = {"history": state.history.epochs}
        if state.generator is not None:
            extra["generator"] = state.generator.get_state()
        save_checkpoint(self.path, state.model, state.optimizer,
                        state.epoch, extra)
