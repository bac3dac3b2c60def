"""var and std, torch.var / torch.std with dim=, correction= and keepdim=, each one block of
backstep/ops/reductions.py: derivation, the gradient against autograd (evaluated by backstep's
numeric Evaluator, independent of its verifier), printing in every target, JSON that parses back,
the shape checks, tracing from torch, and codegen.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from backstep import derive, parse
from backstep.cli import app
from backstep.errors import ShapeError
from backstep.numeric import Evaluator
from backstep.ops import FUNCTION_OPS, OPS
from backstep.render import render
from backstep.trace import trace_model

runner = CliRunner()

SHAPE = (3, 5)  # distinct and not square: an axis mix-up shows
PARAMS = [
    {},
    {"axis": 0},
    {"axis": 1},
    {"axis": -1},
    {"axis": 0, "keepdims": True},
    {"axis": -1, "keepdims": True},
    {"keepdims": True},
    {"correction": 0},
    {"axis": 1, "correction": 0},
    {"axis": 0, "correction": 0, "keepdims": True},
    {"axis": 1, "correction": 2},
]


def spelled(name: str, params: dict) -> str:
    kw = "".join(f", {k}={v}" for k, v in params.items())
    return f"{name}(x{kw})"


def torch_call(name: str, x, params: dict):
    return getattr(torch, name)(
        x, dim=params.get("axis"), correction=params.get("correction", 1), keepdim=params.get("keepdims", False)
    )


@pytest.mark.parametrize("name", ["var", "std"])
def test_registered_with_torch_counterpart_and_grad_fn(name):
    op = OPS[name]
    assert FUNCTION_OPS[name] is op
    x = torch.randn(*SHAPE, dtype=torch.float64, requires_grad=True)
    for params in PARAMS:
        y = op.torch(torch, [x], params)
        assert torch.equal(y, torch_call(name, x, params))
        assert y.grad_fn.name() == op.grad_fn_name((2,), (False,), params)


@pytest.mark.parametrize("name", ["var", "std"])
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "all")
def test_derives_verifies_and_matches_autograd(name, params):
    # a weight w makes the upstream gradient of the reduction non-uniform
    d = derive(f"x: {SHAPE}; w: ()\nsum({spelled(name, params)} ** 2) * w", verify=True)
    assert d.verification.ok, d.verification
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(*SHAPE, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    ((torch_call(name, x, params) ** 2).sum() * w).backward()
    env = {"x": x.detach(), "w": w.detach()}
    got = Evaluator(dict(env), {})(d.gradients["x"].expr)
    assert torch.allclose(torch.broadcast_to(got, SHAPE), x.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["var", "std"])
def test_symbolic_sizes_verify(name):
    d = derive(
        f"X: (n, d)\nsum({name}(X, axis=0)) * sum({name}(X, axis=1, correction=0, keepdims=True) * X)", verify=True
    )
    assert d.verification.ok, d.verification


def test_backward_is_the_closed_form():
    d = derive("x: (3, 5)\nvar(x, axis=1, correction=0)")
    step = d.to_text()
    assert "mean(x, axis=1, keepdims=True)" in step, step
    assert "/ 5" in step, step  # N − correction = 5 − 0
    d = derive("x: (3, 5)\nstd(x, axis=0)")
    assert "mean(x, axis=0, keepdims=True)" in d.to_text()


@pytest.mark.parametrize("name", ["var", "std"])
def test_prints_in_every_target(name):
    d = derive(f"x: (3, 5)\nsum({name}(x, axis=1))")
    assert f"{name}(x, axis=1)" in d.to_text()
    assert rf"\operatorname{{{name}}}_{{1}}\left(x\right)" in d.to_latex()
    d0 = derive(f"x: (3, 5)\nsum({name}(x, axis=1, correction=0, keepdims=True))")
    assert f"{name}(x, axis=1, keepdims=True, correction=0)" in d0.to_text()
    assert r"\text{correction}=0" in d0.to_latex()
    result = runner.invoke(app, ["codegen", f"x: (3, 5)\nsum({name}(x, axis=1) ** 2)", "-o", "-", "--check"])
    assert result.exit_code == 0, result.output
    assert f"torch.{name}(x, dim=1, correction=1)" in result.output
    result = runner.invoke(
        app,
        [
            "codegen",
            f"x: (3, 5)\n{name}(x, correction=0) + sum({name}(x, axis=-1, keepdims=True))",
            "-o",
            "-",
            "--check",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"torch.{name}(x, correction=0)" in result.output
    assert f"torch.{name}(x, dim=-1, keepdim=True, correction=1)" in result.output
    # over every axis, keeping them: the axes spelled out, and the correction kept
    program = f"x: (3, 5)\nsum({name}(x, keepdims=True, correction=0) * x)"
    result = runner.invoke(app, ["codegen", program, "-o", "-", "--check"])
    assert result.exit_code == 0, result.output
    assert f"torch.{name}(x, dim=(0, 1), keepdim=True, correction=0)" in result.output


@pytest.mark.parametrize("name", ["var", "std"])
@pytest.mark.parametrize("params", PARAMS[:4] + PARAMS[7:10], ids=str)
def test_lang_and_json_parse_back(name, params):
    shapes = {"x": SHAPE}
    d = derive(spelled(name, params), shapes=shapes)
    doc = json.loads(render(d, "json"))
    out = parse(doc["output"]["expr"], shapes)
    assert out.output.op.name == name and out.output.params == {**OPS[name].params, **params}
    text = doc["gradients"]["x"]["expr"]
    parse(f"({text}) + 0 * probe", {**shapes, d.seed.name: d.seed.shape, "probe": ()})


@pytest.mark.parametrize(
    "source, words",
    [
        ("x: (1, 4)\nvar(x, axis=0)", "var over 1 entry with correction=1"),
        ("x: (3, 4)\nvar(x, axis=1, correction=4)", "at least 5 entries"),
        ("x: (1, 4)\nstd(x, axis=0, correction=0)", "std over a single entry"),
        ("x: (3, 4)\nstd(x, correction=-1)", "correction must be 0 or more"),
    ],
)
def test_too_few_entries_are_refused(source, words):
    with pytest.raises(ShapeError, match=words):
        derive(source)


def test_is_traced_from_torch(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            def f(x):
                return (
                    torch.var(x, dim=1).sum()
                    + x.std(0, keepdim=True).sum()
                    + torch.var(x, unbiased=False)
                    + x.std(1, False).sum()
                    + torch.std(x, correction=0, dim=-1).mean()
                )
            def several_axes(x):
                return torch.var(x, dim=(0, 1))
            """
        ),
        encoding="utf-8",
    )
    traced = trace_model(f"{path}:f", {"x": (3, 4)})
    for spelling in (
        "var(x, axis=1)",
        "std(x, axis=0, keepdims=True)",
        "var(x, correction=0)",
        "std(x, axis=1, correction=0)",
        "std(x, axis=-1, correction=0)",
    ):
        assert spelling in traced.source, traced.source
    # several axes: one reduction over the tuple (tests/test_reductions_axes.py)
    assert "var(x, axis=(0, 1))" in trace_model(f"{path}:several_axes", {"x": (3, 4)}).source


def test_is_in_the_catalogue():
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert any(line.startswith("var(") for line in lines) and any(line.startswith("std(") for line in lines)
