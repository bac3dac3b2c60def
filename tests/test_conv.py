"""Convolution and pooling on 4-d NCHW arrays (issue #3, part 4): conv2d, max_pool2d, avg_pool2d,
flatten, unflatten, reshape and the gradient ops their backward rules are made of.

Every case is checked against torch's *own* functions (torch.nn.functional.conv2d, max_pool2d,
torch.nn.grad.conv2d_input, …) and autograd in float64, at distinct non-square sizes, stride 1 and
2, padding 0 and 1; then backstep's verifier, torch's gradcheck on the op's torch function, the
grad_fn names, the printed notation, the torch code printer, and the LeNet example through the CLI.
"""

from __future__ import annotations

import json
import unicodedata
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TorchConventionWarning, check_grad_fn, grad_fn_names, grad_fn_of, torch_grad_fn
from typer.testing import CliRunner

from backstep import derive, parse
from backstep.cli import app
from backstep.errors import BackstepError, ParseError, ShapeError
from backstep.numeric import Evaluator
from backstep.ops import OPS
from backstep.printing import Printer, to_latex, to_text
from backstep.render import render

T = torch.float64
ROOT = Path(__file__).resolve().parent.parent


def route_ref(g, x, k, s=None):
    """max-pool's gradient the way a torch user writes it: scatter-add to max_pool2d's indices."""
    _, idx = F.max_pool2d(x.detach(), k, s, return_indices=True)
    return torch.zeros_like(x).flatten(2).scatter_add(2, idx.flatten(2), g.flatten(2)).view_as(x)


def gather_ref(u, x, k, s=None):
    _, idx = F.max_pool2d(x.detach(), k, s, return_indices=True)
    return u.flatten(2).gather(2, idx.flatten(2)).view_as(idx)


def spread_ref(g, k, s, size):
    """Each entry copied over its k×k window: a transposed convolution with a kernel of ones."""
    c = g.shape[1]
    out_pad = tuple(size[i] - ((g.shape[2 + i] - 1) * s + k) for i in (0, 1))
    return F.conv_transpose2d(g, g.new_ones(c, 1, k, k), stride=s, groups=c, output_padding=out_pad)


