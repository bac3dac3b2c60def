"""einsum of two operands and `@` on operands of rank 3 and more (torch.matmul's batched product,
written as an einsum): the gradient against autograd (evaluated by backstep's numeric Evaluator,
independent of its verifier), every printing target, JSON that parses back, the shape checks,
codegen, and tracing torch.einsum / bmm / 3-d matmul / transpose of two axes.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from backstep import derive, parse
from backstep.cli import app
from backstep.errors import BackstepError, ShapeError
from backstep.numeric import Evaluator
from backstep.ops import OPS
from backstep.ops.einsum import batched_equation, parse_equation
from backstep.render import render
from backstep.trace import trace_model

runner = CliRunner()

LETTER_SIZES = {"n": 2, "i": 3, "j": 4, "k": 5, "l": 6}  # distinct: a swapped index cannot hide

EQUATIONS = [
    "nij,njk->nik",  # batched matrix product
    "nij,nkj->nik",  # against a transposed batch (attention's Q Kᵀ)
    "ij,jk->ik",
    "ij,jk->ki",  # the product, transposed
    "ij,ij->",  # Frobenius inner product
    "ij,ij->ij",  # elementwise
    "i,j->ij",  # outer product
    "nij,jk->nik",  # a batch times one matrix: its gradient sums over the batch
    "ij,njk->nik",
    "nij,nj->ni",  # batched matrix-vector
    "ijk,jl->lki",  # contraction with a reordered output
    "ij,jk",  # implicit output: NumPy's alphabetical order of the indices that appear once
]


def shapes_of(equation: str) -> list[tuple[int, ...]]:
    inputs, _ = parse_equation(equation)
    return [tuple(LETTER_SIZES[c] for c in subs) for subs in inputs]


def random(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), dtype=torch.float64, generator=gen)


@pytest.mark.parametrize("equation", EQUATIONS)
def test_matches_autograd(equation):
    sa, sb = shapes_of(equation)
    out_shape = torch.einsum(equation, random(sa, 0), random(sb, 1)).shape
    # a weight W makes the upstream gradient non-uniform
    d = derive(
        f'a: {sa}; b: {sb}; W: {tuple(out_shape)}\nsum(einsum("{equation}", a, b) * W)',
        verify=True,
    )
    assert d.verification.ok, d.verification
    a, b, w = (random(s, k).requires_grad_() for k, s in enumerate((sa, sb, tuple(out_shape))))
    (torch.einsum(equation, a, b) * w).sum().backward()
    env = {"a": a.detach(), "b": b.detach(), "W": w.detach()}
    for name, leaf in (("a", a), ("b", b)):
        got = Evaluator(dict(env), {})(d.gradients[name].expr)
        assert torch.allclose(torch.broadcast_to(got, leaf.shape), leaf.grad, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize(
    "sa, sb",
    [
        ((2, 3, 4), (2, 4, 5)),
        ((2, 3, 4), (4, 5)),  # the matrix's gradient sums over the batch
        ((3, 4), (2, 4, 5)),
        ((6, 2, 3, 4), (6, 2, 4, 5)),
        ((6, 2, 3, 4), (2, 4, 5)),  # batch axes broadcast from the right, as torch.matmul
        ((2, 3, 4), (4,)),
        ((4,), (2, 4, 5)),
    ],
)
def test_batched_matmul_matches_torch_matmul(sa, sb):
    out_shape = tuple((random(sa, 0) @ random(sb, 1)).shape)
    d = derive(f"A: {sa}; B: {sb}; W: {out_shape}\nsum((A @ B) * W)", verify=True)
    assert d.verification.ok, d.verification
    a, b, w = (random(s, k).requires_grad_() for k, s in enumerate((sa, sb, out_shape)))
    ((a @ b) * w).sum().backward()
    env = {"A": a.detach(), "B": b.detach(), "W": w.detach()}
    for name, leaf in (("A", a), ("B", b)):
        got = Evaluator(dict(env), {})(d.gradients[name].expr)
        assert got.shape == leaf.shape and torch.allclose(got, leaf.grad, rtol=1e-10, atol=1e-12), name


def test_batched_equation_names_batch_and_matrix_axes():
    assert batched_equation([(2, 3, 4), (2, 4, 5)]) == "nij,njk->nik"
    assert batched_equation([(7, 2, 3, 4), (2, 4, 5)]) == "noij,ojk->noik"
    assert batched_equation([(2, 3, 4), (4,)]) == "nij,j->ni"


def test_attention_with_symbolic_sizes_verifies():
    d = derive(
        "Q: (b, t, d); K: (b, s, d); V: (b, s, e)\n"
        "A = softmax(Q @ swapaxes(K, -1, -2) / sqrt(8), axis=-1)\n"
        "out = sum((A @ V) ** 2)",
        verify=True,
    )
    assert d.verification.ok, d.verification
    assert d.gradients["Q"].shape == ("b", "t", "d")


def test_a_number_factor_comes_out():
    d = derive('a: (2, 3, 4); b: (2, 4, 5)\nsum(einsum("nij,njk->nik", a, b) ** 2)')
    text = d.to_text()
    assert 'einsum("nik,njk->nij", 2 einsum' not in text, text
    assert 'einsum("nik,njk->nij", v̄1, b)' in text, text


def test_prints_in_every_target():
    program = 'a: (2, 3, 4); b: (2, 4, 5)\nsum(einsum("nij,njk->nik", a, b) ** 2)'
    d = derive(program)
    assert 'v1 = einsum("nij,njk->nik", a, b)' in d.to_text()
    latex = d.to_latex()
    # index notation: the summed index under the sum, each operand's entries subscripted
    assert r"\left[\textstyle\sum_{j} \left[a\right]_{nij}\,\left[b\right]_{njk}\right]_{nik}" in latex, latex
    result = runner.invoke(app, ["codegen", program, "-o", "-", "--check"])
    assert result.exit_code == 0, result.output
    assert 'torch.einsum("nij,njk->nik", a, b)' in result.output
    result = runner.invoke(app, ["codegen", "A: (2, 3, 4); B: (2, 4, 5)\nsum((A @ B) ** 2)", "-o", "-", "--check"])
    assert result.exit_code == 0, result.output


def test_a_scalar_contraction_prints_without_brackets():
    latex = derive('a: (3, 4); b: (3, 4)\neinsum("ij,ij->", a, b)').to_latex()
    assert r"\textstyle\sum_{ij} \left[a\right]_{ij}\,\left[b\right]_{ij}" in latex


@pytest.mark.parametrize("equation", ["nij,njk->nik", "ij,jk", "i,j->ij"])
def test_lang_and_json_parse_back(equation):
    sa, sb = shapes_of(equation)
    shapes = {"a": sa, "b": sb}
    d = derive(f'einsum("{equation}", a, b)', shapes=shapes)
    doc = json.loads(render(d, "json"))
    out = parse(doc["output"]["expr"], shapes)
    assert out.output.op is OPS["einsum"]
    for name in ("a", "b"):
        text = doc["gradients"][name]["expr"]
        parse(f"({text}) + 0 * probe", {**shapes, d.seed.name: d.seed.shape, "probe": ()})


@pytest.mark.parametrize(
    "source, words",
    [
        ('a: (3, 4); b: (4, 5)\neinsum("ij,jk->ik", a)', "einsum takes 2 arguments"),
        ("a: (3, 4); b: (4, 5)\neinsum(a, b)", "equation must be a string of index letters"),
        ('a: (3, 4); b: (4, 5)\neinsum("ij,jk->iz", a, b)', "output index z appears in no operand"),
        ('a: (3, 4); b: (4, 5)\neinsum("ijk,jk->ik", a, b)', "operand 1 is \\(3, 4\\), of rank 2"),
        ('a: (3, 4); b: (5, 5)\neinsum("ij,jk->ik", a, b)', "index j has size 4 in operand 1 and 5 in operand 2"),
        ('a: (3, 3); b: (3, 5)\neinsum("ii,ik->k", a, b)', "index i repeats within operand 1"),
        ('a: (3, 4); b: (4, 5)\neinsum("ij,jk->", a, b)', "index i is summed within operand 1 alone"),
        ('a: (3, 4); b: (4, 5)\neinsum("...j,jk->ik", a, b)', '"..." is not supported'),
        ('a: (3, 4); b: (4, 5)\neinsum("ij,jk->ii", a, b)', "output index i repeats"),
        ('a: (3, 4); b: (4, 5)\neinsum("i1,jk->ik", a, b)', "may only be letters"),
        ("A: (2, 3, 4); B: (3, 4, 5)\nA @ B", "batch axes differ"),
        ("A: (2, 3, 4); B: (2, 5, 6)\nA @ B", "inner dimensions 4 and 5 differ"),
        ("A: (1, 3, 4); B: (2, 4, 5)\nA @ B", "batch axes of size 1"),
    ],
)
def test_misuse_is_refused_with_a_message(source, words):
    with pytest.raises(BackstepError, match=words):
        derive(source)


def test_cli_misuse_exits_2_with_the_place():
    result = runner.invoke(app, ["derive", 'a: (3, 4); b: (5, 5)\ny = einsum("ij,jk->ik", a, b)'])
    assert result.exit_code == 2, result.output
    assert "index j has size 4 in operand 1 and 5 in operand 2" in result.output
    assert "at 2:5" in result.output
    assert "Traceback" not in result.output


def test_shape_error_is_a_shape_error():
    with pytest.raises(ShapeError):
        derive('a: (3, 4); b: (5, 5)\neinsum("ij,jk->ik", a, b)')


def test_traces_einsum_bmm_and_batched_transposes(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            import torch.nn as nn

            class Attention(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.q = nn.Linear(6, 4, bias=False)
                    self.k = nn.Linear(6, 4, bias=False)
                    self.v = nn.Linear(6, 5, bias=False)

                def forward(self, x):
                    q, k, v = self.q(x), self.k(x), self.v(x)
                    scores = q @ k.transpose(-2, -1) / 2.0
                    return (torch.softmax(scores, dim=-1) @ v).sum()

            def f(a, b):
                return torch.einsum("nij,njk->nik", a, b).sum() + torch.bmm(a, b).sum()

            def g(a):
                return (a.transpose(1, 2) ** 2).sum()
            """
        ),
        encoding="utf-8",
    )
    traced = trace_model(f"{path}:f", {"a": (2, 3, 4), "b": (2, 4, 5)})
    assert 'einsum("nij,njk->nik", a, b)' in traced.source, traced.source
    assert "a @ b" in traced.source, traced.source
    traced = trace_model(f"{path}:g", {"a": (2, 3, 4)})
    assert "swapaxes(a, 1, 2)" in traced.source, traced.source
    for spec, shapes in ((f"{path}:f", ["a=2,3,4", "b=2,4,5"]), (f"{path}:Attention", ["x=2,3,6"])):
        argv = ["derive", "--torch", spec]
        for s in shapes:
            argv += ["--shape", s]
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
        assert "✓ verified" in result.output, result.output


