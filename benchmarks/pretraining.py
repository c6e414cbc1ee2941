"""Chapter 5's data-efficiency experiment over several seeds.

For each seed: pretrain the masked-pixel model on the unlabelled training
images, then, for 1, 5, 10, 50 and all labels per class, adapt it to the
ten digits by training from scratch, a linear probe and a full fine-tune
(model selection on the validation split), and record validation and test
accuracy. The functions mirror the cells of book/05_pretraining.md line
for line (keep them in sync): seed 0 reproduces the chapter's live run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pretraining.py --seeds 5

writes benchmarks/results/pretraining.csv (CPU, one torch thread).
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import sys
import time
from pathlib import Path

# The Makefile's pinned numerics (CONTRIBUTING.md), set before torch is
# imported: seed 0 reproduces the chapter's live run only under them.
PINNED_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2",
                   "MKL_CBWR": "COMPATIBLE",
                   "ONEDNN_MAX_CPU_ISA": "AVX2"}
for _var, _value in PINNED_NUMERICS.items():
    os.environ.setdefault(_var, _value)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))

from dlcourse import data  # noqa: E402
from dlcourse.device import setup  # noqa: E402

OUT = Path(__file__).parent / "results" / "pretraining.csv"
LABELS_PER_CLASS = (1, 5, 10, 50, None)  # None: all training labels
EFFICIENCY = ("scratch", "linear probe", "fine-tune")


class Net(nn.Module):
    """An MLP: a feature backbone, then a linear head."""

    def __init__(self, num_outputs, hidden=128, features=64):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Linear(64, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, features), nn.BatchNorm1d(features),
            nn.ReLU())
        self.head = nn.Linear(features, num_outputs)

    def forward(self, X):  # (B, 64) -> (B, num_outputs)
        return self.head(self.backbone(X))


def mask_pixels(X, ratio, generator=None):
    """Hide round(ratio * D) random pixels per row: (X_masked, mask)."""
    N, D = X.shape
    k = round(ratio * D)
    scores = torch.rand(N, D, generator=generator)  # (N, D)
    hidden = scores.argsort(dim=1)[:, :k]  # (N, k): k random columns a row
    mask = torch.zeros(N, D, dtype=torch.bool)
    mask.scatter_(1, hidden, True)  # True where a pixel is hidden
    return X.masked_fill(mask, 0.0), mask


def masked_mse(x_hat, x, mask):
    """Mean squared error over the hidden pixels only."""
    return ((x_hat - x) ** 2)[mask].mean()


def pretrain_masked(X, seed, ratio=0.5, num_epochs=100, batch_size=64):
    """Train Net(64) to reconstruct masked pixels of X; return it."""
    torch.manual_seed(seed)  # initial weights
    g = torch.Generator().manual_seed(seed)  # batch order and masks
    model = Net(num_outputs=X.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for epoch in range(num_epochs):
        order = torch.randperm(len(X), generator=g)
        for start in range(0, len(X), batch_size):
            X_b = X[order[start:start + batch_size]]  # (B, 64)
            X_masked, mask = mask_pixels(X_b, ratio, g)
            loss = masked_mse(model(X_masked), X_b, mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def freeze(module):
    """Stop module's gradients and its normalisation statistics."""
    module.requires_grad_(False)
    module.eval()  # batch norm: use the running statistics, never update
    return module


def unfreeze(module):
    """Undo freeze: gradients and statistics update again."""
    module.requires_grad_(True)
    module.train()
    return module


def replace_head(model, num_classes):
    """Give model a freshly initialised head with num_classes outputs."""
    old = model.head
    model.head = nn.Linear(old.in_features, num_classes,
                           device=old.weight.device, dtype=old.weight.dtype)
    return model


def param_groups(model, lr_backbone, lr_head):
    """Optimizer groups: the head at lr_head, everything else lr_backbone."""
    head = list(model.head.parameters())
    in_head = {id(p) for p in head}
    rest = [p for p in model.parameters() if id(p) not in in_head]
    return [{"params": rest, "lr": lr_backbone},
            {"params": head, "lr": lr_head}]


