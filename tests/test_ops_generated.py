"""Tests generated from the op table: every op in ``OPS`` gets them without anyone writing a line.

For each op the cases are found by probing the op's own shape rule with a pool of concrete shapes
(scalars, vectors, matrices, a rank-3 array, broadcasting shapes with size-1 axes) of distinct
sizes, so that no matrix is square and no dimension equals another unless the op demands it (a
missing transpose cannot hide); with every value of its keyword parameters and, for elementwise
ops of several inputs, constant operands. For every case:

- ``derive(..., verify=True)`` must verify;
- independently of backstep's verifier, the op's torch function (``op.torch``, float64, inputs
  drawn inside the op's domain) is backpropagated by autograd with a random upstream gradient and
  compared with backstep's symbolic forward value and gradients, evaluated by
  ``backstep.numeric.Evaluator``;
- the declared grad_fn (``op.grad_fn_name``) exists exactly where torch gives one, and
  ``ForwardStep.grad_fn`` is the table's name or torch's (a name torch changed is a warning);
- ``torch.autograd.gradcheck`` passes on the op's torch function, for a differentiable op;
- the derivation renders as text and JSON, and the JSON gradients parse back.

An op whose spelling, domain or parameters cannot be exercised generically must be named in
``EXPLICIT_SPELLINGS`` or ``PARAM_VALUES`` (tests/helpers.py, shared with the property tests) or in
``NOT_GENERIC`` here, with the reason; the coverage tests fail for a new op that is neither generated
nor listed. The derivative at a kink is checked against the installed torch (``helpers.check_kink``).
"""

from __future__ import annotations

import ast
import itertools
import json
from dataclasses import dataclass

import pytest
import torch
from helpers import (
    EXPLICIT_SPELLINGS,
    INDICATOR_INPUTS,
    check_grad_fn,
    check_kink,
    kink_cases,
    number_in_domain,
    param_candidates,
    pow_base_domain,
    spell,
)

from backstep import derive, parse
from backstep.numeric import Evaluator
from backstep.ops import OPS, Op
from backstep.render import render
from backstep.shapes import ShapeEnv, ShapeMismatch

# --- what the generator knows ----------------------------------------------------------------------

# Ops that get no generated tests, with the reason (their declared example is still derived).
NOT_GENERIC: dict[str, str] = {
    "broadcast_to": "its parameter is a target shape that depends on the operand's: tests/test_broadcast_to.py",
    "eye": "takes no input: eye(n) is a constant array, so a formula of it alone has nothing to differentiate",
    **dict.fromkeys(("embedding", "scatter_rows", "pick"), "integer index operands: tests/test_indexing.py"),
    **dict.fromkeys(
        "conv2d conv2d_grad_input conv2d_grad_weight max_pool2d maxpool_route maxpool_gather avg_pool2d "
        "avgpool_spread flatten unflatten reshape".split(),
        "4-d NCHW images with integer spatial sizes, int-or-pair and tuple parameters: tests/test_conv.py",
    ),
    "addmm": "x (n, i) and W (i, o) share their inner size, which the pools do not pair: tests/test_layers.py",
    **dict.fromkeys(
        "slice select pad chunk split".split(),
        "bounds and parts that depend on the operand's sizes: tests/test_joins.py",
    ),
}

# Domains (ops.Op.domain) this file can draw inputs from; an op declaring another one is not covered.
KNOWN_DOMAINS = {
    None,
    "positive",
    "nonzero",
    "off_kink",
    "off_pole",
    "pow_base",
    "off_bounds",
    "off_tie",
    "invertible",
    "spd",
    "class_index",
    "targets",
}
NOT_DIFFERENTIABLE_DOMAINS = ("class_index",)  # integer inputs: torch takes them as LongTensors

# Concrete shapes probed against each op's shape rule: sizes 2, 3, 5, 7 (4 is the class count);
# a square (5, 5) is used only where the op demands a square matrix.
SHAPES_1 = [(), (5,), (3, 5), (2, 3, 5), (5, 5)]
SHAPES_N = [(3, 5), (5,), (), (3, 1), (1, 5), (5, 7), (7,), (7, 5), (3,), (2, 3, 5), (5, 5)]
SHAPES_3 = [(3, 5), (5,), (), (7, 5), (7,)]
CONSTANTS = [3, 2.5, -2]  # constant operands of elementwise ops: an integer, a fraction, a negative
MAX_CASES_PER_OP = 48


