import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse import gan
from dlcourse.data import ring_means, ring_of_gaussians
from dlcourse.train import NonFiniteLossError, fit
from lib_helpers import gpu, record_dtypes_and_layouts


def _toy_gan(z_dim=2, batchnorm=False):
    norm_g = [nn.BatchNorm1d(16)] if batchnorm else []
    norm_d = [nn.BatchNorm1d(16)] if batchnorm else []
    g = nn.Sequential(nn.Linear(z_dim, 16), *norm_g, nn.ReLU(),
                      nn.Linear(16, 2))
    d = nn.Sequential(nn.Linear(2, 16), *norm_d, nn.ReLU(),
                      nn.Linear(16, 1))
    return gan.GAN(g, d, z_dim)


def _buffers(module):
    return [b.detach().clone() for b in module.buffers()]


def _same_buffers(module, snapshot):
    return all(torch.equal(b, s) for b, s in zip(module.buffers(),
                                                 snapshot))


def _opts(model, lr=0.1):
    return (torch.optim.SGD(model.discriminator.parameters(), lr=lr),
            torch.optim.SGD(model.generator.parameters(), lr=lr))


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _same(module, snapshot):
    return all(torch.equal(p, s) for p, s in zip(module.parameters(),
                                                 snapshot))


def test_generator_update_leaves_d_untouched():
    model = _toy_gan(batchnorm=True)
    opt_d, opt_g = _opts(model)
    d0, g0 = _snapshot(model.discriminator), _snapshot(model.generator)
    b0 = _buffers(model.discriminator)  # BatchNorm running statistics
    fake = model.generator(model.sample_z(32))
    gan.update_generator(model, fake, opt_g)
    assert _same(model.discriminator, d0)
    assert _same_buffers(model.discriminator, b0)
    assert all(m.track_running_stats for m in model.discriminator.modules()
               if isinstance(m, nn.BatchNorm1d))
    assert not _same(model.generator, g0)
    # D is frozen for G's backward: no weight gradients were even computed
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())


def test_discriminator_update_leaves_g_untouched_and_gradless():
    model = _toy_gan()
    opt_d, opt_g = _opts(model)
    d0, g0 = _snapshot(model.discriminator), _snapshot(model.generator)
    fake = model.generator(model.sample_z(32))
    gan.update_discriminator(model, torch.randn(32, 2), fake, opt_d)
    assert _same(model.generator, g0)
    assert not _same(model.discriminator, d0)
    # the fake was detached: no gradient reached G
    assert all(p.grad is None for p in model.generator.parameters())


def test_gan_step_updates_d_then_g():
    model = _toy_gan()
    opt_d, opt_g = _opts(model)
    order = []
    for name, opt in (("d", opt_d), ("g", opt_g)):
        opt.register_step_post_hook(lambda o, a, k, n=name: order.append(n))
    out = gan.gan_step(model, (torch.randn(16, 2),), optimizer=(opt_d,
                                                                opt_g))
    assert order == ["d", "g"]
    assert set(out) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(v.dim() == 0 and not v.requires_grad for v in out.values())


def test_generator_grads_are_fresh_each_step():
    # zero_grad before G's backward: stale grads would double the update
    model = _toy_gan()
    opt_d, opt_g = _opts(model)
    for p in model.generator.parameters():
        p.grad = torch.full_like(p, 1e6)  # junk from "an earlier step"
    fake = model.generator(model.sample_z(8))
    g0 = _snapshot(model.generator)
    gan.update_generator(model, fake, opt_g)
    for p, s in zip(model.generator.parameters(), g0):
        assert (p - s).abs().max() < 10


def _manual_losses(model, real, z):
    lr_ = model.discriminator(real).flatten()
    lf = model.discriminator(model.generator(z)).flatten()
    loss_d = -(torch.log(torch.sigmoid(lr_)).mean()
               + torch.log(1 - torch.sigmoid(lf)).mean())
    return loss_d, lf


def test_gan_step_clips_both_networks():
    model = _toy_gan()
    opt_d, opt_g = _opts(model, lr=1.0)  # unclipped, steps of ~0.1-1
    d0, g0 = _snapshot(model.discriminator), _snapshot(model.generator)
    gan.gan_step(model, (torch.randn(16, 2),), optimizer=(opt_d, opt_g),
                 clip_grad=1e-3)
    for module, before in ((model.discriminator, d0), (model.generator,
                                                        g0)):
        moved = torch.cat([(p.detach() - b).flatten() for p, b in
                           zip(module.parameters(), before)])
        assert moved.norm().item() == pytest.approx(1e-3, rel=0.05)


