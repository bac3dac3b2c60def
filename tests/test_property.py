"""Property tests: random shape-consistent formulas built from the op table, derived and verified.

A Hypothesis strategy builds a formula bottom up. It keeps a pool of subexpressions with their
concrete shapes; each step picks an op from ``OPS`` (any op the generator can spell and feed, so
new ops join in by themselves), keyword parameters from their possible values, and operands from
the pool, fresh variables and numbers such that the op's own shape rule accepts them (elementwise
ops with broadcasting, matmul where the inner dimensions agree, transpose, sum/mean with and
without an axis, …). Dimension sizes are distinct. Operands are kept inside the op's domain by
wrapping them (``log(exp(tanh(e)))``, divisors ``(e * e + 1)``, ``tan(sin(e))``, ``where(e > 0, …)``);
inputs backstep must draw itself (SPD or invertible matrices, class indices) are fresh variables.
The formula is written inline or as a program of named steps, with concrete or symbolic shapes.

For every formula: ``derive(..., verify=True, points=2)`` verifies against torch autograd; the
``--format json`` gradient ``expr`` strings parse back with ``backstep.parse`` and evaluate to the
same numbers as the gradients; text and JSON rendering succeed and are deterministic.

Bugs these tests found became regression tests in tests/test_ops_generated.py, each the smallest
formula that showed it (an operand relying on broadcasting inside an array op, an output that
simplifies to 0). The generator avoids none. How an op is spelled and which parameter values it
gets is shared with the generated tests (tests/helpers.py).
"""

from __future__ import annotations

import ast
import collections
import itertools
import json
import os
from dataclasses import dataclass, field

import pytest
import torch
from helpers import INDICATOR_INPUTS, number_in_domain, param_candidates, pow_base_domain, spell
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

from backstep import derive, parse
from backstep.errors import DomainError
from backstep.numeric import Evaluator
from backstep.numeric import draw as draw_value
from backstep.ops import OPS, Op
from backstep.render import render
from backstep.shapes import ShapeEnv, ShapeMismatch, concrete

# How many formulas went through every check, and what they contained (see the terminal summary).
COUNTS: collections.Counter = collections.Counter()
OPS_USED: collections.Counter = collections.Counter()

DEFAULT_EXAMPLES = 150
SLOW_EXAMPLES = int(os.environ.get("BACKSTEP_PROPERTY_EXAMPLES", "1000"))  # nightly: 10000 (README)

# --- what the generator knows about the op table -----------------------------------------------------

# How an operand is kept inside a domain. Templates that repeat the operand are used only where
# the operand is a name (a variable, or a step of a program), so that formulas stay small.
WRAPPERS = {
    None: ["{0}"],
    "off_tie": ["{0}"],
    "positive": ["exp(tanh({0}))", "(sigmoid({0}) + 0.5)", "({0} * {0} + 1)"],
    "nonzero": ["exp(tanh({0}))", "({0} * {0} + 1)"],
    "off_kink": ["({0} + 0.61803)"],  # 0/1 indicators and continuous values alike stay off 0
    "off_bounds": ["({0} + 0.61803)"],
    "off_pole": ["sin({0})"],
    "indicator": ["({0} > 0)"],
}
# Ops whose operands must be fresh variables (drawn at random): no domain of the table says what
# they need, and a formula can make their operand constant.
FRESH_OPERANDS = {"std": "a constant operand (log_softmax over a length-1 axis) has std 0: no derivative"}
# Domains only a fresh variable can have: backstep draws it (SPD, invertible, class indices, …).
LEAF_DOMAINS = ("spd", "invertible", "class_index", "targets", "probability", "row_index")
NUMBERED_AXES = ("cat",)  # ops whose axis must have a number for its size (the offsets of the parts)
DRAWN_ONCE = ("class_index", "targets", "probability", "row_index")  # integers or a distribution: one use each
NUMBERS = [2, 3, 0.5, -1.5]
POW_EXPONENTS = [2, 3, -1, 0.5]
AXES = [0, 1, -1]
DIM_SIZES = [2, 3, 5, 6, 7]
MAX_STEPS = 6


