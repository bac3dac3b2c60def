"""Formulas from strangers: inputs that try to run code or reach Python internals.

Each one must be refused with exit code 2, a one-line message with its place, and no traceback;
nothing may run — a canary file that the payloads try to create must never appear. Then fuzzing:
arbitrary text and arbitrary Python syntax trees fed to the parser never raise anything but a
BackstepError.
"""

from __future__ import annotations

import ast
import json
import signal
import string
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from backstep import BackstepError, Limits, derive, parse
from backstep.budget import BudgetExpired, TimeBudget, can_interrupt
from backstep.cli import app

CANARY = "backstep_canary_file"

# Each tries something a formula must never do; {canary} is a path the payload would create.
HOSTILE = [
    "__import__('os').system('touch {canary}')",
    "open('{canary}', 'w').write('x')",
    "exec(\"open('{canary}','w')\")",
    "eval(\"open('{canary}','w')\")",
    "compile('1', 'f', 'eval')",
    "x.__class__.__bases__[0].__subclasses__()",
    "x.__class__",
    "().__class__.__mro__",
    "getattr(x, '__dict__')",
    "globals()",
    "locals()['x']",
    "vars()",
    "__builtins__",
    "__builtins__.open('{canary}', 'w')",
    "(lambda: open('{canary}', 'w'))()",
    "[open('{canary}', 'w') for _ in (1,)]",
    "{{k: 1 for k in 'ab'}}",
    "(open('{canary}', 'w') for _ in (1,))",
    "f\"{{open('{canary}', 'w')}}\"",
    "(y := open('{canary}', 'w'))",
    "x[0]",
    "x[::-1]",
    "sum(x, **{{'axis': 0}})",
    "sum(*[x])",
    "sum(x, axis=__import__('os'))",
    "sum(x, axis=open('{canary}', 'w'))",
    "sin(x, key=open)",
    "x.T.__class__",
    "x.real",
    "import os",
    "from os import system",
    "def f(): pass",
    "class A: pass",
    "with open('{canary}', 'w'): pass",
    "for i in range(3): x",
    "while True: pass",
    "try:\n  x\nexcept: pass",
    "assert False",
    "raise SystemExit(0)",
    "del x",
    "global x",
    "x if y else z",
    "x and y",
    "not x",
    "~x",
    "x // y",
    "x % y",
    "x << 2",
    "x == y",
    "'a' + 'b'",
    "b'bytes'",
    "True + x",
    "None",
    "1j * x",
    "[x, y]",
    "(x, y)",
    "{{x, y}}",
    "x; import os",
    "await x",
    "yield x",
    "x.T.T.__init__",
    "ｅｖａｌ('1')",  # fullwidth look-alikes normalise to eval under NFKC
    "ｏｐｅｎ('{canary}')",
    "\u0435val('1')",  # Cyrillic е
    "x\x00",
    "__x",
    "_",
    "sin.__call__(x)",
    "breakpoint()",
    "help(x)",
    "print(x)",
    "type(x)",
    "x = 1; x = 2; x",
    "a = a + x; a",  # once a cycle that never finished (tests/test_robust_parse.py guards it with an alarm)
    "sum(x, axis=0, axis=1)",  # Python's ast accepts a repeated keyword
    "pow(x, 2, 3)",
]


