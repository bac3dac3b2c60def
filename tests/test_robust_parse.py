"""No hang, no traceback, nothing lost: the parser and derivation on odd and generated input.

- a name used before (or in) its own assignment is an error with its place, never a cycle that
  hangs (`a = a + x; a` used to grow without end); a name assigned twice is an error;
- a keyword given twice (`sum(x, axis=0, axis=1)`, which Python's ast accepts) is an error;
- leading whitespace, a byte order mark and an indented program parse; a program is split into
  lines where Python splits it (\\n, \\r\\n, \\r), not at \\x1c or \\u2028 inside a comment;
- constants that overflow a float64, have thousands of digits, or divide by zero are refused at
  parse time; a derivative that works out to ∞, NaN or a complex number is refused by derive;
- a fuzz test over the op table's spellings and odd constants: derive exits 0, 1 or 2, never
  with a traceback; what it found is kept as explicit regression cases;
- the simplification budget works off the main thread, and parsing/deriving leaves the
  recursion limit as it found it (from any number of threads).

Every test that could hang runs under a SIGALRM guard, so that a regression fails instead.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest
from helpers import time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from backstep import BackstepError, Limits, derive, parse
from backstep import budget as budget_module
from backstep import ops as op_table
from backstep.budget import BudgetExpired, TimeBudget
from backstep.cli import app
from backstep.errors import DomainError, ParseError
from backstep.parser import deep_recursion

runner = CliRunner()


def refused(source: str, **kw) -> BackstepError:
    with time_limit(60), pytest.raises(BackstepError) as caught:
        derive(source, **kw)
    assert caught.value.render()
    return caught.value


def cli(*args: str):
    with time_limit(60):
        result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


# --- 1. a name used before its assignment, in it, or assigned twice -----------------------------------


@pytest.mark.parametrize(
    ("source", "message", "col"),
    [
        ("a = a + x; a", "a is used in its own assignment", 5),
        ("a = sin(a)", "a is used in its own assignment", 9),
        ("y = a * 2; a = x + 1; y", "a is an input variable (used at 1:5, before this assignment)", 12),
        ("x = 1; x = 2; x", "x is already assigned (at 1:1)", 8),
        ("H = x; H = H * 2; H", "H is already assigned (at 1:1)", 8),
        ("X: (n, d); n = sum(X); n", "n is a dimension name", 12),
    ],
)
def test_a_name_means_one_value_everywhere(source, message, col):
    err = refused(source)
    assert isinstance(err, ParseError)
    assert message in err.message
    assert err.place is not None and (err.place.line, err.place.col) == (1, col)


def test_used_in_its_own_assignment_on_a_later_line():
    err = refused("X: (n, d)\nH = relu(X)\nH2 = H +\\\n  H2\nsum(H2)")
    assert "H2 is used in its own assignment" in err.message and (err.place.line, err.place.col) == (4, 3)


def test_self_assignment_is_a_clean_error_in_every_command(tmp_path):
    result = cli("derive", "a = a + x; a", "--no-verify")
    assert result.exit_code == 2 and "used in its own assignment" in result.output
    assert "1:5" in result.output
    claims = tmp_path / "claims.jsonl"
    claims.write_text('{"id": "a", "expr": "a = a + x; a", "wrt": "x", "claim": "1"}\n')
    result = cli("check", "--batch", str(claims))
    assert result.exit_code in (0, 1, 2)
    assert "used in its own assignment" in result.output
    sheet = tmp_path / "hw.toml"
    sheet.write_text('title = "t"\n\n[[problem]]\nfunction = "a = a + x; a"\n')
    result = cli("sheet", str(sheet), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "used in its own assignment" in result.output


def test_assignments_in_order_still_work():
    d = derive("X: (n, d); W: (d, h)\nH = relu(X @ W)\nL = sum(H * H)\nL")
    assert d.program == ["H = relu(X @ W)", "L = sum(H * H)", "L"]


# --- 2. a keyword given twice ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message", "col"),
    [
        ("sum(X, axis=0, axis=1)", "axis is given twice", 16),
        ("sum(X, 0, axis=1)", "axis is given twice (by position and axis=)", 11),
        ("sum(X, dim=0, axis=1)", "axis is given twice (dim= and axis=)", 15),
        ("sum(X, keepdims=True, keepdim=False)", "keepdims is given twice", 23),
        ("leaky_relu(x, negative_slope=0.1, negative_slope=0.2)", "negative_slope is given twice", 35),
    ],
)
def test_a_keyword_given_twice_is_an_error_not_last_wins(source, message, col):
    err = refused(source, shapes={"X": ("n", "d")} if "X" in source else None)
    assert message in err.message and (err.place.line, err.place.col) == (1, col)


# --- 3. whitespace, byte order marks, line ends ---------------------------------------------------------


@pytest.mark.parametrize("source", ["  x**2", "\ufeffx**2", "\t x**2 ", "\ufeff  x**2\n", "\n\n   x**2\n\n"])
def test_leading_whitespace_and_a_byte_order_mark(source):
    d = derive(source)
    assert d.program == ["x**2"] and str(d.gradients["x"].expr) == "2*x"


def test_an_indented_program_parses_with_its_places_as_written():
    program = (
        "    X: (n, d); W: (d, h)\n    # a comment\n\n  # a less indented comment\n    H = relu(X @ W)\n    sum(H)\n"
    )
    d = derive(program)
    assert d.program == ["H = relu(X @ W)", "sum(H)"]
    err = refused(program.replace("relu(X @ W)", "relu(X @ foo(W))"))
    assert "unknown function foo" in err.message and (err.place.line, err.place.col) == (5, 18)


def test_a_first_line_indented_alone_is_a_clear_error():
    err = refused("  x = sin(y)\nx")
    assert "unexpected indent" in err.message and (err.place.line, err.place.col, err.place.end_col) == (1, 1, 3)


@pytest.mark.parametrize("sep", ["\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x0b", "\x0c"])
def test_a_comment_keeps_characters_that_splitlines_would_split_at(sep):
    d = derive(f"x # a comment{sep}b\ny")
    assert d.program == ["x", "y"]
    err = refused(f"x # a{sep}b\nsin(q, 1)")
    assert err.place.line == 2


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_python_line_end_splits_statements(newline):
    d = derive(newline.join(["X: (n, d)", "H = sin(X)", "sum(H)"]))
    assert d.program == ["H = sin(X)", "sum(H)"]


# --- 4. constants and undefined derivatives -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x / (1 - 1)", "division by zero"),
        ("x / 0", "division by zero"),
        ("1 / 0 * x", "not a finite real number (division by zero)"),
        ("x / (0 * 3)", "division by zero"),
        ("x * (2**1000)**15", "larger than a float64"),
        ("x * 10**400", "larger than a float64"),
        ("x * 1" + "0" * 400, "larger than a float64"),
        ("x * ((2**1000 + 1) / 2**1000)**15", "more than 331 digits"),
        ("x ** (10**400)", "larger than a float64"),
        ("exp(710) * x", "larger than a float64"),
        ("x * exp(exp(exp(exp(exp(exp(exp(exp(exp(1)))))))))", "larger than a float64"),
        ("0 ** x", "must be a positive constant"),
        ("(-2) ** x", "must be a positive constant"),
        ("leaky_relu(x, negative_slope=1e308)", "negative_slope must be a finite number"),
        ("clamp(x, min=-1e300)", "min must be a finite number"),
        ("elu(x, alpha=100000000000000000000)", "alpha must be a finite number"),
    ],
)
def test_constants_that_are_not_finite_float64s_are_refused_at_parse_time(source, message):
    err = refused(source)
    assert isinstance(err, ParseError) and message in err.message and err.place is not None
    result = cli("derive", source, "--no-verify")
    assert result.exit_code == 2 and message in result.output


def test_codegen_of_a_huge_parameter_is_refused_not_a_recursion_error():
    result = cli("codegen", "leaky_relu(x, negative_slope=1e308)")
    assert result.exit_code == 2 and "negative_slope" in result.output


@pytest.mark.parametrize("source", ["x / (x - x)", "x * log(x - x)", "sin(x) + 1 / (x - x)**2", "sqrt(x - x)"])
def test_a_derivative_that_is_infinite_or_undefined_is_refused(source):
    err = refused(source)
    assert isinstance(err, DomainError) and "infinite or undefined" in err.message
    result = cli("derive", source, "--no-verify")
    assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.parametrize("source", ["2 ** x", "x * 1e308", "x * 1e-308", "n ** x", "x ** x ** x", "0 ** 2 * x"])
def test_odd_but_valid_constants_still_derive(source):
    with time_limit(60):
        d = derive(source, shapes={"x": ()})
    assert d.gradients


# --- the fuzz test ------------------------------------------------------------------------------------------

ODD_CONSTANTS = [
    "0", "1", "-1", "2", "0.5", "1e308", "1e-308", "-1e308", "5e-324", "2**1000", "(2**1000)**2", "10**308",
    "(1 - 1)", "(0 * x)", "(x - x)", "1e308 * 10", "0.0", "-0.0", "3**-1", "2**0.5", "1e16", "(-1)",
]  # fmt: skip
NAMES = ["x", "y", "z"]
PARAM_VALUES = ["0", "1", "-1", "0.01", "1e308", "-1e308", "1e-308", "2**1000", "True", "None", "x"]


def _call(fname: str, args: list[str], draw) -> str:
    op = op_table.FUNCTION_OPS[fname]
    kwargs = []
    for pname in op.params:
        if draw(st.booleans()):
            choices = [repr(c) for c in op.choices.get(pname, ())] or PARAM_VALUES
            kwargs.append(f"{pname}={draw(st.sampled_from(choices))}")
    return f"{fname}({', '.join(args + kwargs)})"


SCALAR_FUNCTIONS = [n for n, op in op_table.FUNCTION_OPS.items() if op.arity >= 1 and not op.input_ranks]
INFIX = ["+", "-", "*", "/", "**"]


@st.composite
def formulas(draw, depth: int = 0):
    """A formula over scalar variables and odd constants, from the op table's spellings."""
    if depth >= 4 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(NAMES + ODD_CONSTANTS))
    kind = draw(st.sampled_from(["infix", "infix", "call", "neg", "nested_pow", "deep"]))
    if kind == "infix":
        return f"({draw(formulas(depth + 1))} {draw(st.sampled_from(INFIX))} {draw(formulas(depth + 1))})"
    if kind == "neg":
        return f"-{draw(formulas(depth + 1))}"
    if kind == "nested_pow":
        return " ** ".join(
            draw(st.lists(st.sampled_from(NAMES + ["2", "0", "-1", "0.5", "1000"]), min_size=2, max_size=4))
        )
    if kind == "deep":  # up to past --max-depth (500)
        fname = draw(st.sampled_from(["sin", "exp", "log", "sqrt", "tanh", "-", "+"]))
        levels = draw(st.sampled_from([2, 10, 100, 300, 600]))
        inner = draw(formulas(depth + 2))
        return f"{fname}(" * levels + inner + ")" * levels
    fname = draw(st.sampled_from(SCALAR_FUNCTIONS))
    arity = op_table.FUNCTION_OPS[fname].arity
    return _call(fname, [draw(formulas(depth + 1)) for _ in range(arity)], draw)