# (formula, shapes of its variables in order, torch's own function of them)
CASES = [
    ("conv2d(x, K)", {"x": (2, 3, 9, 7), "K": (5, 3, 3, 2)}, lambda x, K: F.conv2d(x, K)),
    ("conv2d(x, K, stride=2)", {"x": (2, 3, 9, 8), "K": (5, 3, 3, 2)}, lambda x, K: F.conv2d(x, K, stride=2)),
    ("conv2d(x, K, padding=1)", {"x": (2, 3, 7, 6), "K": (4, 3, 3, 2)}, lambda x, K: F.conv2d(x, K, padding=1)),
    (
        "conv2d(x, K, stride=2, padding=1)",
        {"x": (3, 2, 10, 7), "K": (5, 2, 3, 3)},
        lambda x, K: F.conv2d(x, K, stride=2, padding=1),
    ),
    (
        "conv2d(x, K, stride=(2, 1), padding=(0, 1))",
        {"x": (2, 3, 8, 5), "K": (4, 3, 3, 2)},
        lambda x, K: F.conv2d(x, K, stride=(2, 1), padding=(0, 1)),
    ),
    (
        "conv2d_grad_input(g, K)",
        {"g": (2, 5, 7, 6), "K": (5, 3, 3, 2)},
        lambda g, K: torch.nn.grad.conv2d_input((2, 3, 9, 7), K, g),
    ),
    (
        "conv2d_grad_input(g, K, stride=2, padding=1, size=(10, 7))",
        {"g": (3, 5, 5, 4), "K": (5, 2, 3, 3)},
        lambda g, K: torch.nn.grad.conv2d_input((3, 2, 10, 7), K, g, stride=2, padding=1),
    ),
    (
        "conv2d_grad_weight(x, g)",
        {"x": (2, 3, 9, 7), "g": (2, 5, 7, 6)},
        lambda x, g: torch.nn.grad.conv2d_weight(x, (5, 3, 3, 2), g),
    ),
    (
        "conv2d_grad_weight(x, g, stride=2, padding=1, size=(3, 3))",
        {"x": (3, 2, 10, 7), "g": (3, 5, 5, 4)},
        lambda x, g: torch.nn.grad.conv2d_weight(x, (5, 2, 3, 3), g, stride=2, padding=1),
    ),
    ("max_pool2d(x, 2)", {"x": (2, 3, 6, 4)}, lambda x: F.max_pool2d(x, 2)),
    ("max_pool2d(x, 2)", {"x": (2, 3, 7, 5)}, lambda x: F.max_pool2d(x, 2)),  # floor mode drops a row
    ("max_pool2d(x, 3, stride=2)", {"x": (2, 3, 7, 9)}, lambda x: F.max_pool2d(x, 3, 2)),  # overlapping
    ("max_pool2d(x, (2, 3), stride=1)", {"x": (3, 2, 5, 7)}, lambda x: F.max_pool2d(x, (2, 3), 1)),
    ("avg_pool2d(x, 2)", {"x": (2, 3, 7, 5)}, lambda x: F.avg_pool2d(x, 2)),
    ("avg_pool2d(x, 3, stride=2)", {"x": (2, 3, 8, 7)}, lambda x: F.avg_pool2d(x, 3, 2)),
    ("maxpool_route(g, x, 2)", {"g": (2, 3, 3, 2), "x": (2, 3, 6, 4)}, lambda g, x: route_ref(g, x, 2)),
    ("maxpool_route(g, x, 3, stride=2)", {"g": (2, 3, 3, 4), "x": (2, 3, 7, 9)}, lambda g, x: route_ref(g, x, 3, 2)),
    (
        "maxpool_gather(u, x, 3, stride=2)",
        {"u": (2, 3, 7, 9), "x": (2, 3, 7, 9)},
        lambda u, x: gather_ref(u, x, 3, 2),
    ),
    ("avgpool_spread(g, 2)", {"g": (2, 3, 3, 2)}, lambda g: spread_ref(g, 2, 2, (6, 4))),
    ("avgpool_spread(g, 3, stride=2, size=(8, 7))", {"g": (2, 3, 3, 3)}, lambda g: spread_ref(g, 3, 2, (8, 7))),
    ("flatten(x)", {"x": (2, 3, 4, 5)}, lambda x: x.flatten(1)),
    ("flatten(x, 0, 2)", {"x": (2, 3, 4, 5)}, lambda x: x.flatten(0, 2)),
    ("unflatten(x, 1, (3, 4))", {"x": (2, 12, 5)}, lambda x: x.unflatten(1, (3, 4))),
    ("reshape(x, (-1, 6))", {"x": (2, 3, 4)}, lambda x: x.reshape(-1, 6)),
    ("reshape(x, (4, 5, 3))", {"x": (3, 4, 5)}, lambda x: x.reshape(4, 5, 3)),
]
IDS = [f"{src} {list(shapes.values())}" for src, shapes, _ in CASES]


def values_for(shapes: dict, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen, dtype=T) for name, shape in shapes.items()}


def op_of(source: str):
    return OPS[source.split("(")[0]]


@pytest.mark.parametrize("source, shapes, reference", CASES, ids=IDS)
def test_forward_and_every_gradient_match_torch_autograd(source, shapes, reference):
    d = derive(source, shapes=shapes)
    for seed in range(2):
        values = values_for(shapes, seed)
        leaves = {n: v.clone().requires_grad_(True) for n, v in values.items()}
        out = reference(*leaves.values())
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(9 + seed), dtype=T)
        grads = torch.autograd.grad(out, list(leaves.values()), upstream, allow_unused=True)
        evaluate = Evaluator({**values, d.seed.name: upstream}, {})
        assert tuple(d.seed.shape) == tuple(out.shape)
        assert torch.allclose(evaluate(d.output_expr), out.detach(), rtol=1e-10, atol=1e-10), source
        assert set(d.gradients) == set(shapes)
        for (name, value), want in zip(values.items(), grads):
            want = torch.zeros_like(value) if want is None else want
            got = torch.broadcast_to(evaluate(d.gradients[name].expr), value.shape)
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), f"∂/∂{name} of {source}"


