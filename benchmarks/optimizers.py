"""Chapter 04's multi-seed table: optimizers, schedules, regularisers.

Every configuration is trained once per seed (the seed sets the initial
weights and the batch order) on the CPU with one torch thread, and scored
on the digits' *validation* split; the test split is not touched. Run from
the repository root (95 runs, about one minute of CPU time)::

    .venv/bin/python benchmarks/optimizers.py            # 5 seeds
    .venv/bin/python benchmarks/optimizers.py --seeds 2  # a quick look

It writes ``benchmarks/results/optimizers.csv`` with one row per run:
experiment, config, seed, epochs, val_loss, val_acc, cpu_seconds. The
chapter (book/04_optimizers.md) reads that file; it never reruns this.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))

from dlcourse.callbacks import Callback, EarlyStopping  # noqa: E402
from dlcourse.data import load_digits  # noqa: E402
from dlcourse.device import seed_everything, set_threads  # noqa: E402
from dlcourse.train import evaluate, fit  # noqa: E402

OUT = Path(__file__).parent / "results" / "optimizers.csv"
FIELDS = ["experiment", "config", "seed", "epochs", "val_loss", "val_acc",
          "cpu_seconds"]
DATA = load_digits()
SMALL = 100  # training digits in the overfitting experiments


def mlp(width: int = 64, dropout: float = 0.0) -> nn.Module:
    """The chapter's one-hidden-layer ReLU MLP for the digits."""
    layers: list[nn.Module] = [nn.Linear(64, width), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(width, 10))


def schedule(kind: str, total: int, warmup: int) -> Callable[[int], float]:
    """Multiplier of the base lr at step t (for LambdaLR)."""
    def cosine(t: int, span: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(t, span) / span))

    if kind == "constant":
        return lambda t: 1.0
    if kind == "step decay":  # x0.1 after 2/3 of training
        return lambda t: 0.1 if t >= 2 * total // 3 else 1.0
    if kind == "cosine":
        return lambda t: cosine(t, total)
    if kind == "warm-up + cosine":
        return lambda t: (0.01 + 0.99 * t / warmup if t < warmup
                          else cosine(t - warmup, total - warmup))
    raise ValueError(kind)


class StepScheduler(Callback):
    """A fit callback that calls scheduler.step() after every batch."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def on_batch_end(self, state, batch_index, outputs):
        self.scheduler.step()


def run(seed: int, model: nn.Module, make_optimizer, num_epochs: int,
        small: bool = False, schedule_kind: str | None = None,
        patience: int | None = None) -> dict[str, float]:
    """Train one configuration; validation loss/accuracy at the end."""
    X, y = DATA.X_train, DATA.y_train
    if small:
        X, y = X[:SMALL], y[:SMALL]
    optimizer = make_optimizer(model.parameters())
    callbacks = []
    if schedule_kind is not None:
        total = num_epochs * math.ceil(len(X) / 32)
        callbacks.append(StepScheduler(torch.optim.lr_scheduler.LambdaLR(
            optimizer, schedule(schedule_kind, total, total // 10))))
    if patience is not None:
        callbacks.append(EarlyStopping(patience=patience))
    start = time.process_time()
    history = fit(model, (X, y), loss_fn=F.cross_entropy,
                  optimizer=optimizer, num_epochs=num_epochs, batch_size=32,
                  eval_data=(DATA.X_val, DATA.y_val), callbacks=callbacks,
                  device="cpu", generator=torch.Generator().manual_seed(seed))
    cpu = time.process_time() - start
    val = evaluate(model, (DATA.X_val, DATA.y_val), F.cross_entropy,
                   device="cpu")  # after early stopping: the best epoch
    return {"epochs": len(history), "val_loss": val["loss"],
            "val_acc": val["acc"], "cpu_seconds": cpu}


def configs():
    """(experiment, config, model factory, run keyword arguments)."""
    sgd = torch.optim.SGD
    adam, adamw = torch.optim.Adam, torch.optim.AdamW
    exp = "optimizers: all 1151 training digits, 20 epochs"
    for name, make in {
        "SGD lr 0.1": lambda ps: sgd(ps, lr=0.1),
        "momentum 0.9, lr 0.01": lambda ps: sgd(ps, lr=0.01, momentum=0.9),
        "Nesterov 0.9, lr 0.01": lambda ps: sgd(ps, lr=0.01, momentum=0.9,
                                                nesterov=True),
        "RMSProp lr 1e-3": lambda ps: torch.optim.RMSprop(ps, lr=1e-3),
        "Adam lr 1e-3": lambda ps: adam(ps, lr=1e-3),
    }.items():
        yield exp, name, mlp, dict(make_optimizer=make, num_epochs=20)
    exp = "schedules: momentum 0.9, lr 0.03, 20 epochs"
    for kind in ("constant", "step decay", "cosine", "warm-up + cosine"):
        yield exp, kind, mlp, dict(
            make_optimizer=lambda ps: sgd(ps, lr=0.03, momentum=0.9),
            num_epochs=20, schedule_kind=kind)
    exp = "weight decay in Adam: 100 digits, lr 1e-3, 200 epochs"
    for name, make in {
        "Adam, no decay": lambda ps: adam(ps, lr=1e-3),
        "Adam + L2 0.01": lambda ps: adam(ps, lr=1e-3, weight_decay=0.01),
        "AdamW 0.01": lambda ps: adamw(ps, lr=1e-3, weight_decay=0.01),
        "Adam + L2 0.1": lambda ps: adam(ps, lr=1e-3, weight_decay=0.1),
        "AdamW 0.1": lambda ps: adamw(ps, lr=1e-3, weight_decay=0.1),
    }.items():
        yield exp, name, lambda: mlp(256), dict(
            make_optimizer=make, num_epochs=200, small=True)
    exp = "regularisation: 100 digits, momentum 0.9, lr 0.05, 200 epochs"

    def momentum(weight_decay=0.0):
        return lambda ps: sgd(ps, lr=0.05, momentum=0.9,
                              weight_decay=weight_decay)

    for name, factory, kwargs in (
            ("none", lambda: mlp(256), {}),
            ("weight decay 1e-3", lambda: mlp(256),
             dict(make_optimizer=momentum(1e-3))),
            ("weight decay 1e-2", lambda: mlp(256),
             dict(make_optimizer=momentum(1e-2))),
            ("dropout 0.5", lambda: mlp(256, dropout=0.5), {}),
            ("early stopping, patience 20", lambda: mlp(256),
             dict(patience=20))):
        yield exp, name, factory, {"make_optimizer": momentum(),
                                   "num_epochs": 200, "small": True,
                                   **kwargs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    set_threads(1)
    rows = []
    total_start = time.process_time()
    for experiment, config, factory, kwargs in configs():
        for seed in range(args.seeds):
            seed_everything(seed)  # the initial weights
            result = run(seed, factory(), **kwargs)
            rows.append({"experiment": experiment, "config": config,
                         "seed": seed, **result})
            print(f"{experiment[:24]:24s} {config:28s} seed {seed}: "
                  f"val acc {result['val_acc']:.3f}, val loss "
                  f"{result['val_loss']:.3f}, {result['epochs']} epochs",
                  flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v)
                             for k, v in row.items()})
    print(f"wrote {args.out} ({len(rows)} runs, "
          f"{time.process_time() - total_start:.0f} s CPU)")


if __name__ == "__main__":
    main()
