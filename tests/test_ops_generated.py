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
- the declared grad_fn (``op.grad_fn_name`` and ``ForwardStep.grad_fn``) is the one torch gives;
- ``torch.autograd.gradcheck`` passes on the op's torch function, for a differentiable op;
- the derivation renders as text and JSON, and the JSON gradients parse back.

An op whose spelling, domain or parameters cannot be exercised generically must be named in
``EXPLICIT_SPELLINGS``, ``PARAM_VALUES`` or ``NOT_GENERIC`` with the reason; the coverage tests
fail for a new op that is neither generated nor listed.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch

from backstep import BackstepError, derive, parse
from backstep import parser as backstep_parser
from backstep.numeric import Evaluator
from backstep.ops import OPS, Op
from backstep.render import render
from backstep.shapes import ShapeEnv, ShapeMismatch

# --- what the generator knows ----------------------------------------------------------------------

# Ops whose spelling is not their `syntax` field used as a function name or an infix operator.
EXPLICIT_SPELLINGS = {
    "neg": ("-{0}", "unary minus: its syntax field '-x' is a description, not a token to put between operands"),
    "transpose": ("{0}.T", "a postfix attribute, not a function or an infix operator"),
}

# Ops that get no generated tests, with the reason (their declared example is still derived).
NOT_GENERIC: dict[str, str] = {
    "broadcast_to": "its parameter is a target shape that depends on the operand's: tests/test_broadcast_to.py",
    "eye": "takes no input: eye(n) is a constant array, so a formula of it alone has nothing to differentiate",
    **dict.fromkeys(
        "conv2d conv2d_grad_input conv2d_grad_weight max_pool2d maxpool_route maxpool_gather avg_pool2d "
        "avgpool_spread flatten unflatten reshape".split(),
        "4-d NCHW images with integer spatial sizes, int-or-pair and tuple parameters: tests/test_conv.py",
    ),
}

# Tokens the parser reads between two operands (`a + b`, `a > b`).
INFIX_TOKENS = set(backstep_parser.BINARY.values()) | set(getattr(backstep_parser, "COMPARE", {}).values())

