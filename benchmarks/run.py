"""Benchmarks of dlcourse (`make bench`): speed and quality goals of issue 3.

Each comparison runs its contenders interleaved (A, B, A, B, ...) in one
process and reports the median of several repeats, so a busy machine
slows both sides alike. Run from the repository root::

    .venv/bin/python benchmarks/run.py            # everything
    .venv/bin/python benchmarks/run.py overhead   # one benchmark

Goals (CPU numbers are meant for 2 cores, 1 torch thread unless said):
  overhead    fit / hand-written loop on the 64-128-10 digits MLP <= 1.05
  digits_mlp  >= 97 % test accuracy in <= 1 s of training through fit
  gan_digits  DCGAN-style GAN on 8x8 digits <= 0.6 s per epoch (2 threads)
  dcgan_gpu   DCGAN 64x64 images/s, dlcourse vs a dcgan/main.py-style
              loop on the same GPU: goal >= 2x (skips without CUDA)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))

from dlcourse.data import TensorData, load_digits  # noqa: E402
from dlcourse.device import seed_everything, set_threads  # noqa: E402
from dlcourse.gan import GAN, gan_step  # noqa: E402
from dlcourse.train import evaluate, fit  # noqa: E402

RESULTS: list[tuple[str, str, bool | None]] = []  # (name, text, met)


def report(name: str, text: str, met: bool | None) -> None:
    """Print one result line now and keep it for the summary."""
    verdict = {True: "MET", False: "NOT MET", None: "INFO"}[met]
    print(f"[{name}] {text}  -> {verdict}", flush=True)
    RESULTS.append((name, text, met))


def interleave(contenders: dict[str, Callable[[], object]],
               repeats: int) -> dict[str, list]:
    """Run each contender once per round, rounds in a row; collect results."""
    results: dict[str, list] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            results[name].append(run())
    return results


class Timer:
    """Wall-clock and CPU seconds of a block.

    On a shared machine a process waits for a core; the CPU seconds of a
    one-thread run leave that wait out, so they estimate an idle core.
    """

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


# ------------------------------------------------------- digits MLP
def digits_mlp(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The 64-128-10 MLP of the digits chapters and its Adam optimizer."""
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    return model, torch.optim.Adam(model.parameters(), lr=2e-3)


def hand_loop(X: torch.Tensor, y: torch.Tensor, num_epochs: int,
              batch_size: int = 64, track: bool = True) -> Timer:
    """The loop a chapter would write by hand; returns its timer."""
    model, optimizer = digits_mlp()
    loss_fn = nn.CrossEntropyLoss()
    with Timer() as timer:
        _hand_epochs(model, optimizer, loss_fn, X, y, num_epochs,
                     batch_size, track)
    return timer


def _hand_epochs(model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: nn.Module, X: torch.Tensor, y: torch.Tensor,
                 num_epochs: int, batch_size: int, track: bool) -> None:
    for _ in range(num_epochs):
        model.train()
        total_loss, correct = 0.0, 0
        order = torch.randperm(len(X))
        for i in range(0, len(X), batch_size):
            idx = order[i:i + batch_size]
            X_b, y_b = X[idx], y[idx]
            logits = model(X_b)
            loss = loss_fn(logits, y_b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if track:  # the usual per-step bookkeeping of a tutorial loop
                total_loss += loss.item() * len(y_b)
                correct += (logits.argmax(1) == y_b).sum().item()


def fit_loop(X: torch.Tensor, y: torch.Tensor, num_epochs: int,
             track: bool = True) -> Timer:
    """The same training through dlcourse's fit; returns its timer."""
    model, optimizer = digits_mlp()
    with Timer() as timer:
        fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
            optimizer=optimizer, num_epochs=num_epochs, batch_size=64,
            device="cpu", **({} if track else {"metrics": {}}))
    return timer


