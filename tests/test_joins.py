"""Building and splitting arrays (backstep/ops/joins.py, the parser's parse_joins.py): cat and stack of a
tuple of operands, basic slicing and indexing (`x[:, 1:3]`, `x[:, t, :]`, `x[-1]`, `x[..., k]`), the parts
of chunk and split with tuple assignment, and pad.

Each gradient is compared with torch autograd of the same function written directly in torch (torch.cat,
torch.stack, torch.chunk, torch.split, Python indexing), evaluated by backstep's numeric Evaluator and
independent of its verifier, at distinct non-square sizes and with a random weight on the output so
that every entry's upstream gradient differs. The derivation prints in every target, its JSON parses
back and means the same, codegen's gradcheck passes, tracing from torch writes the same program, and
misuse exits with 2 and the place.
"""

from __future__ import annotations

import json
import textwrap
import unicodedata

import pytest
import torch
from test_json import run_graph
from typer.testing import CliRunner

from backstep import derive, parse
from backstep.cli import app
from backstep.numeric import Evaluator
from backstep.ops import OPS
from backstep.render import render
from backstep.trace import trace_model

runner = CliRunner()
T = torch.float64


# (program without the loss, the same function in torch, the shapes of its inputs)
CASES = {
    "cat3_axis1": (
        "cat((a, b, c), axis=1)",
        lambda v: torch.cat((v["a"], v["b"], v["c"]), dim=1),
        {"a": (3, 2), "b": (3, 4), "c": (3, 5)},
    ),
    "cat_axis0": ("cat((a, b), axis=0)", lambda v: torch.cat((v["a"], v["b"]), dim=0), {"a": (2, 5), "b": (4, 5)}),
    "cat_rank3_last": (
        "cat((a, b), dim=-1)",
        lambda v: torch.cat((v["a"], v["b"]), dim=-1),
        {"a": (2, 3, 4), "b": (2, 3, 5)},
    ),
    "cat_same_twice": ("cat((a, a * a), axis=1)", lambda v: torch.cat((v["a"], v["a"] ** 2), 1), {"a": (3, 4)}),
    "stack_axis0": ("stack((a, b), axis=0)", lambda v: torch.stack((v["a"], v["b"])), {"a": (3, 4), "b": (3, 4)}),
    "stack_axis1": (
        "stack((a, b, a), axis=1)",
        lambda v: torch.stack((v["a"], v["b"], v["a"]), 1),
        {"a": (3, 4), "b": (3, 4)},
    ),
    "stack_last": ("stack((a, b), axis=-1)", lambda v: torch.stack((v["a"], v["b"]), -1), {"a": (3, 4), "b": (3, 4)}),
    "rows": ("x[1:3]", lambda v: v["x"][1:3], {"x": (4, 7, 3)}),
    "columns": ("x[:, 2:5]", lambda v: v["x"][:, 2:5], {"x": (4, 7, 3)}),
    "time_step": ("x[:, 1, :]", lambda v: v["x"][:, 1, :], {"x": (4, 7, 3)}),
    "last_row": ("x[-1]", lambda v: v["x"][-1], {"x": (4, 7, 3)}),
    "last_axis": ("x[..., 2]", lambda v: v["x"][..., 2], {"x": (4, 7, 3)}),
    "mixed": ("x[:, 1:3, -1]", lambda v: v["x"][:, 1:3, -1], {"x": (4, 7, 3)}),
    "from_the_end": ("x[..., -2:, :]", lambda v: v["x"][..., -2:, :], {"x": (4, 7, 3)}),
    "open_start": ("x[:, :-2]", lambda v: v["x"][:, :-2], {"x": (4, 7, 3)}),
    "two_ints": ("x[0, 2]", lambda v: v["x"][0, 2], {"x": (4, 7, 3)}),
    "overlap": ("x[:, 0:3] * x[:, 2:5]", lambda v: v["x"][:, 0:3] * v["x"][:, 2:5], {"x": (4, 7)}),
    "chunk": (
        "i, f, o, g = chunk(Z, 4, axis=1)\nout = sigmoid(i) * f + o * tanh(g)",
        lambda v: (lambda p: torch.sigmoid(p[0]) * p[1] + p[2] * torch.tanh(p[3]))(torch.chunk(v["Z"], 4, 1)),
        {"Z": (3, 8)},
    ),
    "chunk_axis0": (
        "a, b = chunk(Z, 2)\nout = a * b",
        lambda v: (lambda p: p[0] * p[1])(v["Z"].chunk(2)),
        {"Z": (6, 5)},
    ),
    "chunk_one_part": ("chunk(Z, 4, axis=1)[-1]", lambda v: v["Z"].chunk(4, 1)[-1], {"Z": (3, 8)}),
    "split": (
        "a, b = split(Z, (2, 3), axis=1)\nout = cat((b, a), axis=1) * Z",
        lambda v: (lambda p: torch.cat((p[1], p[0]), 1) * v["Z"])(torch.split(v["Z"], [2, 3], 1)),
        {"Z": (4, 5)},
    ),
    "pad": ("pad(x, (2, 1), axis=1)", lambda v: torch.nn.functional.pad(v["x"], (2, 1)), {"x": (3, 4)}),
    "pad_axis0": (
        "pad(x, 1, axis=0)",
        lambda v: torch.nn.functional.pad(v["x"], (0, 0, 1, 1)),
        {"x": (3, 4)},
    ),
}


