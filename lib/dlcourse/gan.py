"""GAN training step, sample grids and metrics for 2-D mixtures and digits.

The step follows pytorch/examples' dcgan/main.py: (1) update D on real
and on *detached* fake samples, (2) update G through D with the
non-saturating loss -log D(G(z)).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .metrics import frechet_distance_from_features, knn_precision_recall
from .train import check_before_update

__all__ = ["GAN", "update_discriminator", "update_generator", "gan_step",
           "sample_grid", "mixture_metrics", "DigitsJudge", "digits_judge",
           "digits_metrics", "fid_available", "fid"]

Tensor = torch.Tensor


class GAN(nn.Module):
    """A generator and a discriminator trained together; z ~ N(0, I)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module,
                 z_shape: int | tuple[int, ...]) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        # e.g. 2 for an MLP, (100, 1, 1) for DCGAN's transposed convs
        self.z_shape = (z_shape,) if isinstance(z_shape, int) else z_shape

    def sample_z(self, n: int, generator: torch.Generator | None = None
                 ) -> Tensor:
        """n latent vectors on the model's device, shape (n, *z_shape).

        With a generator the noise is drawn where the generator lives (a
        CPU generator gives the same z on every device) and then moved.
        """
        device = next(self.parameters()).device
        if generator is None:
            return torch.randn(n, *self.z_shape, device=device)
        z = torch.randn(n, *self.z_shape, device=generator.device,
                        generator=generator)
        return z.to(device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> Tensor:
        """n generated samples: G in eval mode, without gradients.

        Eval mode: BatchNorm uses (and does not update) its running
        statistics, and dropout is off; G's mode is restored after.
        """
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(self.sample_z(n, generator))
        finally:
            self.generator.train(was_training)

    def forward(self, z: Tensor) -> Tensor:
        """Generate samples from latent vectors z."""
        return self.generator(z)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile G and D in place (the step calls them, not forward)."""
        self.generator.compile(*args, **kwargs)
        self.discriminator.compile(*args, **kwargs)

    def data_parallel(self, wrap: Callable[[nn.Module], nn.Module]
                      ) -> _DataParallelGAN:
        """What the step trains under torchrun: G and D each wrapped."""
        return _DataParallelGAN(self, wrap)


class _DataParallelGAN:
    """A GAN whose G and D are each DistributedDataParallel (for `fit`).

    The step calls G and D, never the GAN's forward, so each is wrapped
    on its own. The noise of the whole global batch is drawn on every
    rank, which keeps this rank's rows: the ranks use the z one process
    would, and their random generators stay identical.
    """

    def __init__(self, gan: GAN, wrap: Callable[[nn.Module], nn.Module]
                 ) -> None:
        self.module = gan
        self.generator = wrap(gan.generator)
        self.discriminator = wrap(gan.discriminator)
        self.z_shape = gan.z_shape

    def sample_z(self, n: int, generator: torch.Generator | None = None
                 ) -> Tensor:
        """This rank's n rows of the global batch's latent vectors."""
        total, offset = distributed.batch_slice(n)
        return self.module.sample_z(total, generator)[offset:offset + n]

    def parameters(self) -> Iterator[nn.Parameter]:
        """The GAN's parameters (the same tensors DDP synchronises)."""
        return self.module.parameters()


def _logits(discriminator: nn.Module, x: Tensor) -> Tensor:
    return discriminator(x).reshape(-1).float()  # (B,) in float32


def update_discriminator(model: GAN, real: Tensor, fake: Tensor,
                         opt_d: torch.optim.Optimizer,
                         autocast: Callable = contextlib.nullcontext,
                         clip_grad: float | None = None
                         ) -> dict[str, Tensor]:
    """(1) One step on D: push D(real) up and D(fake) down."""
    with autocast():
        # detach: this loss must not send gradients into G
        logits_real = _logits(model.discriminator, real)
        logits_fake = _logits(model.discriminator, fake.detach())
    loss_d = (F.binary_cross_entropy_with_logits(
        logits_real, torch.ones_like(logits_real))
        + F.binary_cross_entropy_with_logits(
            logits_fake, torch.zeros_like(logits_fake)))
    check_before_update("loss_d", loss_d)  # NaN never reaches D's weights
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    if clip_grad is not None:
        nn.utils.clip_grad_norm_(model.discriminator.parameters(), clip_grad)
    opt_d.step()
    return {"loss_d": loss_d.detach(),
            "d_real": logits_real.detach().sigmoid().mean(),
            "d_fake": logits_fake.detach().sigmoid().mean()}


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No weight gradients and no BatchNorm statistics updates inside."""
    flags = [p.requires_grad for p in module.parameters()]
    # In train mode a BatchNorm that does not track statistics normalises
    # with the batch's own, exactly as before, but leaves its buffers alone.
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    module.requires_grad_(False)
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
        for m in norms:
            m.track_running_stats = True


def update_generator(model: GAN, fake: Tensor,
                     opt_g: torch.optim.Optimizer,
                     autocast: Callable = contextlib.nullcontext,
                     saturating: bool = False,
                     clip_grad: float | None = None) -> dict[str, Tensor]:
    """(2) One step on G through D (D's weights and buffers stay)."""
    # Under torchrun D is a DDP wrapper: call the module inside, so DDP
    # does not wait for gradients of D that a frozen D never produces.
    discriminator = distributed.unwrap(model.discriminator)
    with autocast(), _frozen(discriminator):
        # frozen: backward computes d loss / d fake through D, but skips
        # the gradients of D's weights that this step would throw away
        logits = _logits(discriminator, fake)
    if saturating:  # minimax: minimise log(1 - D(G(z))); vanishes early
        loss_g = -F.softplus(logits).mean()
    else:  # non-saturating: minimise -log D(G(z))
        loss_g = F.binary_cross_entropy_with_logits(
            logits, torch.ones_like(logits))
    check_before_update("loss_g", loss_g)  # NaN never reaches G's weights
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    if clip_grad is not None:
        nn.utils.clip_grad_norm_(model.generator.parameters(), clip_grad)
    opt_g.step()
    return {"loss_g": loss_g.detach()}


def gan_step(model: GAN, batch: tuple[Tensor, ...], *,
             optimizer: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
             loss_fn: Any = None, clip_grad: float | None = None,
             metrics: Any = None, autocast: Callable = contextlib.nullcontext,
             saturating: bool = False) -> dict[str, Tensor]:
    """One GAN step for `fit`: (1) update D, then (2) update G."""
    opt_d, opt_g = optimizer  # order: D is updated first
    real = batch[0]  # (B, ...) labels, if any, are ignored
    z = model.sample_z(len(real))
    with autocast():
        fake = model.generator(z)  # (B, ...) like real
    out_d = update_discriminator(model, real, fake, opt_d, autocast,
                                 clip_grad)
    out_g = update_generator(model, fake, opt_g, autocast, saturating,
                             clip_grad)
    return {"loss_d": out_d.pop("loss_d"), **out_g, **out_d}


gan_step.checks_before_update = True  # type: ignore[attr-defined]


def sample_grid(images: Tensor, nrow: int = 8, padding: int = 1,
                value_range: tuple[float, float] | None = None) -> Tensor:
    """Tile (N, C, H, W) images into one (C, H', W') grid in [0, 1]."""
    images = images.detach().float().cpu()
    if images.dim() == 3:
        images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    lo, hi = value_range or (images.min().item(), images.max().item())
    images = ((images - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + padding) + padding,
                      nrow * (w + padding) + padding)  # white background
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


# ------------------------------------------------------ 2-D mixtures
def mixture_metrics(samples: Tensor, means: Tensor,
                    std: float) -> dict[str, float]:
    """Mode counts (lenient, strict) and high-quality share of samples."""
    samples, means = samples.detach().float().cpu(), means.float().cpu()
    k = len(means)
    dist = torch.cdist(samples, means)  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= 3 * std  # within 3 sigma of its nearest mode
    counts = torch.bincount(nearest[good], minlength=k)  # (K,)
    covered = counts > 0
    return {
        # VEEGAN: a mode counts if any sample lands within 3 sigma
        "modes_lenient": int(covered.sum()),
        # strict: it must hold at least 1/(4K) of all samples (and one)
        "modes_strict": int((covered & (counts >= len(samples) / (4 * k)))
                            .sum()),
        # no samples: none of them is of high quality
        "high_quality": float(good.float().mean()) if len(good) else 0.0,
        "num_modes": k,
    }


# ------------------------------------------------------------ digits
class DigitsJudge(nn.Module):
    """A small classifier of real 8x8 digits whose features score GANs."""

    def __init__(self, hidden: int = 128, features: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
            nn.Linear(hidden, features), nn.ReLU())
        self.head = nn.Linear(features, 10)

    def features(self, images: Tensor) -> Tensor:
        """(N, features) penultimate activations of images in [0, 1]."""
        return self.body(images.float())

    def forward(self, images: Tensor) -> Tensor:
        """(N, 10) class logits of (N, 1, 8, 8) images in [0, 1]."""
        return self.head(self.features(images))


@functools.lru_cache(maxsize=None)
def _trained_judge(seed: int) -> DigitsJudge:
    from .data import load_digits

    split = load_digits()
    # fork_rng: training the judge must not move the chapter's RNG.
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        judge = DigitsJudge()
        opt = torch.optim.Adam(judge.parameters(), lr=3e-3,
                               weight_decay=1e-4)
        X, y = split.images_train, split.y_train
        for _ in range(40):  # epochs; about 0.5 s on one CPU thread
            for idx in torch.randperm(len(X)).split(128):
                loss = F.cross_entropy(judge(X[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return judge.eval().requires_grad_(False)


def digits_judge(device: torch.device | str = "cpu",
                 seed: int = 0) -> DigitsJudge:
    """The judge, trained once per process on the real training digits."""
    import copy
    return copy.deepcopy(_trained_judge(seed)).to(device)


@torch.no_grad()
def digits_metrics(fake: Tensor, real: Tensor | None = None,
                   judge: DigitsJudge | None = None,
                   value_range: tuple[float, float] = (0.0, 1.0),
                   confidence: float = 0.9, k: int = 3) -> dict[str, float]:
    """Judge-based scores of generated (N, 1, 8, 8) digits."""
    lo, hi = value_range  # e.g. (-1, 1) for a tanh generator
    fake = ((fake.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    if real is None:
        from .data import load_digits
        split = load_digits()
        real = torch.cat([split.images_train, split.images_test])
    judge = judge or _trained_judge(0)
    device = next(judge.parameters()).device
    fake, real = fake.to(device), real.to(device)
    probs = judge(fake).softmax(dim=1)  # (N, 10)
    mean_probs = probs.mean(dim=0)  # (10,): class mix of the samples
    f_real, f_fake = judge.features(real), judge.features(fake)
    precision, recall = knn_precision_recall(f_real, f_fake, k=k)
    return {
        "confident": float((probs.max(dim=1).values >= confidence)
                           .float().mean()),
        # log(10) = 2.303 nats when all ten digits are equally common
        "class_entropy": float(-(mean_probs * mean_probs.clamp_min(1e-12)
                                 .log()).sum()),
        "frechet": frechet_distance_from_features(f_real, f_fake),
        "precision": precision,
        "recall": recall,
    }


# -------------------------------------------------------------- FID
_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"


def fid_available() -> tuple[bool, str]:
    """Whether FID can run offline, and if not, why not."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return False, ("FID needs the torch-fidelity package, which is not"
                       " installed; use digits_metrics' 'frechet' (judge "
                       "features) instead.")
    weights = Path(torch.hub.get_dir()) / "checkpoints" / _FIDELITY_WEIGHTS
    if not weights.exists():
        return False, (f"FID needs torch-fidelity's Inception weights: "
                       f"place {_FIDELITY_WEIGHTS} in {weights.parent}.")
    return True, "torch-fidelity and its weights are present"


class _Uint8Images(torch.utils.data.Dataset):
    def __init__(self, images: Tensor) -> None:
        self.images = images  # (N, 3, H, W) uint8

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def fid(fake: Tensor, real: Tensor, cuda: bool | None = None) -> float:
    """FID between (N, 3, H, W) uint8 image sets, via torch-fidelity."""
    ok, why = fid_available()
    if not ok:
        raise RuntimeError(why)
    import torch_fidelity

    cuda = torch.cuda.is_available() if cuda is None else cuda
    result = torch_fidelity.calculate_metrics(
        input1=_Uint8Images(fake.cpu()), input2=_Uint8Images(real.cpu()),
        fid=True, cuda=cuda, verbose=False)
    return float(result["frechet_inception_distance"])