def param_values(op: Op, name: str, default) -> list | None:
    values = param_candidates(op, name, default, axes=AXES)
    if values is not None and op.param(name) is not None and op.param(name).kind == "ints" and name == "axis":
        values = values + [(0, -1)]  # a reduction over several axes; refused on a vector, so never drawn there
    return values


def declared_domains(op: Op) -> list:
    domains = list(op.domain) if op.domain else [None] * op.arity
    if op.name in INDICATOR_INPUTS:
        domains[INDICATOR_INPUTS[op.name]] = "indicator"
    return domains


# Ops the generator leaves out, with the reason (their own tests cover them).
LEFT_OUT = {"equal": "an indicator that is 0 almost everywhere: a comparison of it is at its kink at every point"}


def usable(op: Op) -> bool:
    """Can the generator build this op? (Every op the op-table tests exercise, as a rule.)"""
    if op.name in LEFT_OUT:
        return False
    if op.arity == 0 or spell(op, ["x"] * op.arity, {}, grouped=True) is None:
        return False
    if any(param_values(op, k, v) is None for k, v in op.params.items()):
        return False
    return all(d in WRAPPERS or d in LEAF_DOMAINS or d == "pow_base" for d in declared_domains(op))


GEN_OPS = sorted((op for op in OPS.values() if usable(op)), key=lambda op: op.name)
SKIPPED_OPS = sorted(set(OPS) - {op.name for op in GEN_OPS})


# --- the strategy ------------------------------------------------------------------------------------


@dataclass
class Item:
    """A subexpression: its text, concrete shape, and what it may be used for."""

    text: str
    shape: tuple
    atom: bool = False  # a variable or a program step: a name
    fresh: bool = False  # a variable not yet in the formula (a candidate only)
    number: bool = False


@dataclass
class Formula:
    source: str
    shapes: dict  # variable -> shape (ints, or dimension names)
    sizes: dict  # dimension name -> size (symbolic shapes only)
    program: bool = False
    ops: list = field(default_factory=list)

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        return f"Formula(source={self.source!r}, shapes={self.shapes!r})"


def input_domain(op: Op, i: int, args: list[Item], params: dict):
    declared = declared_domains(op)[i]
    if declared == "pow_base":
        exponent = args[1]
        return pow_base_domain(float(exponent.text.strip("()")) if exponent.number else None)
    if declared == "targets":
        return "targets"
    return declared


def shape_of(op: Op, args: list[Item], params: dict):
    try:
        return tuple(op.shape(ShapeEnv(), [a.shape for a in args], params))
    except ShapeMismatch:
        return None


def allowed(op: Op, args: list[Item], params: dict) -> bool:
    """Operands the generator may give `op` (domains it can keep, bugs it avoids)."""
    if all(a.number for a in args) or sum(a.number for a in args) > 1:
        return False
    if op.name in FRESH_OPERANDS and not all(a.fresh for a in args):
        return False
    for i, a in enumerate(args):
        domain = input_domain(op, i, args, params)
        if a.number and (not op.elementwise or not number_in_domain(domain, float(a.text.strip("()")))):
            return False
        if domain in LEAF_DOMAINS and not a.fresh:
            return False
    return True


def numbers_for(op: Op, i: int) -> list[Item]:
    values = POW_EXPONENTS if (op.name == "pow" and i == 1) else NUMBERS
    return [Item(f"({v})" if v < 0 else str(v), (), number=True) for v in values]


