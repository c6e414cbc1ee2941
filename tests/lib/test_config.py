import pytest
import torch

from dlcourse import config


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("DLCOURSE_PRESET", raising=False)


def test_preset_from_device():
    assert config.get_preset("cuda") is config.gpu
    assert config.get_preset(torch.device("cuda", 0)) is config.gpu
    assert config.get_preset("cpu") is config.cpu
    assert config.get_preset("mps") is config.cpu


def test_preset_default_device(monkeypatch):
    monkeypatch.setenv("DLCOURSE_DEVICE", "cpu")
    assert config.get_preset() is config.cpu


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_env_overrides_device(monkeypatch, name):
    monkeypatch.setenv("DLCOURSE_PRESET", name)
    assert config.get_preset("cuda").name == name
    assert config.get_preset("cpu").name == name


def test_unknown_preset_names_the_choices(monkeypatch):
    monkeypatch.setenv("DLCOURSE_PRESET", "huge")
    with pytest.raises(ValueError, match="smoke"):
        config.get_preset("cpu")


def test_presets_are_ordered_by_size():
    s, c, g = config.smoke, config.cpu, config.gpu
    assert s.epochs(100) < c.epochs(100) < g.epochs(100) == 100
    assert s.width(256) < c.width(256) < g.width(256) == 256
    assert s.subset(50_000) < c.subset(50_000) < g.subset(50_000) == 50_000


def test_scaling_never_reaches_zero():
    assert config.smoke.epochs(1) == 1
    assert config.smoke.width(1) == 1
    assert config.cpu.subset(10) == 10


def test_presets_are_frozen():
    with pytest.raises(AttributeError):
        config.cpu.epoch_scale = 2.0
