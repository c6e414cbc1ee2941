"""DCGAN on CIFAR-10 with the gpu preset: samples, images/s and FID.

One command trains chapter 6's DCGAN recipe (the same `dcgan_generator`,
`dcgan_discriminator` and `dlcourse.gan.gan_step`) on 32x32 CIFAR-10 and
writes to --out:

* ``samples.png``: 64 samples from fixed noise after the last step;
* ``result.json``: images/second (timed after a warm-up, between two
  ``torch.cuda.synchronize()``), iterations, device, torch version, wall
  time, final losses, and FID when torch-fidelity and its Inception
  weights are present (``dlcourse.gan.fid_available()``).

On CUDA it uses the gpu preset: bf16 autocast, channels_last, the whole
uint8 training set resident on the GPU (150 MB), batches cut by indexing.

    python benchmarks/gan_cifar10.py --archive ~/cifar-10-python.tar.gz \\
        --out runs/cifar10
    python benchmarks/gan_cifar10.py --fake 50000 --out runs/speed  # speed
    python benchmarks/gan_cifar10.py --dry-run --out /tmp/smoke     # CPU

``--fake N`` writes an archive in CIFAR-10's format filled with uniform
noise: its numbers measure speed only (the JSON says "synthetic: speed
only"); its samples and FID mean nothing. ``--dry-run`` runs a few steps
on the CPU on a tiny fake archive in seconds (CI runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
try:  # an installed dlcourse (the repo's venv) first, else the checkout
    import dlcourse  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "lib"))

from dlcourse.config import get_preset  # noqa: E402
from dlcourse.data import (CIFAR10_FILE, load_cifar10,  # noqa: E402
                           write_fake_cifar10_archive)
from dlcourse.device import set_threads, seed_everything  # noqa: E402
from dlcourse.gan import (GAN, fid, fid_available, gan_step,  # noqa: E402
                          sample_grid)

SYNTHETIC = "synthetic: speed only"


# ------------------------------------------- the chapter's DCGAN recipe
def dcgan_generator(z_dim: int, channels: int, size: int, width: int,
                    start: int = 4) -> nn.Sequential:
    """(B, z_dim, 1, 1) -> (B, channels, size, size) in [-1, 1]."""
    stages = int(math.log2(size // start))  # x2 per stage from start
    c = width * 2 ** (stages - 1)  # widest first, halving while growing
    layers = [nn.ConvTranspose2d(z_dim, c, start, 1, 0, bias=False),
              nn.BatchNorm2d(c), nn.ReLU()]  # (c, start, start)
    for _ in range(stages - 1):
        layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(c // 2), nn.ReLU()]  # double H and W
        c //= 2
    layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1), nn.Tanh()]
    return nn.Sequential(*layers)


def dcgan_discriminator(channels: int, size: int, width: int,
                        start: int = 4) -> nn.Sequential:
    """(B, channels, size, size) -> (B, 1, 1, 1) logits (no sigmoid)."""
    stages = int(math.log2(size // start))
    layers = [nn.Conv2d(channels, width, 4, 2, 1),
              nn.LeakyReLU(0.2)]  # no BatchNorm on D's input layer
    c = width
    for _ in range(stages - 1):
        layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2)]  # halve H, W
        c *= 2
    layers += [nn.Conv2d(c, 1, start, 1, 0)]  # (1, 1, 1): one logit
    return nn.Sequential(*layers)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's init: N(0, 0.02) conv weights, N(1, 0.02) BatchNorm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# ----------------------------------------------------------- the run
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--archive", type=Path,
                     help="a cifar-10-python.tar.gz (md5-checked)")
    src.add_argument("--fake", type=int, metavar="N",
                     help="generate N noise images in CIFAR's format "
                          "(speed only)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for samples.png and result.json")
    p.add_argument("--iters", type=int, default=4000,
                   help="training steps (one D and one G update each)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: the preset's (256 on a GPU)")
    p.add_argument("--warmup", type=int, default=30,
                   help="steps run before the clock starts")
    p.add_argument("--max-seconds", type=float, default=90.0,
                   help="stop training early after this many seconds")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--z-dim", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fid-samples", type=int, default=10_000)
    p.add_argument("--dry-run", action="store_true",
                   help="a few CPU steps on a tiny fake archive (CI)")
    args = p.parse_args(argv)
    if args.dry_run:
        args.fake = args.fake or 40
        args.archive = None
        args.iters, args.warmup = min(args.iters, 4), 1
        args.batch_size = args.batch_size or 8
        args.width = min(args.width, 8)
        args.fid_samples = 0
    elif args.archive is None and args.fake is None:
        p.error("give --archive PATH, --fake N or --dry-run")
    return args


def load_images(args: argparse.Namespace, tmp: Path
                ) -> tuple[torch.Tensor, str]:
    """The uint8 training images (N, 3, 32, 32) on the CPU, and a label."""
    if args.fake is not None:
        per_batch = max(1, math.ceil(args.fake / 5))  # 5 training batches
        write_fake_cifar10_archive(tmp / CIFAR10_FILE, per_batch, seed=0)
        X, _ = load_cifar10(tmp, "train", md5=None)
        return X[:args.fake], SYNTHETIC
    path = args.archive.expanduser().resolve()
    if path.name != CIFAR10_FILE:  # load_cifar10 looks for its file name
        (tmp / CIFAR10_FILE).symlink_to(path)
        path = tmp / CIFAR10_FILE
    X, _ = load_cifar10(path.parent, "train")
    return X, "CIFAR-10 train"


def make_autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed); nothing elsewhere."""
    if device.type == "cuda":
        return functools.partial(torch.autocast, "cuda",
                                 dtype=torch.bfloat16)
    return contextlib.nullcontext


