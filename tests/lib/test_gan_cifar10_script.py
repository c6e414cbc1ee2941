"""benchmarks/gan_cifar10.py: the one-command DCGAN run on CIFAR-10.

The dry run (a few CPU steps on a tiny fake archive) proves the script
end to end; the shape tests prove the DCGAN builders chapter 6 shares
with it.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gan_cifar10.py"
sys.path.insert(0, str(SCRIPT.parent))
import gan_cifar10  # noqa: E402


def test_dry_run_writes_samples_and_json(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DLCOURSE_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["data"] == gan_cifar10.SYNTHETIC
    assert result["iterations"] == 4 and result["timed_iterations"] == 3
    assert result["images_per_second"] > 0
    assert result["fid"] is None or result["fid"] >= 0
    for key in ("device", "torch", "wall_seconds", "batch_size",
                "fid_note", "final"):
        assert key in result, key
    png = (tmp_path / "samples.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_source_is_required(tmp_path):
    with pytest.raises(SystemExit):
        gan_cifar10.parse_args(["--out", str(tmp_path)])


@pytest.mark.parametrize("size,start,channels", [(32, 4, 3), (8, 2, 1),
                                                 (64, 4, 3)])
def test_dcgan_shapes(size, start, channels):
    g = gan_cifar10.dcgan_generator(16, channels, size, 8, start=start)
    d = gan_cifar10.dcgan_discriminator(channels, size, 8, start=start)
    x = g(torch.randn(5, 16, 1, 1))
    assert x.shape == (5, channels, size, size)
    assert x.abs().max() <= 1  # tanh output
    assert d(x).shape == (5, 1, 1, 1)


def test_archive_with_another_name_is_read(tmp_path):
    from dlcourse.data import write_fake_cifar10_archive
    path = write_fake_cifar10_archive(tmp_path / "renamed.tar.gz", 4)
    args = gan_cifar10.parse_args(["--archive", str(path), "--out",
                                   str(tmp_path / "out")])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ValueError, match="md5"):  # not the real CIFAR-10
        gan_cifar10.load_images(args, work)
