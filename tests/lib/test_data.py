import hashlib
import io
import math
import pickle
import tarfile
import urllib.request

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sk_load_digits

from dlcourse import data
from lib_helpers import gpu


# ---------------------------------------------------------------- digits
def test_digits_shapes_and_types(digits):
    assert digits.X_train.shape == (1151, 64)
    assert digits.X_val.shape == (287, 64)
    assert digits.X_test.shape == (359, 64)
    assert digits.y_train.dtype == digits.y_val.dtype == torch.int64
    assert digits.X_train.dtype == torch.float32
    assert digits.images_train.shape == (1151, 1, 8, 8)
    assert digits.images_val.shape == (287, 1, 8, 8)
    assert digits.images_test.shape == (359, 1, 8, 8)


def test_digits_are_sklearns_digits(digits):
    ref = sk_load_digits()
    images = torch.cat([digits.images_train, digits.images_val,
                        digits.images_test]) * 16
    ours = sorted(map(tuple, images.reshape(-1, 64).round().long()
                      .tolist()))
    theirs = sorted(map(tuple, ref.data.astype(np.int64).tolist()))
    assert ours == theirs
    labels = torch.cat([digits.y_train, digits.y_val, digits.y_test])
    assert torch.equal(labels.bincount(),
                       torch.as_tensor(np.bincount(ref.target)))


def test_labels_follow_their_images(digits):
    ref = sk_load_digits()
    lookup = {tuple(row): label for row, label in
              zip(ref.data.astype(np.int64).tolist(), ref.target)}
    for images, y in [(digits.images_val, digits.y_val),
                      (digits.images_test, digits.y_test)]:
        rows = (images.reshape(-1, 64) * 16).round().long()
        for row, label in zip(rows.tolist(), y.tolist()):
            assert lookup[tuple(row)] == label


def test_split_is_stratified_64_16_20(digits):
    train = digits.y_train.bincount().double()
    val = digits.y_val.bincount().double()
    test = digits.y_test.bincount().double()
    total = train + val + test  # (10,)
    assert ((test / total - 0.2).abs() < 0.01).all(), test / total
    assert ((val / total - 0.16).abs() < 0.01).all(), val / total


def test_val_and_test_are_disjoint_from_train(digits):
    def rows(images):
        return {tuple(r) for r in (images.reshape(-1, 64) * 16)
                .round().long().tolist()}
    train, val = rows(digits.images_train), rows(digits.images_val)
    test = rows(digits.images_test)
    # the digits hold a few exact duplicate images; allow those only
    assert len(train & val) <= 3 and len(train & test) <= 3
    assert len(val & test) <= 3


def test_standardised_with_train_statistics(digits):
    mean, std = digits.X_train.mean(0), digits.X_train.std(0)
    varying = digits.images_train.reshape(-1, 64).std(0) > 0
    assert mean.abs().max() < 1e-5
    assert ((std[varying] - 1).abs() < 1e-2).all()
    # test features use the train mean/std, so they are not centred
    raw_tr = digits.images_train.reshape(-1, 64)[:, varying]
    raw_te = digits.images_test.reshape(-1, 64)[:, varying]
    mu, sd = raw_tr.mean(0), raw_tr.std(0, unbiased=False)
    torch.testing.assert_close(digits.X_test[:, varying],
                               (raw_te - mu) / sd, atol=1e-4, rtol=1e-4)


def test_digits_images_in_unit_range(digits):
    assert digits.images_train.min() == 0
    assert digits.images_train.max() == 1


def test_digits_is_deterministic_and_dtype():
    a, b = data.load_digits(), data.load_digits(dtype=torch.float64)
    assert b.X_train.dtype == torch.float64
    torch.testing.assert_close(a.X_train.double(), b.X_train, atol=1e-5,
                               rtol=1e-6)


def test_digits_without_the_shipped_csv(monkeypatch, digits):
    monkeypatch.setattr(data, "_digits_file", lambda: None)
    X, y = data._digits_arrays()
    assert X.shape == (1797, 64) and y.shape == (1797,)


# ---------------------------------------------------------- 2-D sets
@pytest.mark.parametrize("k", [3, 8, 10])
def test_ring_means_are_distinct_and_on_the_circle(k):
    means = data.ring_means(k, radius=2.0)
    assert means.shape == (k, 2)
    torch.testing.assert_close(means.norm(dim=1), torch.full((k,), 2.0))
    gaps = torch.cdist(means, means) + torch.eye(k) * 10
    # neighbours are one chord apart: no mean repeats (linspace bug)
    chord = 2 * 2.0 * math.sin(math.pi / k)
    assert gaps.min() == pytest.approx(chord, rel=1e-5)


