"""Presets size a run (epochs, subsets, widths) so chapters never edit code.

A chapter writes its full-size numbers once and asks the preset to scale
them::

    preset = get_preset(device)
    num_epochs = preset.epochs(30)      # 30 on a GPU, fewer on a CPU
    hidden = preset.width(256)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["Preset", "smoke", "cpu", "gpu", "PRESETS", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """How big a run is: scales for epochs, data subsets and widths."""

    name: str
    epoch_scale: float = 1.0  # multiplies a chapter's full num_epochs
    max_samples: int | None = None  # cap on training examples; None: all
    width_scale: float = 1.0  # multiplies hidden widths / channel counts
    batch_size: int = 64  # small batches: more steps per second on a CPU
    image_size: int = 32  # GAN / CNN image side where a chapter may choose
    compile: bool = False  # torch.compile: minutes of start-up, CUDA only

    def epochs(self, full: int) -> int:
        """Scale a chapter's full epoch count (at least one epoch)."""
        return max(1, round(full * self.epoch_scale))

    def width(self, full: int) -> int:
        """Scale a layer width or channel count (at least one unit)."""
        return max(1, round(full * self.width_scale))

    def subset(self, n: int) -> int:
        """Number of examples to use out of n available."""
        return n if self.max_samples is None else min(n, self.max_samples)


# smoke: proves a notebook runs end to end in seconds (CI, --dry-run).
smoke = Preset("smoke", epoch_scale=0.05, max_samples=256,
               width_scale=0.25, batch_size=64, image_size=16)
# cpu: a chapter runs in about a minute on 2 cores; results still teach.
cpu = Preset("cpu", epoch_scale=0.25, max_samples=5_000,
             width_scale=0.5, batch_size=64, image_size=32)
# gpu: full size; big batches keep the device busy.
gpu = Preset("gpu", epoch_scale=1.0, max_samples=None,
             width_scale=1.0, batch_size=256, image_size=64)

PRESETS: dict[str, Preset] = {p.name: p for p in (smoke, cpu, gpu)}


def get_preset(device: torch.device | str | None = None) -> Preset:
    """Return DLCOURSE_PRESET if set, else gpu on CUDA and cpu elsewhere."""
    name = os.environ.get("DLCOURSE_PRESET", "").strip()
    if name:
        if name not in PRESETS:
            raise ValueError(f"DLCOURSE_PRESET={name!r}: choose one of "
                             f"{sorted(PRESETS)}")
        return PRESETS[name]
    if device is None:
        from .device import get_device
        device = get_device()
    return gpu if torch.device(device).type == "cuda" else cpu
