"""`backstep codegen` (a derivation as a torch.autograd.Function), `--check`, `--against`, and
`backstep derive --torch` (a torch model traced into backstep's language).

Every generated module must pass torch's gradcheck in float64 and be clean under ruff, both with
ruff's defaults and with this project's settings; `--against` must catch a broken backward and name
the input; a traced model's derived gradients must equal the model's own autograd gradients.
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import backstep
from backstep import codegen
from backstep.cli import app
from backstep.codegen import generate, load_generated, run_gradcheck
from backstep.errors import BackstepError
from backstep.numeric import Evaluator, draw_point, sample_sizes
from backstep.ops import OPS
from backstep.trace import trace_model

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
runner = CliRunner()
T = torch.float64

# Diverse formulas with distinct, non-square shapes: broadcast biases, reductions, softmax and
# cross-entropy, matrix calculus, parameters, several uses of one variable.
FORMULAS = [
    ("X @ W.T + b", {"X": ("n", "i"), "W": ("o", "i"), "b": ("o",)}),
    ("linear(x, W, b)", {"x": ("n", "i"), "W": ("o", "i"), "b": ("o",)}),
    ("sum((relu(X @ W1) @ W2 - Y) ** 2)", {"Y": ("n", "o")}),
    ("cross_entropy(X @ W + b, t)", {"X": ("n", "d"), "W": ("d", "c"), "b": ("c",), "t": ("n",)}),
    ('cross_entropy(X @ W, P, reduction="sum")', {"X": ("n", "d"), "W": ("d", "c"), "P": ("n", "c")}),
    ("mean(sigmoid(x) * x / 3)", {"x": ("n",)}),
    ("sum(softmax(X, axis=1) * Y) / n", {"X": ("n", "c"), "Y": ("n", "c")}),
    ("sum(log_softmax(X @ W, axis=1) * P)", {"X": ("n", "d"), "W": ("d", "c"), "P": ("n", "c")}),
    ("x**2 + 3", {}),
    ("sin(x**2) * exp(y)", {}),
    ("tanh(X @ W + b) * s", {"X": ("n", "d"), "W": ("d", "h"), "b": ("h",), "s": ()}),
    ("X * c + r", {"X": ("n", "d"), "c": (1, "d"), "r": ("n", 1)}),
    ("sum(log(x) * sqrt(y) / (x + y))", {"x": ("n",), "y": ("n",)}),
    ("logsumexp(Z, axis=1)", {"Z": ("n", "c")}),
    ("mse(X @ W, Y)", {"X": ("n", "d"), "W": ("d", "o"), "Y": ("n", "o")}),
    ("logdet(S) + trace(S @ A)", {"S": ("n", "n"), "A": ("n", "n")}),
    ("inv(A) @ x", {"A": ("n", "n"), "x": ("n",)}),
    ("outer(a, b) * C", {"a": ("n",), "b": ("d",), "C": ("n", "d")}),
    ("mean(X, axis=0) + sum(X, axis=1, keepdims=True)", {"X": ("n", "d")}),
    ("sum(X, keepdims=True) * X", {"X": ("n", "d")}),
    ("clamp(x, min=0) * leaky_relu(x) + elu(x) + gelu(x) + softplus(x)", {"x": ("n", "d")}),
    ("maximum(a, b) - minimum(a, 2 * b)", {"a": ("n", "d"), "b": ("d",)}),
    ("where(a > b, a, 2 * b)", {"a": ("n", "d"), "b": ("n", "d")}),
    ("norm(x) + dot(a, b)", {"x": ("n", "d"), "a": ("n",), "b": ("n",)}),
    ("det(A) * 2**x", {"A": ("n", "n"), "x": ()}),
    ("ctx @ torch + gradcheck", {"ctx": ("n", "d"), "torch": ("d", "h"), "gradcheck": ("h",)}),
]


# --- a generator of random shape-consistent formulas ---------------------------------------------

DECLARED = "X: (n, d); W: (d, h); b: (h,); V: (h, o); Y: (n, o); u: (d,); s: (); t: (n,)"
UNARY = ["tanh({})", "sigmoid({})", "relu({})", "sin({})", "softplus({})", "({}) ** 2", "log(1 + ({}) ** 2)"]


def random_formula(seed: int) -> str:
    """A random formula over X: n×d, W: d×h, b: h, V: h×o, Y: n×o, u: d, s, t (class indices)."""
    rng = random.Random(seed)

    def gen(shape: str, depth: int) -> str:
        leaves = {"nh": "(X @ W)", "nd": "X", "no": "Y"}
        if depth == 0:
            return leaves[shape]
        d = depth - 1
        if shape == "nh":
            options = [
                lambda: f"{gen('nd', d)} @ W",
                lambda: f"{gen('nh', d)} + b",
                lambda: rng.choice(UNARY).format(gen("nh", d)),
                lambda: f"{gen('nh', d)} * {gen('nh', d)}",
                lambda: f"{gen('nh', d)} - s * {gen('nh', d)}",
                lambda: f"{gen('nh', d)} / (1 + {gen('nh', d)} ** 2)",
                lambda: f"softmax({gen('nh', d)}, axis=1)",
                lambda: f"{gen('no', d)} @ V.T",
                lambda: f"sum({gen('nh', d)}, axis=1, keepdims=True) * b",
            ]
        elif shape == "nd":
            options = [
                lambda: "X",
                lambda: rng.choice(UNARY).format(gen("nd", d)),
                lambda: f"{gen('nd', d)} * u",
                lambda: f"{gen('nh', d)} @ W.T",
            ]
        else:
            options = [
                lambda: "Y",
                lambda: f"{gen('nh', d)} @ V",
                lambda: rng.choice(UNARY).format(gen("no", d)),
                lambda: f"{gen('no', d)} + Y * s",
            ]
        return "(" + rng.choice(options)() + ")"

    body = gen("nh", 3)
    out = rng.choice(
        [
            "sum({})",
            "mean({} @ V)",
            "cross_entropy({} @ V, t)",
            "mse({} @ V, Y)",
            "{} @ V",
            "s * sum({} * log(sigmoid({})))",
        ]
    )
    return DECLARED + "\n" + out.format(body, gen("nh", 2))


RANDOM_SEEDS = list(range(20))


# --- helpers -----------------------------------------------------------------------------------------


def module_for(source: str, shapes: dict | None = None, wrt=None, name: str = "F"):
    d = backstep.derive(source, shapes=shapes or {}, wrt=wrt, verify=True)
    assert d.verification.ok, d.verification.first_failure  # a failure here is a bug in derive
    g = generate(d, name)
    return d, g, load_generated(g.code)


def draw_inputs(d, seed: int = 0):
    """Inputs inside their domains (backstep's own sampler), float64, class indices as long."""
    sizes = sample_sizes(d.dims)
    gen = torch.Generator().manual_seed(seed)
    leaves, _ = draw_point(torch, gen, d, sizes, 1)
    xs = []
    for v in d.variables:
        t = leaves[v.name].detach()
        xs.append(t.long() if v.domain.startswith("class_index") else t.clone().requires_grad_(v.requires_grad))
    return xs, sizes


def check_module(d, module, name: str = "F") -> None:
    passed, message = run_gradcheck(module)
    assert passed, message
    # each input's gradient has that input's shape exactly (a broadcast bias included)
    xs, _ = draw_inputs(d)
    out = getattr(module, name).apply(*xs)
    out.backward(torch.randn_like(out))
    for v, x in zip(d.variables, xs):
        if v.requires_grad:
            assert x.grad is not None and x.grad.shape == x.shape, v.name


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


GENERATED: dict[str, str] = {}  # file name -> module text, for the ruff test


# --- generated modules pass gradcheck ---------------------------------------------------------------------


@pytest.mark.parametrize("source, shapes", FORMULAS, ids=[f[0] for f in FORMULAS])
def test_generated_module_passes_gradcheck(source, shapes):
    d, g, module = module_for(source, shapes)
    check_module(d, module)
    GENERATED[f"formula_{FORMULAS.index((source, shapes))}.py"] = g.code


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_formula_module_passes_gradcheck(seed):
    d, g, module = module_for(random_formula(seed))
    check_module(d, module)
    GENERATED[f"random_{seed}.py"] = g.code


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_ops_example_generates_and_passes_gradcheck(name):
    d = backstep.derive(OPS[name].example)
    if not d.wrt:
        pytest.skip("no input takes a gradient")
    g = generate(d, "F")
    passed, message = run_gradcheck(load_generated(g.code))
    assert passed, message
    GENERATED[f"op_{name}.py"] = g.code


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True, timeout=120)


