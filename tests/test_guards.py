"""Guarded programs verify (issue #12, part 8): a value positive by construction — maximum with a
positive number, clamp with min > 0 — is inside the domain of the op it feeds (a division, a log)
even where it is tiny; a guard of 0 is no guard, and those programs are still refused."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from backstep import derive
from backstep.cli import app
from backstep.numeric import Evaluator

runner = CliRunner()


@pytest.mark.parametrize(
    "program, torch_fn",
    [
        ("Q: (3, 4)\nsum(1 / maximum(Q, 1e-12))", lambda q: (1 / torch.clamp(q, min=1e-12)).sum()),
        ("Q: (3, 4)\nsum(1 / maximum(1e-12, Q))", lambda q: (1 / torch.clamp(q, min=1e-12)).sum()),
        ("Q: (3, 4)\nsum(log(clamp(Q, min=1e-6)))", lambda q: torch.log(torch.clamp(q, min=1e-6)).sum()),
        ("Q: (3, 4)\nsum(sqrt(clamp(Q, min=1e-9, max=5)))", lambda q: torch.sqrt(torch.clamp(q, 1e-9, 5)).sum()),
    ],
)
def test_a_guarded_program_verifies_where_the_guard_acts(program, torch_fn):
    d = derive(program, verify=True)
    assert d.verification.ok, d.verification
    # at a point where half the entries are clamped to the guard: the gradient there is 0, as torch's
    q = torch.tensor([[-1.0, 0.5, -2.0, 1.5], [0.25, -0.5, 2.0, -3.0], [1.0, -1.0, 0.75, -0.25]], dtype=torch.float64)
    leaf = q.clone().requires_grad_()
    torch_fn(leaf).backward()
    got = Evaluator({"Q": q}, {})(d.gradients["Q"].expr)
    assert torch.allclose(torch.broadcast_to(got, q.shape), leaf.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "program, words",
    [
        ("Q: (3, 4)\nsum(1 / maximum(Q, 0))", "must be nonzero"),
        ("Q: (3, 4)\nsum(log(clamp(Q, min=0)))", "must be positive"),
        ("Q: (3, 4)\nsum(log(maximum(Q, -1)))", "must be positive"),
    ],
)
def test_a_guard_of_zero_or_less_is_no_guard(program, words):
    result = runner.invoke(app, ["derive", program])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "program",
    [
        "x: (3, 4)\nsum(log(softmax(40 * x, axis=1)))",
        "x: (3, 4)\nc = exp(40 * x)\nsum(log(c / sum(c, axis=1, keepdims=True)))",
        "x: (3, 4); w: (4,)\nc = exp(40 * x) * sigmoid(w)\nsum(log(c * sum(c, axis=0) ** -1))",
    ],
)
def test_a_value_positive_by_construction_may_be_tiny(program):
    """exp, sigmoid, softmax and products, quotients, powers and sums of them are positive whatever
    the point: a log of a small probability is inside its domain (Karpathy's backprop exercise takes
    log(counts * counts_sum_inv)); these were refused as out of domain in 200 draws."""
    d = derive(program, verify=True)
    assert d.verification.ok, d.verification


def test_a_sum_of_something_not_positive_is_checked():
    result = runner.invoke(app, ["derive", "x: (3, 4)\nsum(log(sum(x, axis=1) - 100))"])
    assert result.exit_code == 2 and "must be positive" in result.output, result.output