@st.composite
def formulas(draw) -> Formula:
    n, d, h = draw(st.lists(st.sampled_from(DIM_SIZES), min_size=3, max_size=3, unique=True))
    symbolic = draw(st.booleans())
    as_program = draw(st.booleans())
    vocabulary = [(), (n,), (d,), (h,), (n, d), (d, h), (n, h), (n, 1), (1, d)]
    square = [(d, d)]  # only for ops that are not elementwise (trace, det, inv, matmul, …)
    batched = [(n, d, h), (n, h, d), (h, n, d)]  # stacks of matrices, for @ and einsum (batched products)
    pool: list[Item] = []
    variables: dict[str, tuple] = {}
    lines: list[str] = []
    used: list[str] = []
    last: Item | None = None
    referenced: set[str] = set()
    # cat needs a number for the size of the axis it joins along: not in a formula of symbolic shapes
    ops = [op for op in GEN_OPS if not (symbolic and op.name in NUMBERED_AXES)]
    order = draw(st.permutations(ops))  # Hypothesis favours the first choices: let them vary
    for _ in range(draw(st.integers(2, MAX_STEPS))):
        op = order[draw(st.integers(0, len(order) - 1))]
        params = {k: draw(st.sampled_from(param_values(op, k, v))) for k, v in op.params.items()}
        fresh_shapes = vocabulary + ([] if op.elementwise else square)
        if op.name in ("matmul", "einsum"):
            fresh_shapes = fresh_shapes + batched
        fresh = [Item(f"x{len(variables)}", s, atom=True, fresh=True) for s in fresh_shapes]
        slots = []
        for i in range(op.arity):
            numbers = numbers_for(op, i) if op.elementwise and op.arity > 1 else []
            slots.append(pool + fresh + numbers)
        if op.arity <= 2:
            options = [
                args
                for args in itertools.product(*slots)
                if allowed(op, list(args), params) and shape_of(op, list(args), params) is not None
            ]
        else:  # too many combinations: a few random tries
            options = []
            for _try in range(8):
                args = tuple(draw(st.sampled_from(s)) for s in slots)
                if allowed(op, list(args), params) and shape_of(op, list(args), params) is not None:
                    options.append(args)
                    break
        deeper = [o for o in options if any(not (a.fresh or a.number) for a in o)]
        if deeper and draw(st.booleans()):  # half the time, build on what is there
            options = deeper
        if not options:
            continue
        args = list(draw(st.sampled_from(options)))
        referenced.update(a.text for a in args if not (a.fresh or a.number))
        out_shape = shape_of(op, args, params)
        texts = []
        for i, a in enumerate(args):
            if a.fresh:
                if sum(b.fresh for b in args[:i]):  # two fresh operands in one step: name them apart
                    a = Item(f"x{len(variables)}", a.shape, atom=True)
                    args[i] = a
                variables[a.text] = a.shape
                reusable = input_domain(op, i, args, params) not in DRAWN_ONCE
                if reusable:
                    pool.append(Item(a.text, a.shape, atom=True))
            domain = input_domain(op, i, args, params)
            templates = WRAPPERS.get(domain, ["{0}"]) if not a.number else ["{0}"]
            if not (a.atom or as_program):
                templates = [t for t in templates if t.count("{0}") == 1]
            texts.append(draw(st.sampled_from(templates)).format(a.text))
        text = spell(op, texts, params, grouped=True)
        if as_program:
            name = f"t{len(lines) + 1}"
            lines.append(f"{name} = {text}")
            last = Item(name, out_shape, atom=True)
        else:
            last = Item(text, out_shape)
        pool.append(last)
        used.append(op.name)
    assume(last is not None and variables)
    # Steps nothing used join the output as sum(step), which broadcasts to any shape.
    dead = [i for i in pool if not (i.atom and i.text in variables) and i.text not in referenced and i is not last]
    if dead:
        text = " + ".join([last.text] + [f"sum({i.text})" for i in dead])
        if as_program:
            lines.append(f"out = {text}")
        else:
            last = Item(f"({text})", last.shape)
    source = "\n".join(lines) if as_program else last.text
    names = {n: "n", d: "d", h: "h"}
    shapes = {v: tuple(names.get(k, k) if symbolic else k for k in s) for v, s in variables.items()}
    sizes = {"n": n, "d": d, "h": h} if symbolic else {}
    return Formula(source, shapes, sizes, as_program, used)