def test_generated_code_is_ruff_clean(tmp_path):
    """Under ruff's defaults (line length 88) and under this project's settings."""
    pytest.importorskip("ruff")
    modules = dict(GENERATED)
    if len(modules) < 10:  # run alone: make them here
        for i, (source, shapes) in enumerate(FORMULAS):
            modules[f"formula_{i}.py"] = generate(backstep.derive(source, shapes=shapes), "F").code
        for seed in RANDOM_SEEDS:
            modules[f"random_{seed}.py"] = generate(backstep.derive(random_formula(seed)), "F").code
    for name, code in modules.items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    rules = ["--select", "E,F,W,I,B,UP"]
    for config in (["--isolated"], ["--config", str(ROOT / "pyproject.toml")]):
        result = ruff("check", *config, *(rules if config == ["--isolated"] else []), str(tmp_path))
        assert result.returncode == 0, result.stdout[-4000:]
        result = ruff("format", "--check", *config, str(tmp_path))
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_generated_module_runs_as_a_script(tmp_path):
    code = generate(backstep.derive("relu(x @ W1) @ W2"), "TwoLayer").code
    path = tmp_path / "two_layer.py"
    path.write_text(code, encoding="utf-8")
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "gradcheck passed" in result.stdout


# --- what the module looks like -------------------------------------------------------------------------


