"""transpose(x, axes), NumPy's np.transpose and torch's permute (the op `permute`, one block of
backstep/ops/views.py): the gradient against autograd, independent of the verifier; printing in
every target; JSON that parses back; the shape checks; tracing torch.permute / Tensor.permute."""

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

SHAPE = (2, 3, 4)


@pytest.mark.parametrize("axes", [None, (0, 2, 1), (2, 0, 1), (1, 2, 0), (-1, 0, -2), (0, 1, 2)])
def test_matches_autograd(axes):
    spelled = "transpose(x)" if axes is None else f"transpose(x, {axes})"
    order = tuple(reversed(range(3))) if axes is None else tuple(a % 3 for a in axes)
    out_shape = tuple(SHAPE[a] for a in order)
    d = derive(f"x: {SHAPE}; W: {out_shape}\nsum({spelled} * W) + sum({spelled} ** 2)", verify=True)
    assert d.verification.ok, d.verification
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(SHAPE, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(out_shape, dtype=torch.float64, generator=gen)
    y = x.permute(order)
    ((y * w).sum() + (y**2).sum()).backward()
    got = Evaluator({"x": x.detach(), "W": w}, {})(d.gradients["x"].expr)
    assert got.shape == SHAPE and torch.allclose(got, x.grad, rtol=1e-10, atol=1e-12)


def test_is_numpy_spelling_and_prints_in_every_target():
    assert FUNCTION_OPS["transpose"] is OPS["permute"]
    program = "x: (2, 3, 4)\nsum(transpose(x, (0, 2, 1)) ** 2)"
    d = derive(program)
    assert "v1 = transpose(x, (0, 2, 1))" in d.to_text()
    assert r"\operatorname{transpose}_{(0, 2, 1)}\left(x\right)" in d.to_latex()
    result = runner.invoke(app, ["codegen", program, "-o", "-", "--check"])
    assert result.exit_code == 0, result.output
    assert "x.permute(0, 2, 1)" in result.output
    doc = json.loads(render(d, "json"))
    text = doc["gradients"]["x"]["expr"]
    parse(f"({text}) + 0 * probe", {"x": (2, 3, 4), "probe": ()})


@pytest.mark.parametrize(
    "source, words",
    [
        ("x: (2, 3, 4)\ntranspose(x, (0, 1))", r"axes \(0, 1\) name 2 axes, but \(2, 3, 4\) has 3"),
        ("x: (2, 3, 4)\ntranspose(x, (0, 1, 3))", "axis 3 is out of range"),
        ("x: (2, 3, 4)\ntranspose(x, (0, 1, -2))", "axis 1 is given twice"),
    ],
)
def test_bad_axes_are_refused(source, words):
    with pytest.raises(ShapeError, match=words):
        derive(source)
    result = runner.invoke(app, ["derive", source])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_is_traced_from_torch(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            def f(x):
                return (x.permute(0, 2, 1) ** 2).sum() + torch.permute(x, (2, 0, 1)).sum()
            def g(A):
                return (A.permute(1, 0) ** 2).sum()
            """
        ),
        encoding="utf-8",
    )
    traced = trace_model(f"{path}:f", {"x": (2, 3, 4)})
    assert "transpose(x, (0, 2, 1))" in traced.source and "transpose(x, (2, 0, 1))" in traced.source
    traced = trace_model(f"{path}:g", {"A": (3, 4)})
    assert "A.T" in traced.source, traced.source
