"""Picking by integer arrays, one block each in backstep/ops/indexing.py: embedding(ix, E) = E[ix], its
adjoint scatter_rows (the scatter-add) and pick(P, y) = P[range(N), y]. Gradients against torch
autograd (F.embedding, torch.gather, index_add) at points with repeated indices, evaluated by
backstep's numeric Evaluator, independent of its verifier; printing in every target; JSON that parses
back; codegen --check; --assume ix=index:V and its misuse; the draws; tracing nn.Embedding, F.embedding
and gather from torch.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
import torch.nn.functional as F
from helpers import value_of_program
from typer.testing import CliRunner

from backstep import derive, parse
from backstep.cli import app
from backstep.errors import BackstepError, UsageError
from backstep.numeric import Evaluator, draw
from backstep.numeric.sampling import with_a_repeat
from backstep.ops import FUNCTION_OPS, OPS
from backstep.printing import bar_text
from backstep.render import render
from backstep.trace import trace_model

runner = CliRunner()

# Rows 0 and 3 are picked several times, row 2 never: the scatter-add must sum and must leave zeros.
IX = torch.tensor([[0, 3, 3, 1], [4, 0, 3, 1], [0, 0, 4, 1]], dtype=torch.float64)  # (N, T) = (3, 4), V = 5
EMBED = "ix: (3, 4); E: (5, 2); U: (3, 4, 2)\nsum(sin(embedding(ix, E)) * U)"  # U: a non-uniform upstream


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_registered_with_torch_counterpart_and_grad_fn():
    E = rand(5, 2).requires_grad_()
    y = OPS["embedding"].torch(torch, [IX, E], {})
    assert torch.equal(y, F.embedding(IX.long(), E)) and y.grad_fn.name() == OPS["embedding"].grad_fn
    P = rand(3, 5).requires_grad_()
    t = torch.tensor([4.0, 0.0, 4.0])
    picked = OPS["pick"].torch(torch, [P, t], {})
    assert torch.equal(picked, P[torch.arange(3), t.long()]) and picked.grad_fn.name() == OPS["pick"].grad_fn
    g = rand(3, 4, 2).requires_grad_()
    scattered = OPS["scatter_rows"].torch(torch, [g, IX], {"rows": 5})
    assert scattered.grad_fn.name() == OPS["scatter_rows"].grad_fn
    for name in ("embedding", "scatter_rows", "pick"):
        assert FUNCTION_OPS[name] is OPS[name]


def test_embedding_gradient_is_torchs_scatter_add():
    d = derive(EMBED)
    E, U = rand(5, 2, seed=1).requires_grad_(), rand(3, 4, 2, seed=2)
    (torch.sin(F.embedding(IX.long(), E)) * U).sum().backward()
    got = Evaluator({"ix": IX, "E": E.detach(), "U": U}, {})(d.gradients["E"].expr)
    assert torch.allclose(got, E.grad, rtol=1e-12, atol=1e-14)
    assert torch.equal(got[2], torch.zeros(2, dtype=torch.float64))  # a row never picked gets nothing
    assert "ix" not in d.gradients  # integer indices get no gradient, as a LongTensor in torch


@pytest.mark.parametrize(
    "ix_shape, index",
    [((), [3.0]), ((4,), [3.0, 0.0, 3.0, 1.0]), ((2, 3, 2), [[[0, 4], [4, 4], [1, 0]], [[2, 2], [0, 1], [4, 0]]])],
    ids=["0-d", "1-d", "3-d"],
)
def test_embedding_at_every_rank(ix_shape, index):
    ix = torch.tensor(index, dtype=torch.float64).reshape(ix_shape)
    d = derive(f"ix: {ix_shape}; E: (5, 3)\nsum(embedding(ix, E) ** 2)", verify=True)
    assert d.verification.ok, d.verification
    E = rand(5, 3, seed=3).requires_grad_()
    (F.embedding(ix.long(), E) ** 2).sum().backward()
    got = Evaluator({"ix": ix, "E": E.detach()}, {})(d.gradients["E"].expr)
    assert torch.allclose(got, E.grad, rtol=1e-12, atol=1e-14)


def test_pick_gradient_is_torchs_gather():
    y = torch.tensor([4.0, 0.0, 4.0])  # row-wise classes, one repeated
    d = derive("P: (3, 5); y: (3,); w: (3,)\nsum(log(pick(P, y)) * w)")
    P, w = (rand(3, 5, seed=4).abs() + 0.5).requires_grad_(), rand(3, seed=5)
    (torch.log(P.gather(1, y.long()[:, None])[:, 0]) * w).sum().backward()
    got = Evaluator({"P": P.detach(), "y": y, "w": w}, {})(d.gradients["P"].expr)
    assert torch.allclose(torch.broadcast_to(got, (3, 5)), P.grad, rtol=1e-12, atol=1e-14)


def test_pick_along_the_last_axis_of_a_rank_3_array():
    y = torch.tensor([[1.0, 1.0, 4.0, 0.0], [3.0, 2.0, 2.0, 2.0]])  # (2, 4) into (2, 4, 5)
    d = derive("P: (2, 4, 5); y: (2, 4); w: (2, 4)\nsum(pick(P, y) * w)", verify=True)
    assert d.verification.ok, d.verification
    P, w = rand(2, 4, 5, seed=6).requires_grad_(), rand(2, 4, seed=7)
    (torch.gather(P, 2, y.long().unsqueeze(-1)).squeeze(-1) * w).sum().backward()
    got = Evaluator({"P": P.detach(), "y": y, "w": w}, {})(d.gradients["P"].expr)
    assert torch.allclose(torch.broadcast_to(got, P.shape), P.grad, rtol=1e-12, atol=1e-14)


def test_scatter_rows_gradient_is_index_adds():
    d = derive("g: (3, 4, 2); ix: (3, 4); W: (5, 2)\nsum(scatter_rows(g, ix, 5) * W)", verify=True)
    assert d.verification.ok, d.verification
    g, W = rand(3, 4, 2, seed=8).requires_grad_(), rand(5, 2, seed=9)
    (torch.zeros(5, 2, dtype=torch.float64).index_add(0, IX.long().flatten(), g.reshape(-1, 2)) * W).sum().backward()
    got = Evaluator({"g": g.detach(), "ix": IX, "W": W}, {})(d.gradients["g"].expr)
    assert torch.allclose(torch.broadcast_to(got, g.shape), g.grad, rtol=1e-12, atol=1e-14)


def test_symbolic_sizes_verify_and_the_bound_is_inferred():
    d = derive("ix: (N, T); E: (V, D); W: (D, C); y: (N,)\nL = cross_entropy(mean(embedding(ix, E), axis=1) @ W, y)")
    assert {v.name: v.domain for v in d.variables}["ix"] == "class_index:V"
    d.verify()
    assert d.verification.ok, d.verification


def test_draws_have_a_repeat_and_stay_in_range():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):  # 2 values out of 7: without the repeat, most draws would have none
        value = draw(torch, gen, (2,), "class_index:7")
        assert value[0] == value[1] and 0 <= value.min() and value.max() <= 6 and torch.equal(value, value.round())
    value = draw(torch, gen, (3, 4), "class_index:V", {"V": 5})
    assert len(value.unique()) < value.numel() and value.max() <= 4
    assert torch.equal(with_a_repeat(torch.tensor([2.0])), torch.tensor([2.0]))  # one entry: nothing to repeat


# --- printing ----------------------------------------------------------------------------------------


def test_prints_in_every_target():
    d = derive("ix: (N, T); E: (V, D)\nembedding(ix, E)")
    text = d.to_text()
    assert "y = E[ix]" in text and f"{bar_text('E')} = [Σ_{{i: ix_i = v}} {bar_text('y')}_i]_v" in text, text
    latex = d.to_latex()
    assert r"E\left[\mathit{ix}\right]" in latex, latex
    assert r"\bar{E} &= \Big[\sum_{i:\, \mathit{ix}_i = v} \bar{y}_i\Big]_{v < V}" in latex, latex
    assert r"\Big[\sum_{i:\, \mathit{ix}_i = v}" in d.to_markdown()
    doc = json.loads(render(d, "json"))
    assert doc["output"]["expr"] == "embedding(ix, E)"
    assert doc["gradients"]["E"]["expr"] == "scatter_rows(grad_y, ix, V)"
    pick = derive("P: (N, C); y: (N,)\npick(P, y)")
    assert f"{bar_text('P')} = onehot(y) ⊙ unsqueeze({bar_text('z')}, axis=1)" in pick.to_text()
    assert r"\operatorname{pick}\left(P, y\right)" in pick.to_latex()


@pytest.mark.parametrize(
    "program",
    [
        "ix: (N, T); E: (V, D); U: (N, T, D)\nsum(tanh(embedding(ix, E)) * U)",
        "P: (N, C); y: (N,)\nsum(pick(P, y) ** 2)",
        "g: (N, T, D); ix: (N, T); W: (V, D)\nsum(scatter_rows(g, ix, V) ** 2 * W)",
    ],
    ids=["embedding", "pick", "scatter_rows"],
)
def test_codegen_check_passes(program):
    result = runner.invoke(app, ["codegen", program, "-o", "-", "--check"])
    assert result.exit_code == 0, result.output
    assert "gradcheck passed" in result.output


def test_json_gradients_parse_back_and_have_the_same_value():
    shapes = {"ix": (3, 4), "E": (5, 2), "U": (3, 4, 2)}
    d = derive(EMBED)
    doc = json.loads(render(d, "json"))
    assert "embedding(ix, E)" in doc["output"]["expr"]
    parse(doc["output"]["expr"], shapes)
    E, U = rand(5, 2, seed=10), rand(3, 4, 2, seed=11)
    env = {"ix": IX, "E": E, "U": U}
    back = value_of_program(doc["gradients"]["E"]["expr"], shapes, env)
    assert torch.allclose(back, Evaluator(env, {})(d.gradients["E"].expr), rtol=1e-12, atol=1e-14)


# --- --assume ix=index:V, and misuse --------------------------------------------------------------------

PICK = "P: (N, C); y: (N,)\nsum(pick(P, y) ** 2)"


def test_assume_index_in_derive_check_and_codegen():
    d = derive("t: (n,); Z: (n, c)\nsum(onehot(t, c) * Z)", assume={"t": "index:c"}, verify=True)
    assert d.verification.ok and {v.name: v.domain for v in d.variables}["t"] == "class_index:c"
    d = derive("ix: (4,); Z: (4, 6)\nsum(onehot(ix, 6) * Z)", assume={"ix": "index:6"}, verify=True)
    assert d.verification.ok
    result = runner.invoke(app, ["derive", PICK, "--assume", "y=index:C"])
    assert result.exit_code == 0, result.output
    right = "2 * onehot(y, C) * unsqueeze(pick(P, y), axis=1)"
    result = runner.invoke(app, ["check", PICK, "--wrt", "P", "--claim", right, "--assume", "y=index:C"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["check", PICK, "--wrt", "P", "--claim", "onehot(y, C)", "--assume", "y=index:C"])
    assert result.exit_code == 1, result.output
    result = runner.invoke(app, ["codegen", PICK, "--assume", "y=index:C", "-o", "-", "--check"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--assume", "y=index:Q"], "Q is neither a positive integer nor a dimension of the formula"),
        (["--assume", "y=index"], "needs the number of values it takes"),
        (["--assume", "y=index:0"], "neither a positive integer"),
        (["--assume", "y=index:4"], "its values are 0 … C−1: --assume y=index:C"),
        (["--assume", "y=positive"], "y is an integer index array"),
        (["--assume", "y=indices:C"], "unknown domain"),
        (["--at", "y=[1, 7]", "--at", "P=[[1, 2, 3], [4, 5, 6]]"], "holds 7 at [1], outside 0 … 2"),
        (["--at", "y=[1, 0.5]"], "holds 0.5 at [1], not a whole number"),
        (["--at", "y=[-1, 0]"], "holds -1 at [0], outside"),
    ],
)
def test_misuse_is_exit_2_with_a_message(argv, words):
    result = runner.invoke(app, ["derive", PICK, *argv])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output, result.output


def test_an_index_array_as_a_real_operand_is_refused_at_its_place():
    with pytest.raises(UsageError, match="ix is an integer index array .* cannot be an operand of sum") as err:
        derive("ix: (N, T); E: (V, D)\nsum(embedding(ix, E)) + sum(ix)")
    assert (err.value.place.line, err.value.place.col) == (2, 25)
    with pytest.raises(UsageError, match="y is an integer index array"):
        derive("P: (N, C); y: (N,)\nsum(pick(P, y)) * sum(y)", assume={"y": "index:C"})
    with pytest.raises(UsageError, match="indices of embedding must be an integer input variable"):
        derive("ix: (N, T); E: (V, D)\nsum(embedding(ix + 1, E))")
    d = derive("Z: (N, C); E: (C, D)\nsum(embedding(step(Z), E))", verify=True)  # 0/1 indices, no gradient
    assert d.verification.ok, d.verification


@pytest.mark.parametrize(
    "program, words",
    [
        ("ix: (N, T); E: (V, D, 2)\nsum(embedding(ix, E))", "needs a table E of shape (rows, features)"),
        ("P: (N, C); y: (N, C)\nsum(pick(P, y))", "y with one axis fewer than P"),
        ("P: (3, 5); y: (4,)\nsum(pick(P, y))", "does not fit P"),
        ("g: (3, 4); ix: (3, 4)\nsum(scatter_rows(g, ix, 5))", "ix's shape plus one axis of features"),
    ],
)
def test_shapes_that_do_not_fit_are_refused(program, words):
    with pytest.raises(BackstepError, match=words.replace("(", r"\(").replace(")", r"\)")):
        derive(program)


# --- torch.fx ----------------------------------------------------------------------------------------

MODELS = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class BagOfWords(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, ix, y):
        return F.cross_entropy(self.fc(self.embed(ix).mean(dim=1)), y)


class Gathered(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(5, 3))

    def forward(self, ix, y):
        logp = torch.log_softmax(F.embedding(ix, self.table).sum(dim=1), dim=1)
        return -logp.gather(1, y.unsqueeze(1)).squeeze(1).mean()


torch.manual_seed(0)
model = BagOfWords()
gathered = Gathered()
padded = nn.Embedding(7, 4, padding_idx=0)
scaled = nn.Embedding(7, 4, scale_grad_by_freq=True)


def normed(ix, E):
    return F.embedding(ix, E, max_norm=1.0)


def gather_columns(P, ix):
    return torch.gather(P, 0, ix)


class Picked(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, y):
        p = torch.softmax(self.fc(x), dim=1)
        return -torch.log(p[torch.arange(x.shape[0]), y]).mean()


picked = Picked()


def other_rows(P, Q, y):
    return P[torch.arange(Q.shape[0]), y]
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "models.py"
    path.write_text(textwrap.dedent(MODELS), encoding="utf-8")
    return path


def test_bag_of_words_classifier_is_traced_and_matches_the_modules_autograd(models):
    traced = trace_model(f"{models}:model", {"ix": ("N", "T"), "y": ("N",)})
    assert "embedding(ix, embed_weight)" in traced.source and "mean(embed, axis=1)" in traced.source
    d = derive(traced.source, verify=True)
    assert d.verification.ok, d.verification
    module = traced.root
    ix = torch.tensor([[1, 5, 5], [0, 1, 6]])  # N = 2, T = 3: row 5 picked twice
    y = torch.tensor([2, 0])
    module.double().zero_grad()
    module(ix, y).backward()
    env = {
        "ix": ix.double(),
        "y": y.double(),
        "embed_weight": module.embed.weight.detach(),
        "fc_weight": module.fc.weight.detach(),
        "fc_bias": module.fc.bias.detach(),
    }
    sizes = {"N": 2, "T": 3}
    got = Evaluator(env, sizes)(d.gradients["embed_weight"].expr)
    assert torch.allclose(got, module.embed.weight.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(Evaluator(env, sizes)(d.gradients["fc_weight"].expr), module.fc.weight.grad)


def test_gather_of_one_entry_per_row_is_pick(models):
    traced = trace_model(f"{models}:gathered", {"ix": ("N", "T"), "y": ("N",)})
    assert "embedding(ix, table)" in traced.source and "pick(log_softmax_out, y)" in traced.source, traced.source
    d = derive(traced.source, verify=True)
    assert d.verification.ok, d.verification


@pytest.mark.parametrize(
    "name, shapes, words",
    [
        ("padded", {"input": ("N",)}, "padding_idx=0"),
        ("scaled", {"input": ("N",)}, "scale_grad_by_freq=True"),
        ("normed", {"ix": ("N",), "E": (7, 4)}, "max_norm=1.0"),
        ("gather_columns", {"P": (3, 4), "ix": (2, 4)}, "one entry per row of a matrix"),
    ],
)
def test_what_is_more_than_a_lookup_is_refused(models, name, shapes, words):
    with pytest.raises(BackstepError, match=words):
        trace_model(f"{models}:{name}", shapes)


def test_indexing_by_arange_and_an_index_array_is_pick(models):
    traced = trace_model(f"{models}:picked", {"x": ("N", 4), "y": ("N",)})
    assert "pick(softmax_out, y)" in traced.source, traced.source
    d = derive(traced.source, verify=True)
    assert d.verification.ok, d.verification
    with pytest.raises(BackstepError, match="not P's number of rows"):
        trace_model(f"{models}:other_rows", {"P": ("N", 4), "Q": ("M", 2), "y": ("N",)})


def test_is_in_the_catalogue():
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0
    for name in ("embedding(", "scatter_rows(", "pick("):
        assert any(line.startswith(name) for line in result.output.splitlines()), name


@pytest.mark.parametrize(
    "value, words", [("[5,0]", "holds 5 at [0], outside 0 … 2"), ("[0.5,0]", "not a whole number")]
)
def test_class_targets_given_with_at_are_checked(value, words):
    """cross_entropy's class targets (and onehot's) go through the same check as an index array: an
    out-of-range class was a traceback, a fraction was silently truncated."""
    for program in ("z: (2, 3); t: (2,)\ncross_entropy(z, t)", "z: (2, 3); t: (2,)\nsum(onehot(t, 3) * z)"):
        result = runner.invoke(app, ["derive", program, "--at", f"t={value}"])
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output, result.output


def test_subscripts_by_arrays_are_embedding_and_pick():
    """E[ix] is embedding(ix, E) and P[range(N), y] (np.arange, torch.arange) is pick(P, y): the same
    nodes as the function spellings, verified; a range that is not P's rows is refused at its place."""
    lookup = derive("ix: (N, T); E: (V, D)\nsum(E[ix] ** 2)", assume={"ix": "index:V"}, verify=True)
    named = derive("ix: (N, T); E: (V, D)\nsum(embedding(ix, E) ** 2)", assume={"ix": "index:V"}, verify=True)
    assert lookup.verification.ok and str(lookup.gradients["E"].expr) == str(named.gradients["E"].expr)
    for rows, spelled in (("N", "range(N)"), ("N", "np.arange(N)"), ("N", "torch.arange(N)"), ("4", "range(4)")):
        d = derive(f"P: ({rows}, C); y: ({rows},)\nsum(log(P[{spelled}, y]))", verify=True)
        assert d.verification.ok, spelled
        assert "v1 = pick(P, y)" in d.to_text(), d.to_text()
    result = runner.invoke(app, ["derive", "P: (N, C); y: (N,)\nsum(P[range(C), y])"])
    assert result.exit_code == 2 and "K must be P's number of rows" in result.output, result.output
    assert "2:7" in result.output and "Traceback" not in result.output