# Values of keyword parameters that are neither an axis, a bool, a float with a default nor a
# declared choice: by name. A new kind of parameter must be added here (or its op is not covered).
PARAM_VALUES = {
    "min": [None, -0.5, 0.0],  # clamp's bounds: one-sided both ways, and both
    "max": [None, 0.75],
    "classes": [4],  # a size that is none of the pool's 2, 3, 5, 7
    "n": [4],
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
AXES = [0, 1, 2, -1, -2]
MAX_CASES_PER_OP = 48

# Known bugs in backstep these tests found, each with the smallest formula that shows it (`repro`
# raises while the bug is there). A generated case a bug breaks is marked strict xfail while the repro
# still fails, and runs as usual once it passes; `test_known_bug_is_still_there` is a strict xfail
# per bug, so that a fix turns it into a failure (XPASS) that asks for the entry to be removed.


def _verifies(source: str, shapes: dict) -> None:
    """Verifies, or is refused with backstep's own error (a formula it rightly does not take)."""
    try:
        v = derive(source, shapes=shapes, verify=True).verification
    except BackstepError:
        return
    assert v.ok, (source, v.first_failure)


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


@dataclass(frozen=True)
class Bug:
    reason: str
    repro: object  # () -> None, raises while the bug is there


BUGS: dict[str, Bug] = {}  # none known now; broadcast_operand_printing was fixed by broadcast_to
_PRESENT: dict[str, bool] = {}


def bug(name: str) -> str | None:
    """The reason of a known bug while its repro still fails, else None."""
    if name not in _PRESENT:
        try:
            BUGS[name].repro()
            _PRESENT[name] = False
        except Exception:
            _PRESENT[name] = True
    return f"BUG {name}: {BUGS[name].reason}" if _PRESENT[name] else None


# where's condition holds where it is positive; the independent checks here draw it as ±1, away
# from the threshold (a comparison gives 0 or 1).
INDICATOR_INPUTS = {"where": 0}


def known_bug(case: Case, check: str) -> str | None:
    """Why a check is expected to fail for this case (a bug in backstep), or None."""
    return None


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


def spell(op: Op, operands: list[str], params) -> str | None:
    """The formula applying `op` to operand texts (names or numbers), or None if unknown."""
    params = dict(params)
    if op.name in EXPLICIT_SPELLINGS:
        return EXPLICIT_SPELLINGS[op.name][0].format(*operands)
    if op.syntax.isidentifier():
        keywords = [f"{k}={v!r}" for k, v in params.items() if v != op.params.get(k)]
        return f"{op.syntax}({', '.join(list(operands) + keywords)})"
    if op.arity == 2 and op.syntax in INFIX_TOKENS and not params:
        return f"{operands[0]} {op.syntax} {operands[1]}"
    return None


def param_candidates(op: Op, name: str, default) -> list | None:
    """Every value a generic test gives a keyword parameter, or None when it cannot know them."""
    choices = getattr(op, "choices", None) or {}
    if name in choices:
        return list(choices[name])
    if isinstance(default, bool):
        return [False, True]
    if name in ("axis", "dim") and (default is None or isinstance(default, int)):
        return ([None] if default is None else []) + AXES
    if isinstance(default, float):
        return [default, 0.3]
    if name in PARAM_VALUES:
        return list(PARAM_VALUES[name])
    return None


def input_domain(op: Op, i: int, inputs, params: dict) -> str | None:
    """Where input i is drawn (pow's base depends on its exponent, targets on the logits' shape)."""
    declared = op.domain[i] if op.domain else None
    if declared == "pow_base":
        exponent = inputs[1]
        if exponent[0] == "const" and float(exponent[1]).is_integer():
            return "nonzero" if exponent[1] < 0 else None
        return "positive"
    if declared == "targets":  # class indices (one axis fewer than the logits) or probabilities
        logits, targets = inputs[0][2], inputs[i][2]
        return f"class_index:{logits[-1]}" if len(targets) == len(logits) - 1 else "probability"
    if declared == "class_index":
        return f"class_index:{params['classes']}"
    if INDICATOR_INPUTS.get(op.name) == i:
        return "indicator"
    return declared


def const_in_domain(domain: str | None, value) -> bool:
    if domain == "positive":
        return value > 0
    if domain in ("nonzero", "off_kink"):
        return value != 0
    if domain == "off_pole":
        return abs(math.cos(value)) > 1e-3
    if domain == "indicator":
        return value in (0, 1, -1)
    return domain in (None, "off_tie", "off_bounds")


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
                i[0] == "const" and not const_in_domain(input_domain(op, k, inputs, dict(params)), i[1])
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


@contextmanager
def known_failure(case: Case, check: str):
    """A known bug fails in one line: a traceback through the op table costs pytest ~0.25 s to format."""
    if known_bug(case, check) is None:
        yield
        return
    try:
        yield
    except Exception as err:  # AssertionError included
        pytest.fail(f"{type(err).__name__}: {err}"[:300], pytrace=False)


def params_for(check: str, cases: list[Case] | None = None) -> list:
    out = []
    for c in CASES if cases is None else cases:
        reason = known_bug(c, check)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


def differentiable(case: Case) -> bool:
    return case.op.grad_fn_name(case.ranks, case.consts, case.param_dict) is not None


# --- helpers ---------------------------------------------------------------------------------------

_derivations: dict[Case, object] = {}


def derived(case: Case):
    if case not in _derivations:
        _derivations[case] = derive(case.source, shapes=case.shapes, verify=True, points=3, seed=0)
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


@pytest.mark.parametrize("case", params_for("verify"))
def test_derivation_verifies(case: Case):
    with known_failure(case, "verify"):
        d = derived(case)
        v = d.verification
        assert v.ok, f"{case.source} {case.shapes}: {v.first_failure} {v.problems}"
        assert len(d.forward) == 1 and d.forward[0].op == case.op_name
        assert {g.name for g in v.gradients} == set(case.differentiable_inputs)


@pytest.mark.parametrize("case", params_for("autograd"))
def test_gradient_matches_torch_autograd(case: Case):
    """backstep's symbolic forward value and gradients, evaluated numerically, against autograd."""
    with known_failure(case, "autograd"):
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


@pytest.mark.parametrize("case", params_for("grad_fn"))
def test_grad_fn_name_is_torchs(case: Case):
    with known_failure(case, "grad_fn"):
        wrt = case.differentiable_inputs
        leaves = {name: v.requires_grad_(name in wrt) for name, v in draw_inputs(case, 0).items()}
        out = torch_forward(case, leaves)
        actual = out.grad_fn.name() if out.grad_fn is not None else None
        declared = case.op.grad_fn_name(case.ranks, case.consts, case.param_dict)
        assert declared == actual, f"{case.source} {case.shapes}: declared {declared}, torch {actual}"
        assert derived(case).forward[-1].grad_fn == actual
        if declared is None:
            assert not out.requires_grad


@pytest.mark.parametrize("case", params_for("gradcheck", [c for c in CASES if differentiable(c)]))
def test_torch_gradcheck(case: Case):
    with known_failure(case, "gradcheck"):
        values = draw_inputs(case, 7)
        wrt = case.differentiable_inputs
        inputs = tuple(values[n].requires_grad_(True) for n in wrt)

        def fn(*xs):
            return torch_forward(case, {**values, **dict(zip(wrt, xs))})

        # fast mode: a random projection of the Jacobian (the full one takes seconds for a 3×5 softmax)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("case", params_for("render"))
def test_renders_and_json_gradients_parse_back(case: Case):
    with known_failure(case, "render"):
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
    example = getattr(OPS[name], "example", "")
    if not example:
        pytest.skip("this op table declares no examples")
    d = derive(example, verify=True)
    assert d.verification.ok, d.verification.first_failure
    assert name in {f.op for f in d.forward} or name == "eye"


# --- torch's conventions at a kink -----------------------------------------------------------------


def kink_cases() -> list:
    """(op, params, the kinks) for every op with a kink at 0 or at a parameter (clamp's bounds)."""
    out = []
    for name, op in sorted(OPS.items()):
        if "off_kink" in op.domain:
            defaults = {k: v for k, v in op.params.items()}
            out.append(pytest.param(name, defaults, (0.0,), id=name))
        if "off_bounds" in op.domain:
            for lo, hi in [(0.0, None), (None, 0.75), (-0.5, 0.75)]:
                params = {"min": lo, "max": hi}
                kinks = tuple(b for b in (lo, hi) if b is not None)
                out.append(pytest.param(name, params, kinks, id=f"{name}-min={lo}-max={hi}"))
    return out


def test_kink_ops_include_relu_and_abs():
    assert {"relu", "abs"} <= {p.values[0] for p in kink_cases()}


def check_kink(name: str, params: dict, kinks: tuple, shape: tuple) -> None:
    op = OPS[name]
    d = derive(spell(op, ["x"], {k: v for k, v in params.items() if v != op.params.get(k)}), shapes={"x": shape})
    for kink in kinks:
        x = torch.full(shape, kink, dtype=torch.float64)
        if shape:
            x[1], x[3] = kink - 1.5, kink + 2.0  # kinks between values on either side
        leaf = x.clone().requires_grad_(True)
        out = op.torch(torch, [leaf], params)
        upstream = torch.full(out.shape, 0.75, dtype=torch.float64)
        if out.requires_grad:
            (want,) = torch.autograd.grad(out, [leaf], upstream)
        else:
            want = torch.zeros_like(x)
        seed = upstream if shape else torch.ones((), dtype=torch.float64)
        got = Evaluator({"x": x, d.seed.name: seed}, {})(d.gradients["x"].expr)
        got = torch.broadcast_to(got * (1.0 if shape else 0.75), x.shape)
        # exact at the kink; elsewhere (the entries away from it) to the last bits of float64
        close = torch.allclose(got, want, rtol=1e-12, atol=0.0)
        assert close, f"{name}′ at {x.tolist()}: backstep {got.tolist()}, torch {want.tolist()}"


@pytest.mark.parametrize("shape", [(), (5,)])
@pytest.mark.parametrize("name, params, kinks", kink_cases())
def test_derivative_at_the_kink_is_torchs(name: str, params: dict, kinks: tuple, shape: tuple, request):
    """relu′(0) = 0 and abs′(0) = 0 (and so on for every op with a kink), as torch has them."""
    reason = bug(f"kink_{name}") if f"kink_{name}" in BUGS else None
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    check_kink(name, params, kinks, shape)


def test_relu_and_abs_derivative_at_zero_is_zero():
    for source in ("relu(x)", "abs(x)"):
        d = derive(source, shapes={"x": ()})
        x = torch.zeros((), dtype=torch.float64, requires_grad=True)
        value = Evaluator({"x": x.detach(), d.seed.name: torch.ones(())}, {})(d.gradients["x"].expr)
        (want,) = torch.autograd.grad(OPS[source[:-3]].torch(torch, [x], {}), [x])
        assert float(value) == 0.0 == float(want), source


# --- the bugs above, each as its smallest formula --------------------------------------------------


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=b.reason)) for n, b in sorted(BUGS.items())]
)
def test_known_bug_is_still_there(name: str):
    """Each known bug's repro: an XPASS here means the bug is fixed; remove it from BUGS."""
    BUGS[name].repro()


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
