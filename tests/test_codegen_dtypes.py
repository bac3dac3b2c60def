"""Generated code as a torch user runs it: float32 as well as float64, any device, double
backward, torch.func, an nn.Module, ruff's defaults, and a regenerate command that runs.

- float32: every op example's module runs forward and backward in float32, computes nothing in
  float64 on the way (a constant made in float64 would be cast back silently by autograd), and
  agrees with autograd of the same computation in float32;
- devices: no tensor factory in the Function without a dtype and a device taken from a tensor in
  scope (read from the code's syntax tree: the CPU is all there is here);
- double backward: gradgradcheck passes for every op example, in both styles, and a gradient
  penalty through a LayerNorm-like function equals torch's own (an intermediate saved from
  forward is a constant to autograd: it made that penalty silently off);
- the setup_context style works under torch.func.grad, grad of grad, and vmap;
- every module is clean under `ruff check --isolated` and `ruff format --check --isolated`;
- the docstring's regenerate command, read by a shell (bash) or by shlex, makes the same module.
"""

from __future__ import annotations

import ast
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from typer.testing import CliRunner

import backstep
from backstep import codegen
from backstep.cli import app
from backstep.codegen import generate, load_generated, run_gradcheck
from backstep.numeric import draw_point, run_graph, sample_sizes
from backstep.ops import OPS

EXAMPLES = {name: OPS[name].example for name in sorted(OPS)}
FORMULAS = {
    "cross_entropy with class indices": "X: (n, d); W: (d, c); b: (c,); t: (n,)\ncross_entropy(X @ W + b, t)",
    "trace(A @ B)": "A: (n, k); B: (k, n)\ntrace(A @ B)",
    "eye": "A: (n, n); x: (n,)\nsum((A + 2 * eye(n)) @ x)",
    "onehot times a sum": "t: (n,); Z: (n, c)\nsum(onehot(t, c) * Z * sum(Z))",
    "maximum with a number": "x: (n, d)\nsum(maximum(x, 0.5) * minimum(x, 1) ** 2)",
    "layer norm": "X: (n, d); g: (d,); b: (d,)\nm = mean(X, axis=1, keepdims=True)\nc = X - m\n"
    "v = mean(c ** 2, axis=1, keepdims=True)\ny = c / sqrt(v + 1) * g + b",
    "two layers": "sum((relu(X @ W1) @ W2 - Y) ** 2)",
    "softmax": "X: (n, c); Y: (n, c)\nsum(softmax(X, axis=1) * Y) / n",
}
CASES = {**{f"op {k}": v for k, v in EXAMPLES.items()}, **FORMULAS}
STYLES = ["ctx", "setup_context"]
runner = CliRunner()


def derived(source: str):
    d = backstep.derive(source)
    if not d.wrt:
        pytest.skip("no input takes a gradient")
    return d


def draw(d, dtype, seed: int = 0):
    """Inputs inside their domains (backstep's sampler) in `dtype`; class indices as long."""
    sizes = sample_sizes(d.dims)
    generator = torch.Generator().manual_seed(seed)
    leaves, _ = draw_point(torch, generator, d, sizes, 1)
    xs = []
    for v in d.variables:
        t = leaves[v.name].detach()
        index = v.domain.startswith("class_index")
        xs.append(t.long() if index else t.to(dtype).requires_grad_(v.requires_grad))
    return xs, sizes


class Float64Spy(TorchDispatchMode):
    """Records every operation that makes a float64 tensor."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                self.seen.append(str(func))
        return out


class Float32Reference(TorchFunctionMode):
    """torch in float32 where the op table's own functions (written for backstep's float64
    checks) ask for float64: the reference computation, all in float32."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = {k: torch.float32 if v is torch.float64 else v for k, v in (kwargs or {}).items()}
        args = tuple(torch.float32 if a is torch.float64 else a for a in args)
        return func(*args, **kwargs)


def close32(got, want) -> bool:
    want = want.to(got.dtype)
    scale = max(1.0, float(want.abs().max()) if want.numel() else 0.0)
    return bool(torch.allclose(got, want, rtol=2e-3, atol=2e-4 * scale))


