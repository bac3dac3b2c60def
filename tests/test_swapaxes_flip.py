"""swapaxes(x, axis1, axis2) and flip(x, axis): two view ops, each its own inverse.

Each is one block of backstep/ops/views.py. These tests derive and verify them on 2-d and 3-d
operands of distinct, non-square sizes, check the derived gradients against an independent
autograd run (backstep's numeric Evaluator, not its verifier), print them in every target, parse
the JSON expressions back, run codegen --check, and check that bad axes are exit-2 errors that
name the axis.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import value_of_program
from typer.testing import CliRunner

from backstep import BackstepError, derive, parse
from backstep.cli import app
from backstep.numeric import Evaluator
from backstep.ops import FUNCTION_OPS, OPS
from backstep.render import render

runner = CliRunner()

# (program, the variables' concrete shapes, the same function in torch)
CASES = [
    (
        "X: (2, 3, 4); Y: (4, 3, 2)\nsum(swapaxes(X, 0, 2) * Y)",
        {"X": (2, 3, 4), "Y": (4, 3, 2)},
        lambda v: (torch.swapaxes(v["X"], 0, 2) * v["Y"]).sum(),
    ),
    (
        "X: (2, 3, 4); Y: (2, 4, 3)\nsum(sin(swapaxes(X, -1, -2)) * Y)",
        {"X": (2, 3, 4), "Y": (2, 4, 3)},
        lambda v: (torch.sin(torch.swapaxes(v["X"], -1, -2)) * v["Y"]).sum(),
    ),
    (
        "A: (3, 4); B: (3, 5)\nswapaxes(A, -1, -2) @ B",
        {"A": (3, 4), "B": (3, 5)},
        lambda v: torch.swapaxes(v["A"], -1, -2) @ v["B"],
    ),
    (
        "A: (3, 4); B: (5, 4)\nsum(tanh(B @ swapaxes(A, 1, 0)))",
        {"A": (3, 4), "B": (5, 4)},
        lambda v: torch.tanh(v["B"] @ torch.swapaxes(v["A"], 1, 0)).sum(),
    ),
    (
        "X: (2, 3, 4); Y: (2, 3, 4)\nsum(flip(X, (0, -1)) * Y)",
        {"X": (2, 3, 4), "Y": (2, 3, 4)},
        lambda v: (torch.flip(v["X"], (0, -1)) * v["Y"]).sum(),
    ),
    (
        "X: (2, 3, 4); Y: (2, 3, 4)\nsum(cos(flip(X)) * Y)",
        {"X": (2, 3, 4), "Y": (2, 3, 4)},
        lambda v: (torch.cos(torch.flip(v["X"], (0, 1, 2))) * v["Y"]).sum(),
    ),
    (
        "x: (3, 5); W: (5, 2)\nflip(exp(x), 1) @ W",
        {"x": (3, 5), "W": (5, 2)},
        lambda v: torch.flip(torch.exp(v["x"]), (1,)) @ v["W"],
    ),
    (
        "X: (2, 3, 4); Y: (3, 2, 4)\nsum(flip(swapaxes(X, 0, 1), axis=2) * Y)",
        {"X": (2, 3, 4), "Y": (3, 2, 4)},
        lambda v: (torch.flip(torch.swapaxes(v["X"], 0, 1), (2,)) * v["Y"]).sum(),
    ),
]


def test_both_are_registered_with_their_torch_counterparts():
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    swap, flip = OPS["swapaxes"], OPS["flip"]
    assert FUNCTION_OPS["swapaxes"] is swap and FUNCTION_OPS["flip"] is flip
    y = swap.torch(torch, [x], {"axis1": -1, "axis2": -2})
    assert torch.equal(y, x.transpose(-1, -2))
    assert y.grad_fn.name() == swap.grad_fn_name((3,), (False,), {"axis1": -1, "axis2": -2})
    y = flip.torch(torch, [x], {"axis": (0, 2)})
    assert torch.equal(y, torch.flip(x, (0, 2)))
    assert y.grad_fn.name() == flip.grad_fn_name((3,), (False,), {"axis": (0, 2)})
    assert torch.equal(flip.torch(torch, [x], {"axis": -1}), torch.flip(x, (-1,)))


@pytest.mark.parametrize("program, shapes, fn", CASES)
def test_derives_and_verifies(program, shapes, fn):
    d = derive(program, verify=True)
    assert d.verification.ok, d.verification.first_failure


@pytest.mark.parametrize("program, shapes, fn", CASES)
def test_gradient_is_autograds(program, shapes, fn):
    """Independent of backstep's verifier: the derived gradients, evaluated numerically, are autograd's."""
    d = derive(program)
    gen = torch.Generator().manual_seed(3)
    values = {k: torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for k, s in shapes.items()}
    out = fn(values)
    seed = torch.randn(out.shape, generator=gen, dtype=torch.float64) if out.dim() else None
    out.backward(seed)
    env = {k: v.detach() for k, v in values.items()}
    if seed is not None:
        env[d.seed.name] = seed
    for name, g in d.gradients.items():
        ours = torch.broadcast_to(Evaluator(dict(env), {})(g.expr), shapes[name])
        assert torch.allclose(ours, values[name].grad, rtol=1e-10, atol=1e-12), name


def test_the_backward_rules_are_the_op_itself():
    for program, params in [
        ("X: (2, 3, 4); Y: (2, 4, 3)\nsum(swapaxes(X, -1, -2) * Y)", {"axis1": -1, "axis2": -2}),
        ("X: (2, 3, 4); Y: (2, 3, 4)\nsum(flip(X, (0, 2)) * Y)", {"axis": (0, 2)}),
    ]:
        step = derive(program).backward[-1]
        op = OPS[step.op]
        assert step.of == "X" and isinstance(step.rule.adjoint_rhs, op.sympy_class)
        assert step.rule.adjoint_rhs.params == params and step.result.params == params


def test_prints_in_every_target():
    d = derive("X: (2, 3, 4); Y: (4, 3, 2)\nsum(swapaxes(X, 0, 2) * flip(Y, (0, -1)))")
    text, latex = d.to_text(), d.to_latex()
    assert "swapaxes(X, 0, 2)" in text and "flip(Y, (0, -1))" in text
    assert r"\operatorname{swapaxes}_{0,2}\left(X\right)" in latex
    assert r"\operatorname{flip}_{(0, -1)}\left(Y\right)" in latex
    doc = json.loads(render(d, "json"))
    assert "swapaxes(" in doc["gradients"]["X"]["expr"] and "flip(" in doc["gradients"]["Y"]["expr"]


def test_json_expressions_parse_back():
    shapes = {"X": (2, 3, 4), "Y": (4, 3, 2)}
    d = derive("sum(swapaxes(X, 0, -1) * flip(Y, 1) ** 2)", shapes=shapes)
    doc = json.loads(render(d, "json"))
    gen = torch.Generator().manual_seed(4)
    env = {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
    for name, g in d.gradients.items():
        want = Evaluator(dict(env), {})(g.expr)
        got = value_of_program(doc["gradients"][name]["expr"], shapes, env)
        assert torch.allclose(got, want, rtol=1e-12), (name, doc["gradients"][name]["expr"])


@pytest.mark.parametrize(
    "program",
    [
        "A: (3, 4); B: (3, 5)\nswapaxes(A, -1, -2) @ B",
        "X: (2, 3, 4); Y: (4, 3, 2)\nsum(swapaxes(X, 0, 2) * flip(Y, (0, -1)))",
        "x: (3, 5)\nflip(x, 1)",
        "x: (3, 5)\nflip(x)",
    ],
)
def test_codegen_check_passes(program):
    result = runner.invoke(app, ["codegen", program, "-o", "-", "--check"])
    assert result.exit_code == 0, result.output
    assert "torch.swapaxes(" in result.output or "torch.flip(" in result.output


@pytest.mark.parametrize(
    "source, message",
    [
        ("X: (2, 3)\nswapaxes(X, 0, 2)", "axis2 2 is out of range"),
        ("X: (2, 3)\nswapaxes(X, -3, 1)", "axis1 -3 is out of range"),
        ("x: (4,)\nswapaxes(x, 0, 0)", "rank 2 or more"),
        ("X: (2, 3)\nswapaxes(X, 0)", "swapaxes needs axis2"),
        ("X: (2, 3)\nflip(X, 2)", "axis 2 is out of range"),
        ("X: (2, 3, 4)\nflip(X, (0, -3))", "axis -3 is given twice"),
        ("x: ()\nflip(x)", "flip needs an array"),
    ],
)
def test_bad_axes_are_clean_errors(source, message):
    with pytest.raises(BackstepError, match=message):
        parse(source)
    result = runner.invoke(app, ["derive", source, "--no-verify"])
    assert result.exit_code == 2 and "Traceback" not in result.output and message in result.output, result.output


def test_both_are_in_the_catalogue():
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert any(line.startswith("swapaxes(x") for line in lines) and any(line.startswith("flip(x") for line in lines)
