"""Metrics: accuracy, on-device running sums, Frechet distance, k-NN P/R.

Training metrics stay on the device as tensors and are read back once per
epoch: a `.item()` per step would stall a GPU at every step.
"""

from __future__ import annotations

import math

import torch

__all__ = ["accuracy", "RunningMean", "frechet_distance",
           "frechet_distance_from_features", "knn_precision_recall"]

Tensor = torch.Tensor


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of rows whose largest logit is the label (0-d tensor)."""
    return (logits.argmax(dim=1) == y).mean(dtype=torch.float32)


class RunningMean:
    """Weighted means of named values.

    On an accelerator (the default) the values stay on the device until
    `compute` reads them all back at once. ``on_host=True`` (for a CPU,
    where a sync is free) adds each value to Python float sums at once,
    which is cheaper than stacking tensors. A name may be logged on only
    some steps: its mean is over the steps that logged it.
    """

    def __init__(self, on_host: bool = False) -> None:
        self.on_host = on_host
        self.num_steps = 0  # update calls so far
        self.values: dict[str, list[Tensor]] = {}  # per name, per step
        self.steps: dict[str, list[int]] = {}  # the step of each value
        self.weights: dict[str, list[int]] = {}  # its number of examples
        self.sums: dict[str, float] = {}  # on_host: weighted sums
        self.totals: dict[str, int] = {}  # on_host: sums of weights
        self.first_bad: dict[str, tuple[int, float]] = {}  # on_host

    def update(self, values: dict[str, Tensor], n: int = 1
               ) -> dict[str, float] | None:
        """Record one step's mean values, weighted by its n examples.

        With ``on_host`` return them as floats (else None).
        """
        step, self.num_steps = self.num_steps, self.num_steps + 1
        if self.on_host:
            floats = {k: float(v) for k, v in values.items()}
            for name, x in floats.items():
                self.sums[name] = self.sums.get(name, 0.0) + x * n
                self.totals[name] = self.totals.get(name, 0) + n
                if not math.isfinite(x) and name not in self.first_bad:
                    self.first_bad[name] = (step, x)
            return floats
        for name, v in values.items():
            self.values.setdefault(name, []).append(v)
            self.steps.setdefault(name, []).append(step)
            self.weights.setdefault(name, []).append(n)
        return None

    def per_step(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per name: its values (on the CPU) and the steps that logged them.

        On the host only the first non-finite value of each name is kept.
        """
        if self.on_host:
            return {k: (torch.tensor([x]), torch.tensor([s]))
                    for k, (s, x) in self.first_bad.items()}
        return {k: (torch.stack(v).float().cpu(),
                    torch.tensor(self.steps[k]))
                for k, v in self.values.items()}

    def stacked(self) -> dict[str, Tensor]:
        """Per-step values as one (num_steps_logged,) tensor per name."""
        if self.on_host:
            raise ValueError("stacked(): an on_host meter keeps only sums")
        return {k: torch.stack(v).float() for k, v in self.values.items()}

    def weighted_sums(self) -> dict[str, tuple[Tensor | float, int]]:
        """Per name: (weighted sum, sum of weights), without a host sync.

        What ranks add up to get the global means (`distributed`).
        """
        if self.on_host:
            return {k: (s, self.totals[k]) for k, s in self.sums.items()}
        out = {}
        for name, v in self.values.items():
            w = self.weights[name]
            vals = torch.stack(v).double().reshape(-1)
            out[name] = ((vals * torch.tensor(w, dtype=torch.float64,
                                              device=vals.device)).sum(),
                         sum(w))
        return out

    def compute(self) -> dict[str, float]:
        """Weighted means as Python floats (one host sync on a device)."""
        if self.on_host:
            return {k: s / self.totals[k] for k, s in self.sums.items()}
        if not self.values:
            return {}
        # one read-back of every value, then plain Python arithmetic
        flat = torch.cat([torch.stack(v).float().reshape(-1)
                          for v in self.values.values()]).tolist()
        out, at = {}, 0
        for name, w in self.weights.items():
            vals, at = flat[at:at + len(w)], at + len(w)
            out[name] = (sum(x * n for x, n in zip(vals, w)) / sum(w))
        return out


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
