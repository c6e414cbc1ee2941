"""Atomic checkpoints that resume a run bit for bit.

A checkpoint holds the model, the optimizer(s), the learning-rate
scheduler(s), the epoch count and every random generator's state (Python,
NumPy, torch CPU and CUDA), so a run interrupted and resumed on a CPU ends
with exactly the weights of a run never interrupted.

Resuming is explicit: ``Checkpoint(path, resume=True)``. It prints what it
resumed, and refuses an optimizer whose settings differ from the saved
run's (a changed learning rate must start a new run, not continue the old).
"""

from __future__ import annotations

import os
import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed
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


def _settings(optimizers: list[torch.optim.Optimizer]) -> list[list[dict]]:
    """Each optimizer's hyperparameters per group, as a run starts them.

    A scheduler changes ``lr`` as it runs and keeps the starting value as
    ``initial_lr``: compare that instead.
    """
    out = []
    for opt in optimizers:
        groups = []
        for g in opt.param_groups:
            h = {k: v for k, v in g.items() if k != "params"}
            if "initial_lr" in h:
                h["lr"] = h["initial_lr"]
            groups.append({k: (list(v) if isinstance(v, tuple) else v)
                           for k, v in h.items()
                           if isinstance(v, (bool, int, float, str, tuple,
                                             type(None)))})
        out.append(groups)
    return out


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: Any,
                    epoch: int, extra: dict[str, Any] | None = None,
                    scheduler: Any = None) -> Path:
    """Save model, optimizer(s), scheduler(s), epoch and RNG states.

    Atomically: a crash mid-write leaves the last good file intact. The
    file gets the usual permissions (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    optimizers = _optimizers(optimizer)
    payload = {
        "model": model.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers],
        "schedulers": [s.state_dict() for s in _optimizers(scheduler)],
        "settings": _settings(optimizers),
        "epoch": epoch,
        "rng": _rng_state(),
        "extra": extra or {},
    }
    # Write a temporary file in the same directory, then rename it over
    # the old one. open(..., "xb") creates it with the umask's permissions
    # (tempfile.mkstemp would make it 0600, private to its owner).
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # make the rename itself survive a crash
    return path


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return  # Windows cannot open a directory; its rename is durable
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: str | Path) -> dict[str, Any]:
    # weights_only: a checkpoint cannot run code when it is loaded.
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path, model: nn.Module,
                    optimizer: Any = None, restore_rng: bool = True,
                    scheduler: Any = None) -> int:
    """Restore model, optimizer(s), scheduler(s) and RNG states.

    Return the saved epoch.
    """
    return _restore(_read(path), path, model, optimizer, restore_rng,
                    scheduler)


def _check_count(path: str | Path, what: str, saved: list, given: list
                 ) -> None:
    if given and len(given) != len(saved):
        raise ValueError(f"{path} holds {len(saved)} {what}(s), got "
                         f"{len(given)}")


def _restore(payload: dict[str, Any], path: str | Path, model: nn.Module,
             optimizer: Any, restore_rng: bool, scheduler: Any = None
             ) -> int:
    optimizers, schedulers = _optimizers(optimizer), _optimizers(scheduler)
    _check_count(path, "optimizer", payload["optimizers"], optimizers)
    saved_schedulers = payload.get("schedulers", [])
    _check_count(path, "scheduler", saved_schedulers, schedulers)
    model.load_state_dict(payload["model"])
    for opt, state in zip(optimizers, payload["optimizers"]):
        opt.load_state_dict(state)  # moves state to the params' device
    for sched, state in zip(schedulers, saved_schedulers):
        sched.load_state_dict(state)
    if restore_rng:
        _set_rng_state(payload["rng"])
    return payload["epoch"]


def load_extra(path: str | Path) -> dict[str, Any]:
    """The `extra` dict saved with a checkpoint."""
    return _read(path)["extra"]


def _differences(saved: list[list[dict]], now: list[list[dict]]
                 ) -> list[str]:
    diffs = []
    for i, (old_groups, new_groups) in enumerate(zip(saved, now)):
        for j, (old, new) in enumerate(zip(old_groups, new_groups)):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    where = (f"optimizer {i}, group {j}: "
                             if len(saved) > 1 or len(old_groups) > 1
                             else "")
                    diffs.append(f"{where}{key} was {old.get(key)!r}, "
                                 f"now {new.get(key)!r}")
        if len(old_groups) != len(new_groups):
            diffs.append(f"optimizer {i} had {len(old_groups)} parameter "
                         f"groups, now {len(new_groups)}")
    return diffs


class Checkpoint(Callback):
    """Save every `every` epochs; with resume=True, continue from path.

    Resuming is explicit (``resume=True``) and loud: it prints what it
    resumed, and refuses an optimizer configured differently from the
    saved run's. Without it a run starts from scratch and overwrites path.
    Pass the learning-rate ``scheduler`` (or a tuple of them) to save and
    restore it too. The save happens after every other callback's
    ``on_epoch_end``, whatever the order of the callbacks list.

    Under torchrun every rank resumes from path (on a file system every
    machine reads), only rank 0 prints and writes it, and every rank waits
    until it is written.
    """

    restores_state = True  # fit runs its on_fit_start before the others'

    def __init__(self, path: str | Path, every: int = 1,
                 resume: bool = False, scheduler: Any = None,
                 verbose: bool = True) -> None:
        self.path = Path(path)
        self.every = every
        self.resume = resume
        self.scheduler = scheduler
        self.verbose = verbose

    def on_fit_start(self, state: Any) -> None:
        """Restore model, optimizer, RNG, history and epoch if asked to."""
        if not (self.resume and self.path.exists()):
            return
        from .train import History

        payload = _read(self.path)  # one read: the file may be large
        optimizers = _optimizers(state.optimizer)
        if "settings" in payload:
            diffs = _differences(payload["settings"], _settings(optimizers))
            if diffs:
                raise ValueError(
                    f"{self.path} was saved by a run with other settings ("
                    + "; ".join(diffs) + "): resuming would mix two runs. "
                    "Delete the file, use another path, or pass "
                    "resume=False to start again.")
        state.epoch = _restore(payload, self.path, state.model,
                               state.optimizer, True, self.scheduler)
        extra = payload["extra"]
        state.history = History(extra.get("history", []))
        if state.generator is not None and "generator" in extra:
            state.generator.set_state(extra["generator"])
        if self.verbose and distributed.is_main():
            left = max(state.num_epochs - state.epoch, 0)
            print(f"resumed from {self.path}: {state.epoch} epoch(s) done, "
                  f"{left} to go", flush=True)

    def on_epoch_complete(self, state: Any, logs: dict[str, float]) -> None:
        """Save after every `every` epochs and after the last one.

        `fit` calls this after every callback's on_epoch_end, so what a
        later callback changes (a scheduler step, random draws) is saved.
        """
        if state.epoch % self.every and state.epoch != state.num_epochs:
            return
        extra: dict[str, Any] = {"history": state.history.epochs}
        if state.generator is not None:
            extra["generator"] = state.generator.get_state()
        if distributed.is_main():  # the ranks hold the same state
            save_checkpoint(self.path, state.model, state.optimizer,
                            state.epoch, extra, scheduler=self.scheduler)
        distributed.barrier()  # no rank reads or resumes a half-saved run
