"""erfc, the op added as the proof that an op is one block of backstep/ops/ plus its tests.

Its block (backstep/ops/elementwise.py) is all that declares it: these tests check that every part
of backstep that reads the op table now knows it — the parser, the derivation, the printers, the
numeric evaluator and verification, the tracer, codegen, the catalogue — against torch.
"""

from __future__ import annotations

import textwrap

import torch
from typer.testing import CliRunner

from backstep import derive
from backstep.cli import app
from backstep.numeric import Evaluator
from backstep.ops import FUNCTION_OPS, OPS
from backstep.trace import trace_model

runner = CliRunner()


def test_erfc_is_registered_with_its_torch_counterpart():
    op = OPS["erfc"]
    assert FUNCTION_OPS["erfc"] is op
    x = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    y = op.torch(torch, [x], {})
    assert torch.equal(y, torch.erfc(x))
    assert y.grad_fn.name() == op.grad_fn_name((1,), (False,), {})


def test_erfc_derives_and_matches_autograd_at_a_point():
    d = derive("x: (n, d); y: (n, d)\nsum(erfc(x**2) * y)", verify=True)
    assert d.verification.ok
    # independent of the verifier: the derived gradients, evaluated at a point, are autograd's
    x = torch.tensor([[0.3, -0.7, 1.1], [0.2, 0.5, -0.4]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.5, -2.0, 0.25], [0.75, 1.0, -0.5]], dtype=torch.float64, requires_grad=True)
    (torch.erfc(x**2) * y).sum().backward()
    env = {"x": x.detach(), "y": y.detach()}
    assert torch.allclose(Evaluator(dict(env), {})(d.gradients["x"].expr), x.grad, rtol=1e-12, atol=1e-14)
    assert torch.allclose(Evaluator(dict(env), {})(d.gradients["y"].expr), y.grad, rtol=1e-12, atol=1e-14)


def test_erfc_prints_in_every_target():
    d = derive("erfc(x**2) * y")
    assert r"\operatorname{erfc}" in d.to_latex()
    assert "erfc(x²)" in d.to_text()
    result = runner.invoke(app, ["codegen", "erfc(x**2) * y", "-o", "-", "--check"])
    assert result.exit_code == 0, result.output
    assert "torch.erfc(" in result.output


def test_erfc_is_traced_from_torch(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            def f(x):
                return torch.special.erfc(x).sum() + x.erfc().sum() + torch.erfc(x).mean()
            """
        ),
        encoding="utf-8",
    )
    traced = trace_model(f"{path}:f", {"x": (3, 4)})
    assert traced.source.count("erfc(x)") == 3, traced.source


def test_erfc_is_in_the_catalogue():
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0
    assert any(line.startswith("erfc(x)") for line in result.output.splitlines())