def annotations(shapes: dict) -> str:
    return "; ".join(f"{k}: ({', '.join(map(str, s))}{',' if len(s) == 1 else ''})" for k, s in shapes.items())


def program(expr: str, shapes: dict, weight_shape: tuple) -> str:
    """The case as a program whose loss weighs every entry of the output differently."""
    *lines, last = expr.split("\n")
    value = last.split(" = ", 1)[1] if " = " in last else last
    head = "\n".join([annotations({**shapes, "W": weight_shape}), *lines])
    return f"{head}\nsum(({value}) * W)"


def values(shapes: dict, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, dtype=T, generator=gen) for k, s in shapes.items()}


def prepared(name: str):
    expr, reference, shapes = CASES[name]
    env = values(shapes)
    out_shape = tuple(reference(env).shape)
    env["W"] = torch.randn(*out_shape, dtype=T, generator=torch.Generator().manual_seed(1))
    return program(expr, shapes, out_shape), reference, shapes, env


def autograd(reference, env: dict, names) -> dict:
    leaves = {k: v.clone().requires_grad_(k in names) for k, v in env.items()}
    (reference(leaves) * leaves["W"]).sum().backward()
    return {k: leaves[k].grad for k in names}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_torch_autograd(name):
    source, reference, shapes, env = prepared(name)
    d = derive(source, verify=True)
    assert d.verification.ok, d.verification
    expected = autograd(reference, env, list(shapes))
    for var in shapes:
        got = torch.broadcast_to(Evaluator(dict(env), {})(d.gradients[var].expr), shapes[var])
        assert torch.allclose(got, expected[var], rtol=1e-10, atol=1e-12), (var, got, expected[var])


@pytest.mark.parametrize("name", sorted(CASES))
def test_json_parses_back_to_the_same_gradients(name):
    source, reference, shapes, env = prepared(name)
    d = derive(source)
    doc = json.loads(render(d, "json"))
    all_shapes = {**shapes, "W": tuple(env["W"].shape)}
    expected = autograd(reference, env, list(shapes))
    for var in shapes:
        graph = parse(doc["gradients"][var]["expr"], all_shapes, allow_constant=True)
        got = torch.broadcast_to(run_graph(graph, env), shapes[var])
        assert torch.allclose(got, expected[var], rtol=1e-10, atol=1e-12), doc["gradients"][var]["expr"]
    assert parse(doc["output"]["expr"], all_shapes)


@pytest.mark.parametrize("name", ["cat3_axis1", "stack_axis1", "mixed", "chunk", "split", "pad", "overlap"])
def test_codegen_gradcheck_passes(name):
    source, *_ = prepared(name)
    result = runner.invoke(app, ["codegen", source, "-o", "-", "--check"])
    assert result.exit_code == 0, result.output
    assert "gradcheck passed" in result.output


def text_of(d) -> str:
    """The terminal text with bars composed (ā), as these tests write them."""
    return unicodedata.normalize("NFC", d.to_text())


def test_cat_gradients_are_slices_of_the_upstream_gradient():
    d = derive("a: (3, 2); b: (3, 4); c: (3, 5)\ncat((a, b, c), axis=1)")
    text = text_of(d)
    for part in ("ā = ȳ[:, 0:2]", "b̄ = ȳ[:, 2:6]", "c̄ = ȳ[:, 6:11]"):
        assert part in text, text
    assert r"\bar{y}[{:}, 2{:}6]" in d.to_latex()
    d = derive("a: (3, 4); b: (3, 4)\nstack((a, b), axis=1)")
    assert "b̄ = ȳ[:, 1]" in text_of(d)