def _verifies(source: str, shapes: dict) -> None:
    """Derives and verifies: every gradient checked, and every check passed."""
    d = derive(source, shapes=shapes, verify=True)
    v = d.verification
    assert v.ok, (source, v.first_failure, v.problems)
    assert {g.name for g in v.gradients} == set(d.gradients) and v.gradients, (source, v.gradients)


def _json_gradient_parses_back(source: str, shapes: dict, name: str) -> None:
    d = derive(source, shapes=shapes)
    text = json.loads(render(d, "json"))["gradients"][name]["expr"]
    parse(f"({text}) + 0 * probe", {**shapes, d.seed.name: d.seed.shape, "probe": ()})


def _output_expr_in_inputs(source: str, shapes: dict) -> None:
    symbols = {s.name for s in derive(source, shapes=shapes).output_expr.free_symbols}
    assert symbols <= set(shapes), symbols


def _printed_output_is_the_output() -> None:
    shapes = {"a": (1, 3), "b": (2, 3)}
    printed = json.loads(render(derive("sum(a + (b - b))", shapes=shapes), "json"))["output"]["expr"]
    a, b = torch.rand(1, 3, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64)
    value = Evaluator({"a": a, "b": b}, {})(derive(printed, shapes=shapes).output_expr)
    assert torch.allclose(value, (a + (b - b)).sum()), (printed, value)


# --- cases -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    op_name: str
    inputs: tuple  # per input: ("var", name, shape) or ("const", value)
    params: tuple  # ((keyword, value), ...) in the op's parameter order
    out_shape: tuple

    @property
    def op(self) -> Op:
        return OPS[self.op_name]

    @property
    def param_dict(self) -> dict:
        return dict(self.params)

    @property
    def ranks(self) -> tuple:
        return tuple(len(i[2]) if i[0] == "var" else 0 for i in self.inputs)

    @property
    def consts(self) -> tuple:
        return tuple(i[0] == "const" for i in self.inputs)

    @property
    def variables(self) -> list[tuple[int, str, tuple]]:
        return [(k, i[1], i[2]) for k, i in enumerate(self.inputs) if i[0] == "var"]

    @property
    def shapes(self) -> dict:
        return {name: shape for _, name, shape in self.variables}

    def domain(self, k: int) -> str | None:
        return input_domain(self.op, k, self.inputs, self.param_dict)

    @property
    def differentiable_inputs(self) -> list[str]:
        return [name for k, name, _ in self.variables if not str(self.domain(k)).startswith(NOT_DIFFERENTIABLE_DOMAINS)]

    @property
    def source(self) -> str:
        return spell(self.op, [operand_text(i) for i in self.inputs], self.params)

    @property
    def id(self) -> str:
        shapes = ",".join(str(i[2]).replace(" ", "") if i[0] == "var" else "const" for i in self.inputs)
        return f"{self.op_name}[{shapes}] {self.source}"


def operand_text(inp) -> str:
    if inp[0] == "var":
        return inp[1]
    value = inp[1]
    return f"({value})" if value < 0 else str(value)


def input_domain(op: Op, i: int, inputs, params: dict) -> str | None:
    """Where input i is drawn (pow's base depends on its exponent, targets on the logits' shape)."""
    declared = op.domain[i] if op.domain else None
    if declared == "pow_base":
        exponent = inputs[1]
        return pow_base_domain(exponent[1] if exponent[0] == "const" else None)
    if declared == "targets":  # class indices (one axis fewer than the logits) or probabilities
        logits, targets = inputs[0][2], inputs[i][2]
        return f"class_index:{logits[-1]}" if len(targets) == len(logits) - 1 else "probability"
    if declared == "class_index":
        return f"class_index:{params['classes']}"
    if INDICATOR_INPUTS.get(op.name) == i:
        return "indicator"
    return declared


def coverage_problem(op: Op) -> str | None:
    """Why the generator cannot exercise `op`, or None."""
    if op.arity == 0:
        return "no inputs"
    unknown = [d for d in op.domain if d not in KNOWN_DOMAINS]
    if unknown:
        return f"unknown domain {unknown}"
    for name, default in op.params.items():
        if param_candidates(op, name, default) is None:
            return f"no generic values for the parameter {name}={default!r}"
    if spell(op, [f"x{i}" for i in range(op.arity)], {}) is None:
        return f"no generic spelling for the syntax {op.syntax!r}"
    return None


def shape_pool(op: Op) -> list[tuple]:
    return SHAPES_1 if op.arity == 1 else SHAPES_N if op.arity == 2 else SHAPES_3


def distinct_dims(shape: tuple) -> bool:
    sizes = [d for d in shape if d != 1]
    return len(sizes) == len(set(sizes))