def test_losses_match_their_definitions():
    model = _toy_gan()
    real, z = torch.randn(16, 2), model.sample_z(16)
    fake = model.generator(z)
    with torch.no_grad():
        loss_d, logits_fake = _manual_losses(model, real, z)
    opt_d, opt_g = _opts(model, lr=0.0)  # lr 0: D unchanged for G's loss
    out_d = gan.update_discriminator(model, real, fake, opt_d)
    assert out_d["loss_d"].item() == pytest.approx(loss_d.item(), rel=1e-5)
    p_fake = torch.sigmoid(logits_fake)
    ns = gan.update_generator(model, model.generator(z), opt_g)
    assert ns["loss_g"].item() == pytest.approx(
        -torch.log(p_fake).mean().item(), rel=1e-5)  # -log D(G(z))
    sat = gan.update_generator(model, model.generator(z), opt_g,
                               saturating=True)
    assert sat["loss_g"].item() == pytest.approx(
        torch.log(1 - p_fake).mean().item(), rel=1e-5)


def test_d_update_with_batchnorm_still_tracks_statistics():
    model = _toy_gan(batchnorm=True)
    opt_d, _ = _opts(model)
    b0 = _buffers(model.discriminator)
    fake = model.generator(model.sample_z(32))
    gan.update_discriminator(model, torch.randn(32, 2), fake, opt_d)
    assert not _same_buffers(model.discriminator, b0)