def test_a_part_gradient_is_padded_back_and_parts_add_up():
    d = derive("x: (4, 7)\nsum(x[:, 0:3] * x[:, 2:5])")
    text = text_of(d)
    assert "pad(" in text and "(0, 4), axis=1)" in text and "(2, 2), axis=1)" in text, text
    assert "x̄ = x̄⁽¹⁾ + x̄⁽²⁾" in text and "multivariable chain rule" in text, text
    d = derive("Z: (3, 8)\ni, f, o, g = chunk(Z, 4, axis=1)\nsum(i * f * o * g)")
    text = text_of(d)
    assert "i = chunk(Z, 4, axis=1)[0]" in text and "g = chunk(Z, 4, axis=1)[3]" in text, text
    assert "Z̄ = Z̄⁽¹⁾ + Z̄⁽²⁾ + Z̄⁽³⁾ + Z̄⁽⁴⁾" in text, text


def test_subscripts_print_as_written_in_every_target():
    d = derive("x: (4, 7, 3)\nsum(x[..., 1:3, -1] * x[:, 0, :2])")
    # one node per indexed axis, each printed as Python writes it
    for spelling in ("x[..., 1:3, :]", "v1[..., -1]", "x[:, :, :2]", "v3[:, 0]"):
        assert spelling in d.to_text(), d.to_text()
    assert r"x[\ldots, 1{:}3, {:}]" in d.to_latex()
    assert r"v_{3}[{:}, 0]" in render(d, "md")
    result = runner.invoke(app, ["codegen", "x: (4, 7, 3)\nsum(x[..., 1:3, -1] * x[:, 0, :2])", "-o", "-"])
    assert "v1[..., -1]" in result.output and "x[:, :, :2]" in result.output


@pytest.mark.parametrize(
    "source, words, place",
    [
        (
            "a: (3, 2); b: (4, 5)\ncat((a, b), axis=1)",
            "cat along axis 1: operand 2 (4, 5) differs from operand 1",
            "2:1",
        ),
        ("a: (3, 2); b: (3, 2, 1)\ncat((a, b), axis=1)", "operand 2 (3, 2, 1) has rank 3", "2:1"),
        ("a: (3, 2); b: (3, 4)\nstack((a, b))", "stack along axis 0: operand 2 (3, 4) differs", "2:1"),
        ("a: (3, 2); b: (3, 4)\ncat(a, b)", "cat takes its operands as a tuple", "2:1"),
        ("a: (N, 2); b: (N, D)\ncat((a, b), axis=1)", "operand 2 (N, D) has the size D there, not a number", "2:1"),
        ("x: (3, 4)\nx[:, 4]", "index 4 is out of range for axis 1 of (3, 4) (size 4)", "2:1"),
        ("x: (3, 4)\nx[-4]", "index -4 is out of range for axis 0", "2:1"),
        ("x: (3, 4)\nx[:, 1:9]", "stop 9 is out of range for axis 1", "2:1"),
        ("x: (3, 4)\nx[:, 3:1]", "[:, 3:1] is empty", "2:1"),
        ("x: (3, 4)\nx[:, :, 0]", "axis 2 is out of range for (3, 4)", "2:1"),
        ("x: (3, 4)\nsum(x[::2])", "a slice with a step is not supported", "2:9"),
        ("x: (3, 4)\nsum(x[..., ...])", "one ... only", "2:12"),
        ("x: (3, 4)\nsum(x[None])", "a new axis (None) is not supported", "2:7"),
        ("x: (3, 4)\nsum(x[1.5])", "integer literals and slices", "2:7"),
        ("x: (N, D)\nx[:, 1]", "needs the size of that axis as a number (it is D)", "2:1"),
        ("E: (5, 3); ix: (4,)\nsum(E[ix, 1:2])", "indexing by an array is supported alone", "2:7"),
        (
            "Z: (3, 8)\na, b, c = chunk(Z, 4, axis=1)\nsum(a)",
            "chunk(...) gives 4 parts but 3 names are assigned",
            "2:1",
        ),
        (
            "Z: (3, 5)\na, b = split(Z, (2, 2), axis=1)\nsum(a)",
            "the sizes (2, 2) add up to 4, not to the size 5",
            "2:8",
        ),
        ("Z: (3, 7)\na, b = chunk(Z, 2, axis=1)\nsum(a * b)", "does not split into 2 equal parts", "2:8"),
        ("Z: (3, 8)\nsum(chunk(Z, 4, axis=1))", "chunk gives several parts", "2:5"),
        ("Z: (3, 8)\nsum(chunk(Z, 4, axis=1)[4])", "chunk gives 4 parts; there is no part 4", "2:5"),
        ("Z: (3, 8)\na, b = Z, Z\nsum(a)", "a tuple of names takes the parts of chunk or split", "2:8"),
        ("Z: (3, 8)\na, b = chunk(Z, 2, axis=1)", "the last line must be the output", "2:1"),
        ("Z: (3, 8)\na, a = chunk(Z, 2, axis=1)\nsum(a)", "a is already assigned", "2:1"),
        ("Z: (3, 8)\nZ, b = chunk(Z, 2, axis=1)\nsum(b)", "Z is an input variable", "2:1"),
        ("x: (3, 4)\npad(x, (-1, 2))", "two integers of at least 0", "2:1"),
    ],
)
def test_misuse_exits_with_2_and_the_place(source, words, place):
    result = runner.invoke(app, ["derive", source])
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert words in result.stderr, result.stderr
    assert f"at {place}" in result.stderr, result.stderr


