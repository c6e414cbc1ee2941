"""Checks: a float64 gradient check and the comparison helpers graders use.

Every helper fails with an ``AssertionError`` whose message says *what*
differs (type, shape, dtype, device, sign, scale, transposition, which
elements), so a student reads a hint instead of a bare traceback.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Callable, Iterator, Mapping

import torch

__all__ = [
    "assert_tensor",
    "assert_close",
    "check_elementwise",
    "numerical_grad",
    "grad_check",
    "grad_check_report",
    "GradError",
    "forbid",
    "AUTOGRAD",
    "RuleBroken",
]

# Warnings stay visible here: importing this module changes no filter. The
# grading kernels silence them instead (nbgrader scores a test cell 0 if it
# writes to stderr): see ``Execute.extra_arguments`` in nbgrader_config.py
# and ``dlcourse.grade``.


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
    return _numerical_grad(f, x, eps)[0]


def _numerical_grad(
    f: Callable[[], torch.Tensor], x: torch.Tensor, eps: float
) -> tuple[torch.Tensor, float]:
    """The central differences and the largest |f| met on the way."""
    grad = torch.zeros_like(x, dtype=torch.float64)
    flat, gflat = x.view(-1), grad.view(-1)
    f_max = 0.0
    with torch.no_grad():
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = float(f())
            flat[i] = old - eps
            down = float(f())
            flat[i] = old
            gflat[i] = (up - down) / (2 * eps)
            f_max = max(f_max, abs(up), abs(down))
    return grad, f_max


class GradError(float):
    """A gradient check's relative error (a float) and its worst element.

    ``index`` is the element where analytic and numerical gradients
    disagree most, ``analytic`` and ``numerical`` their values there.
    """

    index: tuple[int, ...]
    analytic: float
    numerical: float

    def __new__(cls, error: float, index: tuple[int, ...] = (),
                analytic: float = 0.0, numerical: float = 0.0
                ) -> "GradError":
        self = super().__new__(cls, error)
        self.index, self.analytic, self.numerical = index, analytic, numerical
        return self


# Denominators are floored at this many times the central difference's
# round-off: round-off alone then scores about 1e-7, while an element that
# is wrong by more than a few times the round-off still scores above 1e-6.
_NOISE_FLOOR = 1e7
# ... and at this fraction of the tensor's largest |a| + |n|: when f() sums
# terms that cancel, its round-off follows the terms, not |f|.
_SCALE_FLOOR = 1e-3
_FLOAT64_EPS = torch.finfo(torch.float64).eps


def _refuse_low_precision(key: str, p: torch.Tensor) -> None:
    if p.dtype != torch.float64:
        raise TypeError(
            f"grad_check needs float64 tensors, but {key!r} is {p.dtype}: "
            "in lower precision a central difference loses almost all its "
            "digits and every check looks like a mismatch. Cast the "
            "parameters and inputs with .double() (a copy), and compute the "
            "analytic gradient from those copies."
        )


def grad_check(
    f: Callable[[], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    analytic: Mapping[str, torch.Tensor],
    eps: float = 1e-6,
) -> dict[str, GradError]:
    """Worst element-wise relative error of analytic vs numerical gradients.

    For each element (as cs231n does) ``|a - n| / (|a| + |n|)``, and the
    worst element counts. Elements too small to be told from round-off
    are compared in absolute terms: the denominator is at least 1e7 times
    the central difference's round-off (about ``2.2e-16 * max|f| / eps``)
    and at least 1e-3 times the tensor's largest ``|a| + |n|``. Round-off
    alone then scores about 1e-7 or less, while an element of the wrong
    sign scores above 1e-6 unless it is below both a few times its
    round-off and 5e-10 times the largest element. One value per
    parameter, the worst element's, as a `GradError` (a float that also
    knows that element's index and values).
    The tensors in ``params`` and the value of ``f()`` must be float64.
    """
    for key, p in params.items():
        _refuse_low_precision(key, p)
    value = f()
    if isinstance(value, torch.Tensor):
        _refuse_low_precision("f()", value)
    errors = {}
    for key, p in params.items():
        num, f_max = _numerical_grad(f, p, eps)
        ana = analytic[key].detach().to(torch.float64)
        if ana.shape != num.shape:
            raise AssertionError(
                f"gradient for {key!r} has shape {tuple(ana.shape)}, "
                f"expected {tuple(num.shape)}"
            )
        ana = ana.to(num.device)
        size = ana.abs() + num.abs()
        floor = max(_NOISE_FLOOR * _FLOAT64_EPS * f_max / eps,
                    _SCALE_FLOOR * float(size.max()) if size.numel() else 0.0,
                    1e-300)
        err = (ana - num).abs() / size.clamp_min(floor)
        err = torch.where(torch.isnan(err), torch.inf, err)  # NaN: worst
        if err.numel() == 0:
            errors[key] = GradError(0.0)
            continue
        flat = int(err.reshape(-1).argmax())
        index = tuple(int(i) for i in torch.unravel_index(
            torch.tensor(flat), err.shape))
        errors[key] = GradError(float(err.reshape(-1)[flat]), index,
                                float(ana.reshape(-1)[flat]),
                                float(num.reshape(-1)[flat]))
    return errors


def grad_check_report(errors: Mapping[str, float], tol: float = 1e-6) -> str:
    """One line per parameter: a bound on its error and a verdict.

    A passing parameter prints the bound ``< tol``, never its round-off
    digits (they differ between machines); a failing one prints its error
    and, for a `GradError`, the worst element with both gradients there.
    """
    lines = []
    for key, err in errors.items():
        if err < tol:
            lines.append(f"{key:>12s}  rel. error < {tol:.0e}  ok")
            continue
        line = f"{key:>12s}  rel. error {err:.2g}  MISMATCH"
        if isinstance(err, GradError) and err.index is not None:
            where = list(err.index)
            line += (f" (worst at {where}: analytic {err.analytic:.4g}, "
                     f"numerical {err.numerical:.4g})")
        lines.append(line)
    return "\n".join(lines)


# ------------------------------------------------------------ stated rules
class RuleBroken(AssertionError):
    """Raised when an answer calls a function its exercise forbids."""


#: The entry points of autograd, for ``forbid(*AUTOGRAD, rule=...)``.
AUTOGRAD = ("torch.Tensor.backward", "torch.autograd.backward",
            "torch.autograd.grad", "torch.func.grad",
            "torch.func.grad_and_value", "torch.func.vjp", "torch.func.jvp",
            "torch.func.jacrev", "torch.func.jacfwd", "torch.func.hessian",
            "torch.autograd.functional.jacobian",
            "torch.autograd.functional.hessian",
            "torch.autograd.functional.vjp", "torch.autograd.functional.jvp")


def _resolve_dotted(dotted: str) -> tuple[object, str]:
    """('torch.nn.functional.softmax') -> (the module object, 'softmax')."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:-1]:
            owner = getattr(owner, attr)
        return owner, parts[-1]
    raise ValueError(f"cannot resolve {dotted!r}")