@pytest.mark.parametrize("source, shapes, reference", CASES, ids=IDS)
def test_derivation_verifies(source, shapes, reference):
    d = derive(source, shapes=shapes, verify=True, points=2)
    assert d.verification.ok, (d.verification.first_failure, d.verification.problems)
    assert all(c.ok for c in d.verification.grad_fns)


@pytest.mark.parametrize("source, shapes, reference", CASES, ids=IDS)
def test_grad_fn_name_and_gradcheck(source, shapes, reference):
    op = op_of(source)
    graph = parse(source, shapes)
    node = graph.output
    values = values_for(shapes, 3)
    inputs = [values[n.name].requires_grad_(True) for n in node.inputs]
    out = op.torch(torch, inputs, node.params)
    declared = op.grad_fn_name(tuple(len(s) for s in shapes.values()), (False,) * op.arity, node.params)
    check_grad_fn(declared, grad_fn_of(out), source)
    assert torch.allclose(out, reference(*inputs), rtol=1e-12, atol=1e-12)  # op.torch is torch's function
    # fast mode (random projections of the Jacobian) keeps this quick; test_full_gradcheck is exhaustive
    assert torch.autograd.gradcheck(lambda *xs: op.torch(torch, list(xs), node.params), tuple(inputs), fast_mode=True)


@pytest.mark.parametrize(
    "source, shapes",
    [
        ("conv2d(x, K, stride=2, padding=1)", {"x": (2, 2, 5, 4), "K": (3, 2, 3, 2)}),
        ("conv2d_grad_input(g, K, stride=2, padding=1, size=(5, 4))", {"g": (2, 3, 3, 3), "K": (3, 2, 3, 2)}),
        ("conv2d_grad_weight(x, g, stride=2, padding=1, size=(3, 2))", {"x": (2, 2, 5, 4), "g": (2, 3, 3, 3)}),
        ("maxpool_route(g, x, 3, stride=2)", {"g": (1, 2, 2, 3), "x": (1, 2, 5, 7)}),
        ("maxpool_gather(u, x, 3, stride=2)", {"u": (1, 2, 5, 7), "x": (1, 2, 5, 7)}),
        ("avgpool_spread(g, 3, stride=2, size=(6, 5))", {"g": (1, 2, 2, 2)}),
    ],
)
def test_full_gradcheck(source, shapes):
    node = parse(source, shapes).output
    inputs = tuple(v.requires_grad_(True) for v in values_for(shapes, 4).values())
    assert torch.autograd.gradcheck(lambda *xs: node.op.torch(torch, list(xs), node.params), inputs)


def test_declared_grad_fns_are_torchs():
    x = (2, 3, 6, 4)
    for name, fn, shapes in [
        ("conv2d", F.conv2d, (x, (5, 3, 3, 2))),
        ("max_pool2d", lambda v: F.max_pool2d(v, 2), (x,)),
        ("avg_pool2d", lambda v: F.avg_pool2d(v, 2), (x,)),
        ("flatten", lambda v: v.flatten(1), (x,)),
        ("reshape", lambda v: v.reshape(6, 24), (x,)),
        ("unflatten", lambda v: v.unflatten(1, (6, 4)), ((2, 24),)),
    ]:
        check_grad_fn(OPS[name].grad_fn, torch_grad_fn(fn, *shapes), name)


def test_max_pool_ties_go_to_the_first_maximum_as_in_torch():
    """After a relu whole windows are 0: the gradient goes to a maximum of each window, where torch's
    max_pool2d sends it (away from ties, exactly)."""
    x = torch.relu(torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(0), dtype=T) - 0.8)
    x[0, 0, :2, :2] = 0.0
    x[1, 2, 2:4, 4:6] = 1.5  # a tie at a positive maximum
    g = torch.randn(2, 3, 3, 4, dtype=T)
    leaf = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(F.max_pool2d(leaf, 2), [leaf], g)
    d = derive("max_pool2d(x, 2)", shapes={"x": (2, 3, 6, 8)})
    got = Evaluator({"x": x, d.seed.name: g}, {})(d.gradients["x"].expr)

    def windows(t):  # (2, 3, 3, 4, 4): the four entries of each 2×2 window
        return t.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 3, 3, 4, 4)

    xs, gots, wants = windows(x), windows(got), windows(want)
    maximal = xs == xs.amax(-1, keepdim=True)
    tie = maximal.sum(-1) > 1
    assert tie.sum() >= 2  # the windows of zeros and the tie at 1.5
    assert torch.equal(gots[~tie], wants[~tie])  # one maximum: it takes the gradient
    # a tie: the window's gradient goes to its maxima only, all of it (torch's own choice of which is asked
    # of torch: a different one is a TorchConventionWarning)
    assert torch.equal(gots[tie].sum(-1), g[tie]) and not bool(gots[tie][~maximal[tie]].any())
    if not torch.equal(got, want):
        warnings.warn(
            TorchConventionWarning(
                f"max_pool2d at a tie: backstep routes the gradient unlike torch {torch.__version__}"
            ),
            stacklevel=2,
        )