def test_an_index_array_is_declared_in_the_program():
    """`ix: (N, T) in range(V)` is the program's --assume ix=index:V; --assume still overrides."""
    d = derive("ix: (N, T) in range(V); E: (V, D)\nsum(E[ix] ** 2)", verify=True)
    assert d.verification.ok and "ix" not in d.wrt
    assert next(v for v in d.variables if v.name == "ix").domain == "class_index:V"
    d = derive("y: (N,) in range(5); P: (N, 5)\nsum(log(P[range(N), y]))", verify=True)
    assert d.verification.ok and "y" not in d.wrt
    for bad in ("ix: (N,) in range(0); E: (V, D)\nsum(E[ix])", "ix: (N,) in [1, 2]; E: (V, D)\nsum(E[ix])"):
        result = runner.invoke(app, ["derive", bad])
        assert result.exit_code == 2 and "declared ix: (N, T) in range(V)" in result.output, result.output
        assert "1:13" in result.output


def test_messages_are_printed_as_written():
    """A message holding `:V:` or `:smile:` is printed as is (rich read them as emoji codes: ✌)."""
    result = runner.invoke(app, ["derive", "ix: (N, T) in range(V); E: (W, D)\nsum(E[ix])"])
    assert result.exit_code == 2 and "index:V: V is neither" in result.output, result.output
