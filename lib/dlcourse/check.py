"""Checks: a float64 gradient check and the comparison helpers graders use.

Every helper fails with an ``AssertionError`` whose message says *what*
differs (type, shape, dtype, device, sign, scale, transposition, which
elements), so a student reads a hint instead of a bare traceback.
"""
from __future__ import annotations

import warnings
from typing import Callable, Mapping

import torch

__all__ = [
    "assert_tensor",
    "assert_close",
    "check_elementwise",
    "numerical_grad",
    "grad_check",
    "grad_check_report",
]

# Silence warnings for the whole process: nbgrader scores a test cell 0 if it
# writes anything to stderr, and a UserWarning from torch is not the
# student's fault.
warnings.filterwarnings("ignore")


def assert_tensor(
    actual: object,
    *,
    name: str,
    shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> None:
    """Fail unless ``actual`` is a tensor with the given shape/dtype/device."""
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(
            f"{name} should be a torch.Tensor, got {type(actual).__name__}"
        )
    if shape is not None and tuple(actual.shape) != tuple(shape):
        raise AssertionError(
            f"{name} has shape {tuple(actual.shape)}, expected "
            f"{tuple(shape)}" + _shape_hint(tuple(actual.shape), shape)
        )
    if dtype is not None and actual.dtype != dtype:
        raise AssertionError(
            f"{name} has dtype {actual.dtype}, expected {dtype} "
            "(keep the input's dtype: avoid hard-coded .float() or numpy)"
        )
    if device is not None and actual.device.type != torch.device(device).type:
        raise AssertionError(
            f"{name} is on {actual.device}, expected {device} "
            "(create new tensors with device=x.device or *_like(x))"
        )


def _shape_hint(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    if tuple(reversed(got)) == tuple(want) and len(got) == 2:
        return " (transposed?)"
    if len(got) == len(want) - 1 or len(got) == len(want) + 1:
        return " (a dimension summed away or kept by mistake? check keepdim)"
    return ""


def assert_close(
    actual: object,
    expected: torch.Tensor,
    *,
    name: str,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    check_dtype: bool = True,
) -> None:
    """Fail with a diagnosis unless ``actual`` matches ``expected``."""
    assert_tensor(
        actual,
        name=name,
        shape=tuple(expected.shape),
        dtype=expected.dtype if check_dtype else None,
        device=expected.device,
    )
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    if _close(a, e, rtol, atol):
        return
    if not torch.isfinite(a).all() and torch.isfinite(e).all():
        bad = (~torch.isfinite(a)).sum().item()
        raise AssertionError(
            f"{name} has {bad} NaN/inf values where the reference is finite "
            "(numerically unstable for large inputs?)"
        )
    raise AssertionError(f"{name} is wrong: {_diagnose(a, e, rtol, atol)}")


def _close(a: torch.Tensor, e: torch.Tensor, rtol: float, atol: float) -> bool:
    close = torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
    return bool(close.all())


def _diagnose(
    a: torch.Tensor, e: torch.Tensor, rtol: float, atol: float
) -> str:
    """Name the simplest relation between a wrong and a right answer."""
    if e.abs().max() > 0 and _close(a, -e, rtol, atol):
        return "it has the wrong sign (every value is negated)"
    square = a.dim() == 2 and a.shape[0] == a.shape[1]
    if square and _close(a.T, e, rtol, atol):
        return "it is the transpose of the expected value"
    mask = e.abs() > atol
    if mask.any():
        ratio = a[mask] / e[mask]
        k = ratio.median().item()
        if k != 0 and _close(a, k * e, rtol * 10, atol * 10):
            return (
                f"every value is {k:.4g} times the expected one "
                "(a missing or extra constant factor, e.g. 1/N or 1/2?)"
            )
    wrong = ~torch.isclose(a, e, rtol=rtol, atol=atol)
    idx = tuple(int(i) for i in wrong.nonzero()[0])
    return (
        f"{int(wrong.sum())} of {a.numel()} values differ; first at index "
        f"{idx}: got {a[idx].item():.6g}, expected {e[idx].item():.6g}"
    )


def check_elementwise(
    fn: Callable[[torch.Tensor], torch.Tensor],
    reference: Callable[[torch.Tensor], torch.Tensor],
    *,
    name: str,
    x: torch.Tensor | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> None:
    """Compare an element-wise ``fn`` with ``reference``, region by region."""
    if x is None:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    out = fn(x.clone())
    want = reference(x.clone())
    assert_tensor(out, name=f"{name}(x)", shape=tuple(want.shape),
                  dtype=want.dtype, device=want.device)
    o, w = out.detach().double(), want.detach().double()
    for label, region in (("negative", x < 0), ("positive", x > 0),
                          ("zero", x == 0)):
        if region.any() and not _close(o[region], w[region], rtol, atol):
            detail = _diagnose(o[region], w[region], rtol, atol)
            raise AssertionError(
                f"{name}(x) is wrong for {label} inputs: {detail}"
            )
    assert_close(out, want, name=f"{name}(x)", rtol=rtol, atol=atol)


def numerical_grad(
    f: Callable[[], torch.Tensor], x: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Central-difference gradient of scalar ``f()`` with respect to ``x``.

    ``x`` is perturbed in place (and restored), so ``f`` must read it.
    """
    grad = torch.zeros_like(x, dtype=torch.float64)
    flat, gflat = x.view(-1), grad.view(-1)
    with torch.no_grad():
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = float(f())
            flat[i] = old - eps
            down = float(f())
            flat[i] = old
            gflat[i] = (up - down) / (2 * eps)
    return grad


def grad_check(
    f: Callable[[], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    analytic: Mapping[str, torch.Tensor],
    eps: float = 1e-6,
) -> dict[str, float]:
    """Relative error, per parameter, of analytic vs numerical gradients.

    Use float64 tensors: in float32 the differences drown in rounding.
    """
    errors = {}
    for key, p in params.items():
        num = numerical_grad(f, p, eps)
        ana = analytic[key].detach().to(torch.float64)
        if ana.shape != num.shape:
            raise AssertionError(
                f"gradient for {key!r} has shape {tuple(ana.shape)}, "
                f"expected {tuple(num.shape)}"
            )
        denom = (ana.abs() + num.abs()).max().clamp_min(1e-12)
        errors[key] = float((ana - num).abs().max() / denom)
    return errors


def grad_check_report(errors: Mapping[str, float], tol: float = 1e-6) -> str:
    """One line per parameter: its relative error and whether it passes."""
    lines = []
    for key, err in errors.items():
        verdict = "ok" if err < tol else "MISMATCH"
        lines.append(f"{key:>12s}  rel. error {err:.1e}  {verdict}")
    return "\n".join(lines)