def test_backward_is_written_step_by_step_with_the_derivation_as_comments():
    d, g, _ = module_for("relu(x @ W1) @ W2")
    code = nfc(g.code)
    assert "def forward(ctx, x, W1, W2):" in code
    assert "ctx.save_for_backward(" in code
    assert "grad_v2 = grad_y @ W2.T" in code
    assert nfc("# 2. v̄2 = ȳ W2ᵀ   (y = v2 W2)") in code
    assert "grad_v1 = grad_v2 * (v1 > 0).to(v1.dtype)" in code
    assert "return grad_x, grad_W1, grad_W2" in code
    body = code[code.index("def backward(") + 1 : code.index("def gradcheck(")]
    assert ".backward(" not in body and "autograd" not in body  # plain torch ops, never autograd
    assert "def gradcheck(seed=0):" in code


def test_needs_input_grad_skips_what_is_not_asked_for():
    d, g, module = module_for("relu(x @ W1) @ W2")
    assert "need_x, need_W1, need_W2 = ctx.needs_input_grad" in g.code
    assert "if need_W2:" in g.code and "if need_x or need_W1:" in g.code
    xs, _ = draw_inputs(d)
    x, W1, W2 = (t.detach() for t in xs)
    W2.requires_grad_()
    module.F.apply(x, W1, W2).sum().backward()
    reference = (torch.relu(x @ W1).T @ torch.ones(x.shape[0], W2.shape[1], dtype=T)).detach()
    assert torch.allclose(W2.grad, reference)


def test_wrt_and_class_indices_get_none():
    d, g, module = module_for("cross_entropy(X @ W, t)", {"X": ("n", "d"), "W": ("d", "c"), "t": ("n",)}, wrt=["W"])
    assert "return None, grad_W, None" in g.code
    xs, _ = draw_inputs(d)
    grads = torch.autograd.grad(module.F.apply(*xs), [xs[1]])
    assert grads[0].shape == xs[1].shape


def test_broadcast_bias_gets_its_own_shape():
    source = "X: (n, d); W: (d, h); b: (h,); c: (1, h); s: ()\ntanh(X @ W + b) * c + s"
    d, g, module = module_for(source)
    xs, _ = draw_inputs(d)
    out = module.F.apply(*xs)
    out.backward(torch.randn_like(out))
    assert [tuple(x.grad.shape) for x in xs] == [tuple(x.shape) for x in xs]
    assert xs[4].grad.shape == ()
    # the sums over the broadcast axes are steps of the derivation, not something added afterwards
    assert "torch.sum(" in g.code


def test_scalar_output_takes_the_upstream_gradient():
    d, g, module = module_for("sum(x ** 3)", {"x": ("n",)})
    x = torch.tensor([1.0, 2.0], dtype=T, requires_grad=True)
    module.F.apply(x).backward(torch.tensor(5.0, dtype=T))
    assert torch.allclose(x.grad, 5 * 3 * x.detach() ** 2)


