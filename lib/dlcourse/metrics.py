"""Metrics: accuracy, on-device running sums, Frechet distance, k-NN P/R.

Training metrics stay on the device as tensors and are read back once per
epoch: a `.item()` per step would stall a GPU at every step.
"""

from __future__ import annotations

import torch

__all__ = ["accuracy", "RunningMean", "frechet_distance",
           "frechet_distance_from_features", "knn_precision_recall"]

Tensor = torch.Tensor


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of rows whose largest logit is the label (0-d tensor)."""
    return (logits.argmax(dim=1) == y).mean(dtype=torch.float32)


class RunningMean:
    """Weighted means of named values, kept on the device until read."""

    def __init__(self) -> None:
        self.values: dict[str, list[Tensor]] = {}
        self.weights: list[int] = []

    def update(self, values: dict[str, Tensor], n: int = 1) -> None:
        """Record one batch's mean values, weighted by its n examples."""
        for name, v in values.items():
            self.values.setdefault(name, []).append(v)
        self.weights.append(n)

    def stacked(self) -> dict[str, Tensor]:
        """Per-batch values as one (num_batches,) tensor per name."""
        return {k: torch.stack(v).float() for k, v in self.values.items()}

    def compute(self) -> dict[str, float]:
        """Weighted means as Python floats: the one host sync."""
        if not self.weights:
            return {}
        stacked = self.stacked()
        some = next(iter(stacked.values()))
        w = torch.tensor(self.weights, dtype=torch.float32,
                         device=some.device)  # (num_batches,)
        means = torch.stack([(v * w).sum() / w.sum()
                             for v in stacked.values()])
        return dict(zip(stacked, means.tolist()))


def _stats(features: Tensor) -> tuple[Tensor, Tensor]:
    f = features.double()  # (N, D); float64: covariances lose digits
    return f.mean(0), torch.cov(f.T)


def _sqrt_psd(a: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(a)
    return vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor,
                     sigma2: Tensor) -> float:
    """Frechet distance between Gaussians N(mu1, sigma1), N(mu2, sigma2)."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1,
                                                     sigma2))
    # tr sqrt(S1 S2) = tr sqrt(sqrt(S1) S2 sqrt(S1)), a symmetric PSD
    # matrix: eigvalsh is stable where a general matrix sqrt is not.
    root1 = _sqrt_psd(sigma1)
    eig = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp(min=0)
    trace_sqrt = eig.sqrt().sum()
    d = ((mu1 - mu2) ** 2).sum() + sigma1.trace() + sigma2.trace() \
        - 2 * trace_sqrt
    return float(d.clamp(min=0))


def frechet_distance_from_features(real: Tensor, fake: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) samples."""
    return frechet_distance(*_stats(real), *_stats(fake))


def _kth_radius(x: Tensor, k: int) -> Tensor:
    d = torch.cdist(x, x)  # (N, N)
    # kth smallest distance excluding the point itself (distance 0).
    return d.kthvalue(k + 1, dim=1).values  # (N,)


def knn_precision_recall(real: Tensor, fake: Tensor,
                         k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al., 2019)."""
    real, fake = real.double(), fake.double()
    r_real, r_fake = _kth_radius(real, k), _kth_radius(fake, k)
    d = torch.cdist(fake, real)  # (F, R)
    # precision: fakes inside some real sample's k-NN ball, and vice versa
    precision = (d <= r_real[None, :]).any(dim=1).double().mean()
    recall = (d.T <= r_fake[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)