def cases_for(op: Op) -> list[Case]:
    if coverage_problem(op) is not None:
        return []
    names = [chr(ord("a") + i) for i in range(op.arity)]
    pool = shape_pool(op)
    slots = [[("var", names[i], s) for s in pool] for i in range(op.arity)]
    if op.elementwise and op.arity > 1:
        for i in range(op.arity):
            slots[i] += [("const", c) for c in CONSTANTS]
    param_names = list(op.params)
    param_values = [param_candidates(op, k, op.params[k]) for k in param_names]
    found: dict[tuple, tuple[bool, Case]] = {}  # pattern -> (shapes distinct?, case)
    for inputs in itertools.product(*slots):
        if all(i[0] == "const" for i in inputs):
            continue
        for values in itertools.product(*param_values):
            params = tuple(zip(param_names, values))
            if any(
                i[0] == "const" and not number_in_domain(input_domain(op, k, inputs, dict(params)), i[1])
                for k, i in enumerate(inputs)
            ):
                continue
            try:
                out = op.shape(ShapeEnv(), [i[2] if i[0] == "var" else () for i in inputs], dict(params))
            except ShapeMismatch:
                continue
            var_shapes = [i[2] for i in inputs if i[0] == "var"]
            distinct = all(distinct_dims(s) for s in [*var_shapes, out])
            has_const = any(i[0] == "const" for i in inputs)
            if sum(i[0] == "const" for i in inputs) > 1:
                continue
            # One case per pattern: which input is a constant (and its value), the ranks (the
            # output's, for three inputs or more), which inputs are broadcast, and the parameters.
            key = (
                tuple(("c", i[1]) if i[0] == "const" else None for i in inputs),
                () if has_const else tuple(len(s) for s in var_shapes) if op.arity <= 2 else len(out),
                () if has_const else tuple(s == out for s in var_shapes),
                params,
            )
            # A square shape only where the op demands one (no distinct shapes fit the pattern).
            if key not in found or (distinct and not found[key][0]):
                found[key] = (distinct, Case(op.name, tuple(inputs), params, tuple(out)))
    return [case for _, case in found.values()][:MAX_CASES_PER_OP]


CASES_BY_OP = {name: cases_for(op) for name, op in OPS.items()}
CASES = [c for cases in CASES_BY_OP.values() for c in cases]


def params_for(cases: list[Case] | None = None) -> list:
    return [pytest.param(c, id=c.id) for c in (CASES if cases is None else cases)]


def differentiable(case: Case) -> bool:
    return case.op.grad_fn_name(case.ranks, case.consts, case.param_dict) is not None


# --- helpers ---------------------------------------------------------------------------------------

_derivations: dict[Case, object] = {}


def derived(case: Case):
    if case not in _derivations:
        # every differentiable input, the targets of a loss too (without --wrt those are constants)
        wrt = case.differentiable_inputs or None
        _derivations[case] = derive(case.source, shapes=case.shapes, wrt=wrt, verify=True, points=3, seed=0)
    return _derivations[case]


def draw(gen: torch.Generator, shape: tuple, domain: str | None, params: dict) -> torch.Tensor:
    """float64 values inside a domain, well away from kinks, poles and ties (for finite differences)."""
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(shape, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
    if domain == "positive":
        return 0.5 + 1.5 * u
    if domain in ("nonzero", "off_kink"):
        return sign * (0.25 + 1.75 * u)
    if domain == "off_pole":
        return 2.4 * u - 1.2
    if domain == "off_bounds":  # at least 0.2 from clamp's bounds
        x = 4.0 * u - 2.0
        for bound in (params.get("min"), params.get("max")):
            if bound is not None:
                x = torch.where((x - bound).abs() < 0.2, bound + 0.2 * sign, x)
        return x
    if domain == "spd":
        m = 2.0 * u - 1.0
        return m @ m.T / shape[0] + torch.eye(shape[0], dtype=torch.float64)
    if domain == "invertible":
        return 2.0 * u - 1.0 + 3.0 * torch.eye(shape[0], dtype=torch.float64)
    if domain and domain.startswith("class_index:"):
        return torch.floor(u * int(domain.split(":")[1]))
    if domain == "probability":
        return torch.softmax(4.0 * u - 2.0, dim=-1)
    if domain == "indicator":  # ±1: where the condition holds or not, away from its threshold 0
        return torch.where(u < 0.5, 1.0, -1.0).to(torch.float64)
    assert domain in (None, "off_tie"), domain
    return 4.0 * u - 2.0


def draw_inputs(case: Case, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: draw(gen, shape, case.domain(k), case.param_dict) for k, name, shape in case.variables}


def torch_forward(case: Case, leaves: dict[str, torch.Tensor]):
    args = [leaves[i[1]] if i[0] == "var" else float(i[1]) for i in case.inputs]
    return case.op.torch(torch, args, case.param_dict)


def check_close(what: str, got: torch.Tensor, want: torch.Tensor) -> None:
    got = torch.broadcast_to(got, want.shape)
    assert got.dtype == torch.float64, what
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-11), f"{what}: backstep {got} vs torch {want}"


