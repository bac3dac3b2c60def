"""Names NumPy gives constants: `pi` is π (it was a random input matrix, verified ✓ against a function
the user never meant); `e`, `tau`, … stay inputs and say so in a note."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backstep import derive, parse
from backstep.numeric import Evaluator

GELU_TANH = "x: (n, d)\ny = 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))\nsum(y)"


def test_pi_is_the_constant_not_an_input():
    graph = parse("sqrt(2 / pi) * x")
    assert [v.name for v in graph.variables] == ["x"]
    d = derive("sqrt(2 / pi) * x", verify=True)
    assert list(d.gradients) == ["x"]
    value = Evaluator({"x": torch.tensor(1.0, dtype=torch.float64)}, {})(d.gradients["x"].expr)
    assert value.item() == pytest.approx(math.sqrt(2 / math.pi), rel=1e-15)


def test_the_tanh_gelu_written_with_pi_has_torchs_gradient():
    # independent of backstep's verifier: torch's own tanh-approximate GELU, not the program
    d = derive(GELU_TANH, verify=True)
    assert d.verification.ok
    x = torch.linspace(-3, 3, 12, dtype=torch.float64).reshape(3, 4).requires_grad_()
    F.gelu(x, approximate="tanh").sum().backward()
    ours = Evaluator({"x": x.detach()}, {})(d.gradients["x"].expr)
    assert torch.allclose(ours, x.grad, rtol=1e-12, atol=1e-14)


def test_a_declared_pi_is_a_variable():
    graph = parse("pi: (n,)\nsum(pi * x)")
    assert sorted(v.name for v in graph.variables) == ["pi", "x"]
    assert "pi" in [v.name for v in parse("sum(pi * x)", shapes={"pi": ("n",)}).variables]


@pytest.mark.parametrize("name, spelling", [("e", "exp(1)"), ("tau", "2*pi")])
def test_a_name_numpy_gives_a_constant_is_an_input_with_a_note(name, spelling):
    graph = parse(f"x * {name}")
    assert name in [v.name for v in graph.variables]
    assert any(note.startswith(f"{name} is an input here") and spelling in note for note in graph.notes), graph.notes


def test_no_note_for_ordinary_names():
    assert parse("x * w").notes == []