def test_long_lines_are_split_into_named_parts():
    source = "Z: (batch_size, number_of_classes); t: (batch_size,)\nloss = cross_entropy(Z * Z + Z, t)"
    _, g, module = module_for(source)
    assert all(len(line) <= 88 for line in g.code.splitlines())
    assert "t1 = " in g.code
    assert run_gradcheck(module)[0]


def test_names_that_clash_with_the_module_are_renamed():
    _, g, module = module_for("ctx @ torch + gradcheck", {"ctx": ("n", "d"), "torch": ("d", "h"), "gradcheck": ("h",)})
    assert "def forward(ctx, ctx_, torch_, gradcheck_):" in g.code
    assert run_gradcheck(module)[0]


def test_unknown_class_name_is_an_error():
    d = backstep.derive("x * y")
    with pytest.raises(BackstepError):
        generate(d, "not a name")


# --- the seed's LinearFunction, regenerated ---------------------------------------------------------


LINEAR_BS = EXAMPLES / "codegen" / "linear_function.bs"
LINEAR_PY = EXAMPLES / "codegen" / "linear_function.py"
SEED_LINEAR = EXAMPLES / "codegen" / "seed_linear_function.py"


def import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_linear_function_example_is_up_to_date():
    bs, py = Path("examples/codegen/linear_function.bs"), Path("examples/codegen/linear_function.py")
    command = codegen.regenerate_command(None, bs, None, [], None, [], "LinearFunction", py)
    d = backstep.derive(LINEAR_BS.read_text(encoding="utf-8"))
    got = generate(d, "LinearFunction", command=command).code
    assert got == LINEAR_PY.read_text(encoding="utf-8"), f"regenerate the example: {command}"


def test_linear_function_example_has_the_seeds_three_gradients():
    """Seed 004's hand-written backward: grad_output.mm(weight), grad_output.t().mm(input), sum(0)."""
    code = LINEAR_PY.read_text(encoding="utf-8")
    assert "grad_X = grad_output @ W" in code
    assert "grad_W = grad_output.T @ X" in code
    assert "grad_b = torch.sum(grad_output, dim=0)" in code
    module = import_file(LINEAR_PY, "generated_linear_function")
    assert module.gradcheck()
    X = torch.randn(4, 3, dtype=T, requires_grad=True)
    W = torch.randn(5, 3, dtype=T, requires_grad=True)
    b = torch.randn(5, dtype=T, requires_grad=True)
    g = torch.randn(4, 5, dtype=T)
    module.LinearFunction.apply(X, W, b).backward(g)
    assert torch.allclose(X.grad, g.mm(W.detach()))
    assert torch.allclose(W.grad, g.t().mm(X.detach()))
    assert torch.allclose(b.grad, g.sum(0))


# --- the command: --check, --against ---------------------------------------------------------------


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_codegen_prints_the_module():
    result = invoke("codegen", "X @ W.T + b", "--shape", "b=o")
    assert result.exit_code == 0, result.output
    assert "class DerivedFunction(torch.autograd.Function):" in result.stdout
    compile(result.stdout, "<generated>", "exec")


def test_check_passes_with_exit_0(tmp_path):
    out = tmp_path / "my_layer.py"
    result = invoke("codegen", "tanh(X @ W + b)", "--shape", "b=h", "-o", str(out), "--check")
    assert result.exit_code == 0, result.output
    assert "✓ gradcheck passed" in result.stderr
    assert "class MyLayerFunction(torch.autograd.Function):" in out.read_text(encoding="utf-8")


def test_check_fails_with_exit_1_when_the_backward_is_wrong(monkeypatch):
    real = codegen.generate

    def broken(*args, **kwargs):
        g = real(*args, **kwargs)
        g.code = g.code.replace("grad_X = grad_v2 @ v1.T", "grad_X = grad_v2 @ v1.T * 2")
        return g

    monkeypatch.setattr(codegen, "generate", broken)
    result = invoke("codegen", "X @ W.T + b", "--shape", "b=o", "--check")
    assert result.exit_code == 1, result.output
    assert "✗ gradcheck failed" in result.stderr