# --- coverage guards -------------------------------------------------------------------------------


def test_every_op_is_covered():
    missing = {
        name: coverage_problem(op) or "no shape in the pool fits its shape rule"
        for name, op in OPS.items()
        if not CASES_BY_OP[name] and name not in NOT_GENERIC
    }
    assert not missing, f"ops neither exercised by the generated tests nor listed in NOT_GENERIC: {missing}"


def test_listed_ops_exist():
    stale = (set(EXPLICIT_SPELLINGS) | set(NOT_GENERIC)) - set(OPS)
    assert not stale, f"listed ops that are not in the op table any more: {stale}"
    generated = {name for name, cases in CASES_BY_OP.items() if cases}
    assert not set(NOT_GENERIC) & generated, "listed as not generic, yet generated"


@pytest.mark.parametrize("name", sorted(set(OPS) - set(NOT_GENERIC)))
def test_op_is_exercised_at_every_rank_it_accepts(name):
    """Each rank the op accepts is tested (scalars, vectors, matrices), each parameter value too."""
    op = OPS[name]
    cases = CASES_BY_OP[name]
    assert cases
    accepted = set()
    for s in shape_pool(op):
        for values in itertools.product(*[param_candidates(op, k, v) for k, v in op.params.items()]):
            try:
                op.shape(ShapeEnv(), [s] * op.arity, dict(zip(op.params, values)))
            except ShapeMismatch:
                continue
            accepted.add(len(s))
    assert accepted <= {r for c in cases for r in c.ranks}
    for k, default in op.params.items():
        assert {c.param_dict[k] for c in cases} == set(param_candidates(op, k, default)), k
    if op.name == "matmul":
        assert {(2, 2), (1, 2), (2, 1), (1, 1)} <= {c.ranks for c in cases}
    if op.elementwise and op.arity == 2:
        # broadcasting: a row vector, a size-1 axis and a scalar on either side, and constants
        shapes = {tuple(i[2] if i[0] == "var" else "const" for i in c.inputs) for c in cases}
        for pair in [((3, 5), (5,)), ((5,), (3, 5)), ((3, 5), (3, 1)), ((3, 5), ()), ((), (3, 5))]:
            assert pair in shapes, pair
        assert any(c.consts[0] for c in cases) and any(c.consts[1] for c in cases)


def test_case_counts():
    assert len(CASES) >= 8 * (len(OPS) - len(NOT_GENERIC))


# --- the generated tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", params_for())
def test_derivation_verifies(case: Case):
    d = derived(case)
    v = d.verification
    assert v.ok, f"{case.source} {case.shapes}: {v.first_failure} {v.problems}"
    assert len(d.forward) == 1 and d.forward[0].op == case.op_name
    assert {g.name for g in v.gradients} == set(case.differentiable_inputs)


@pytest.mark.parametrize("case", params_for())
def test_gradient_matches_torch_autograd(case: Case):
    """backstep's symbolic forward value and gradients, evaluated numerically, against autograd."""
    d = derived(case)
    assert d.seed.shape == case.out_shape
    wrt = case.differentiable_inputs
    for seed in range(2):
        values = draw_inputs(case, seed)
        leaves = {name: v.clone().requires_grad_(name in wrt) for name, v in values.items()}
        out = torch_forward(case, leaves)
        assert tuple(out.shape) == case.out_shape
        gen = torch.Generator().manual_seed(100 + seed)
        upstream = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        if out.requires_grad:
            grads = torch.autograd.grad(out, [leaves[n] for n in wrt], upstream, allow_unused=True)
            expected = {n: torch.zeros_like(values[n]) if g is None else g for n, g in zip(wrt, grads)}
        else:  # not differentiable in torch (an indicator): no gradient flows
            expected = {n: torch.zeros_like(values[n]) for n in wrt}
        evaluator = Evaluator({**values, d.seed.name: upstream if out.dim() else torch.ones(())}, {})
        check_close(f"forward {case.source}", evaluator(d.output_expr), out.detach())
        assert set(d.gradients) == set(wrt)
        for name, grad in d.gradients.items():
            assert grad.in_inputs
            if not out.dim():
                expected[name] = expected[name] / upstream  # backstep seeds a scalar output with 1
            check_close(f"d/d{name} of {case.source}", evaluator(grad.expr), expected[name])