# --- the checks --------------------------------------------------------------------------------------


def forward_is_tame(d, sizes: dict) -> bool:
    """Are the forward values moderate at the verifier's points? (exp of exp of … can overflow)."""
    gen = torch.Generator().manual_seed(0)
    env = {v.name: draw_value(torch, gen, concrete(v.shape, sizes), v.domain, sizes) for v in d.variables}
    evaluator = Evaluator(env, sizes)
    for step in d.forward:
        value = evaluator(step.expr)
        env[step.name] = value
        if not bool(torch.isfinite(value).all()) or float(value.abs().max()) > 1e6:
            return False
    return True


def value_of_text(text: str, shapes: dict, env: dict, sizes: dict):
    """Parse `text` back with backstep and evaluate it (step by step: the forward steps' own
    expressions, so that this does not lean on Derivation.output_expr)."""
    names = {n.id for n in ast.walk(ast.parse(text, mode="eval")) if isinstance(n, ast.Name)}
    if not names & set(shapes):  # a constant (1/5, eye(5)) is no formula alone: give it a variable
        text = f"({text}) + 0 * probe"
        shapes = {**shapes, "probe": ()}
        env = {**env, "probe": torch.zeros((), dtype=torch.float64)}
    parse(text, shapes)
    back = derive(text, shapes=shapes)
    values = dict(env)
    evaluator = Evaluator(values, sizes)
    for step in back.forward:
        values[step.name] = evaluator(step.expr)
    return values[back.output]


def round_trip(d, doc: dict, sizes: dict) -> int:
    """The JSON gradient (and output) `expr` strings parse back and evaluate to the same numbers."""
    shapes = {name: info.shape for name, info in d.symbols.table.items() if not name.startswith("_")}
    gen = torch.Generator().manual_seed(1)
    env = {v.name: draw_value(torch, gen, concrete(v.shape, sizes), v.domain, sizes) for v in d.variables}
    env[d.seed.name] = torch.randn(concrete(d.seed.shape, sizes), generator=gen, dtype=torch.float64)
    values = dict(env)
    evaluator = Evaluator(values, sizes)
    for step in d.forward:
        values[step.name] = evaluator(step.expr)
    for step in d.backward:  # gradients too large to expand are written with these names
        shape = concrete(d.symbols.table[step.target].shape, sizes)
        values[step.target] = torch.broadcast_to(evaluator(step.result), shape)
    checked = 0
    output = values[d.output]
    got = value_of_text(doc["output"]["expr"], shapes, env, sizes)
    assert torch.allclose(torch.broadcast_to(got, output.shape), output, rtol=1e-9, atol=1e-9), doc["output"]
    for name, g in doc["gradients"].items():
        gradient = d.gradients[name]
        if not gradient.in_inputs:  # written with named intermediates: parsing back is the check
            parse(g["expr"], shapes)
            continue
        want = torch.broadcast_to(Evaluator(dict(env), sizes)(gradient.expr), concrete(gradient.shape, sizes))
        got = torch.broadcast_to(value_of_text(g["expr"], shapes, env, sizes), want.shape)
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True), (name, g["expr"], got, want)
        checked += 1
    return checked


def reject_tied(err: DomainError) -> None:
    """A comparison of a value with itself (x0 <= unsqueeze(x0)) is at its kink everywhere: the
    refusal is right, and the formula says nothing about the rules."""
    if "off kink" not in str(err) and "unequal" not in str(err):
        raise err
    event("rejected: a comparison tied everywhere")
    COUNTS["formulas rejected (a comparison tied everywhere)"] += 1
    assume(False)


