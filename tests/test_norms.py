"""layer_norm and batch_norm (training mode), and their statistics standardize (x̂) and norm_std (σ),
each one block of backstep/ops/norms.py: the derived gradients at a point against torch autograd of
F.layer_norm / F.batch_norm (evaluated by backstep's numeric Evaluator, independent of its
verifier), the closed form the backward step prints, every printing target, JSON that parses back,
codegen --check, CLI misuse, and tracing nn.LayerNorm / nn.BatchNorm1d/2d from torch.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from backstep import derive, parse
from backstep.cli import app
from backstep.errors import ParseError, ShapeError
from backstep.numeric import Evaluator
from backstep.ops import FUNCTION_OPS, OPS
from backstep.printing import printer_for
from backstep.render import render
from backstep.trace import trace_model

runner = CliRunner()

# distinct sizes, none square: a transposed or misplaced axis shows
N, C, H, W, D = 5, 3, 4, 2, 4


def draw(*shape, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=torch.float64, generator=gen)


def fmt(shape: tuple) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def derived_gradients(program: str, env: dict) -> dict:
    d = derive(program, verify=True)
    assert d.verification.ok, d.verification
    return {name: Evaluator(dict(env), {})(grad.expr) for name, grad in d.gradients.items()}


def check_against_autograd(program: str, values: dict, loss) -> None:
    """The derived gradients at this point equal autograd's of `loss` (torch's own layers)."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in values.items()}
    loss(**leaves).backward()
    got = derived_gradients(program, values)
    for name, leaf in leaves.items():
        if leaf.grad is None:
            continue
        value = torch.broadcast_to(got[name], leaf.shape)
        assert torch.allclose(value, leaf.grad, rtol=1e-9, atol=1e-11), (name, value, leaf.grad)


def test_registered_with_torch_counterparts_and_grad_fns():
    x4, x2 = draw(N, C, H, W, seed=1), draw(N, D, seed=2)
    g, b = draw(C, seed=3), draw(C, seed=4)
    ops = {name: OPS[name] for name in ("layer_norm", "batch_norm", "standardize", "norm_std")}
    assert all(FUNCTION_OPS[name] is op for name, op in ops.items())
    out = ops["batch_norm"].torch(torch, [x4.requires_grad_(), g, b], {"eps": 1e-5})
    assert torch.equal(out, F.batch_norm(x4, None, None, g, b, training=True, eps=1e-5))
    assert out.grad_fn.name() == ops["batch_norm"].grad_fn_name((4, 1, 1), (False,) * 3, {})
    wd, bd = draw(D, seed=5), draw(D, seed=6)
    out = ops["layer_norm"].torch(torch, [x2.requires_grad_(), wd, bd], {"eps": 1e-3})
    assert torch.equal(out, F.layer_norm(x2, (D,), wd, bd, eps=1e-3))
    assert out.grad_fn.name() == ops["layer_norm"].grad_fn_name((2, 1, 1), (False,) * 3, {})
    for over, reference in (("last", F.layer_norm(x2, (D,))), ("batch", F.batch_norm(x2, None, None, training=True))):
        out = ops["standardize"].torch(torch, [x2], {"over": over, "eps": 1e-5})
        assert torch.equal(out, reference)
        assert out.grad_fn.name() == ops["standardize"].grad_fn_name((2,), (False,), {"over": over})
    sigma = ops["norm_std"].torch(torch, [x4], {"over": "batch", "eps": 1e-5})
    assert sigma.shape == (1, C, 1, 1)
    assert torch.allclose(sigma, (x4.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt())


def test_spatial_batch_norm_matches_autograd():
    program = f"x: {fmt((N, C, H, W))}; gamma: ({C},); beta: ({C},); r: {fmt((N, C, H, W))}\n"
    program += "sum(batch_norm(x, gamma, beta) * r)"
    values = {"x": draw(N, C, H, W, seed=7), "gamma": draw(C, seed=8), "beta": draw(C, seed=9)}
    values["r"] = draw(N, C, H, W, seed=10)  # a weight: the upstream gradient is not uniform
    check_against_autograd(
        program, values, lambda x, gamma, beta, r: (F.batch_norm(x, None, None, gamma, beta, training=True) * r).sum()
    )


@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_batch_norm_of_features_matches_autograd(eps):
    kw = "" if eps == 1e-5 else f", eps={eps}"
    program = f"x: ({N}, {D}); gamma: ({D},); beta: ({D},); r: ({N}, {D})\nsum(batch_norm(x, gamma, beta{kw}) ** 2 * r)"
    values = {"x": draw(N, D, seed=11), "gamma": draw(D, seed=12), "beta": draw(D, seed=13), "r": draw(N, D, seed=14)}

    def loss(x, gamma, beta, r):
        return (F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps) ** 2 * r).sum()

    check_against_autograd(program, values, loss)