@torch.no_grad()
def generate(model: GAN, z: torch.Tensor, autocast) -> torch.Tensor:
    """Samples of fixed noise z with BatchNorm's running statistics."""
    was_training = model.generator.training
    model.generator.eval()
    with autocast():
        images = model.generator(z)
    model.generator.train(was_training)
    return images.float()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> [0, 255] uint8, as a PNG would store them."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(
        torch.uint8)


def run(args: argparse.Namespace) -> dict:
    start_wall = time.perf_counter()
    set_threads()  # DLCOURSE_THREADS, else 1 (CPU runs only)
    seed_everything(args.seed)
    if args.dry_run or not torch.cuda.is_available():
        device = torch.device("cpu")
    else:
        device = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cudnn.benchmark = True  # fixed shapes: tune once
    preset = get_preset(device) if not args.dry_run else get_preset("cpu")
    batch_size = args.batch_size or preset.batch_size
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        X_cpu, data_label = load_images(args, Path(tmp))
    # Resident on the device as uint8 (150 MB for all of CIFAR-10):
    # each batch is an index, a cast and a scale, all on the GPU.
    X = X_cpu.to(device)

    model = GAN(dcgan_generator(args.z_dim, 3, 32, args.width),
                dcgan_discriminator(3, 32, args.width), (args.z_dim, 1, 1))
    model.apply(dcgan_init)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    betas = (0.5, 0.999)  # DCGAN's Adam settings
    opt_d = torch.optim.Adam(model.discriminator.parameters(), args.lr,
                             betas=betas)
    opt_g = torch.optim.Adam(model.generator.parameters(), args.lr,
                             betas=betas)
    autocast = make_autocast(device)
    # Noise and batch order come from CPU generators, then move: a CPU
    # generator cannot draw CUDA tensors.
    g_data = torch.Generator().manual_seed(args.seed)
    z_fixed = torch.randn(64, args.z_dim, 1, 1,
                          generator=torch.Generator().manual_seed(1))
    z_fixed = z_fixed.to(device)

    def batches():
        while True:
            order = torch.randperm(len(X), generator=g_data).to(device)
            for i in range(0, len(X) - batch_size + 1, batch_size):
                real = X[order[i:i + batch_size]]  # (B, 3, 32, 32) uint8
                real = real.float().div_(127.5).sub_(1.0)  # [-1, 1]
                yield real.contiguous(memory_format=torch.channels_last)

    if len(X) < batch_size:
        raise SystemExit(f"{len(X)} images < batch size {batch_size}")
    stream = batches()
    warmup = min(args.warmup, args.iters)
    out: dict = {}
    done, timed_steps, train_seconds = 0, 0, 0.0
    for _ in range(warmup):  # cuDNN autotuning, allocator, first launches
        out = gan_step(model, (next(stream),), optimizer=(opt_d, opt_g),
                       autocast=autocast)
        done += 1
    _sync(device)
    t0 = time.perf_counter()
    while done < args.iters:
        out = gan_step(model, (next(stream),), optimizer=(opt_d, opt_g),
                       autocast=autocast)
        done += 1
        timed_steps += 1
        if timed_steps % 50 == 0:
            _sync(device)  # check the time budget on real progress
            if time.perf_counter() - t0 > args.max_seconds:
                break
    _sync(device)
    train_seconds = time.perf_counter() - t0
    logs = {k: round(float(v), 4) for k, v in out.items()}

    fake = generate(model, z_fixed, autocast)  # (64, 3, 32, 32)
    grid = sample_grid(fake, nrow=8, padding=2, value_range=(-1.0, 1.0))
    _save_png(grid, args.out / "samples.png")

    fid_value, fid_note = None, fid_available()[1]
    if fid_available()[0] and args.fid_samples > 0:
        g_fid = torch.Generator().manual_seed(2)
        n = min(args.fid_samples, len(X))
        fakes = [to_uint8(generate(model, torch.randn(
            500, args.z_dim, 1, 1, generator=g_fid).to(device), autocast)
        ).cpu() for _ in range(math.ceil(n / 500))]
        fid_value = fid(torch.cat(fakes)[:n], X_cpu[:n])
        fid_note = f"FID of {n} samples against {n} training images"

    images = timed_steps * batch_size
    return {
        "data": data_label,
        "num_images": len(X),
        "device": (torch.cuda.get_device_name(device)
                   if device.type == "cuda" else platform.processor()
                   or "cpu"),
        "torch": torch.__version__,
        "precision": ("bfloat16 autocast" if device.type == "cuda"
                      else "float32"),
        "channels_last": device.type == "cuda",
        "batch_size": batch_size,
        "iterations": done,
        "warmup_iterations": warmup,
        "timed_iterations": timed_steps,
        "train_seconds": round(train_seconds, 3),
        # real images consumed per second; each step also makes as many
        # fakes and runs D twice and G once forward and backward
        "images_per_second": (round(images / train_seconds, 1)
                              if train_seconds > 0 and images else None),
        "epochs": round(done * batch_size / len(X), 2),
        "final": logs,
        "fid": fid_value,
        "fid_note": fid_note,
        "wall_seconds": round(time.perf_counter() - start_wall, 2),
        "command": "python benchmarks/gan_cifar10.py " + " ".join(
            sys.argv[1:]),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _save_png(grid: torch.Tensor, path: Path) -> None:
    # matplotlib.image, not pyplot: no backend is touched (the chapter
    # calls main() inside a notebook)
    from matplotlib.image import imsave
    imsave(path, grid.permute(1, 2, 0).numpy())  # (H, W, 3) in [0, 1]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    (args.out / "result.json").write_text(json.dumps(result, indent=2)
                                          + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