def check_formula(f: Formula) -> None:
    note(f"formula:\n{f.source}\nshapes: {f.shapes}")
    try:
        d = derive(f.source, shapes=f.shapes, verify=True, points=2, seed=0)
    except DomainError as err:
        reject_tied(err)
    v = d.verification
    sizes = v.sizes
    if not v.ok and not forward_is_tame(d, sizes):
        event("rejected: forward values overflow")
        COUNTS["formulas rejected (forward values above 1e6)"] += 1
        assume(False)
    assert v.ok, f"verification failed for {f.source!r} {f.shapes}: {v.first_failure} {v.problems}"
    text, doc_text = render(d, "text"), render(d, "json")
    assert text and doc_text
    # Deterministic: a fresh derivation of the same input renders to the same text and JSON.
    again = derive(f.source, shapes=f.shapes, verify=True, points=2, seed=0)
    assert render(again, "text") == text and render(again, "json") == doc_text
    doc = json.loads(doc_text)
    assert doc["verification"]["ok"] is True
    assert set(doc["gradients"]) == {v.name for v in d.variables if v.requires_grad}
    try:
        COUNTS["gradients round-tripped"] += round_trip(d, doc, sizes)
    except DomainError as err:  # (x0 <= x0 is 1 everywhere; printed back, 1[x0 - x0 ≥ 0] is at its kink)
        reject_tied(err)
    COUNTS["formulas checked"] += 1
    COUNTS["programs" if f.program else "inline formulas"] += 1
    COUNTS["symbolic shapes" if f.sizes else "concrete shapes"] += 1
    OPS_USED.update(f.ops)


# --- the tests ---------------------------------------------------------------------------------------

SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    print_blob=True,
)


@settings(max_examples=DEFAULT_EXAMPLES, **SETTINGS)
@given(formulas())
def test_random_formulas_verify_and_round_trip(formula: Formula):
    check_formula(formula)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **SETTINGS)
@given(formulas())
def test_random_formulas_verify_and_round_trip_slow(formula: Formula):
    check_formula(formula)


def test_the_generator_uses_the_op_table():
    """The random formulas draw on the op table: the core ops, and most of the others."""
    names = {op.name for op in GEN_OPS}
    core = {"add", "sub", "mul", "div", "pow", "neg", "matmul", "transpose", "sum", "mean", "exp", "log", "relu"}
    assert core <= names, core - names
    assert len(names) >= 0.6 * len(OPS), SKIPPED_OPS


@pytest.mark.parametrize("name", sorted(OPS))
def test_rendering_is_deterministic_for_every_op_example(name: str):
    """Text and JSON of each op's declared example: they render, and the same way every time."""
    example = OPS[name].example
    assert example, f"{name} declares no example"
    outputs = {(render(d, "text"), render(d, "json")) for d in (derive(example), derive(example))}
    assert len(outputs) == 1


# --- the count, in the terminal summary --------------------------------------------------------------


class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        tr.section("backstep property tests")
        tr.write_line(", ".join(f"{k}: {v}" for k, v in sorted(COUNTS.items())) or "no formula checked")
        if OPS_USED:
            tr.write_line(f"ops used ({len(OPS_USED)} of {len(OPS)}): " + ", ".join(sorted(OPS_USED)))
        unused = sorted({op.name for op in GEN_OPS} - set(OPS_USED))
        if OPS_USED and unused:
            tr.write_line("ops the generator can build but did not this run: " + ", ".join(unused))
        if SKIPPED_OPS:
            tr.write_line("ops the generator cannot build: " + ", ".join(SKIPPED_OPS))


@pytest.fixture(autouse=True, scope="module")
def _report_counts(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("backstep-property-summary"):
        manager.register(_Summary(), "backstep-property-summary")
    yield
    print(f"\nbackstep property tests: {dict(COUNTS)}")