def bench_overhead(repeats: int) -> None:
    """fit vs a hand-written loop, same model, data and batch order."""
    set_threads(1)
    split = load_digits()
    X, y = split.X_train, split.y_train
    epochs = 10  # 230 steps per run: long enough, short enough to mix
    steps = epochs * -(-len(X) // 64)
    for track in (True, False):
        runs = interleave({
            "hand": lambda: hand_loop(X, y, epochs, track=track),
            "fit": lambda: fit_loop(X, y, epochs, track=track),
        }, repeats)
        what = ("loss+accuracy each epoch" if track
                else "no metrics (bare loop, fit(metrics={}))")
        for clock in ("cpu", "wall"):
            fit_s = [getattr(t, clock) for t in runs["fit"]]
            hand_s = [getattr(t, clock) for t in runs["hand"]]
            ratios = [f / h for f, h in zip(fit_s, hand_s)]
            ratio = statistics.median(ratios)
            report("overhead", (
                f"{what}, {clock} time: fit "
                f"{statistics.median(fit_s) / steps * 1e6:.0f} us/step, "
                f"hand loop {statistics.median(hand_s) / steps * 1e6:.0f}"
                f" us/step, ratio {ratio:.3f}x (median of {repeats} "
                f"interleaved pairs, range {min(ratios):.3f}-"
                f"{max(ratios):.3f}; fastest/fastest "
                f"{min(fit_s) / min(hand_s):.3f}x; goal <= 1.05)"),
                ratio <= 1.05)


def bench_digits_mlp(repeats: int) -> None:
    """Test accuracy and training time of the digits MLP through fit."""
    set_threads(1)
    split = load_digits()
    accs, timers = [], []
    for seed in range(repeats):
        model, optimizer = digits_mlp(seed)
        with Timer() as timer:
            fit(model, (split.X_train, split.y_train),
                loss_fn=nn.CrossEntropyLoss(), optimizer=optimizer,
                num_epochs=10, batch_size=64, device="cpu")
        timers.append(timer)
        accs.append(evaluate(model, (split.X_test, split.y_test),
                             nn.CrossEntropyLoss(), device="cpu")["acc"])
    acc = statistics.median(accs)
    wall = statistics.median(t.wall for t in timers)
    cpu = statistics.median(t.cpu for t in timers)
    report("digits_mlp", (
        f"10 epochs, Adam 2e-3, batch 64, 1 thread: test accuracy median "
        f"{acc:.4f} (min {min(accs):.4f}) in median {wall:.2f} s wall / "
        f"{cpu:.2f} s CPU of training (max wall "
        f"{max(t.wall for t in timers):.2f} s) over seeds 0-{repeats - 1};"
        f" goal >= 0.97 in <= 1 s"), acc >= 0.97 and wall <= 1.0)


# ------------------------------------------------------ GAN, 8x8 digits
def digits_gan(z_dim: int = 32, width: int = 32) -> GAN:
    """A DCGAN-style GAN for 8x8 digits: transposed convs, BN, tanh."""
    c = width
    generator = nn.Sequential(
        nn.ConvTranspose2d(z_dim, 2 * c, 2, 1, 0, bias=False),  # (2c, 2, 2)
        nn.BatchNorm2d(2 * c), nn.ReLU(),
        nn.ConvTranspose2d(2 * c, c, 4, 2, 1, bias=False),  # (c, 4, 4)
        nn.BatchNorm2d(c), nn.ReLU(),
        nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Tanh())  # (1, 8, 8)
    discriminator = nn.Sequential(
        nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2),  # (c, 4, 4)
        nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),  # (2c, 2, 2)
        nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * c, 1, 2, 1, 0))  # (1, 1, 1) logit
    return GAN(generator, discriminator, (z_dim, 1, 1))