def test_the_ops_are_in_the_table_with_torch_counterparts():
    x = torch.randn(3, 8, dtype=T, requires_grad=True)
    assert OPS["chunk"].torch(torch, [x], {"chunks": 4, "axis": 1, "index": 2}).grad_fn.name() == "SplitBackward0"
    assert torch.equal(OPS["slice"].torch(torch, [x], {"axis": -1, "start": -3, "stop": None}), x[..., -3:])
    assert torch.equal(OPS["select"].torch(torch, [x], {"axis": 0, "index": -1}), x[-1])
    padded = OPS["pad"].torch(torch, [x], {"widths": (1, 2), "axis": 0})
    assert padded.grad_fn.name() == "ConstantPadNdBackward0" and padded.shape == (6, 8)
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0
    assert all(any(line.startswith(f"{name}(") for line in result.output.splitlines()) for name in ("cat", "pad"))


LSTM_MODULE = """
import torch
from torch import nn


class LSTMCell(nn.Module):
    def __init__(self):
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(3, 20))
        self.Wh = nn.Parameter(torch.randn(5, 20))
        self.b = nn.Parameter(torch.randn(20))

    def forward(self, x, h, c):
        Z = x @ self.Wx + h @ self.Wh + self.b
        i, f, g, o = Z.chunk(4, dim=1)
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        both = torch.cat((h_next, c_next), dim=1)
        stacked = torch.stack([h_next, c_next], dim=0)
        a, b = torch.split(both, [4, 6], dim=1)
        return (both[:, 1:6] ** 2).sum() + stacked[0, :, -1].sum() + (a.sum() * b.narrow(1, 2, 3)).sum()


def tensor_index(x, ix):
    return x[ix].sum()


def split_by_size(x):
    return torch.split(x, 2, dim=1)[0].sum()
"""


def test_an_lstm_cell_is_traced_from_torch(tmp_path):
    path = tmp_path / "lstm.py"
    path.write_text(textwrap.dedent(LSTM_MODULE), encoding="utf-8")
    traced = trace_model(f"{path}:LSTMCell", {"x": ("N", 3), "h": ("N", 5), "c": ("N", 5)})
    for spelling in (
        "chunk(add_1, 4, axis=1)[0]",
        "chunk(add_1, 4, axis=1)[3]",
        "cat((mul_2, add_2), axis=1)",
        "stack((mul_2, add_2), axis=0)",
        "split(cat_out, (4, 6), axis=1)[1]",
        "[:, 1:6]",
        "[0, :, -1]",
        "[:, 2:5]",
    ):
        assert spelling in traced.source, traced.source
    result = runner.invoke(
        app, ["derive", "--torch", f"{path}:LSTMCell", "--shape", "x=N,3", "--shape", "h=N,5", "--shape", "c=N,5"]
    )
    assert result.exit_code == 0, result.output
    assert "✓ verified with PyTorch autograd" in result.output
    for function, words in (("tensor_index", "indexing by a tensor"), ("split_by_size", "one size for every part")):
        with pytest.raises(Exception, match=words):
            trace_model(f"{path}:{function}", {"x": (3, 4), "ix": (2,)})