@pytest.fixture()
def canary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path / CANARY


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_input_is_refused_and_runs_nothing(template, canary):
    source = template.format(canary=canary)
    result = CliRunner().invoke(app, ["derive", source, "--no-verify"])
    assert result.exit_code == 2, (source, result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    first = result.output.strip().splitlines()[0]
    assert first and (" at " in first or first.startswith(("error", "syntax error", "unsupported"))), first
    assert not canary.exists(), f"{source!r} created the canary"


def test_the_api_refuses_them_too(canary):
    for template in HOSTILE:
        with pytest.raises(BackstepError):
            parse(template.format(canary=canary))
    assert not canary.exists()


def test_twenty_thousand_parentheses_are_a_clean_error():
    with pytest.raises(BackstepError):
        parse("(" * 20_000 + "x" + ")" * 20_000)
    with pytest.raises(BackstepError):
        parse("-" * 20_000 + "x")
    with pytest.raises(BackstepError):
        parse("sin(" * 5_000 + "x" + ")" * 5_000)
    result = CliRunner().invoke(app, ["derive", "(" * 20_000 + "x" + ")" * 20_000, "--no-verify"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--max-depth" in result.output or "nest" in result.output, result.output


def test_a_long_flat_sum_is_limited_not_a_recursion_error():
    with pytest.raises(BackstepError, match="--max-depth"):
        parse(" + ".join(["x"] * 5_000))
    assert parse(" + ".join(["x"] * 100))


def test_limits_are_flags_with_documented_defaults():
    limits = Limits()
    assert (limits.max_chars, limits.max_depth, limits.max_nodes, limits.max_exponent) == (100_000, 500, 20_000, 1_000)
    with pytest.raises(BackstepError, match="--max-chars"):
        parse("x + " * 30 + "x", limits=Limits(max_chars=50))
    with pytest.raises(BackstepError, match="--max-exponent"):
        parse("x ** 100000")
    with pytest.raises(BackstepError, match="--max-nodes"):
        parse("x * y * z * w", limits=Limits(max_nodes=3))


def test_every_limit_flag_and_its_default_is_in_the_readme():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    limits_row = next(line for line in readme.splitlines() if "`--max-chars`" in line)
    for flag, default in [
        ("--max-chars", "100000"),
        ("--max-depth", "500"),
        ("--max-nodes", "20000"),
        ("--max-exponent", "1000"),
    ]:
        assert flag in limits_row and default in limits_row, flag
    budget_row = next(line for line in readme.splitlines() if line.startswith("| `--simplify-budget"))
    assert "default 5;" in budget_row and Limits().simplify_seconds == 5.0
    help_text = CliRunner().invoke(app, ["derive", "--help"]).output
    assert all(flag in help_text for flag in ("--max-chars", "--max-depth", "--max-nodes", "--simplify-budget"))


def test_the_printer_takes_expressions_never_text():
    from sympy import SympifyError

    from backstep.printing import to_lang

    with pytest.raises(SympifyError):
        to_lang("__import__('os').system('true')")


# --- the simplification budget: SymPy made slow on purpose, so that it must run out ---------------


@pytest.fixture()
def slow_factoring(monkeypatch):
    """factor_terms (the tidying step) takes 10 s: any budget below that must cut it short."""
    derive_module = sys.modules["backstep.derive"]
    real = derive_module.sympy.factor_terms

    def slow(expr, *args, **kwargs):
        time.sleep(10)
        return real(expr, *args, **kwargs)

    monkeypatch.setattr(derive_module.sympy, "factor_terms", slow)


@pytest.mark.skipif(not can_interrupt(), reason="the budget needs SIGALRM")
def test_a_step_over_the_simplification_budget_is_kept_as_built_and_says_so(slow_factoring):
    d = derive("sum((relu(X@W1)@W2 - Y)**2)", shapes={"Y": ("n", "o")}, limits=Limits(simplify_seconds=0.05))
    assert all(s.unsimplified for s in d.backward if s.kind == "rule")
    assert all(g.unsimplified for g in d.gradients.values())
    assert any("step 1 " in note and "--simplify-budget" in note for note in d.notes)
    d.verify(points=1)  # as built is still right
    assert d.verification.ok


@pytest.mark.skipif(not can_interrupt(), reason="the budget needs SIGALRM")
def test_the_simplify_budget_flag_reaches_every_output(slow_factoring):
    args = ["derive", "sum(sin(x@W)*x@W)", "--no-verify", "--simplify-budget", "0.05"]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert all(step["unsimplified"] for step in data["backward"] if step["kind"] == "rule")
    assert all(g["unsimplified"] for g in data["gradients"].values())
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0 and "as built" in text.output and "--simplify-budget" in text.output


def test_without_a_budget_problem_nothing_is_marked():
    d = derive("sum((relu(X@W1)@W2 - Y)**2)")
    assert not any(s.unsimplified for s in d.backward) and not any(g.unsimplified for g in d.gradients.values())
    assert not any("--simplify-budget" in note for note in d.notes)


@pytest.mark.skipif(not can_interrupt(), reason="the budget needs SIGALRM")
def test_time_budgets_nest():
    with TimeBudget(5) as outer:  # an inner budget that ends first leaves the outer one running
        with pytest.raises(BudgetExpired) as caught, TimeBudget(0.05) as inner:
            time.sleep(10)
        assert caught.value.budget is inner
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 5
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    with pytest.raises(BudgetExpired) as caught, TimeBudget(0.05) as outer:  # the outer ends first: it fires
        with TimeBudget(10):
            time.sleep(10)
    assert caught.value.budget is outer
    with TimeBudget(0):  # 0: no limit
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


# --- fuzzing --------------------------------------------------------------------------------------

FORMULA_ALPHABET = string.ascii_letters + string.digits + " +-*/@().,;:=_\n[]{}'\"#!<>%&|^~`\\"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=FORMULA_ALPHABET, max_size=60) | st.text(max_size=40))
def test_arbitrary_text_never_raises_anything_but_a_backstep_error(text):
    try:
        parse(text)
    except BackstepError as err:
        assert err.render()  # the message renders, with or without a place


NAMES = st.sampled_from(["x", "y", "W", "sin", "sum", "relu", "__class__", "eval", "n", "_", "T"])
LEAVES = st.one_of(
    NAMES.map(lambda n: ast.Name(id=n, ctx=ast.Load())),
    st.one_of(st.integers(-3, 5), st.floats(-2, 2, allow_nan=False), st.booleans(), st.text(max_size=3)).map(
        lambda v: ast.Constant(value=v)
    ),
)


def extend(children):
    ops = st.sampled_from([ast.Add(), ast.Sub(), ast.Mult(), ast.Div(), ast.Pow(), ast.MatMult(), ast.Mod()])
    return st.one_of(
        st.builds(lambda a, o, b: ast.BinOp(a, o, b), children, ops, children),
        st.builds(lambda a: ast.UnaryOp(ast.USub(), a), children),
        st.builds(lambda a, attr: ast.Attribute(a, attr, ast.Load()), children, st.sampled_from(["T", "real"])),
        st.builds(
            lambda f, args, kw: ast.Call(ast.Name(f, ast.Load()), args, kw),
            st.sampled_from(["sin", "sum", "relu", "mean", "softmax", "open", "trace", "where"]),
            st.lists(children, max_size=3),
            st.lists(st.builds(lambda v: ast.keyword("axis", v), children), max_size=1),
        ),
        st.builds(lambda a, b: ast.Compare(a, [ast.Gt()], [b]), children, children),
        st.builds(lambda a: ast.Subscript(a, ast.Constant(0), ast.Load()), children),
        st.builds(lambda a: ast.Lambda(ast.arguments([], [], None, [], [], None, []), a), children),
    )


TREES = st.recursive(LEAVES, extend, max_leaves=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TREES)
def test_arbitrary_syntax_trees_never_raise_anything_but_a_backstep_error(tree):
    source = ast.unparse(ast.fix_missing_locations(ast.Expression(tree)))
    try:
        graph = parse(source)
    except BackstepError:
        return
    assert graph.output is not None
