"""Offline datasets and fast batching of tensors that live on the device.

Everything here is generated or ships inside a wheel, except CIFAR-10,
which is read from its standard archive placed by hand (or downloaded
when online and asked to).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import math
import os
import pickle
import tarfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Split", "load_digits", "ring_means", "ring_of_gaussians",
    "grid_means", "grid_of_gaussians", "moons", "spirals", "batches",
    "TensorData", "CIFAR10_FILE", "CIFAR10_MD5", "CIFAR10_MIRRORS",
    "CIFAR10_CLASSES", "load_cifar10", "write_fake_cifar10_archive",
]

Tensor = torch.Tensor


# ---------------------------------------------------------------- digits
@dataclass
class Split:
    """A fixed train/validation/test split of the digits.

    Tune on ``val``; report ``test`` once, at the end. Features are
    standardised with the training part's statistics only.
    """

    X_train: Tensor  # (N, 64) standardised with train statistics
    y_train: Tensor  # (N,) int64 class labels
    X_val: Tensor  # (V, 64): for tuning and early stopping
    y_val: Tensor  # (V,)
    X_test: Tensor  # (M, 64): report once
    y_test: Tensor  # (M,)
    images_train: Tensor  # (N, 1, 8, 8) raw pixels scaled to [0, 1]
    images_val: Tensor  # (V, 1, 8, 8)
    images_test: Tensor  # (M, 1, 8, 8)


def _digits_file() -> Path | None:
    # Read the CSV that ships inside scikit-learn's wheel directly:
    # importing sklearn.datasets costs about a second per notebook.
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.exists():
            return path
    return None


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    path = _digits_file()
    if path is None:  # a future layout: fall back to the public API
        from sklearn.datasets import load_digits as sk_load_digits
        bunch = sk_load_digits()
        return bunch.data, bunch.target
    table = np.loadtxt(path, delimiter=",")  # (1797, 65): pixels, label
    return table[:, :-1], table[:, -1].astype(np.int64)


@functools.lru_cache(maxsize=1)
def _digits_split() -> tuple[np.ndarray, ...]:
    X, y = _digits_arrays()
    # Stratified 80/20 with a fixed seed: every chapter sees one split.
    rng = np.random.RandomState(0)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[:round(0.2 * len(idx))]] = True
    order = rng.permutation(len(y))  # mix the classes within each part
    tr, te = order[~test[order]], order[test[order]]
    # Validation: a stratified 20 % of the training part, its own seed, so
    # the test set is the same 20 % it always was.
    rng = np.random.RandomState(1)
    val = np.zeros(len(tr), dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y[tr] == c))
        val[idx[:round(0.2 * len(idx))]] = True
    tr, va = tr[~val], tr[val]
    return X[tr], X[va], X[te], y[tr], y[va], y[te]


def load_digits(device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> Split:
    """scikit-learn's 8x8 digits, standardised, split stratified.

    1,797 images: 1,151 train, 287 validation, 359 test (64/16/20 %).
    """
    Xtr, Xva, Xte, ytr, yva, yte = _digits_split()
    mean = Xtr.mean(axis=0)
    std = Xtr.std(axis=0)
    std[std == 0] = 1.0  # border pixels that are always 0 stay 0

    def _t(a: np.ndarray, dt: torch.dtype = dtype) -> Tensor:
        return torch.as_tensor(a, dtype=dt).to(device)

    return Split(
        X_train=_t((Xtr - mean) / std), y_train=_t(ytr, torch.int64),
        X_val=_t((Xva - mean) / std), y_val=_t(yva, torch.int64),
        X_test=_t((Xte - mean) / std), y_test=_t(yte, torch.int64),
        images_train=_t(Xtr.reshape(-1, 1, 8, 8) / 16.0),  # pixels 0..16
        images_val=_t(Xva.reshape(-1, 1, 8, 8) / 16.0),
        images_test=_t(Xte.reshape(-1, 1, 8, 8) / 16.0),
    )


# ---------------------------------------------------------- 2-D sets
def ring_means(k: int = 8, radius: float = 2.0) -> Tensor:
    """The K distinct centres of a ring of Gaussians, shape (K, 2)."""
    # K+1 points then drop the last: linspace(0, 2pi, K) repeats angle 0.
    angles = torch.linspace(0, 2 * math.pi, k + 1, dtype=torch.float64)[:-1]
    return (radius * torch.stack([angles.cos(), angles.sin()], 1)).float()


def grid_means(side: int = 5, spacing: float = 2.0) -> Tensor:
    """Centres of a side x side grid of Gaussians around 0, shape (K, 2)."""
    ticks = (torch.arange(side) - (side - 1) / 2) * spacing
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], 1).float()


def _mixture(n: int, means: Tensor, std: float,
             generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    y = torch.randint(len(means), (n,), generator=generator)  # (n,)
    noise = torch.randn(n, 2, generator=generator) * std  # (n, 2)
    return means[y] + noise, y


def ring_of_gaussians(n: int, k: int = 8, radius: float = 2.0,
                      std: float = 0.02,
                      generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor]:
    """n points from K Gaussians on a circle (VEEGAN's ring); y = mode."""
    return _mixture(n, ring_means(k, radius), std, generator)


def grid_of_gaussians(n: int, side: int = 5, spacing: float = 2.0,
                      std: float = 0.02,
                      generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor]:
    """n points from a side x side grid of Gaussians; y = mode index."""
    return _mixture(n, grid_means(side, spacing), std, generator)


def moons(n: int, noise: float = 0.1,
          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Two interleaving half circles (like scikit-learn's make_moons)."""
    y = (torch.arange(n) >= n // 2).long()  # n//2 of class 0, rest 1
    t = torch.rand(n, generator=generator) * math.pi
    outer = torch.stack([t.cos(), t.sin()], 1)
    inner = torch.stack([1 - t.cos(), 0.5 - t.sin()], 1)
    X = torch.where(y[:, None] == 0, outer, inner)  # (n, 2)
    return X + noise * torch.randn(n, 2, generator=generator), y


def spirals(n: int, num_classes: int = 2, noise: float = 0.2,
            generator: torch.Generator | None = None
            ) -> tuple[Tensor, Tensor]:
    """Interleaved spiral arms, one per class (cs231n's toy set)."""
    y = torch.arange(n) % num_classes  # balanced classes
    r = torch.rand(n, generator=generator)  # radius in [0, 1)
    turn = 4.0  # radians an arm turns from centre to edge
    theta = (y * 2 * math.pi / num_classes + turn * r
             + noise * torch.randn(n, generator=generator))
    return torch.stack([r * theta.sin(), r * theta.cos()], 1), y


# -------------------------------------------------------------- batching
def batches(X: Tensor, y: Tensor | None = None, batch_size: int = 64,
            shuffle: bool = True, generator: torch.Generator | None = None,
            drop_last: bool = False, shard: tuple[int, int] | None = None
            ) -> Iterator[tuple[Tensor, ...]]:
    """Yield (X_b,) or (X_b, y_b) by index slicing on X's own device.

    ``shard=(rank, world)``: batch_size is per process; each global batch
    of ``world * batch_size`` consecutive examples of the (shared)
    permutation is split into world near-equal parts and this rank gets
    part ``rank``. The ranks together see the batches of one process with
    batch ``world * batch_size``, in the same order. A last batch smaller
    than world is skipped (every rank needs an example).
    """
    n = len(X)
    if shuffle:
        # The permutation is drawn on the CPU so a CPU generator (and the
        # global CPU RNG a checkpoint restores) decides the order.
        order = torch.randperm(n, generator=generator)
        if X.device.type == "cuda":  # page-locked: no host sync per epoch
            order = order.pin_memory().to(X.device, non_blocking=True)
        else:
            order = order.to(X.device)
    if shard is not None:
        yield from _sharded(X, y, order if shuffle else None, batch_size,
                            drop_last, *shard)
        return
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if shuffle:
            idx = order[start:start + batch_size]
            yield (X[idx],) if y is None else (X[idx], y[idx])
        else:
            sl = slice(start, start + batch_size)
            yield (X[sl],) if y is None else (X[sl], y[sl])


def _sharded(X: Tensor, y: Tensor | None, order: Tensor | None,
             batch_size: int, drop_last: bool, rank: int, world: int
             ) -> Iterator[tuple[Tensor, ...]]:
    from .distributed import set_batch, shard

    n, size = len(X), batch_size * world  # size: one global batch
    stop = n - n % size if drop_last else n
    try:
        for start in range(0, stop, size):
            total = min(size, n - start)
            if total < world:
                break
            lo, hi = shard(total, rank, world)
            set_batch(total, lo, hi - lo)  # e.g. the GAN step's noise
            lo, hi = start + lo, start + hi
            idx = slice(lo, hi) if order is None else order[lo:hi]
            yield (X[idx],) if y is None else (X[idx], y[idx])
    finally:
        set_batch(None)


@dataclass
class TensorData:
    """In-memory tensors that fit batches by slicing, on any device."""

    X: Tensor
    y: Tensor | None = None
    transform: Callable[[Tensor], Tensor] | None = None  # per batch of X

    def __len__(self) -> int:
        return len(self.X)

    def to(self, device: torch.device | str,
           non_blocking: bool = False) -> TensorData:
        """Return a copy whose tensors live on device."""
        y = self.y if self.y is None else self.y.to(device, non_blocking=
                                                    non_blocking)
        return TensorData(self.X.to(device, non_blocking=non_blocking), y,
                          self.transform)

    def batches(self, batch_size: int = 64, shuffle: bool = True,
                generator: torch.Generator | None = None,
                drop_last: bool = False, shard: tuple[int, int] | None = None
                ) -> Iterator[tuple[Tensor, ...]]:
        """Iterate over batches (see `batches`), transform applied to X."""
        it = batches(self.X, self.y, batch_size, shuffle, generator,
                     drop_last, shard)
        if self.transform is None:
            yield from it
        else:
            for b in it:
                yield (self.transform(b[0]),) + b[1:]


def as_data(data: object) -> TensorData | object:
    """Wrap a tensor or an (X, y) pair in TensorData; pass others through."""
    if isinstance(data, TensorData):
        return data
    if isinstance(data, Tensor):
        return TensorData(data)
    if isinstance(data, (tuple, list)) and 1 <= len(data) <= 2 and all(
            isinstance(t, Tensor) for t in data):
        return TensorData(*data)
    return data  # any iterable of batches, e.g. a DataLoader


# -------------------------------------------------------------- CIFAR-10
CIFAR10_FILE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_MIRRORS = (
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog",
                   "frog", "horse", "ship", "truck")
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)],
                  "test": ["test_batch"]}


def data_root() -> Path:
    """Where datasets live: DLCOURSE_DATA, else ~/.cache/dlcourse."""
    default = Path.home() / ".cache" / "dlcourse"
    return Path(os.environ.get("DLCOURSE_DATA", default))


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Download url to dest, resuming a partial dest.part if one exists."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        # 206: the server honoured the Range; 200: it sent everything.
        mode = "ab" if getattr(resp, "status", 200) == 206 else "wb"
        with open(part, mode) as f:
            while block := resp.read(1 << 20):
                f.write(block)
    os.replace(part, dest)
    return dest


def _fetch_cifar10(path: Path, mirrors: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in mirrors:
        try:
            download(url, path)
            return
        except OSError as e:  # URLError and timeouts are OSErrors
            errors.append(f"{url}: {e}")  # try the next mirror
    raise OSError("could not download CIFAR-10:\n" + "\n".join(errors))


def _missing_message(path: Path) -> str:
    return (f"CIFAR-10 not found: place {CIFAR10_FILE} (md5 {CIFAR10_MD5})"
            f" at {path} -- download it from {CIFAR10_MIRRORS[0]} -- or "
            f"call load_cifar10(..., download=True) on a machine online.")


def load_cifar10(root: str | Path | None = None, split: str = "train",
                 device: torch.device | str = "cpu", download: bool = False,
                 md5: str | None = CIFAR10_MD5,
                 mirrors: tuple[str, ...] = CIFAR10_MIRRORS
                 ) -> tuple[Tensor, Tensor]:
    """CIFAR-10 as one uint8 tensor (N, 3, 32, 32) and int64 labels (N,)."""
    if split not in _CIFAR_BATCHES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(root if root is not None else data_root()) / CIFAR10_FILE
    if not path.exists():
        if not download:
            raise FileNotFoundError(_missing_message(path))
        _fetch_cifar10(path, mirrors)
    # The checksum is also what makes unpickling the archive safe.
    if md5 is not None and (got := md5sum(path)) != md5:
        raise ValueError(f"{path}: md5 {got}, expected {md5}; the file is "
                         f"damaged or not CIFAR-10: delete it and retry.")
    X, y = _read_cifar_archive(path, _CIFAR_BATCHES[split])
    return X.to(device), y.to(device)


def _read_cifar_archive(path: Path, names: list[str]
                        ) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    with tarfile.open(path, "r:gz") as tar:
        for name in names:
            f = tar.extractfile(f"{_CIFAR_DIR}/{name}")
            batch = pickle.load(f, encoding="bytes")
            images.append(np.asarray(batch[b"data"], dtype=np.uint8))
            labels.extend(batch[b"labels"])
    # Rows are 1024 red, then green, then blue values: (N, 3, 32, 32).
    X = torch.from_numpy(np.concatenate(images)).view(-1, 3, 32, 32)
    return X, torch.tensor(labels, dtype=torch.int64)


def write_fake_cifar10_archive(path: str | Path, n_per_batch: int = 10,
                               seed: int = 0) -> Path:
    """Write a tiny archive in CIFAR-10's exact format (for tests)."""
    path = Path(path)
    if path.is_dir():
        path = path / CIFAR10_FILE
    rng = np.random.default_rng(seed)
    members = {"batches.meta": {
        b"label_names": [c.encode() for c in CIFAR10_CLASSES],
        b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}}
    for name in _CIFAR_BATCHES["train"] + _CIFAR_BATCHES["test"]:
        members[name] = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n_per_batch).tolist(),
            b"data": rng.integers(0, 256, (n_per_batch, 3072),
                                  dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode()
                           for i in range(n_per_batch)],
        }
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            raw = pickle.dumps(obj, protocol=2)  # the original's protocol
            info = tarfile.TarInfo(f"{_CIFAR_DIR}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path