# --- float32 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_float32_forward_and_backward_agree_with_autograd(case, style):
    d = derived(CASES[case])
    module = load_generated(generate(d, "F", style=style).code)
    xs, sizes = draw(d, torch.float32)
    wanted = [x for x, v in zip(xs, d.variables) if v.requires_grad]
    spy = Float64Spy()
    with spy:
        out = module.F.apply(*xs)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(out, wanted, upstream, allow_unused=True, materialize_grads=True)
    assert not spy.seen, f"float64 computed inside a float32 run: {spy.seen}"
    assert out.dtype == torch.float32
    # the same computation by autograd (backstep's graph run in torch), from float32 inputs
    leaves = {v.name: x for v, x in zip(d.variables, xs)}
    with Float32Reference():
        nodes, bad = run_graph(torch, d.graph, leaves, sizes)
    assert bad is None, bad
    ref_out = nodes[d.graph.output.id]
    assert ref_out.dtype == torch.float32
    assert close32(out.detach(), ref_out.detach())
    if ref_out.requires_grad:
        ref = torch.autograd.grad(ref_out, wanted, upstream, allow_unused=True, materialize_grads=True)
    else:  # a comparison: no gradient (zero)
        ref = [torch.zeros_like(x) for x in wanted]
    for x, g, r in zip(wanted, grads, ref):
        assert g.dtype == torch.float32 and g.shape == x.shape
        assert close32(g, r), (g, r)


CONSTANT_FACTORIES = {"eye", "zeros", "ones", "full", "tensor", "arange", "empty", "rand", "randn", "as_tensor"}


def dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def from_a_tensor(node, what: str) -> bool:
    """`X.dtype` / `X.device` (or `torch.get_default_dtype()` for a dtype): taken from a tensor."""
    if isinstance(node, ast.Attribute) and node.attr == what:
        return dotted(node.value) != "torch"
    return what == "dtype" and isinstance(node, ast.Call) and dotted(node.func) == "torch.get_default_dtype"


def factory_problems(code: str) -> list[str]:
    """Tensor factories in the Function's class (and the Module's) without a dtype and a device
    from a tensor in scope; casts to a fixed dtype; `one_hot(...).to(...)` of anything else."""
    problems = []
    classes = [n for n in ast.parse(code).body if isinstance(n, ast.ClassDef)]
    for node in (n for c in classes for n in ast.walk(c)):
        if isinstance(node, ast.Attribute) and dotted(node) in ("torch.float64", "torch.float32", "torch.double"):
            problems.append(f"line {node.lineno}: {dotted(node)}")
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords}
        if name.startswith("torch.") and name.split(".")[-1] in CONSTANT_FACTORIES:
            if not (from_a_tensor(kw.get("dtype"), "dtype") and from_a_tensor(kw.get("device"), "device")):
                problems.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("double", "float", "half", "cpu", "cuda"):
            problems.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node.func, ast.Attribute) and node.func.attr == "to":
            (arg,) = node.args
            ok = isinstance(arg, ast.Name) or from_a_tensor(arg, "dtype")
            if not ok:
                problems.append(f"line {node.lineno}: {ast.unparse(node)}")
    return problems


def test_the_factory_check_finds_a_hard_coded_dtype():
    head = "class F:\n    def f(x, n, t):\n        return "
    bad = head + "torch.eye(n, dtype=torch.float64) + one_hot(t).to(torch.float64)\n"
    problems = factory_problems(bad)
    assert any("torch.eye(" in p for p in problems) and any("one_hot(t).to(" in p for p in problems)
    assert factory_problems(head + "torch.eye(n, dtype=x.dtype)\n")
    assert not factory_problems(head + "torch.eye(n, dtype=x.dtype, device=x.device)\n")


@pytest.mark.parametrize("style", STYLES)
def test_no_tensor_factory_without_a_dtype_and_device_from_an_input(style):
    checked = 0
    for case, source in CASES.items():
        d = backstep.derive(source)
        if not d.wrt:
            continue
        code = generate(d, "F", style=style, module=True).code
        assert factory_problems(code) == [], (case, factory_problems(code))
        checked += 1
    assert checked > 60