def test_codegen_bad_input_exits_2():
    for args in (["x @"], ["x", "--wrt", "y"], ["x * y", "--name", "no way"], ["x", "--against", "nofile.py:F"]):
        result = invoke("codegen", *args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output


BROKEN = '''
import torch


class MissingTranspose(torch.autograd.Function):
    """X @ W.T + b, with W's transpose forgotten in grad_input (shapes: a RuntimeError)."""

    @staticmethod
    def forward(ctx, X, W, b):
        ctx.save_for_backward(X, W)
        return X @ W.T + b

    @staticmethod
    def backward(ctx, g):
        X, W = ctx.saved_tensors
        grad_X = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_X = g @ W.T
        if ctx.needs_input_grad[1]:
            grad_W = g.T @ X
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_X, grad_W, grad_b


class SilentlyWrong(torch.autograd.Function):
    """X @ W with W square: the missing transpose has the right shape and the wrong numbers."""

    @staticmethod
    def forward(ctx, X, W):
        ctx.save_for_backward(X, W)
        return X @ W

    @staticmethod
    def backward(ctx, g):
        X, W = ctx.saved_tensors
        return g @ W, X.T @ g


class Right(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, W):
        ctx.save_for_backward(X, W)
        return X @ W

    @staticmethod
    def backward(ctx, g):
        X, W = ctx.saved_tensors
        return g @ W.T, X.T @ g


class TooFew(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X):
        return X

    @staticmethod
    def backward(ctx, g):
        return g


def not_a_function(x):
    return x
'''


@pytest.fixture
def user_file(tmp_path) -> Path:
    path = tmp_path / "mine.py"
    path.write_text(BROKEN, encoding="utf-8")
    return path


def test_against_catches_a_missing_transpose(user_file):
    result = invoke("codegen", "X @ W.T + b", "--shape", "b=o", "--against", f"{user_file}:MissingTranspose")
    assert result.exit_code == 1, result.output
    out = nfc(result.stdout)
    assert "✗ input 1 X: the gradient differs" in out
    assert nfc("derived: ∂L/∂X = ȳ W") in out and "as code: grad_y @ W" in out
    assert "✓ input 2 W: gradients agree" in out
    assert "✓ input 3 b: gradients agree" in out


def test_against_catches_a_silently_wrong_gradient(user_file):
    result = invoke(
        "codegen", "X @ W", "--shape", "X=n,d", "--shape", "W=d,d", "--against", f"{user_file}:SilentlyWrong"
    )
    assert result.exit_code == 1, result.output
    assert "✗ input 1 X: the gradient differs: max abs err" in result.stdout
    assert nfc("derived: ∂L/∂X = ȳ Wᵀ") in nfc(result.stdout)
    assert "✓ input 2 W" in result.stdout


def test_against_a_right_backward_exits_0(user_file):
    result = invoke("codegen", "X @ W", "--shape", "X=n,d", "--shape", "W=d,d", "--against", f"{user_file}:Right")
    assert result.exit_code == 0, result.output
    assert "backward agrees with the derivation" in result.stdout


def test_against_the_seeds_linear_function_agrees():
    result = invoke(
        "codegen", "-f", str(LINEAR_BS), "--against", f"{SEED_LINEAR}:LinearFunction", "--points", "2", "--seed", "3"
    )
    assert result.exit_code == 0, result.output
    assert "✓ input 1 X (input)" in result.stdout and "✓ input 3 b (bias)" in result.stdout


def test_against_bad_targets_exit_2(user_file):
    for target in ("not_a_function", "TooFew", "Missing"):
        result = invoke("codegen", "X @ W", "--against", f"{user_file}:{target}")
        assert result.exit_code == 2, (target, result.output)
        assert "Traceback" not in result.output


# --- derive --torch ----------------------------------------------------------------------------------


def derive_cli(*args: str):
    return runner.invoke(app, ["derive", *args])


def test_two_layer_net_module_derives_and_verifies():
    result = derive_cli(
        "--torch", f"{EXAMPLES / 'two_layer_net_module.py'}:loss_model", "-s", "x=N,1000", "-s", "y=N,10"
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "✓ verified with PyTorch autograd" in out
    assert "model.linear1.weight" in out and "model.linear2.weight" in out
    assert "loss = sum((model_linear2 - y) ** 2)" in out


MODELS = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 4)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(4, 3, bias=False)

    def forward(self, x, t):
        return F.cross_entropy(self.fc2(self.act(self.fc1(x))), t, reduction="sum")


class Nll(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.loss = nn.NLLLoss(reduction="sum")

    def forward(self, x, t):
        return F.nll_loss(F.log_softmax(self.fc(x), dim=1), t) + self.loss(self.fc(x).log_softmax(-1), t)


class Params(nn.Module):
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(6, 3))

    def forward(self, x, y):
        h = torch.sigmoid(x @ self.W)
        z = h.t()
        return F.mse_loss(z.T * 2.0 - 1.0, y) + torch.transpose(h, 0, 1).sum()


class Reductions(nn.Module):
    def forward(self, x):
        a = (torch.exp(-x**2).sum(dim=1, keepdim=True) * x).mean(dim=0).sum()
        return a + torch.logsumexp(x, dim=1).sum() + x.mean() / 2 + torch.sum(x, dim=(0, 1))


class Activations(nn.Module):
    def forward(self, x):
        y = F.softmax(x, dim=-1) * torch.log(torch.sigmoid(x)) + F.softplus(x) + F.gelu(x)
        y = y + F.leaky_relu(x, 0.2) + F.elu(x) + torch.clamp(x, min=-0.5, max=0.5) + torch.tanh(x).neg()
        return (y * F.log_softmax(x, dim=1)).sum()


class Reshapes(nn.Module):
    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        a = x.view(x.size(0), -1)
        b = x.reshape(-1, 12)
        c = torch.flatten(x, 1)
        return self.fc(a + b * c + self.flat(x))


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x))).flatten(1).sum(dim=1)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.drop = nn.Dropout(0.5)
        self.register_buffer("scale", torch.full((4,), 0.5))

    def forward(self, x):
        return (self.drop(torch.tanh(self.fc(x))) * self.scale).sum()