def bench_gan_digits(repeats: int) -> None:
    """Seconds per epoch of the 8x8 digits GAN through fit (2, 1 threads)."""
    images = load_digits().images_train * 2 - 1  # tanh range, (N, 1, 8, 8)
    for threads in (2, 1):
        set_threads(threads)
        seed_everything(0)
        model = digits_gan()
        betas = (0.5, 0.999)  # DCGAN's Adam settings
        opts = (torch.optim.Adam(model.discriminator.parameters(), 2e-4,
                                 betas=betas),
                torch.optim.Adam(model.generator.parameters(), 2e-4,
                                 betas=betas))
        fit(model, images, optimizer=opts, step=gan_step, num_epochs=1,
            device="cpu")  # warm-up
        with Timer() as timer:
            hist = fit(model, images, optimizer=opts, step=gan_step,
                       num_epochs=repeats, device="cpu", batch_size=64)
        secs = hist["seconds"]
        sec = statistics.median(secs)
        report("gan_digits", (
            f"G 32-64-32-1 / D 1-32-64-1 convs, {len(images)} images, batch"
            f" 64, {threads} thread(s): median {sec:.3f} s wall per epoch "
            f"over {repeats} epochs (min {min(secs):.3f}), "
            f"{timer.cpu / repeats:.3f} CPU-s per epoch; goal <= 0.6 s on "
            f"2 cores"), sec <= 0.6 if threads == 2 else None)
    set_threads(1)


# ------------------------------------------------- DCGAN 64x64, GPU
NZ, NGF, NDF, NC = 100, 64, 64, 3  # pytorch/examples dcgan defaults


def dcgan_generator() -> nn.Module:
    """pytorch/examples' DCGAN generator: (B, 100, 1, 1) -> (B, 3, 64, 64)."""
    return nn.Sequential(
        nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(NGF * 8), nn.ReLU(True),  # (512, 4, 4)
        nn.ConvTranspose2d(NGF * 8, NGF * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NGF * 4), nn.ReLU(True),  # (256, 8, 8)
        nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NGF * 2), nn.ReLU(True),  # (128, 16, 16)
        nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NGF), nn.ReLU(True),  # (64, 32, 32)
        nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False), nn.Tanh())


def dcgan_discriminator(sigmoid: bool) -> nn.Module:
    """pytorch/examples' DCGAN discriminator: (B, 3, 64, 64) -> (B, 1)."""
    layers = [
        nn.Conv2d(NC, NDF, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),  # (64, 32, 32)
        nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NDF * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NDF * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(NDF * 4, NDF * 8, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NDF * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False), nn.Flatten()]
    # main.py ends in Sigmoid + BCELoss; dlcourse fuses it into the loss
    # (BCE with logits), which is also what bf16 autocast requires.
    return nn.Sequential(*layers, *([nn.Sigmoid()] if sigmoid else []))


def weights_init(m: nn.Module) -> None:
    """main.py's init: N(0, 0.02) convs, N(1, 0.02) BatchNorm scales."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class PerSampleImages(torch.utils.data.Dataset):
    """uint8 images converted one by one, as ToTensor + Normalize do."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images  # (N, 3, 64, 64) uint8 on the CPU

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float().div(255).sub(0.5).div(0.5), 0