# --- double backward --------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_gradgradcheck_passes(case, style):
    d = derived(CASES[case])
    module = load_generated(generate(d, "F", style=style).code)
    xs, _ = draw(d, torch.float64)
    assert torch.autograd.gradgradcheck(module.F.apply, tuple(xs))


def layer_norm_like(X, g, b):
    c = X - X.mean(dim=1, keepdim=True)
    return c / torch.sqrt((c**2).mean(dim=1, keepdim=True) + 1) * g + b


def test_a_gradient_penalty_through_a_layer_norm_is_torchs_own():
    d = backstep.derive(FORMULAS["layer norm"])
    module = load_generated(generate(d, "LN").code)
    gen = torch.Generator().manual_seed(0)
    leaves = [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in ((4, 3), (3,), (3,))]
    upstream = torch.randn(4, 3, generator=gen, dtype=torch.float64)

    def penalty(f):
        xs = [t.clone().requires_grad_() for t in leaves]
        (grad_X,) = torch.autograd.grad(f(*xs), [xs[0]], upstream, create_graph=True)
        (grad_X**2).sum().backward()
        return [torch.zeros_like(x) if x.grad is None else x.grad for x in xs]

    for got, want in zip(penalty(module.LN.apply), penalty(layer_norm_like)):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), (got - want).abs().max()


def test_only_inputs_and_the_output_are_saved():
    d = backstep.derive(FORMULAS["layer norm"])
    code = generate(d, "LN").code
    save = next(line for line in code.splitlines() if "ctx.save_for_backward(" in line)
    assert save.strip() == "ctx.save_for_backward(X, g)"
    assert "recomputed from the saved inputs" in code


# --- the setup_context style: torch.func --------------------------------------------------------------


def test_setup_context_style_under_torch_func():
    source = "X: (n, d); W: (d, h); b: (h,)\nsum(tanh(X @ W + b) ** 2)"
    code = generate(backstep.derive(source), "F", style="setup_context").code
    assert "def forward(X, W, b):" in code and "def setup_context(ctx, inputs, y):" in code
    assert "generate_vmap_rule = True" in code
    F = load_generated(code).F
    gen = torch.Generator().manual_seed(0)
    X, W, b = (torch.randn(s, generator=gen, dtype=torch.float64) for s in ((3, 4), (4, 5), (5,)))

    def reference(W):
        return (torch.tanh(X @ W + b) ** 2).sum()

    def derived_fn(W):
        return F.apply(X, W, b)

    assert torch.allclose(torch.func.grad(derived_fn)(W), torch.func.grad(reference)(W))
    # grad of grad: the backward is differentiable
    got = torch.func.grad(lambda W: torch.func.grad(derived_fn)(W).sum())(W)
    want = torch.func.grad(lambda W: torch.func.grad(reference)(W).sum())(W)
    assert torch.allclose(got, want)
    # vmap of grad over a batch of X
    Xs = torch.randn(6, 3, 4, generator=gen, dtype=torch.float64)
    got = torch.func.vmap(torch.func.grad(lambda X: F.apply(X, W, b)))(Xs)
    want = torch.stack([torch.func.grad(lambda X: (torch.tanh(X @ W + b) ** 2).sum())(x) for x in Xs])
    assert torch.allclose(got, want)


def test_setup_context_style_passes_its_gradcheck_and_stashes_sizes():
    # eye's size is no saved tensor's: setup_context computes it from the inputs
    code = generate(backstep.derive(EXAMPLES["eye"]), "F", style="setup_context").code
    assert run_gradcheck(load_generated(code))[0]
    assert "ctx.n = n" in code


def test_an_unknown_style_is_an_error():
    with pytest.raises(backstep.errors.UsageError):
        generate(backstep.derive("x * y"), "F", style="functional")


# --- the nn.Module wrapper --------------------------------------------------------------------------


