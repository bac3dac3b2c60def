"""`--format json`: the schema, and the round trip of every `expr` through backstep's own parser.

Each gradient's `expr` is parsed back with `backstep.parse` (the variables' shapes, plus the seed
`grad_<output>` for a non-scalar output), evaluated by running the parsed graph's ops in torch, and
compared with torch autograd's `.grad` of the formula written directly in torch, at random float64
points, with distinct non-square sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import sympy
from helpers import grad_fn_names
from typer.testing import CliRunner

import backstep
from backstep.cli import app

torch = pytest.importorskip("torch")

runner = CliRunner()

# Distinct, non-square sizes: a missing transpose or a wrong axis cannot hide.
SIZES = {"n": 3, "d": 5, "h": 4, "o": 2}


def derive_json(source: str, *args: str) -> dict:
    result = runner.invoke(app, ["derive", source, "--format", "json", *args])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def concrete(shape) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else SIZES[d] for d in shape)


def draw(shape, domain: str, generator) -> torch.Tensor:
    u = torch.rand(concrete(shape), generator=generator, dtype=torch.float64)
    if domain == "positive":
        return 0.5 + 1.5 * u
    if domain == "nonzero":
        return (0.5 + 1.5 * u) * torch.where(u < 0.5, -1.0, 1.0)
    if domain == "nonnegative":
        return 2.0 * u
    return 4.0 * u - 2.0


def run_graph(graph, env: dict[str, torch.Tensor]) -> torch.Tensor:
    """Evaluate a parsed graph by running each node's torch op: independent of backstep's SymPy."""
    values: dict[int, torch.Tensor] = {}

    def value(node) -> torch.Tensor:
        if node.is_const:  # a number, or an expression of dimension names (`1/n`)
            sizes = {s: sympy.Integer(SIZES[s.name]) for s in node.value.free_symbols}
            return torch.tensor(float(node.value.xreplace(sizes)), dtype=torch.float64)
        return values[node.id]

    for node in graph.nodes:
        if node.kind == "var":
            values[node.id] = env[node.name]
        else:
            values[node.id] = node.op.torch(torch, [value(a) for a in node.inputs], node.params)
    return value(graph.output)


def parse_and_run(expr: str, shapes: dict[str, tuple], env: dict[str, torch.Tensor]) -> torch.Tensor:
    graph = backstep.parse(expr, shapes)
    return run_graph(graph, env)


@dataclass
class Case:
    source: str
    reference: object  # the formula written directly in torch: (dict of tensors) -> tensor
    options: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return " ".join([self.source.replace("\n", "; "), *self.options])


CASES = [
    Case("relu(x@W1)@W2", lambda v: torch.relu(v["x"] @ v["W1"]) @ v["W2"]),
    Case(
        "sum((relu(X@W1)@W2 - Y)**2)",
        lambda v: ((torch.relu(v["X"] @ v["W1"]) @ v["W2"] - v["Y"]) ** 2).sum(),
        ["--shape", "Y=n,o"],
    ),
    Case("sum((relu(X@W1)@W2 - Y)**2)", lambda v: ((torch.relu(v["X"] @ v["W1"]) @ v["W2"] - v["Y"]) ** 2).sum()),
    Case("X @ W.T + b", lambda v: v["X"] @ v["W"].T + v["b"], ["--shape", "b=h"]),
    Case("sin(x**2)*exp(y)", lambda v: torch.sin(v["x"] ** 2) * torch.exp(v["y"])),
    Case(
        "sin(x**2)*exp(y)",
        lambda v: torch.sin(v["x"] ** 2) * torch.exp(v["y"]),
        ["--shape", "x=n,d", "--shape", "y=d"],
    ),
    Case("mean(X, axis=1)", lambda v: v["X"].mean(dim=1)),
    Case("mean(X, axis=-1, keepdims=True)", lambda v: v["X"].mean(dim=-1, keepdim=True)),
    Case("sum(sigmoid(X) * log(X))", lambda v: (torch.sigmoid(v["X"]) * torch.log(v["X"])).sum(), ["--shape", "X=n,d"]),
    Case("sum(sigmoid(X) * log(X))", lambda v: (torch.sigmoid(v["X"]) * torch.log(v["X"])).sum()),
    Case("X: (n, d)\nsum(X, axis=0) / n", lambda v: v["X"].sum(dim=0) / SIZES["n"]),
    Case(
        "H = tanh(X @ W1)\nZ = H @ W2\nL = sum(Z * Z) + sum(H)",
        lambda v: ((torch.tanh(v["X"] @ v["W1"]) @ v["W2"]) ** 2).sum() + torch.tanh(v["X"] @ v["W1"]).sum(),
    ),
]


def autograd(case: Case, data: dict, seed: int):
    """Random inputs (in each variable's domain), the seed, and torch's .grad of each variable."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {v["name"]: draw(v["shape"], v["domain"], generator).requires_grad_(True) for v in data["variables"]}
    out = case.reference(inputs)
    assert tuple(out.shape) == concrete(data["output"]["shape"])
    upstream = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    if data["seed"]["is_one"]:
        upstream = torch.ones((), dtype=torch.float64)
    out.backward(upstream)
    env = {name: t.detach() for name, t in inputs.items()}
    env[data["seed"]["name"]] = upstream
    return env, out.detach(), {name: t.grad for name, t in inputs.items()}


def symbol_shapes(data: dict) -> dict[str, tuple]:
    shapes = {v["name"]: tuple(v["shape"]) for v in data["variables"]}
    shapes[data["seed"]["name"]] = tuple(data["seed"]["shape"])
    return shapes


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gradient_exprs_round_trip_to_autograd(case):
    data = derive_json(case.source, *case.options, "--no-verify")
    assert set(data["dims"]) <= set(SIZES)
    shapes = symbol_shapes(data)
    assert set(data["gradients"]) == {v["name"] for v in data["variables"]}
    for seed in range(3):
        env, _, grads = autograd(case, data, seed)
        for name, gradient in data["gradients"].items():
            assert gradient["in_terms_of_inputs"] is True
            got = parse_and_run(gradient["expr"], shapes, env)
            want_shape = concrete(gradient["shape"])
            assert want_shape == tuple(grads[name].shape)
            got = torch.broadcast_to(got, want_shape)  # the expr may rely on broadcasting
            torch.testing.assert_close(got, grads[name], rtol=1e-10, atol=1e-12, msg=f"{name}: {gradient['expr']}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_output_expr_round_trips_to_the_forward_value(case):
    data = derive_json(case.source, *case.options, "--no-verify")
    env, out, _ = autograd(case, data, seed=11)
    got = parse_and_run(data["output"]["expr"], symbol_shapes(data), env)
    torch.testing.assert_close(torch.broadcast_to(got, out.shape), out, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_step_expr_round_trips(case):
    """The forward steps, then the backward steps (`applied` and `result`), parsed and run in order,
    reproduce the forward value and each variable's .grad."""
    data = derive_json(case.source, *case.options, "--no-verify")
    shapes = symbol_shapes(data)
    env, out, grads = autograd(case, data, seed=5)
    for step in data["forward"]:
        env[step["name"]] = parse_and_run(step["expr"], shapes, env)
        shapes[step["name"]] = tuple(step["shape"])
        assert tuple(env[step["name"]].shape) == concrete(step["shape"])
    torch.testing.assert_close(env[data["output"]["name"]], out, rtol=1e-10, atol=1e-12)
    of_shape = {
        **{v["name"]: v["shape"] for v in data["variables"]},
        **{s["name"]: s["shape"] for s in data["forward"]},
    }
    adjoint = {}
    for step in data["backward"]:
        shape = concrete(of_shape[step["of"]])
        values = []
        for key in ("applied", "result"):
            expr = step[key]["expr"]
            try:
                value = parse_and_run(expr, shapes, env)
            except backstep.ParseError as err:  # a constant (`1`): nothing for the parser to differentiate
                assert "does not depend on any variable" in err.message, err.render()
                value = torch.tensor(
                    float(sympy.sympify(expr).xreplace({sympy.Symbol(k): v for k, v in SIZES.items()}))
                )
                value = value.to(torch.float64)
            values.append(torch.broadcast_to(value, shape))
        torch.testing.assert_close(values[0], values[1], rtol=1e-10, atol=1e-12, msg=f"step {step['index']}")
        env[step["target"]] = values[1]
        shapes[step["target"]] = tuple(of_shape[step["of"]])
        if step["partial"] is None:
            adjoint[step["of"]] = values[1]
    for name, grad in grads.items():
        torch.testing.assert_close(adjoint[name], grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize(
    "source, options",
    [("2 * x", []), ("sum(X) / n", ["--shape", "X=n,d"]), ("sum(X)", ["--shape", "X=n,d"])],
)
def test_constant_gradient_exprs_parse_back(source, options):
    """BUG: the README promises that backstep parses every `expr` back, but a gradient that is a
    constant (`2`, `1 / n`) is refused by `backstep.parse` ("nothing to differentiate")."""
    data = derive_json(source, *options, "--no-verify")
    for gradient in data["gradients"].values():
        backstep.parse(gradient["expr"], symbol_shapes(data), allow_constant=True)


# --- the schema --------------------------------------------------------------------------------------


def test_schema_fields():
    data = derive_json("relu(x@W1)@W2", "--shape", "x=n,d")
    assert data["schema"] == "backstep.derivation/1"
    assert data["input"] == "relu(x@W1)@W2"
    assert set(data) >= {
        "schema",
        "input",
        "output",
        "variables",
        "dims",
        "forward",
        "seed",
        "backward",
        "gradients",
        "at",
        "sizes",
        "verification",
        "notes",
    }
    output = data["output"]
    assert output["name"] == "y" and output["shape"] == ["n", "o"]
    assert set(output) >= {"expr", "latex", "text"}
    assert data["variables"] == [
        {"name": "x", "shape": ["n", "d"], "requires_grad": True, "domain": "real"},
        {"name": "W1", "shape": ["d", "h"], "requires_grad": True, "domain": "real"},
        {"name": "W2", "shape": ["h", "o"], "requires_grad": True, "domain": "real"},
    ]
    assert data["dims"] == ["n", "d", "h", "o"]
    assert [s["op"] for s in data["forward"]] == ["matmul", "relu", "matmul"]
    mm = grad_fn_names("MmBackward0", lambda x, w: x @ w, (3, 4), (4, 5))
    relu = grad_fn_names("ReluBackward0", torch.relu, (3, 5))
    shown = [s["grad_fn"] for s in data["forward"]]
    assert len(shown) == 3 and shown[0] in mm and shown[1] in relu and shown[2] in mm, shown
    for step in data["forward"]:
        assert set(step) >= {"name", "op", "expr", "latex", "text", "shape", "grad_fn", "line", "col"}
        assert "value" not in step
    assert data["forward"][0]["line"] == 1 and data["forward"][0]["col"] == 6  # x@W1 inside relu(...)
    assert data["seed"] == {"name": "grad_y", "shape": ["n", "o"], "is_one": False}
    assert [s["index"] for s in data["backward"]] == list(range(1, len(data["backward"]) + 1))
    for step in data["backward"]:
        assert set(step) >= {"index", "target", "of", "kind", "node", "op", "partial", "rule", "applied", "result"}
        assert step["kind"] in ("rule", "sum")
        assert set(step["applied"]) >= {"expr", "latex", "text"}
        assert set(step["result"]) >= {"expr", "latex", "text"}
        if step["kind"] == "rule":
            assert set(step["rule"]) == {"text", "latex"}
    assert list(data["gradients"]) == ["x", "W1", "W2"]
    for name, shape in (("x", ["n", "d"]), ("W1", ["d", "h"]), ("W2", ["h", "o"])):
        gradient = data["gradients"][name]
        assert set(gradient) >= {"expr", "latex", "text", "shape", "in_terms_of_inputs"}
        assert gradient["shape"] == shape
        assert gradient["in_terms_of_inputs"] is True
        assert "value" not in gradient
    assert data["gradients"]["W2"]["expr"] == "relu(x @ W1).T @ grad_y"
    assert data["at"] is None
    verification = data["verification"]
    assert verification["ok"] is True
    assert verification["points"] == 3 and verification["seed"] == 0 and verification["dtype"] == "float64"
    assert set(verification) >= {"sizes", "gradients", "adjoints", "forward", "grad_fns", "problems"}
    assert {c["name"] for c in verification["gradients"]} == {"x", "W1", "W2"}
    for check in verification["gradients"]:
        assert set(check) >= {"name", "ok", "max_abs_err", "max_rel_err", "detail"}
        assert check["ok"] is True
    assert sorted(verification["sizes"].values()) == sorted(set(verification["sizes"].values()))  # distinct


def test_scalar_output_seed_is_one():
    data = derive_json("x**2 + 3", "--no-verify")
    assert data["seed"] == {"name": "grad_y", "shape": [], "is_one": True}
    assert data["output"]["shape"] == []
    assert data["gradients"]["x"]["expr"] == "2 * x"
    assert data["verification"] is None


def test_values_with_at():
    data = derive_json("x**2 + 3", "--at", "x=2")
    assert data["at"] == {"x": 2.0}
    assert [s["value"] for s in data["forward"]] == [4.0, 7.0]
    assert all("value" in s for s in data["backward"])
    assert data["backward"][-1]["value"] == 4.0
    assert data["gradients"]["x"]["value"] == 4.0
    assert data["verification"]["ok"] is True


def test_values_with_at_for_arrays_agree_with_autograd():
    data = derive_json("relu(x@W1)@W2", "--shape", "x=n,d", "--at", "x=[[1,-2,3],[0.5,1,-1]]", "--seed", "4")
    sizes = data["sizes"]
    assert sizes["n"] == 2 and sizes["d"] == 3
    inputs = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in data["at"].items()}
    assert inputs["x"].tolist() == [[1, -2, 3], [0.5, 1, -1]]
    out = torch.relu(inputs["x"] @ inputs["W1"]) @ inputs["W2"]
    out.backward(torch.ones_like(out))  # --at uses a seed of ones
    for name, t in inputs.items():
        torch.testing.assert_close(torch.tensor(data["gradients"][name]["value"], dtype=torch.float64), t.grad)


def test_wrt_limits_the_gradients():
    data = derive_json("relu(x@W1)@W2", "--wrt", "W1", "--no-verify")
    assert list(data["gradients"]) == ["W1"]
    assert [v["requires_grad"] for v in data["variables"]] == [False, True, False]


def test_json_is_plain_utf8_and_indented():
    result = runner.invoke(app, ["derive", "sigmoid(x)", "--format", "json", "--no-verify"])
    assert result.stdout.startswith("{\n  ")
    assert "σ" in result.stdout  # not escaped as \u03c3
    assert json.loads(result.stdout)["gradients"]["x"]["text"].count("σ") >= 1


def test_notes_in_json():
    data = derive_json("G = sin(x)\nH = cos(x)\nH * 2", "--no-verify")
    assert any("G" in note for note in data["notes"])