def _derives_cleanly(source: str) -> None:
    with time_limit(120):
        result = runner.invoke(app, ["derive", source, "--no-verify", "--simplify-budget", "2"])
    assert result.exception is None or isinstance(result.exception, SystemExit), (source, result.exception)
    assert result.exit_code in (0, 1, 2), (source, result.output)
    assert "Traceback" not in result.output


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(formulas())
def test_generated_formulas_derive_or_are_refused_never_a_traceback(source):
    _derives_cleanly(source)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(formulas())
def test_generated_formulas_verify_or_are_refused(source):
    pytest.importorskip("torch")
    with time_limit(120):
        try:
            v = derive(source, verify=True, points=1, limits=Limits(simplify_seconds=2)).verification
        except BackstepError as err:
            assert err.render()
            return
    assert v.ok, (source, v.first_failure, v.problems)


# What the fuzz test (and the issue) found: each once a traceback or a hang.
FOUND = [
    "0 ** x",
    "x*(2**1000)**15",
    "x / (1 - 1)",
    "leaky_relu(x, negative_slope=1e308)",
    "a = a + x; a",
    "(-1) ** x",
    "x / (x - x)",
    "log(x - x)",
    "x ** (2**1000)",
    "sqrt(0 * x)",
    "x ** x ** x",
    "clamp(x, min=1e308, max=-1e308)",
    "x * 1e308 * 10",
    "sum(x, axis=0, axis=1)",
    "log(log((0 * x)))",  # printing zoo: the value is undefined
    "relu((0 / (0 * x)))",  # Relu(nan): "Invalid NaN comparison"
    "tanh(" * 20 + "x ** x" + ")" * 20,  # minutes: writing the gradient out in x was not under the budget
    "exp(exp((exp(exp(exp(exp(exp(exp(exp(exp(exp(exp(0)))))))))) ** 0)))",  # a hang: SymPy on a tower of exps
]