# --- how the steps read ------------------------------------------------------------------------


def nfc(text: str) -> str:
    """Adjoints print with a combining macron (y + U+0304); compare them as composed characters."""
    return unicodedata.normalize("NFC", text)


def step_results(source: str, shapes: dict, target) -> dict[str, str]:
    d = derive(source, shapes=shapes)
    show = to_text if target == "text" else to_latex
    return {name: nfc(show(g.expr, d.symbols)) for name, g in d.gradients.items()}


@pytest.mark.parametrize(
    "source, shapes, text, latex",
    [
        (
            "conv2d(x, K)",
            {"x": ("N", 3, 8, 6), "K": (4, 3, 3, 2)},
            {"K": "x ⋆ ȳ", "x": "ȳ ∗ rot180(K)"},
            {"K": r"x \star \bar{y}", "x": r"\bar{y} * \operatorname{rot}_{180}\left(K\right)"},
        ),
        (
            "conv2d(x, K, stride=2, padding=1)",
            {"x": ("N", 3, 9, 8), "K": (4, 3, 3, 2)},
            {"K": "pad₁(x) ⋆ dilate₂(ȳ)", "x": "crop₁(dilate₂(ȳ) ∗ rot180(K))"},
            {
                "K": r"\operatorname{pad}_{1}\left(x\right) \star \operatorname{dilate}_{2}\left(\bar{y}\right)",
                "x": r"\operatorname{crop}_{1}\left(\operatorname{dilate}_{2}\left(\bar{y}\right) * "
                r"\operatorname{rot}_{180}\left(K\right)\right)",
            },
        ),
        (
            "max_pool2d(x, 2)",
            {"x": ("N", "C", 6, 4)},
            {"x": "route₂(ȳ → argmax x)"},
            {"x": r"\operatorname{route}_{2}\left(\bar{y} \to \operatorname{argmax} x\right)"},
        ),
        (
            "avg_pool2d(x, 2)",
            {"x": ("N", "C", 6, 4)},
            {"x": "spread₂(ȳ) / 4"},
            {"x": r"\frac{\operatorname{spread}_{2}\left(\bar{y}\right)}{4}"},
        ),
        (
            "flatten(x)",
            {"x": ("N", 3, 4, 2)},
            {"x": "unflatten(ȳ, 1, (3, 4, 2))"},
            {"x": r"\operatorname{unflatten}_{1}\left(\bar{y}, (3, 4, 2)\right)"},
        ),
    ],
)
def test_steps_read_as_the_literature_writes_them(source, shapes, text, latex):
    assert step_results(source, shapes, "text") == {k: nfc(v) for k, v in text.items()}
    assert step_results(source, shapes, "latex") == latex


def test_forward_notation():
    d = derive("x: (N, 3, 8, 6); K: (4, 3, 3, 2)\ny = max_pool2d(relu(conv2d(x, K, stride=1)), 2)")
    assert [to_text(s.expr, d.symbols) for s in d.forward] == ["x ⋆ K", "relu(v1)", "maxpool₂(v2)"]
    d = derive("x: (N, 3, 8, 6); K: (4, 3, 3, 2)\ny = conv2d(x, K, stride=2, padding=1)")
    assert to_text(d.forward[0].expr, d.symbols) == "conv2d(x, K, stride=2, padding=1)"
    assert to_latex(d.forward[0].expr, d.symbols) == r"x \star_{s=2,\,p=1} K"