def test_einsum_trace_misuse_is_refused(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(
        "import torch\ndef three(a, b, c):\n    return torch.einsum('ij,jk,kl->il', a, b, c).sum()\n",
        encoding="utf-8",
    )
    with pytest.raises(BackstepError, match="two operands"):
        trace_model(f"{path}:three", {"a": (2, 3), "b": (3, 4), "c": (4, 5)})


def test_scaled_dot_product_attention_is_traced_as_its_decomposition(tmp_path):
    """F.scaled_dot_product_attention with scale= is softmax(Q Kᵀ · scale) V, written out step by
    step; its gradients at a point equal torch's own. Without scale= (the default reads the query's
    size), with a mask or dropout it is refused."""
    import math

    path = tmp_path / "attn.py"
    path.write_text(
        "import math\nimport torch.nn.functional as F\n"
        "def f(q, k, v):\n    return (F.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(4)) ** 2).sum()\n"
        "def default(q, k, v):\n    return F.scaled_dot_product_attention(q, k, v).sum()\n"
        "def causal(q, k, v):\n    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5).sum()\n",
        encoding="utf-8",
    )
    shapes = {"q": (2, 3, 4), "k": (2, 5, 4), "v": (2, 5, 6)}
    traced = trace_model(f"{path}:f", shapes)
    assert "softmax(q @ swapaxes(k, -2, -1) * 0.5, axis=-1) @ v" in traced.source, traced.source
    gen = torch.Generator().manual_seed(2)
    leaves = {n: torch.randn(s, dtype=torch.float64, generator=gen, requires_grad=True) for n, s in shapes.items()}
    (torch.nn.functional.scaled_dot_product_attention(*leaves.values(), scale=1 / math.sqrt(4)) ** 2).sum().backward()
    d = derive(traced.source, at={n: t.detach().tolist() for n, t in leaves.items()})
    for n, t in leaves.items():
        assert torch.allclose(torch.tensor(d.gradients[n].value, dtype=torch.float64), t.grad, rtol=1e-9), n
    for name, words in (("default", "without scale="), ("causal", "with a mask")):
        with pytest.raises(BackstepError, match=words):
            trace_model(f"{path}:{name}", shapes)