@contextlib.contextmanager
def forbid(*names: str, rule: str, fn: Callable | None = None
           ) -> Iterator[None]:
    """Make each dotted callable raise ``RuleBroken`` inside the block.

    ``names`` are dotted paths (``"torch.softmax"``,
    ``"torch.Tensor.softmax"``, ``"torch.nn.functional.cross_entropy"``,
    ``*AUTOGRAD``); ``rule`` is the exercise's rule in the student's words
    and goes into the failure message. Pass the student's function as
    ``fn`` to also catch an alias bound before the block
    (``from torch.nn.functional import softmax as s``): any global name
    that ``fn`` reads and that is one of the forbidden objects fails at
    once. Run only the student's code inside the block, never the
    reference.
    """
    saved: list[tuple[object, str, object, bool]] = []
    originals: dict[int, str] = {}

    def trap(dotted: str) -> Callable:
        def raiser(*args, **kwargs):
            raise RuleBroken(f"rule broken: {rule} (your code called "
                             f"{dotted})")
        return raiser

    if fn is not None:
        code_names = set(getattr(fn, "__code__", None).co_names
                         if hasattr(fn, "__code__") else ())
    try:
        for dotted in names:
            owner, attr = _resolve_dotted(dotted)
            # On a class, remember whether the attribute was its own or
            # inherited (torch.Tensor's methods live on TensorBase).
            own = attr in vars(owner)
            original = vars(owner)[attr] if own else None
            originals[id(getattr(owner, attr))] = dotted
            saved.append((owner, attr, original, own))
            setattr(owner, attr, trap(dotted))
        if fn is not None:
            glb = getattr(fn, "__globals__", {})
            for name in sorted(code_names):
                obj = glb.get(name)
                if obj is not None and id(obj) in originals:
                    raise RuleBroken(
                        f"rule broken: {rule} (your code uses {name}, "
                        f"which is {originals[id(obj)]})")
        yield
    finally:
        for owner, attr, original, own in reversed(saved):
            if own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)