def test_every_new_op_has_an_index_definition_and_a_torch_printing():
    for name in (
        "conv2d",
        "conv2d_grad_input",
        "conv2d_grad_weight",
        "max_pool2d",
        "maxpool_route",
        "maxpool_gather",
        "avg_pool2d",
        "avgpool_spread",
        "flatten",
        "unflatten",
        "reshape",
    ):
        op = OPS[name]
        assert "[" in op.summary and "]" in op.summary, name  # y[n,c,i,j] = …
        assert op.printing.torch, name


@pytest.mark.parametrize("source, shapes, reference", CASES, ids=IDS)
def test_gradients_print_back_as_formulas_and_as_torch_code(source, shapes, reference):
    """The JSON `expr` (backstep's language) parses back; the torch code gives the same numbers."""
    d = derive(source, shapes=shapes)
    doc = json.loads(render(d, "json"))
    values = values_for(shapes, 5)
    env = {**values, d.seed.name: torch.randn(d.seed.shape, generator=torch.Generator().manual_seed(1), dtype=T)}
    code = Printer("torch", d.symbols)
    for name, g in doc["gradients"].items():
        if g["expr"] != "0":
            parse(g["expr"], {**shapes, d.seed.name: tuple(d.seed.shape)})
        want = torch.broadcast_to(Evaluator(dict(env), {})(d.gradients[name].expr), values[name].shape)
        got = eval(code(d.gradients[name].expr), {"torch": torch, **env})  # our own generated code
        assert torch.allclose(torch.broadcast_to(torch.as_tensor(got, dtype=T), want.shape), want), name


