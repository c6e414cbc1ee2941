"""dlcourse.check.forbid: the tool graders use to enforce stated rules."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.functional import softmax as aliased_softmax

from dlcourse.check import AUTOGRAD, RuleBroken, forbid


def _uses_softmax(x):
    return torch.softmax(x, dim=1)


def _uses_method(x):
    return x.softmax(1)


def _uses_functional(x):
    return F.softmax(x, dim=1)


def _uses_alias(x):
    return aliased_softmax(x, dim=1)


def _by_hand(x):
    e = (x - x.max(1, keepdim=True).values).exp()
    return e / e.sum(1, keepdim=True)


FORBIDDEN = ("torch.softmax", "torch.Tensor.softmax",
             "torch.nn.functional.softmax")


@pytest.mark.parametrize("fn", [_uses_softmax, _uses_method,
                                _uses_functional, _uses_alias])
def test_forbidden_calls_raise_with_the_rule(fn):
    x = torch.randn(3, 4)
    with pytest.raises(RuleBroken, match="no ready-made softmax"):
        with forbid(*FORBIDDEN, rule="no ready-made softmax", fn=fn):
            fn(x)


def test_allowed_code_runs_and_everything_is_restored():
    x = torch.randn(3, 4)
    with forbid(*FORBIDDEN, *AUTOGRAD, rule="by hand", fn=_by_hand):
        out = _by_hand(x)
    torch.testing.assert_close(out, torch.softmax(x, 1))
    torch.testing.assert_close(x.softmax(1), F.softmax(x, dim=1))
    w = torch.ones(2, requires_grad=True)
    (w * 3).sum().backward()  # autograd works again after the block
    assert w.grad.tolist() == [3.0, 3.0]


def test_autograd_is_forbidden():
    def cheat(x):
        x = x.clone().requires_grad_()
        (x ** 2).sum().backward()
        return x.grad

    with pytest.raises(RuleBroken, match="Tensor.backward"):
        with forbid(*AUTOGRAD, rule="no autograd", fn=cheat):
            cheat(torch.randn(3))


def test_restored_after_an_error():
    with pytest.raises(ZeroDivisionError):
        with forbid("torch.softmax", rule="r"):
            1 / 0
    assert torch.softmax(torch.zeros(1, 2), 1).sum() == 1


def test_inherited_methods_are_not_left_behind():
    assert "softmax" not in vars(torch.Tensor)
    with forbid("torch.Tensor.softmax", rule="r"):
        assert "softmax" in vars(torch.Tensor)
    assert "softmax" not in vars(torch.Tensor)


@pytest.mark.parametrize("name", ["jacfwd", "jacrev", "hessian"])
def test_forward_mode_and_functional_autograd_are_forbidden(name):
    import torch.func

    def cheat(x):
        return getattr(torch.func, name)(lambda t: (t ** 3).sum())(x)

    with pytest.raises(RuleBroken, match=f"torch.func.{name}"):
        with forbid(*AUTOGRAD, rule="no autograd", fn=cheat):
            cheat(torch.randn(3))