def plain_dcgan(images: torch.Tensor, num_epochs: int, device: str,
                batch_size: int = 128) -> float:
    """A loop written like pytorch/examples' dcgan/main.py; images/s."""
    netG, netD = dcgan_generator().to(device), dcgan_discriminator(
        True).to(device)
    netG.apply(weights_init)
    netD.apply(weights_init)
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), 2e-4,
                                  betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), 2e-4,
                                  betas=(0.5, 0.999))
    dataloader = torch.utils.data.DataLoader(
        PerSampleImages(images), batch_size=batch_size, shuffle=True,
        num_workers=2)  # main.py's default --workers
    log = open(os.devnull, "w")
    torch.cuda.synchronize()
    start, seen = time.perf_counter(), 0
    for epoch in range(num_epochs):
        for i, data in enumerate(dataloader, 0):
            # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            netD.zero_grad()
            real_cpu = data[0].to(device)
            b_size = real_cpu.size(0)
            label = torch.full((b_size,), 1.0, device=device)
            output = netD(real_cpu).view(-1)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()
            noise = torch.randn(b_size, NZ, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(0.0)
            output = netD(fake.detach()).view(-1)
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            optimizerD.step()
            # (2) Update G network: maximize log(D(G(z)))
            netG.zero_grad()
            label.fill_(1.0)
            output = netD(fake).view(-1)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            optimizerG.step()
            print(f"[{epoch}][{i}] Loss_D: {errD.item():.4f} Loss_G: "
                  f"{errG.item():.4f} D(x): {D_x:.4f} D(G(z)): "
                  f"{D_G_z1:.4f} / {D_G_z2:.4f}", file=log)
            seen += b_size
    torch.cuda.synchronize()
    log.close()
    return seen / (time.perf_counter() - start)


def dlcourse_dcgan(images: torch.Tensor, num_epochs: int, device: str,
                   compile: bool, batch_size: int = 128) -> float:
    """The same GAN through fit + gan_step (bf16, NHWC, resident); img/s."""
    model = GAN(dcgan_generator(), dcgan_discriminator(False), (NZ, 1, 1))
    model.apply(weights_init)
    opts = (torch.optim.Adam(model.discriminator.parameters(), 2e-4,
                             betas=(0.5, 0.999)),
            torch.optim.Adam(model.generator.parameters(), 2e-4,
                             betas=(0.5, 0.999)))
    data = TensorData(images.to(device),  # the whole set lives on the GPU
                      transform=lambda X: X.float().div(127.5).sub(1.0))
    fit(model, data, optimizer=opts, step=gan_step, num_epochs=1,
        device=device, batch_size=batch_size, compile=compile)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    fit(model, data, optimizer=opts, step=gan_step, num_epochs=num_epochs,
        device=device, batch_size=batch_size)
    torch.cuda.synchronize()
    return num_epochs * len(images) / (time.perf_counter() - start)


def bench_dcgan_gpu(repeats: int, compile: bool) -> None:
    """DCGAN 64x64 images per second: dlcourse vs a main.py-style loop."""
    if not torch.cuda.is_available():
        report("dcgan_gpu", "no CUDA device here: the 64x64 DCGAN benchmark"
               " needs a GPU and was skipped", None)
        return
    torch.backends.cudnn.benchmark = True  # main.py sets it too
    seed_everything(0)
    images = torch.randint(0, 256, (128 * 80, NC, 64, 64),
                           dtype=torch.uint8)  # like main.py's "fake" set
    runs = {"plain": lambda: plain_dcgan(images, 2, "cuda"),
            "dlcourse": lambda: dlcourse_dcgan(images, 2, "cuda", False)}
    if compile:
        runs["dlcourse+compile"] = lambda: dlcourse_dcgan(images, 2, "cuda",
                                                          True)
    plain_dcgan(images[:128 * 4], 1, "cuda")  # warm-up: cuDNN, workers
    rates = interleave(runs, repeats)
    base = statistics.median(rates["plain"])
    name = torch.cuda.get_device_name()
    for key in runs:
        if key == "plain":
            continue
        ratio = statistics.median(
            [d / p for d, p in zip(rates[key], rates["plain"])])
        report("dcgan_gpu", (
            f"{name}, batch 128, {len(images)} images/epoch: {key} "
            f"{statistics.median(rates[key]):.0f} img/s vs plain loop "
            f"{base:.0f} img/s = {ratio:.2f}x (median of {repeats} "
            f"interleaved pairs; goal >= 2x)"), ratio >= 2.0)


# ------------------------------------------------------------- main
BENCHMARKS = ("overhead", "digits_mlp", "gan_digits", "dcgan_gpu")


def main() -> int:
    """Run the chosen benchmarks and print a summary; 1 if --strict fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS],
                        help="benchmarks to run (default: all)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile on the GPU")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a goal is not met")
    args = parser.parse_args()
    names = args.names or BENCHMARKS
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    if "overhead" in names:
        bench_overhead(max(2 * args.repeats, 15))
    if "digits_mlp" in names:
        bench_digits_mlp(max(args.repeats, 5))
    if "gan_digits" in names:
        bench_gan_digits(args.repeats)
    if "dcgan_gpu" in names:
        bench_dcgan_gpu(max(args.repeats // 2, 3), args.compile)
    print("\nsummary")
    for name, text, met in RESULTS:
        verdict = {True: "MET", False: "NOT MET", None: "INFO"}[met]
        print(f"  {verdict:8} {name}: {text}")
    return int(args.strict and any(met is False for _, _, met in RESULTS))


if __name__ == "__main__":
    sys.exit(main())