@torch.no_grad()
def accuracy(model, X, y):
    """Accuracy in eval mode; every submodule's own mode is restored."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    acc = (model(X).argmax(dim=1) == y).double().mean().item()
    for m, mode in modes.items():  # not model.train(): it would unfreeze
        m.training = mode
    return acc


def train_classifier(model, groups, X, y, X_val, y_val, seed,
                     num_steps=300):
    """Adam on (X, y); keep the weights with the best val accuracy."""
    g = torch.Generator().manual_seed(seed)  # batch order
    optimizer = torch.optim.Adam(groups)
    batch_size = min(64, len(X))
    best_acc, best_state, step = -1.0, None, 0
    while step < num_steps:
        order = torch.randperm(len(X), generator=g)
        for start in range(0, len(X) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(X[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 10 == 0 and (acc := accuracy(model, X_val,
                                                   y_val)) > best_acc:
                best_acc = acc
                best_state = copy.deepcopy(model.state_dict())
            if step == num_steps:
                break
    model.load_state_dict(best_state)
    return best_acc


def adapt(method, backbone_state, X, y, X_val, y_val, seed,
          lr_head=1e-2, lr_backbone=1e-3):
    """Build, adapt and return a classifier, and its val accuracy."""
    num_classes = int(y.max()) + 1
    torch.manual_seed(seed)  # the initial weights of everything new
    if method == "scratch":
        model = Net(num_classes)
        groups = [{"params": model.parameters(), "lr": lr_head}]
    else:
        model = Net(backbone_state["head.weight"].shape[0])
        model.load_state_dict(backbone_state)
        model = replace_head(unfreeze(model), num_classes)
        if method == "linear probe":
            freeze(model.backbone)
            groups = [{"params": model.head.parameters(), "lr": lr_head}]
        elif method == "partial fine-tune":
            freeze(model.backbone[:3])  # the first block
            groups = param_groups(model, lr_backbone, lr_head)
        else:
            groups = param_groups(model, lr_backbone, lr_head)
    val_acc = train_classifier(model, groups, X, y, X_val, y_val, seed)
    return model, val_acc


def labelled_subset(X, y, k, seed):
    """k random examples of each class (all of them if k is None)."""
    if k is None:
        return X, y
    g = torch.Generator().manual_seed(seed)
    idx = [torch.nonzero(y == c).squeeze(1) for c in y.unique()]
    idx = [i[torch.randperm(len(i), generator=g)[:k]] for i in idx]
    idx = torch.cat(idx)
    return X[idx], y[idx]


def run_seed(digits: data.Split, seed: int) -> list[dict]:
    """Pretrain with seed, then every (labels per class, method) pair."""
    pretrained = pretrain_masked(digits.X_train, seed=seed).state_dict()
    val = (digits.X_val, digits.y_val)
    test = (digits.X_test, digits.y_test)
    rows = []
    for k in LABELS_PER_CLASS:
        X_k, y_k = labelled_subset(digits.X_train, digits.y_train, k, seed)
        for method in EFFICIENCY:
            model, val_acc = adapt(method, pretrained, X_k, y_k, *val,
                                   seed=seed)
            rows.append({"seed": seed,
                         "labels_per_class": "all" if k is None else k,
                         "method": method, "val_acc": f"{val_acc:.4f}",
                         "test_acc": f"{accuracy(model, *test):.4f}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    setup(seed=0)  # one torch thread (DLCOURSE_THREADS), seeded
    digits = data.load_digits()
    rows = []
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(args.seeds):
        rows += run_seed(digits, seed)
        print(f"seed {seed} done", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}: {len(rows)} rows in "
          f"{time.perf_counter() - wall:.0f} s wall, "
          f"{time.process_time() - cpu:.0f} s CPU")


if __name__ == "__main__":
    main()