def test_the_module_wrapper_applies_the_function():
    d = backstep.derive(EXAMPLES["linear"])
    code = generate(d, "LinearFunction", module=True).code
    assert "class LinearFunctionModule(torch.nn.Module):" in code
    m = load_generated(code)
    layer = m.LinearFunctionModule()
    assert isinstance(layer, torch.nn.Module)
    xs, _ = draw(d, torch.float64)
    out = layer(*xs)
    assert torch.equal(out, m.LinearFunction.apply(*xs))
    assert out.grad_fn is not None and "LinearFunction" in type(out.grad_fn).__name__
    assert run_gradcheck(m)[0]


# --- ruff's defaults ----------------------------------------------------------------------------------


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True, timeout=300)


def test_every_op_example_module_is_clean_under_ruffs_defaults(tmp_path):
    pytest.importorskip("ruff")
    for i, source in enumerate(CASES.values()):
        d = backstep.derive(source)
        if not d.wrt:
            continue
        for style in STYLES:
            code = generate(d, "F", style=style, module=style == "ctx").code
            (tmp_path / f"m{i}_{style}.py").write_text(code, encoding="utf-8")
    for args in (["check", "--isolated"], ["format", "--check", "--isolated"]):
        result = ruff(*args, str(tmp_path))
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


# --- the regenerate command ------------------------------------------------------------------------


def doc_command(code: str) -> str:
    doc = load_generated(code).__doc__
    return doc.split("Regenerate with:\n\n", 1)[1].strip()


def split_by_bash(command: str) -> list[str]:
    """The words of `command` as bash reads them (continuation lines, quotes, $'...')."""
    assert command.startswith("backstep codegen ")
    script = "printf '%s\\0' " + command[len("backstep codegen ") :]
    out = subprocess.run(["bash", "-c", script], capture_output=True, timeout=60, check=True).stdout
    return out.decode("utf-8").split("\0")[:-1]


def split_by_shlex(command: str) -> list[str]:
    """As a POSIX shell reads it: a backslash-newline is no character; then shlex's words."""
    return shlex.split(command.replace("\\\n", ""))[2:]


LONG = ["--shape", "X=batch_size_of_the_examples,number_of_input_features", "--shape", "W=number_of_hidden_units,"]


@pytest.mark.parametrize(
    "args",
    [
        ["X: (n, d); W: (d, h)\n# a comment, with 'quotes' and a \\ backslash\ny = tanh(X @ W)", "-o", "out.py"],
        ["tanh(X @ W)", *LONG[:2], "--shape", "W=number_of_input_features,number_of_hidden_units", "-o", "o.py"],
        ["sum(x * 2)\t", "--name", "Tabbed", "-o", "a file with spaces and a very long name " * 2 + ".py"],
        ["y = x * 2  # a\u2028b", "-o", "out.py"],
    ],
    ids=["multi-line program", "long command", "tab and long file name", "line separator"],
)
def test_the_regenerate_command_regenerates_the_module(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["codegen", *args])
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("-o") + 1])
    first = out.read_text(encoding="utf-8")
    command = doc_command(first)
    assert all(len(line) <= 88 for line in first.splitlines())
    splits = [split_by_shlex(command)] if "$'" not in command else []
    if shutil.which("bash"):
        splits.append(split_by_bash(command))
    assert splits, "no way to read the command here"
    for words in splits:
        assert words == args
        out.unlink()
        result = runner.invoke(app, ["codegen", *words])
        assert result.exit_code == 0, result.output
        assert out.read_text(encoding="utf-8") == first


def test_shell_quote_keeps_the_command_printable():
    for arg in ["plain", "a b", "it's", "a\nb", "tab\there", "\u2028\x85é\\'", '$HOME `x` "q"']:
        quoted = codegen.shell_quote(arg)
        assert quoted.isprintable()
        if shutil.which("bash"):
            assert split_by_bash("backstep codegen " + quoted) == [arg]


def test_the_example_docstring_command_is_the_one_in_the_readme_shape():
    code = Path(__file__).resolve().parent.parent.joinpath("examples/codegen/linear_function.py").read_text()
    command = doc_command(code)
    assert split_by_shlex(command) == [
        "-f",
        "examples/codegen/linear_function.bs",
        "--name",
        "LinearFunction",
        "-o",
        "examples/codegen/linear_function.py",
    ]