@pytest.mark.parametrize("source", FOUND)
def test_found_by_fuzzing(source):
    _derives_cleanly(source)
    for command in (["codegen", source], ["derive", source, "--format", "json", "--no-verify"]):
        with time_limit(120):
            result = runner.invoke(app, command)
        assert result.exception is None or isinstance(result.exception, SystemExit), (command, result.exception)


# --- 5. the budget off the main thread; the recursion limit --------------------------------------------------


@pytest.fixture()
def slow_tidying(monkeypatch):
    """factor_terms (the tidying step) spins for 30 s in Python, as SymPy's own slow work does."""
    derive_module = sys.modules["backstep.derive"]
    real = derive_module.sympy.factor_terms

    def slow(expr, *args, **kwargs):
        end = time.monotonic() + 30
        while time.monotonic() < end:
            pass
        return real(expr, *args, **kwargs)

    monkeypatch.setattr(derive_module.sympy, "factor_terms", slow)


def _in_a_thread(fn):
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - reported by the test
            out["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(300)
    assert not thread.is_alive(), "the budget did not stop the work in the thread"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_the_simplify_budget_works_in_a_worker_thread(slow_tidying):
    d = _in_a_thread(lambda: derive("sin(x) * y", limits=Limits(simplify_seconds=0.5)))
    assert all(s.unsimplified for s in d.backward if s.kind == "rule")
    assert any("--simplify-budget" in note for note in d.notes)


def test_writing_a_result_out_in_the_inputs_is_under_the_budget_too():
    with time_limit(120):
        d = derive("tanh(" * 20 + "x ** x" + ")" * 20, limits=Limits(simplify_seconds=0.5))
    assert any("left in terms of the named steps" in note and "--simplify-budget" in note for note in d.notes)
    assert not d.gradients["x"].in_inputs


def test_time_budgets_nest_in_a_worker_thread():
    def spin(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    def work():
        seen = []
        with TimeBudget(30) as outer:
            try:
                with TimeBudget(0.1) as inner:
                    spin(30)
            except BudgetExpired as err:
                seen.append(err.budget is inner)
        try:
            with TimeBudget(0.1) as outer, TimeBudget(30):
                spin(30)
        except BudgetExpired as err:
            seen.append(err.budget is outer)
        for _ in range(100):  # a block that ends as its budget does leaves nothing to go off later
            try:
                with TimeBudget(0.002):
                    spin(0.002)
            except BudgetExpired:
                pass
        spin(0.1)
        return seen

    assert _in_a_thread(work) == [True, True]


def _swallowing_work(seconds: float) -> str:
    """Work that swallows what it can, as some of SymPy does (`except Exception: pass`)."""
    end = time.monotonic() + seconds
    swallowed = 0
    while time.monotonic() < end:
        try:
            sum(range(2000))
        except Exception:  # noqa: BLE001 - the point of the test
            swallowed += 1
        [i for i in range(2000)]  # and half of the time it is outside the try
    return "ran to the end"


def _expiry_despite_swallowing() -> tuple[str, float]:
    start = time.monotonic()
    try:
        with TimeBudget(0.2):
            outcome = _swallowing_work(20)
    except BudgetExpired:
        outcome = "expired"
    return outcome, time.monotonic() - start


@pytest.mark.parametrize("where", ["main thread", "worker thread"])
def test_an_expiry_that_is_swallowed_is_raised_again(where):
    # a swallowed expiry once let a simplification run on past the budget (and the test's guard)
    with time_limit(60):
        outcome, _ = (
            _expiry_despite_swallowing() if where == "main thread" else _in_a_thread(_expiry_despite_swallowing)
        )
    assert outcome == "expired"
    time.sleep(3 * budget_module.RETRY_SECONDS)  # and nothing goes off after the block


def test_parsing_and_deriving_leave_the_recursion_limit_as_they_found_it():
    before = sys.getrecursionlimit()
    parse("sin(x)")
    derive("relu(x@W1)@W2")
    assert sys.getrecursionlimit() == before
    threads = [threading.Thread(target=derive, args=("sum(relu(X@W1)@W2)",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sys.getrecursionlimit() == before


def test_overlapping_threads_put_the_recursion_limit_back():
    """Thread A raises the limit, B enters, A leaves, B leaves: the limit is the one from before
    (each restoring "its" old value left B's saved 20,000 behind)."""
    before = sys.getrecursionlimit()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with deep_recursion(5_000):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second():
        a_in.wait(10)
        with deep_recursion(20_000):
            b_in.set()
            a_out.wait(10)
            assert sys.getrecursionlimit() >= 20_000  # still raised while this block runs

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sys.getrecursionlimit() == before