# --- shapes and bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, shapes, message",
    [
        ("conv2d(x, K)", {"x": ("N", 3, "H", "W"), "K": (4, 3, 3, 3)}, "spatial sizes of the input x"),
        ("conv2d(x, K)", {"x": ("N", 3, 8, 8), "K": (4, 2, 3, 3)}, "channels"),
        ("conv2d(x, K)", {"x": ("N", 3, 2, 2), "K": (4, 3, 3, 3)}, "does not fit"),
        ("conv2d(x, K, stride=0)", {"x": ("N", 3, 8, 8), "K": (4, 3, 3, 3)}, "stride must be at least 1"),
        ("conv2d(x, K, stride=(1, 2, 3))", {"x": ("N", 3, 8, 8), "K": (4, 3, 3, 3)}, "pair"),
        ("conv2d(x, K)", {"x": ("N", 3, 8), "K": (4, 3, 3, 3)}, "needs a 4-d input"),
        ("max_pool2d(x)", {"x": ("N", 3, 8, 8)}, "kernel_size is required"),
        ("max_pool2d(x, 3)", {"x": ("N", 3, 2, 8)}, "does not fit"),
        ("flatten(x)", {"x": ("N", "C", 4, 4)}, "must be known integers"),
        ("reshape(x, (5, 5))", {"x": (2, 3, 4)}, "does not have the 25 entries"),
        ("reshape(x, (-1, 5))", {"x": (2, 3, 4)}, "does not fit"),
        ("unflatten(x, 1, (3, 5))", {"x": ("N", 12)}, "cannot be split"),
        ("conv2d_grad_input(g, K, size=(9, 9))", {"g": ("N", 4, 6, 6), "K": (4, 3, 3, 3)}, "not 6×6"),
    ],
)
def test_shape_errors_are_clear(source, shapes, message):
    with pytest.raises(ShapeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        derive(source, shapes=shapes)


def test_tuple_parameters_parse_and_bad_ones_are_rejected():
    assert parse("reshape(x, (-1, 6))", {"x": (2, 3, 4)}).output.params == {"shape": (-1, 6)}
    with pytest.raises(ParseError, match="tuple of integers"):
        parse("reshape(x, (n, 6))", {"x": (2, 3, 4)})
    with pytest.raises(ParseError):
        parse("clamp(x, min=(1, 2))")  # only size-like parameters take tuples


def test_unannotated_images_and_kernels_get_rank_4():
    """Without shapes, x and K are inferred 4-d: the error asks for the spatial sizes, not a rank."""
    with pytest.raises(ShapeError, match="spatial sizes of the input x"):
        derive("sum(conv2d(relu(x), K))")
    with pytest.raises(ShapeError, match="spatial sizes of the kernel K"):
        derive("sum(conv2d(x, K))", shapes={"x": ("n", 3, 8, 6)})
    d = derive("sum(max_pool2d(relu(x), 2))", shapes={"x": ("n", "c", 6, 4)}, verify=True)
    assert d.verification.ok


def test_bad_input_exits_2_without_a_traceback():
    result = CliRunner().invoke(app, ["derive", "conv2d(x, K)", "--shape", "x=N,3,H,W", "--shape", "K=4,3,3,3"])
    assert result.exit_code == 2
    assert "spatial sizes" in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    with pytest.raises(BackstepError):
        derive("reshape(x, (7,))", shapes={"x": (2, 3)})


# --- the LeNet example ----------------------------------------------------------------------------

LENET = ROOT / "examples" / "lenet.bs"


def test_lenet_derives_and_verifies_through_the_cli():
    result = CliRunner().invoke(app, ["derive", "-f", str(LENET)])
    assert result.exit_code == 0, result.output
    out = nfc(result.stdout)
    assert "✓ verified with PyTorch autograd" in out
    for step in (
        "v1 = x ⋆ K1",
        "p1 = maxpool₂(a1)",
        "p̄1 = unflatten(v̄3, 1, (6, 4, 4))",
        "ā1 = route₂(p̄1 → argmax a1)",
        "K̄1 = x ⋆ v̄1",
        "x̄ = v̄1 ∗ rot180(K1)",
        # the rules' letters are none of the program's (x is its input here)
        "y = u ⋆ K ⇒ K̄ = u ⋆ ȳ",
        "y = u ⋆ K ⇒ ū = ȳ ∗ rot180(K)",
    ):
        assert nfc(step) in out, step
    x = (2, 1, 8, 8)
    for names in (
        grad_fn_names("ConvolutionBackward0", F.conv2d, x, (3, 1, 3, 3)),
        grad_fn_names("MaxPool2DWithIndicesBackward0", lambda v: F.max_pool2d(v, 2), x),
        grad_fn_names("ViewBackward0", lambda v: v.flatten(1), x),
        grad_fn_names("NllLossBackward0", lambda v: F.cross_entropy(v, torch.tensor([0, 2])), (2, 3)),
    ):
        assert any(name in out for name in names), names


def test_lenet_gradients_equal_torch_nn_modules():
    """The example's gradients against the seed's own kind of network: nn.Conv2d, nn.MaxPool2d,
    nn.Linear and F.cross_entropy, backpropagated by autograd."""
    d = derive(LENET.read_text(encoding="utf-8"))
    assert set(d.gradients) == {"x", "K1", "c1", "W1", "b1", "W2", "b2"}  # t holds class indices
    torch.manual_seed(0)
    conv, fc1, fc2 = (
        torch.nn.Conv2d(3, 6, 5).double(),
        torch.nn.Linear(96, 20).double(),
        torch.nn.Linear(20, 10).double(),
    )
    x = torch.randn(4, 3, 12, 12, dtype=T, requires_grad=True)
    t = torch.tensor([3, 0, 9, 5])
    h = F.relu(conv(x))
    h = torch.nn.MaxPool2d(2, 2)(h)
    logits = fc2(F.relu(fc1(h.view(-1, 6 * 4 * 4))))
    F.cross_entropy(logits, t).backward()
    env = {
        "x": x.detach(),
        "t": t.to(T),
        "K1": conv.weight.detach(),
        "c1": conv.bias.detach().view(6, 1, 1),
        "W1": fc1.weight.detach(),
        "b1": fc1.bias.detach(),
        "W2": fc2.weight.detach(),
        "b2": fc2.bias.detach(),
    }
    evaluate = Evaluator(env, {"N": 4})
    expected = {
        "x": x.grad,
        "K1": conv.weight.grad,
        "c1": conv.bias.grad.view(6, 1, 1),
        "W1": fc1.weight.grad,
        "b1": fc1.bias.grad,
        "W2": fc2.weight.grad,
        "b2": fc2.bias.grad,
    }
    for name, want in expected.items():
        got = torch.broadcast_to(evaluate(d.gradients[name].expr), want.shape)
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), name
