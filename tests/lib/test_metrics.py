import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from dlcourse import metrics


def test_accuracy_against_a_loop():
    logits = torch.randn(50, 4)
    y = torch.randint(0, 4, (50,))
    expected = sum(int(row.argmax() == t) for row, t in zip(logits, y)) / 50
    assert metrics.accuracy(logits, y).item() == pytest.approx(expected)


def test_running_mean_weights_by_batch_size():
    x = torch.randn(103)
    meter = metrics.RunningMean()
    for chunk in x.split(25):  # last batch holds 3
        meter.update({"mean": chunk.mean(), "sq": (chunk ** 2).mean()},
                     len(chunk))
    got = meter.compute()
    assert got["mean"] == pytest.approx(x.mean().item(), abs=1e-6)
    assert got["sq"] == pytest.approx((x ** 2).mean().item(), abs=1e-6)
    assert metrics.RunningMean().compute() == {}


@pytest.mark.parametrize("on_host", [False, True])
def test_running_mean_of_a_value_logged_on_some_steps(on_host):
    meter = metrics.RunningMean(on_host=on_host)
    meter.update({"loss": torch.tensor(1.0), "extra": torch.tensor(10.0)},
                 4)
    meter.update({"loss": torch.tensor(2.0)}, 4)  # no "extra" this step
    meter.update({"loss": torch.tensor(4.0), "extra": torch.tensor(20.0)},
                 2)
    got = meter.compute()
    assert got["loss"] == pytest.approx((4 + 8 + 8) / 10)
    assert got["extra"] == pytest.approx((40 + 40) / 6)  # its own steps


def test_running_mean_on_host_equals_on_device():
    x = torch.randn(103)
    host, dev = metrics.RunningMean(on_host=True), metrics.RunningMean()
    for chunk in x.split(25):
        for meter in (host, dev):
            returned = meter.update({"m": chunk.mean()}, len(chunk))
        assert returned is None
    assert host.compute() == pytest.approx(dev.compute(), rel=1e-6)
    assert host.update({"m": torch.tensor(2.0)}) == {"m": 2.0}


def test_running_mean_matches_cross_entropy_of_all_data():
    logits, y = torch.randn(70, 5), torch.randint(0, 5, (70,))
    meter = metrics.RunningMean()
    for lb, yb in zip(logits.split(32), y.split(32)):
        meter.update({"loss": F.cross_entropy(lb, yb)}, len(yb))
    assert meter.compute()["loss"] == pytest.approx(
        F.cross_entropy(logits, y).item(), abs=1e-6)


def _random_cov(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, 2 * d))
    return a @ a.T / (2 * d)


def _reference_fd(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real  # the usual FID formula
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(covmean))


def test_frechet_distance_matches_the_scipy_formula():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = _random_cov(6, 1), _random_cov(6, 2)
    got = metrics.frechet_distance(*map(torch.as_tensor, (mu1, s1, mu2,
                                                          s2)))
    assert got == pytest.approx(_reference_fd(mu1, s1, mu2, s2), rel=1e-8)


def test_frechet_distance_of_1d_gaussians():
    # closed form in 1-D: (m1 - m2)^2 + (s1 - s2)^2
    got = metrics.frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]),
                                   torch.tensor([3.0]), torch.tensor([[1.0]]))
    assert got == pytest.approx(4.0 + 1.0)


def test_frechet_from_features():
    a = torch.randn(500, 4)
    assert metrics.frechet_distance_from_features(a, a) == pytest.approx(
        0.0, abs=1e-9)
    shifted = metrics.frechet_distance_from_features(a, a + 2.0)
    assert shifted == pytest.approx(4 * 4.0, rel=1e-6)  # |2 * 1|^2 in 4-D


def _reference_pr(real, fake, k):
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=2)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    r_real, r_fake = radii(real), radii(fake)
    prec = np.mean([any(np.linalg.norm(f - r) <= rr
                        for r, rr in zip(real, r_real)) for f in fake])
    rec = np.mean([any(np.linalg.norm(r - f) <= rf
                       for f, rf in zip(fake, r_fake)) for r in real])
    return prec, rec


def test_knn_precision_recall_matches_a_loop():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 3))
    fake = rng.normal(loc=1.5, scale=0.5, size=(30, 3))
    got = metrics.knn_precision_recall(torch.as_tensor(real),
                                       torch.as_tensor(fake), k=3)
    expected = _reference_pr(real, fake, 3)
    assert got == pytest.approx(expected)
    assert 0 < got[0] < 1 and 0 < got[1] < 1


def test_knn_precision_recall_extremes():
    real = torch.randn(100, 2)
    assert metrics.knn_precision_recall(real, real) == (1.0, 1.0)
    far = real + 100.0
    assert metrics.knn_precision_recall(real, far) == (0.0, 0.0)
    collapsed = real[:1] + 0.01 * torch.randn(50, 2)  # one mode only
    precision, recall = metrics.knn_precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.2