def test_gan_trains_through_fit():
    # data far from where G starts: N((3, -2), 0.1^2 I). Training through
    # fit must move G's samples there (the logged losses alone prove
    # nothing about learning).
    torch.manual_seed(0)
    target = torch.tensor([3.0, -2.0])
    X = target + 0.1 * torch.randn(512, 2,
                                   generator=torch.Generator().manual_seed(0))
    model = _toy_gan()
    opt_d = torch.optim.Adam(model.discriminator.parameters(), 1e-2,
                             betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(model.generator.parameters(), 1e-2,
                             betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(1)
    before = (model.sample(512, generator=gen).mean(0) - target).norm()
    hist = fit(model, X, optimizer=(opt_d, opt_g), step=gan.gan_step,
               num_epochs=15, device="cpu")
    assert hist.keys() == ["epoch", "train_loss_d", "train_loss_g",
                           "train_d_real", "train_d_fake", "seconds"]
    assert all(math.isfinite(v) for v in hist.last.values())
    after = (model.sample(512, generator=gen).mean(0) - target).norm()
    assert before > 2.5 and after < 0.5, (before, after)


def test_sample_with_a_generator_is_reproducible_and_in_eval_mode():
    model = _toy_gan(batchnorm=True)
    for _ in range(3):  # give G's BatchNorm some running statistics
        model.generator(model.sample_z(16))
    g_buffers = _buffers(model.generator)
    rng = torch.get_rng_state()
    a = model.sample(6, generator=torch.Generator().manual_seed(3))
    b = model.sample(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not a.requires_grad
    assert torch.equal(rng, torch.get_rng_state())  # global RNG untouched
    assert _same_buffers(model.generator, g_buffers)  # stats not updated
    assert model.generator.training  # mode restored
    # eval mode: the running statistics were used, not the batch's
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model.generator.eval()(z)
    assert torch.equal(a, expected)
    # a single sample works too (batch statistics would fail on one)
    model.generator.train()
    assert model.sample(1).shape == (1, 2)


def test_sample_grid_layout():
    images = torch.arange(6.0)[:, None, None, None].expand(6, 1, 4, 3)
    grid = gan.sample_grid(images, nrow=4, padding=1)
    assert grid.shape == (1, 2 * 5 + 1, 4 * 4 + 1)
    # image 5 sits in row 1, column 1: min-max scaled 5 / 5 = 1.0
    assert (grid[0, 6:10, 5:8] == 1.0).all()
    assert (grid[0, 1:5, 1:4] == 0.0).all()  # image 0 scales to 0
    fixed = gan.sample_grid(images, nrow=4, value_range=(-10, 10))
    assert fixed[0, 1, 1].item() == pytest.approx(0.5)


def test_mixture_metrics_perfect_and_missing_modes():
    means = ring_means(8)
    X, _ = ring_of_gaussians(800, std=0.02)
    m = gan.mixture_metrics(X, means, std=0.02)
    assert m["modes_lenient"] == m["modes_strict"] == m["num_modes"] == 8
    assert m["high_quality"] > 0.98
    three = X[(X - means[:3, None]).norm(dim=2).min(0).values < 0.2]
    m3 = gan.mixture_metrics(three, means, std=0.02)
    assert m3["modes_lenient"] == m3["modes_strict"] == 3


def test_strict_count_ignores_token_modes():
    means = ring_means(8)
    # 200 samples at mode 0, one sample at each other mode
    X = torch.cat([means[:1].expand(200, 2), means[1:]])
    m = gan.mixture_metrics(X, means, std=0.02)
    assert m["modes_lenient"] == 8
    assert m["modes_strict"] == 1  # needs 207 / 32 = 6.5 samples each
    off = gan.mixture_metrics(X + 1.0, means, std=0.02)
    assert off["high_quality"] == 0.0 and off["modes_lenient"] == 0


def test_mixture_metrics_of_no_samples_cover_no_mode():
    m = gan.mixture_metrics(torch.zeros(0, 2), ring_means(8), std=0.02)
    assert m == {"modes_lenient": 0, "modes_strict": 0,
                 "high_quality": 0.0, "num_modes": 8}


def test_judge_is_accurate_cached_and_leaves_rng_alone(digits):
    # train it here, whatever ran before: the cache would hide the
    # training (and any RNG use) from this test
    gan._trained_judge.cache_clear()
    state = torch.get_rng_state()
    judge = gan.digits_judge()
    assert torch.equal(state, torch.get_rng_state())
    with torch.no_grad():
        acc = (judge(digits.images_test).argmax(1) == digits.y_test)
    assert acc.float().mean() > 0.95
    assert gan._trained_judge(0) is gan._trained_judge(0)


def test_digits_metrics_tell_real_from_noise(digits):
    real = digits.images_test
    good = gan.digits_metrics(real[:200], real=real[200:])
    noise = gan.digits_metrics(torch.rand(200, 1, 8, 8), real=real[200:])
    collapsed = gan.digits_metrics(real[:1].expand(200, 1, 8, 8),
                                   real=real[200:])
    assert good["confident"] > 0.85 > noise["confident"]
    assert good["class_entropy"] > 2.2  # near log(10) = 2.303
    assert collapsed["class_entropy"] < 0.5
    assert good["frechet"] < 0.2 * noise["frechet"]
    assert good["precision"] > 0.7 and good["recall"] > 0.7
    assert noise["precision"] < 0.5 < good["precision"]
    assert collapsed["recall"] < 0.1


def test_digits_metrics_rescale_tanh_output(digits):
    real = digits.images_test
    a = gan.digits_metrics(real[:100], real=real[100:])
    b = gan.digits_metrics(real[:100] * 2 - 1, real=real[100:],
                           value_range=(-1, 1))
    assert a == pytest.approx(b)


def test_fid_without_torch_fidelity_says_why():
    ok, why = gan.fid_available()
    if ok:
        pytest.skip("torch-fidelity and its weights are installed")
    assert "torch-fidelity" in why or "weights" in why
    with pytest.raises(RuntimeError, match="torch-fidelity|weights"):
        gan.fid(torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
                torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


@gpu
def test_dcgan_step_on_cuda_in_bf16():
    g = nn.Sequential(nn.ConvTranspose2d(8, 16, 4, 1, 0),
                      nn.BatchNorm2d(16), nn.ReLU(),
                      nn.ConvTranspose2d(16, 3, 4, 2, 1), nn.Tanh())
    d = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.BatchNorm2d(16),
                      nn.LeakyReLU(0.2), nn.Conv2d(16, 1, 4, 1, 0))
    model = gan.GAN(g, d, (8, 1, 1))
    dtypes, layouts = record_dtypes_and_layouts(d[0])
    opts = (torch.optim.Adam(d.parameters(), 2e-4),
            torch.optim.Adam(g.parameters(), 2e-4))
    X = torch.rand(256, 3, 8, 8) * 2 - 1
    hist = fit(model, X, optimizer=opts, step=gan.gan_step, num_epochs=2,
               device="cuda")
    assert all(math.isfinite(v) for v in hist.last.values())
    fast = torch.cuda.get_device_capability() >= (8, 0)
    assert set(dtypes) == {torch.bfloat16 if fast else torch.float32}
    assert all(layouts)  # real batches arrive channels_last
    assert d[0].weight.is_contiguous(memory_format=torch.channels_last)
    # a fixed-noise grid from a CPU generator works on the GPU, in eval
    # mode, and gives the same picture every time
    grid = [model.sample(4, generator=torch.Generator().manual_seed(0))
            for _ in range(2)]
    assert grid[0].shape == (4, 3, 8, 8) and grid[0].is_cuda
    assert torch.equal(grid[0], grid[1])
    assert model.generator.training


def test_a_nan_loss_stops_the_gan_before_it_updates_anything():
    model = _toy_gan()
    d0, g0 = _snapshot(model.discriminator), _snapshot(model.generator)
    X = torch.randn(64, 2)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    X[order[40]] = float("nan")  # in the second batch of 32
    with pytest.raises(NonFiniteLossError,
                       match=r"loss_d became nan at epoch 1, step 2\b"):
        fit(model, X, optimizer=_opts(model), step=gan.gan_step,
            num_epochs=1, batch_size=32, device="cpu",
            generator=torch.Generator().manual_seed(0))
    # step 1 updated both; step 2 stopped before D's (and G's) update
    assert not _same(model.discriminator, d0)
    assert not _same(model.generator, g0)
    assert all(torch.isfinite(p).all() for p in model.parameters())