def test_ring_samples_sit_at_their_mode():
    g = torch.Generator().manual_seed(0)
    X, y = data.ring_of_gaussians(4000, k=8, std=0.02, generator=g)
    assert X.shape == (4000, 2) and y.shape == (4000,)
    assert set(y.tolist()) == set(range(8))
    offsets = X - data.ring_means(8)[y]
    assert offsets.std().item() == pytest.approx(0.02, rel=0.05)


def test_generators_repeat_with_a_generator():
    for make in (data.ring_of_gaussians, data.grid_of_gaussians,
                 data.moons, data.spirals):
        a = make(100, generator=torch.Generator().manual_seed(1))
        b = make(100, generator=torch.Generator().manual_seed(1))
        c = make(100, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])


def test_grid_means():
    means = data.grid_means(side=5, spacing=2.0)
    assert means.shape == (25, 2)
    assert len(set(map(tuple, means.tolist()))) == 25
    torch.testing.assert_close(means.mean(0), torch.zeros(2))
    assert means.max() == 4.0 and means.min() == -4.0
    X, y = data.grid_of_gaussians(500)
    assert ((X - means[y]).norm(dim=1) < 0.2).all()


def test_moons_geometry_without_noise():
    X, y = data.moons(200, noise=0.0)
    assert y.bincount().tolist() == [100, 100]
    r_outer = X[y == 0].norm(dim=1)
    r_inner = (X[y == 1] - torch.tensor([1.0, 0.5])).norm(dim=1)
    torch.testing.assert_close(r_outer, torch.ones(100))
    torch.testing.assert_close(r_inner, torch.ones(100))
    assert (X[y == 0, 1] >= 0).all() and (X[y == 1, 1] <= 0.5).all()


@pytest.mark.parametrize("num_classes", [2, 3])
def test_spirals(num_classes):
    X, y = data.spirals(300, num_classes=num_classes, noise=0.0)
    assert X.shape == (300, 2)
    assert y.bincount().tolist() == [300 // num_classes] * num_classes
    assert X.norm(dim=1).max() <= 1.0
    # without noise, each arm's angle grows with its radius: the point at
    # radius r of arm c lies at angle 2 pi c / C + 4 r (X = r (sin, cos))
    for c in range(num_classes):
        arm = X[y == c]
        r = arm.norm(dim=1)
        assert r.std() > 0.2
        angle = torch.atan2(arm[:, 0], arm[:, 1])
        expected = 2 * math.pi * c / num_classes + 4.0 * r
        # compare on the circle: the difference is a multiple of 2 pi
        off = torch.remainder(angle - expected + math.pi, 2 * math.pi)
        assert (off - math.pi).abs().max() < 1e-4


# -------------------------------------------------------------- batching
def test_batches_cover_every_row_once():
    X = torch.arange(10.0)[:, None] * torch.ones(1, 3)  # (10, 3)
    y = torch.arange(10)
    got = list(data.batches(X, y, batch_size=4))
    assert [len(b[0]) for b in got] == [4, 4, 2]
    seen = torch.cat([b[1] for b in got])
    assert sorted(seen.tolist()) == list(range(10))
    assert not torch.equal(seen, y)  # shuffled (fixed seed 0)
    for Xb, yb in got:
        assert torch.equal(Xb[:, 0].long(), yb)  # rows stay aligned


def test_batches_order_follows_the_generator():
    X = torch.arange(50)
    a = torch.cat([b[0] for b in data.batches(
        X, generator=torch.Generator().manual_seed(3))])
    b = torch.cat([b[0] for b in data.batches(
        X, generator=torch.Generator().manual_seed(3))])
    assert torch.equal(a, b)


def test_batches_unshuffled_and_drop_last():
    X = torch.arange(10)
    got = [b[0].tolist() for b in data.batches(X, batch_size=4,
                                                shuffle=False,
                                                drop_last=True)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_tensor_data_transform_and_as_data():
    d = data.TensorData(torch.zeros(5, 2, dtype=torch.uint8),
                        torch.arange(5), transform=lambda X: X.float() + 1)
    Xb, yb = next(d.batches(batch_size=5, shuffle=False))
    assert Xb.dtype == torch.float32 and (Xb == 1).all()
    assert len(d) == 5
    assert isinstance(data.as_data((torch.zeros(3), torch.zeros(3))),
                      data.TensorData)
    assert data.as_data(torch.zeros(3)).y is None
    loader = [(torch.zeros(2),)]
    assert data.as_data(loader) is loader


@gpu
def test_batches_stay_on_the_gpu():
    X = torch.randn(100, 3, device="cuda")
    for (Xb,) in data.batches(X, batch_size=32):
        assert Xb.device.type == "cuda"


# -------------------------------------------------------------- CIFAR-10
@pytest.fixture
def fake_archive(tmp_path):
    return data.write_fake_cifar10_archive(tmp_path, n_per_batch=6)


def _members(path):
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: pickle.load(tar.extractfile(m), encoding="bytes")
                for m in tar.getmembers()}


def test_fake_archive_has_the_real_layout(fake_archive):
    assert fake_archive.name == "cifar-10-python.tar.gz"
    members = _members(fake_archive)
    names = {f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)}
    names |= {"cifar-10-batches-py/test_batch",
              "cifar-10-batches-py/batches.meta"}
    assert set(members) == names
    batch = members["cifar-10-batches-py/data_batch_1"]
    assert batch[b"data"].shape == (6, 3072)
    assert batch[b"data"].dtype == np.uint8
    assert len(batch[b"labels"]) == 6