@pytest.mark.parametrize("case", params_for())
def test_grad_fn_name_is_torchs(case: Case):
    """The table declares a grad_fn exactly where torch gives one; the name shown is the table's or
    torch's (torch renames some between versions: a name that differs is a TorchConventionWarning)."""
    wrt = case.differentiable_inputs
    leaves = {name: v.requires_grad_(name in wrt) for name, v in draw_inputs(case, 0).items()}
    out = torch_forward(case, leaves)
    actual = out.grad_fn.name() if out.grad_fn is not None else None
    declared = case.op.grad_fn_name(case.ranks, case.consts, case.param_dict)
    check_grad_fn(declared, actual, f"{case.source} {case.shapes}")
    assert derived(case).forward[-1].grad_fn in {declared, actual}
    if declared is None:
        assert not out.requires_grad


@pytest.mark.parametrize("case", params_for([c for c in CASES if differentiable(c)]))
def test_torch_gradcheck(case: Case):
    values = draw_inputs(case, 7)
    wrt = case.differentiable_inputs
    inputs = tuple(values[n].requires_grad_(True) for n in wrt)

    def fn(*xs):
        return torch_forward(case, {**values, **dict(zip(wrt, xs))})

    # fast mode: a random projection of the Jacobian (the full one takes seconds for a 3×5 softmax)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("case", params_for())
def test_renders_and_json_gradients_parse_back(case: Case):
    d = derived(case)
    assert render(d, "text") == render(d, "text")
    doc = json.loads(render(d, "json"))
    assert doc["verification"]["ok"] is d.verification.ok
    shapes = {**case.shapes, d.seed.name: case.out_shape}
    for name, g in doc["gradients"].items():
        assert g["shape"] == list(case.shapes[name])
        names = {n.id for n in ast.walk(ast.parse(g["expr"], mode="eval")) if isinstance(n, ast.Name)}
        if names & set(shapes):
            parse(g["expr"], shapes)
        else:  # a constant (sum(a): 1, mean(a): 1/5, trace(A): eye(5)) is no formula alone: give it a variable
            parse(f"({g['expr']}) + 0 * probe", {**shapes, "probe": ()})


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_example_verifies(name: str):
    """The example program each op declares (docs, `backstep ops`) derives and verifies."""
    example = OPS[name].example
    assert example, f"{name} declares no example (ops.register gives elementwise ops one)"
    d = derive(example, verify=True)
    assert d.verification.ok, d.verification.first_failure
    assert name in {f.op for f in d.forward} or name == "eye"


# --- torch's conventions at a kink -----------------------------------------------------------------


KINK_CASES = [pytest.param(name, params, id=case_id) for name, params, case_id in kink_cases()]


def test_kink_ops_include_relu_abs_clamp_and_maximum():
    assert {"relu", "abs", "clamp", "maximum", "minimum"} <= {p.values[0] for p in KINK_CASES}


@pytest.mark.parametrize("shape", [(), (5,)])
@pytest.mark.parametrize("name, params", KINK_CASES)
def test_derivative_at_the_kink_is_one_torch_could_give(name: str, params: dict, shape: tuple):
    """relu′(0), abs′(0), clamp′ at its bounds, maximum at a tie, …: away from the kink exactly torch's;
    at it, between the one-sided derivatives; torch's own choice there is asked of the installed torch
    (clamp′ at its bounds is not the same in every torch version) and a different one is a
    TorchConventionWarning."""
    check_kink(name, params, shape)


# --- regressions -----------------------------------------------------------------------------------


def test_an_output_that_simplifies_to_zero_is_written_in_the_inputs():
    """Once a bug: 0 is falsy, and output_expr fell back to the named form `v1 - v2`."""
    _output_expr_in_inputs("sin(x) - sin(x)", {"x": (3,)})


def test_an_operand_that_relies_on_broadcasting_prints_as_broadcast_to():
    """Once a bug: inv(A)ᵀ 1 1ᵀ became a column inside @, printed as (3, 1) @ (3, 3), and
    sum(a + (b - b)) printed as sum(a): right numbers, wrong text."""
    _json_gradient_parses_back("sum(inv(A))", {"A": (3, 3)}, "A")
    _printed_output_is_the_output()


def test_where_takes_any_array_as_its_condition():
    """Once a bug: the rules read the condition as a 0/1 indicator; it holds where it is positive."""
    _verifies("where(c, a, b)", {"c": (3,), "a": (3,), "b": (3,)})