mixed = Mixed().eval()


def function(x, W1, W2):
    return torch.tanh(x @ W1).matmul(W2).pow(2).sum()


class Cumsum(nn.Module):
    def forward(self, x):
        h = x * 2
        h = torch.cumsum(h, dim=1)
        return h.sum()


class NllOfProbabilities(nn.Module):
    def forward(self, x, t):
        return F.nll_loss(torch.log(torch.softmax(x, dim=1)), t)


class Transpose3d(nn.Module):
    def forward(self, x):
        return x.transpose(0, 1).sum()  # backstep's .T only on a matrix (transpose(1, 2) is swapaxes)


class Pair(nn.Module):
    def forward(self, x):
        return x, x


class NeedsArgs(nn.Module):
    def __init__(self, n):
        super().__init__()

    def forward(self, x):
        return x.sum()


class SizeAsNumber(nn.Module):
    def forward(self, x):
        return x.sum() / x.shape[1]
"""

TORCH_CASES = [
    ("Mlp", {"x": ("N", 6), "t": ("N",)}),
    ("Nll", {"x": ("N", 6), "t": ("N",)}),
    ("Params", {"x": ("N", 6), "y": ("N", 3)}),
    ("Reductions", {"x": ("N", "D")}),
    ("Activations", {"x": ("N", "D")}),
    ("Reshapes", {"x": ("N", 3, 2, 2)}),
    ("Conv", {"x": ("N", 2, 8, 8)}),
    ("mixed", {"x": ("N", 6)}),
    ("function", {"x": ("n", "d"), "W1": ("d", "h"), "W2": ("h", "o")}),
]


@pytest.fixture
def models_file(tmp_path) -> Path:
    path = tmp_path / "models.py"
    path.write_text(MODELS, encoding="utf-8")
    return path


@pytest.mark.parametrize("name, shapes", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_traced_model_gradients_equal_the_models_own(models_file, name, shapes):
    """The program the tracer writes means what the model computes: backstep's gradients, evaluated
    at the model's own parameters, equal autograd's on the model itself."""
    traced = trace_model(f"{models_file}:{name}", shapes)
    d = backstep.derive(traced.source, wrt=traced.wrt, verify=True)
    assert d.verification.ok, (traced.source, d.verification.first_failure)
    root = traced.root
    if isinstance(root, torch.nn.Module):
        root.double()
    sizes = sample_sizes(d.dims)
    gen = torch.Generator().manual_seed(1)
    inputs, env = [], {}
    for program_name in traced.inputs:
        shape = tuple(
            s if isinstance(s, int) else sizes[s] for s in shapes[traced.display.get(program_name, program_name)]
        )
        if program_name == "t":
            value = torch.randint(3, shape, generator=gen)
        else:
            value = (torch.rand(shape, generator=gen, dtype=T) * 4 - 2).requires_grad_()
        inputs.append(value)
        env[program_name] = value.detach().to(T)
    params = {}
    for program_name, model_name in traced.display.items():
        if program_name in traced.inputs:
            continue
        tensor = root.get_parameter(model_name) if model_name in dict(root.named_parameters()) else None
        if tensor is None:
            tensor = root.get_buffer(model_name)
        params[program_name] = tensor
        env[program_name] = tensor.detach()
    out = root(*inputs)
    upstream = torch.rand(out.shape, generator=gen, dtype=T) if out.dim() else torch.tensor(1.0, dtype=T)
    env[d.seed.name] = upstream
    out.backward(upstream)
    evaluate = Evaluator(env, sizes)
    for var in d.wrt:
        got = torch.broadcast_to(evaluate(d.gradients[var].expr), env[var].shape)
        tensor = params.get(var)
        if tensor is None:
            tensor = inputs[traced.inputs.index(var)]
        assert torch.allclose(got, tensor.grad, rtol=1e-9, atol=1e-11), (name, var)


def test_unmapped_op_names_the_op_and_the_models_line(models_file):
    result = derive_cli("--torch", f"{models_file}:Cumsum", "-s", "x=N,4")
    assert result.exit_code == 2, result.output
    line = MODELS.splitlines().index("        h = torch.cumsum(h, dim=1)") + 1
    assert "torch.cumsum" in result.stderr
    assert f"models.py:{line}" in result.stderr
    assert "h = torch.cumsum(h, dim=1)" in result.stderr and "^^^^^^" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "name, shape, words",
    [
        ("Transpose3d", "x=N,3,4", ["swaps two axes of an array of rank 3"]),
        ("NllOfProbabilities", "x=N,3;t=N", ["torch.nn.functional.nll_loss", "except as nll_loss(log_softmax"]),
        ("Pair", "x=N,3", ["must return one tensor"]),
        ("NeedsArgs", "x=N,3", ["needs arguments", "model = NeedsArgs(...)"]),
        ("SizeAsNumber", "x=N,3", ["uses a tensor's size as a number"]),
        ("Mlp", "z=N,6", ["give the shape of", "input x"]),
        ("Nothing", "x=N,3", ["has no Nothing"]),
    ],
)
def test_torch_bad_models_exit_2(models_file, name, shape, words):
    result = derive_cli("--torch", f"{models_file}:{name}", "-s", shape)
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_torch_and_a_formula_together_is_an_error(models_file):
    result = derive_cli("x * 2", "--torch", f"{models_file}:Mlp")
    assert result.exit_code == 2
    assert "not both" in result.stderr


def test_codegen_from_a_traced_model(models_file, tmp_path):
    out = tmp_path / "mlp_function.py"
    result = runner.invoke(
        app, ["codegen", "--torch", f"{models_file}:Mlp", "-s", "x=N,6", "-s", "t=N", "-o", str(out), "--check"]
    )
    assert result.exit_code == 0, result.output
    code = out.read_text(encoding="utf-8")
    assert "def forward(ctx, x, fc1_weight, fc1_bias, fc2_weight, t):" in code
    assert "✓ gradcheck passed" in result.stderr


def test_lenet_module_derives_like_lenet_bs():
    """The LeNet of lenet.bs, as an nn.Module traced by torch.fx, derives and verifies."""
    result = derive_cli(
        "--torch", f"{EXAMPLES / 'lenet_module.py'}:loss_model", "-s", "x=N,3,12,12", "-s", "t=N", "--points", "1"
    )
    assert result.exit_code == 0, result.output
    out = nfc(result.stdout)
    assert "✓ verified with PyTorch autograd" in out
    for text in ("net.conv1.weight", "maxpool₂", "reshape(net_pool, (-1, 96))", "loss = cross_entropy(net_fc2, t)"):
        assert text in out, text


def test_generated_lenet_module_passes_gradcheck(tmp_path):
    """The CNN ops' torch code (convolutions, the max-pool's route) through codegen."""
    d = backstep.derive((EXAMPLES / "lenet.bs").read_text(encoding="utf-8"))
    g = generate(d, "LeNetFunction")
    passed, message = run_gradcheck(load_generated(g.code))
    assert passed, message
    GENERATED["lenet.py"] = g.code


def test_formula_generator_is_deterministic_and_diverse():
    formulas = [random_formula(s) for s in RANDOM_SEEDS]
    assert formulas == [random_formula(s) for s in RANDOM_SEEDS]
    assert len(set(formulas)) == len(formulas)
    assert textwrap.dedent(formulas[0]).startswith("X: (n, d)")