def test_load_cifar10_matches_the_pickles(fake_archive):
    X, y = data.load_cifar10(fake_archive.parent, "train", md5=None)
    assert X.shape == (30, 3, 32, 32) and X.dtype == torch.uint8
    assert y.shape == (30,) and y.dtype == torch.int64
    members = _members(fake_archive)
    first = members["cifar-10-batches-py/data_batch_1"]
    row = first[b"data"][0]  # 1024 red, 1024 green, 1024 blue values
    assert X[0, 0].flatten().tolist() == row[:1024].tolist()
    assert X[0, 2, 0, :5].tolist() == row[2048:2053].tolist()
    assert X[0, 1, 1, 0].item() == row[1024 + 32]  # green, row 1, col 0
    last = members["cifar-10-batches-py/data_batch_5"]
    assert y[-6:].tolist() == last[b"labels"]
    Xt, yt = data.load_cifar10(fake_archive.parent, "test", md5=None)
    assert Xt.shape == (6, 3, 32, 32)


def test_checksum_is_checked(fake_archive):
    with pytest.raises(ValueError, match="md5"):
        data.load_cifar10(fake_archive.parent)  # real md5 expected
    good = hashlib.md5(fake_archive.read_bytes()).hexdigest()
    X, _ = data.load_cifar10(fake_archive.parent, md5=good)
    assert len(X) == 30


def test_missing_archive_names_file_and_place(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load_cifar10(tmp_path / "data", "train")
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg
    assert str(tmp_path / "data" / "cifar-10-python.tar.gz") in msg
    assert data.CIFAR10_MD5 in msg


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        data.load_cifar10(tmp_path, "val")


def test_download_from_a_mirror(tmp_path, fake_archive):
    root = tmp_path / "dl"
    good = hashlib.md5(fake_archive.read_bytes()).hexdigest()
    broken = (tmp_path / "nowhere.tar.gz").as_uri()
    X, _ = data.load_cifar10(root, download=True, md5=good,
                             mirrors=(broken, fake_archive.as_uri()))
    assert len(X) == 30
    assert (root / "cifar-10-python.tar.gz").exists()


class _Response(io.BytesIO):
    def __init__(self, body: bytes, status: int):
        super().__init__(body)
        self.status = status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("status", [206, 200])
def test_download_resumes_a_partial_file(tmp_path, monkeypatch, status):
    payload = bytes(range(256)) * 40
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(payload[:1000])
    ranges = []

    def urlopen(req, timeout):
        ranges.append(req.get_header("Range"))
        # 206: the rest only; 200: a server that ignores Range
        return _Response(payload[1000:] if status == 206 else payload,
                         status)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    data.download("http://example.invalid/file.bin", dest)
    assert ranges == ["bytes=1000-"]
    assert dest.read_bytes() == payload
    assert not (tmp_path / "file.bin.part").exists()


@gpu
def test_cifar10_lands_on_the_gpu(fake_archive):
    X, y = data.load_cifar10(fake_archive.parent, device="cuda", md5=None)
    assert X.is_cuda and y.is_cuda and X.dtype == torch.uint8
