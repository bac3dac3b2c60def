"""broadcast_to(x, shape): the op, and where backstep writes it itself.

The generated op tests cannot build it (its parameter is a target shape that depends on the
operand's), so its cases are here: every kind of broadcast (a scalar, new leading axes, size-1
axes, symbolic and concrete sizes), against torch autograd twice — backstep's own verifier and an
independent autograd run — and the places a gradient relies on broadcasting inside an array op,
which must print as broadcast_to and parse back to the same numbers.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers import grad_fn_names, value_of_program
from typer.testing import CliRunner

from backstep import BackstepError, derive, parse
from backstep.cli import app
from backstep.numeric import Evaluator
from backstep.render import render

SIZES = {"n": 3, "d": 4}

CASES = [
    # (program, variable shapes as concrete sizes for the independent check)
    ("a: ()\nsum(broadcast_to(a, (n, d)) * X)", {"a": (), "X": (3, 4)}),
    ("b: (d,)\nsum(broadcast_to(b, (n, d)) * X)", {"b": (4,), "X": (3, 4)}),
    ("c: (n, 1)\nsum(broadcast_to(c, (n, d)) * X)", {"c": (3, 1), "X": (3, 4)}),
    ("r: (1, d)\nsum(sin(broadcast_to(r, (2, n, d))) * Z)", {"r": (1, 4), "Z": (2, 3, 4)}),
    ("b: (d,)\nbroadcast_to(b, (5, d)) @ W", {"b": (4,), "W": (4, 6)}),
]


def _annotated(program: str, shapes: dict) -> str:
    """The program at concrete sizes: every variable's shape annotated, n = 3 and d = 4."""
    lines = [ln for ln in program.splitlines() if ":" not in ln]
    body = re.sub(r"\bn\b", "3", re.sub(r"\bd\b", "4", "\n".join(lines)))
    return "; ".join(f"{k}: {v}" for k, v in shapes.items()) + "\n" + body


@pytest.mark.parametrize("program, shapes", CASES)
def test_broadcast_to_verifies(program, shapes):
    d = derive(program, shapes={"X": ("n", "d"), "Z": (2, "n", "d"), "W": ("d", 6)}, verify=True)
    assert d.verification.ok, d.verification.first_failure
    expand = grad_fn_names("ExpandBackward0", lambda x: torch.broadcast_to(x, (2, 3, 4)), (3, 4))
    assert any(s.grad_fn in expand for s in d.forward), [s.grad_fn for s in d.forward]


@pytest.mark.parametrize("program, shapes", CASES)
def test_broadcast_to_gradient_is_torchs(program, shapes):
    """Independent of backstep's verifier: autograd on torch.broadcast_to, against backstep's
    gradients evaluated numerically, at concrete non-square sizes."""
    d = derive(_annotated(program, shapes))
    gen = torch.Generator().manual_seed(1)
    values = {k: torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for k, s in shapes.items()}
    seed = None
    out = Evaluator(dict(values), {})(d.output_expr)
    if out.dim():
        seed = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    out.backward(seed)
    env = {k: v.detach() for k, v in values.items()}
    if seed is not None:
        env[d.seed.name] = seed
    for name, g in d.gradients.items():
        ours = torch.broadcast_to(Evaluator(dict(env), {})(g.expr), shapes[name])
        assert torch.allclose(ours, values[name].grad, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize(
    "source, message",
    [
        ("x: (n, d)\nbroadcast_to(x, (n,))", "cannot lower the rank"),
        ("x: (n, d)\nbroadcast_to(x, (d, n))", "does not broadcast"),
        ("x: (n,)\nbroadcast_to(x)", "needs the shape"),
        ("x: (n,)\nbroadcast_to(x, (k, n))", "dimension name"),
        ("x: (n,)\nbroadcast_to(x, (2.5, n))", "tuple of integers"),
    ],
)
def test_bad_broadcasts_are_clean_errors(source, message):
    with pytest.raises(BackstepError, match=message):
        parse(source)
    result = CliRunner().invoke(app, ["derive", source, "--no-verify"])
    assert result.exit_code == 2 and "Traceback" not in result.output and message in result.output


def test_a_gradient_that_relies_on_broadcasting_inside_matmul_parses_back():
    # ∂ sum(inv(A) B) / ∂A = -A⁻ᵀ 1 Bᵀ A⁻ᵀ: SymPy turns a product with the ones matrix into a
    # column, which @ broadcasts; the printed gradient must say so to parse back as itself
    shapes = {"A": (3, 3), "B": (3, 5)}
    d = derive("sum(inv(A) @ B)", shapes=shapes, verify=True)
    assert d.verification.ok
    doc = json.loads(render(d, "json"))
    gen = torch.Generator().manual_seed(2)
    env = {"A": torch.randn(3, 3, generator=gen, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)}
    env["B"] = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    for name, g in d.gradients.items():
        want = torch.broadcast_to(Evaluator(dict(env), {})(g.expr), shapes[name])
        got = torch.broadcast_to(value_of_program(doc["gradients"][name]["expr"], shapes, env), shapes[name])
        assert torch.allclose(got, want, rtol=1e-10), (name, doc["gradients"][name]["expr"])


def test_an_output_whose_array_term_cancels_keeps_its_broadcast():
    shapes = {"a": (1, 3), "b": (2, 3)}
    d = derive("sum(a + (b - b))", shapes=shapes)
    printed = json.loads(render(d, "json"))["output"]["expr"]
    assert "broadcast_to" in printed and "broadcast_to" in d.to_text().splitlines()[0]
    a, b = torch.rand(1, 3, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64)
    assert torch.allclose(value_of_program(printed, shapes, {"a": a, "b": b}), (a + (b - b)).sum())


@pytest.mark.parametrize(
    "program, shapes",
    [
        ("trace(sum(outer(a, b), keepdims=True))", {"a": (3,), "b": (2,)}),
        ("trace(sum(A @ B, keepdims=True))", {"A": (3, 4), "B": (4, 3)}),
    ],
)
def test_an_identity_broadcast_inside_matmul_is_not_dropped(program, shapes):
    """tr of a 1×1 sum has the 1×1 identity as adjoint, laid over the whole operand: a matrix of
    ones, not I. Dropping it (I b = b) gave ∂y/∂a = b, of b's size, and verification crashed."""
    d = derive(_annotated(program, shapes), verify=True)
    assert d.verification.ok
    gen = torch.Generator().manual_seed(3)
    values = {k: torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for k, s in shapes.items()}
    Evaluator(dict(values), {})(d.output_expr).backward()
    env = {k: v.detach() for k, v in values.items()}
    for name, g in d.gradients.items():
        ours = torch.broadcast_to(Evaluator(dict(env), {})(g.expr), shapes[name])
        assert torch.allclose(ours, values[name].grad, rtol=1e-10, atol=1e-12), name
