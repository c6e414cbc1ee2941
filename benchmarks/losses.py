"""Chapter 3's multi-seed tables: class weights and label smoothing.

    .venv/bin/python benchmarks/losses.py          # about a minute of CPU

Writes, one row per (setting, seed), all metrics on the validation split:

* ``benchmarks/results/losses_class_weights.csv``: softmax regression on an
  imbalanced training subset of the digits (classes 5-9 cut to 10 %),
  trained with plain and with class-weighted cross-entropy;
* ``benchmarks/results/losses_label_smoothing.csv``: a 64-64-10 MLP on all
  training digits, trained with label smoothing 0 and 0.1.

The settings are the chapter's (book/03_losses.md); the chapter runs seed 0
live and shows these tables for the spread over seeds. One torch thread:
the numbers reproduce exactly on a CPU.
"""
from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))

from dlcourse.data import load_digits  # noqa: E402
from dlcourse.device import set_threads  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = range(10)
MINORITY = range(5, 10)  # classes cut to KEEP of their training examples
KEEP = 0.1


def imbalanced_subset(X, y, seed: int, keep: float = KEEP):
    """Keep every example of classes 0-4 and `keep` of classes 5-9."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(len(y), dtype=torch.bool)
    for c in MINORITY:
        idx = (y == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        mask[idx[max(1, round(keep * len(idx))):]] = False
    return X[mask], y[mask]


def class_weights(y, num_classes: int = 10):
    """N / (C * n_c): each class contributes the same total weight."""
    counts = torch.bincount(y, minlength=num_classes).float()
    return len(y) / (num_classes * counts)


def per_class_recall(logits, y, num_classes: int = 10):
    """Fraction of each class's examples predicted as that class."""
    pred = logits.argmax(dim=1)
    return torch.stack([(pred[y == c] == c).float().mean()
                        for c in range(num_classes)])


def train_full_batch(model, X, y, loss_fn, optimizer, steps: int):
    """Full-batch gradient steps on (X, y)."""
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model(X), y).backward()
        optimizer.step()
    return model


def calibration_error(logits, y, bins: int = 10) -> float:
    """Expected calibration error: |accuracy - confidence|, bin-weighted."""
    p = logits.softmax(dim=1)
    conf, pred = p.max(dim=1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            gap = (correct[inside].mean() - conf[inside].mean()).abs()
            ece += inside.float().mean().item() * gap.item()
    return ece


def class_weight_rows(d):
    rows = []
    for seed in SEEDS:
        X, y = imbalanced_subset(d.X_train, d.y_train, seed)
        for weighted in (False, True):
            weight = class_weights(y) if weighted else None
            torch.manual_seed(seed)
            model = nn.Linear(64, 10)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
            train_full_batch(
                model, X, y,
                lambda z, t: F.cross_entropy(z, t, weight=weight),
                optimizer, steps=300)
            with torch.no_grad():
                recall = per_class_recall(model(d.X_val), d.y_val)
            rows.append({
                "seed": seed, "weighted": int(weighted),
                "train_size": len(y),
                "val_recall_majority": round(recall[:5].mean().item(), 4),
                "val_recall_minority": round(recall[5:].mean().item(), 4),
                "val_balanced_accuracy": round(recall.mean().item(), 4),
            })
    return rows


def label_smoothing_rows(d):
    rows = []
    for seed in SEEDS:
        for smoothing in (0.0, 0.1):
            torch.manual_seed(seed)
            model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(),
                                  nn.Linear(64, 10))
            optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
            train_full_batch(
                model, d.X_train, d.y_train,
                lambda z, t: F.cross_entropy(z, t,
                                             label_smoothing=smoothing),
                optimizer, steps=200)
            with torch.no_grad():
                logits = model(d.X_val)
            rows.append({
                "seed": seed, "label_smoothing": smoothing,
                "val_accuracy": round(
                    (logits.argmax(1) == d.y_val).float().mean().item(), 4),
                "val_nll": round(F.cross_entropy(logits, d.y_val).item(), 4),
                "val_mean_confidence": round(
                    logits.softmax(1).max(1).values.mean().item(), 4),
                "val_calibration_error": round(
                    calibration_error(logits, d.y_val), 4),
            })
    return rows


def write(name: str, rows: list[dict]) -> None:
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / name, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote benchmarks/results/{name} ({len(rows)} rows)")


def main() -> None:
    set_threads(1)
    d = load_digits()
    start, cpu = time.perf_counter(), time.process_time()
    write("losses_class_weights.csv", class_weight_rows(d))
    write("losses_label_smoothing.csv", label_smoothing_rows(d))
    print(f"{time.perf_counter() - start:.1f} s wall, "
          f"{time.process_time() - cpu:.1f} s CPU")


if __name__ == "__main__":
    main()