@pytest.mark.parametrize("shape", [(N, D), (N, C, D)], ids=["matrix", "rank3"])
def test_layer_norm_matches_autograd(shape):
    program = f"x: {fmt(shape)}; w: ({D},); b: ({D},); r: {fmt(shape)}\nsum(layer_norm(x, w, b, eps=0.01) ** 2 * r)"
    values = {"x": draw(*shape, seed=15), "w": draw(D, seed=16), "b": draw(D, seed=17), "r": draw(*shape, seed=18)}
    check_against_autograd(program, values, lambda x, w, b, r: (F.layer_norm(x, (D,), w, b, eps=0.01) ** 2 * r).sum())


def test_without_affine_parameters_and_the_statistics_match_autograd():
    # layer_norm(x, 1, 0) is the layer without w, b; standardize and norm_std are x̂ and σ themselves
    program = f"x: ({N}, {C}, {H}, {W}); r: ({N}, {C}, {H}, {W})\n"
    program += (
        "sum(layer_norm(x, 1, 0) * r) + sum(standardize(x, over='batch') ** 2 * r) + sum(norm_std(x, over='batch'))"
    )
    values = {"x": draw(N, C, H, W, seed=19), "r": draw(N, C, H, W, seed=20)}

    def loss(x, r):
        sigma = (x.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()
        return (
            (F.layer_norm(x, (W,)) * r).sum()
            + (F.batch_norm(x, None, None, training=True) ** 2 * r).sum()
            + sigma.sum()
        )

    check_against_autograd(program, values, loss)


def test_group_norm_is_layer_norm_of_the_groups():
    """Group norm needs no op of its own: layer_norm over each group's entries, reshaped back, then
    the per-channel affine; its gradients are F.group_norm's."""
    program = f"x: ({N}, 4, {H}, {W}); w: (4, 1, 1); b: (4, 1, 1); r: ({N}, 4, {H}, {W})\n"
    program += f"z = reshape(layer_norm(reshape(x, (-1, 2, {2 * H * W})), 1, 0), (-1, 4, {H}, {W}))\n"
    program += "sum((z * w + b) * r)"
    values = {"x": draw(N, 4, H, W, seed=22), "w": draw(4, 1, 1, seed=23), "b": draw(4, 1, 1, seed=24)}
    values["r"] = draw(N, 4, H, W, seed=25)
    check_against_autograd(program, values, lambda x, w, b, r: (F.group_norm(x, 2, w.flatten(), b.flatten()) * r).sum())


def test_symbolic_batch_size_verifies():
    d = derive("x: (N, 3, 4, 2); g: (3,); b: (3,)\nsum(batch_norm(x, g, b) ** 2)", verify=True)
    assert d.verification.ok, d.verification
    d = derive("X: (n, d); w: (d,); b: (d,)\nsum(layer_norm(X, w, b) ** 3)", verify=True)
    assert d.verification.ok, d.verification


def applied_steps(program: str) -> dict[str, str]:
    """Each backward step's rule with the program's names, in text, by the adjoint it defines."""
    d = derive(program)
    text = printer_for("text", d.symbols)
    return {step.of: text(step.applied) for step in d.backward if step.kind == "rule"}


def test_backward_is_the_textbook_closed_form():
    steps = applied_steps("x: (N, 3); gamma: (3,); beta: (3,)\nsum(batch_norm(x, gamma, beta) ** 2)")
    # CS231n: dx = γ (N dy − Σ dy − x̂ Σ(dy x̂)) / (N σ), dγ = Σ dy x̂, dβ = Σ dy
    assert steps["x"] == "γ ⊙ (v̄1 N - sum(v̄1, axis=0) - x̂ ⊙ sum(v̄1 ⊙ x̂, axis=0)) / (N σ_x)", steps
    assert steps["gamma"] == "sum(v̄1 ⊙ x̂, axis=0)" and steps["beta"] == "sum(v̄1, axis=0)", steps
    steps = applied_steps("x: (5, 3, 4); w: (4,); b: (4,)\nsum(layer_norm(x, w, b) ** 2)")
    sums = "sum(v̄1 ⊙ w, axis=2, keepdims=True) - x̂ ⊙ sum(v̄1 ⊙ w ⊙ x̂, axis=2, keepdims=True)"
    assert steps["x"] == f"(4 v̄1 ⊙ w - {sums}) / (4 σ_x)", steps
    assert steps["w"] == "sum(v̄1 ⊙ x̂, axis=(0, 1))" and steps["b"] == "sum(v̄1, axis=(0, 1))", steps
    # spatial: the count is N·H·W, γ is laid along the channels, and each Σ is one sum over axes 0, 2, 3
    steps = applied_steps("x: (N, 3, 4, 2); g: (3,); b: (3,)\nsum(batch_norm(x, g, b) ** 2)")
    assert steps["x"].startswith("(8 v̄1 N - sum(v̄1, axis=(0, 2, 3), keepdims=True)"), steps
    assert steps["x"].endswith(") ⊙ reshape(g, (3, 1, 1)) / (8 N σ_x)"), steps
    assert steps["g"] == "sum(v̄1 ⊙ x̂, axis=(0, 2, 3))", steps


def test_prints_in_every_target():
    d = derive("x: (5, 3); gamma: (3,); beta: (3,)\nh = batch_norm(x, gamma, beta, eps=0.001)\nsum(h ** 2)")
    assert "h = batch_norm(x, gamma, beta, eps=0.001)" in d.to_text()
    latex = d.to_latex()
    assert r"\operatorname{BN}\left(x;\, " in latex and r"\epsilon=0.001" in latex, latex
    assert r"\hat{x}" in latex and r"\sigma_{x}" in latex, latex
    md = render(d, "md")
    assert r"\hat{x}" in md and r"\sigma_{x}" in md and r"\operatorname{BN}" in md
    d = derive("x: (5, 4); w: (4,); b: (4,)\nsum(layer_norm(x, w, b) ** 2)")
    assert r"\operatorname{LN}\left(x;\, w, b\right)" in d.to_latex()
    # a compound operand gets the wide hat, and the text spells it out
    d = derive("x: (5, 4); y: (5, 4)\nsum(standardize(x + y) ** 2)")
    assert r"\widehat{x + y}" in d.to_latex() and r"\sigma_{x + y}" in d.to_latex()
    gradient = d.to_text().split("Gradients")[1]
    assert "hat(x + y)" in gradient and "σ_(x + y)" in gradient, gradient
    assert "v2 = v̂1" in d.to_text()  # the forward step: a hat on the name


@pytest.mark.parametrize(
    "program",
    [
        "x: (5, 3); g: (3,); b: (3,)\nbatch_norm(x, g, b)",
        "x: (5, 3, 4, 2); g: (3,); b: (3,)\nbatch_norm(x, g, b, eps=0.01)",
        "x: (5, 3, 4); w: (4,); b: (4,)\nlayer_norm(x, w, b)",
        "x: (5, 4)\nlayer_norm(x, 1, 0)",
        "x: (5, 3, 4, 2)\nstandardize(x, over='batch') + norm_std(x, over='batch')",
    ],
)
def test_lang_and_json_parse_back(program):
    d = derive(program)
    doc = json.loads(render(d, "json"))
    shapes = {v.name: v.shape for v in d.variables}
    out = parse(doc["output"]["expr"], shapes)
    assert out.output.op.name == d.graph.output.op.name
    for grad in doc["gradients"].values():
        parse(f"({grad['expr']}) + 0 * probe", {**shapes, d.seed.name: d.seed.shape, "probe": ()})


@pytest.mark.parametrize(
    "program",
    [
        "x: (5, 3, 4, 2); g: (3,); b: (3,)\nsum(batch_norm(x, g, b) ** 2 * x)",
        "x: (5, 3); g: (3,); b: (3,)\nsum(batch_norm(x, g, b, eps=0.001) ** 2 * x)",
        "x: (5, 3, 4); w: (4,); b: (4,)\nsum(layer_norm(x, w, b) ** 2 * x)",
        "x: (5, 4); w: ()\nsum(layer_norm(x, w, 0) ** 2 * x)",
        "x: (5, 3, 4, 2)\nsum(standardize(x, over='batch') ** 2 * x) + sum(norm_std(x, over='batch'))",
    ],
)
def test_codegen_check(program):
    result = runner.invoke(app, ["codegen", program, "-o", "-", "--check"])
    assert result.exit_code == 0, result.output
    assert "gradcheck passed" in result.output


@pytest.mark.parametrize(
    "program, words",
    [
        ("x: (5, 3); g: (4,); b: (3,)\nsum(batch_norm(x, g, b))", "gamma must have the shape (3,)"),
        ("x: (5, 3, 4, 2); g: (3,); b: (2,)\nsum(batch_norm(x, g, b))", "beta must have the shape (3,)"),
        ("x: (5, 3, 4); w: (4, 1); b: (4,)\nsum(layer_norm(x, w, b))", "w must have the shape (4,)"),
        ("x: (5, 3, 2); g: (3,); b: (3,)\nsum(batch_norm(x, g, b))", "rank 2 (N, D) or 4 (N, C, H, W)"),
        ("x: (5, 3); g: (3,); b: (3,)\nsum(batch_norm(x, g, b, eps=0))", "eps must be positive"),
        ("x: (5, 4)\nsum(layer_norm(x, 1, 0, eps=-1e-5))", "eps must be positive"),
        ("x: (1, 3); g: (3,); b: (3,)\nsum(batch_norm(x, g, b))", "one value per feature"),
        ("x: (1, 3, 1, 1); g: (3,); b: (3,)\nsum(batch_norm(x, g, b))", "one value per channel"),
        ("x: (5, 3)\nsum(standardize(x, over='rows'))", "over must be one of"),
        ("x: (5, 3)\nsum(layer_norm(x))", "layer_norm takes 3 arguments"),
    ],
)
def test_misuse_is_refused_with_the_place(program, words):
    result = runner.invoke(app, ["derive", program])
    assert result.exit_code == 2, result.output
    assert words in result.output, result.output
    assert " at 2:" in result.output and "Traceback" not in result.output, result.output
    with pytest.raises((ShapeError, ParseError)):
        derive(program)


# --- tracing from torch -----------------------------------------------------------------------

MODELS = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.ln = nn.LayerNorm(6, eps=1e-3)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.ln(self.fc1(x)))).sum()


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return (torch.relu(self.bn(self.conv(x))) ** 2).sum()


class PlainNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(3, elementwise_affine=False)
        self.bn = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
        self.eval()  # no running statistics: eval mode normalises by the batch's too

    def forward(self, x):
        return (self.ln(x) * self.bn(x)).sum()


def functional(x, w, b):
    return (F.layer_norm(x, (3,), w, b) + F.batch_norm(x, None, None, w, b, training=True, eps=0.1)).sum()


class EvalBN(ConvBN):
    def __init__(self):
        super().__init__()
        self.eval()


class TwoAxes(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm((2, 3))

    def forward(self, x):
        return self.ln(x).sum()


def running(x):
    return F.batch_norm(x, torch.zeros(3), torch.ones(3)).sum()


def wrong_size(x):
    return F.layer_norm(x, (4,)).sum()


class SequenceBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(x).sum()
"""


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "norm_models.py"
    path.write_text(textwrap.dedent(MODELS), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "name, shape, spelling",
    [
        ("MLP", (5, 4), "layer_norm("),
        ("ConvBN", (5, 2, 6, 4), "batch_norm("),
        ("PlainNorms", (5, 3), "batch_norm(x, 1, 0)"),
    ],
)
def test_modules_are_traced_and_verify(models, name, shape, spelling):
    result = runner.invoke(app, ["derive", "--torch", f"{models}:{name}", "--shape", f"x={','.join(map(str, shape))}"])
    assert result.exit_code == 0, result.output
    assert "✓ verified" in result.output, result.output
    traced = trace_model(f"{models}:{name}", {"x": shape})
    assert spelling in traced.source, traced.source


def test_traced_layers_keep_eps_and_parameters(models):
    source = trace_model(f"{models}:MLP", {"x": (5, 4)}).source
    assert "eps=0.001" in source, source
    source = trace_model(f"{models}:PlainNorms", {"x": (5, 3)}).source
    assert "layer_norm(x, 1, 0)" in source, source
    traced = trace_model(f"{models}:functional", {"x": (5, 3), "w": (3,), "b": (3,)})
    assert "layer_norm(x, w, b)" in traced.source and "batch_norm(x, w, b, eps=0.1)" in traced.source


def test_the_traced_gradient_is_torchs(models):
    """The conv net with BatchNorm2d: backstep's gradients at the model's own parameters equal autograd's."""
    traced = trace_model(f"{models}:ConvBN", {"x": (5, 2, 6, 4)})
    d = derive(traced.source)
    model = traced.root
    x = draw(5, 2, 6, 4, seed=21)
    model.double().train()
    model(x).backward()
    env = {"x": x, "conv_weight": model.conv.weight.detach(), "conv_bias": model.conv.bias.detach()}
    env.update(bn_weight=model.bn.weight.detach() + 0.5, bn_bias=model.bn.bias.detach() - 0.25)
    with torch.no_grad():
        model.bn.weight += 0.5
        model.bn.bias -= 0.25
    model.zero_grad()
    model(x).backward()
    for name, param in (("conv_weight", model.conv.weight), ("bn_weight", model.bn.weight), ("bn_bias", model.bn.bias)):
        got = torch.broadcast_to(Evaluator(dict(env), {})(d.gradients[name].expr), param.shape)
        assert torch.allclose(got, param.grad, rtol=1e-9, atol=1e-11), name


@pytest.mark.parametrize(
    "name, shape, words",
    [
        ("EvalBN", (5, 2, 6, 4), "in eval mode normalises by its running statistics"),
        ("TwoAxes", (5, 2, 3), "normalises the last axis only"),
        ("running", (5, 3), "training=False"),
        ("wrong_size", (5, 3), "last axis has 3 entries"),
        ("SequenceBN", (5, 3, 4), "on an input of rank 3"),
    ],
)
def test_other_functions_are_refused(models, name, shape, words):
    result = runner.invoke(app, ["derive", "--torch", f"{models}:{name}", "--shape", f"x={','.join(map(str, shape))}"])
    assert result.exit_code == 2, result.output
    assert words in result.output, result.output
    assert "Traceback" not in result.output
