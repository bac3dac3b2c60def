"""The safe parser: what it accepts (with the shapes it infers) and what it rejects (with the place).

Tables in the style of latexify's tests: `parametrize("source, expected")`, one row per case.
"""

from __future__ import annotations

import re

import pytest

import backstep
from backstep import BackstepError, Limits, ParseError, ShapeError, UnsupportedError, parse
from backstep.shapes import fmt_shape_plain


def summary(graph) -> str:
    """`x: (n, d), W1: (d, h) -> y: (n, h)`: the variables' shapes and the output's, in order."""
    inputs = ", ".join(f"{v.name}: {fmt_shape_plain(v.shape)}" for v in graph.variables)
    return f"{inputs} -> {graph.output.name}: {fmt_shape_plain(graph.output.shape)}"


# --- accepted ------------------------------------------------------------------------------------

ACCEPTED = [
    # single expressions, shapes inferred with textbook names
    ("relu(x@W1)@W2", "x: (n, d), W1: (d, h), W2: (h, o) -> y: (n, o)"),
    ("x**2 + 3", "x: () -> y: ()"),
    ("sin(x**2)*exp(y)", "x: (), y: () -> z: ()"),
    ("X @ W.T", "X: (n, d), W: (h, d) -> y: (n, h)"),
    ("X.T @ Y", "X: (n, d), Y: (n, h) -> y: (d, h)"),
    ("-x + 2", "x: () -> y: ()"),
    ("-(X @ W)", "X: (n, d), W: (d, h) -> y: (n, h)"),
    ("+x * -y", "x: (), y: () -> z: ()"),
    ("x ** 1000", "x: () -> y: ()"),
    ("outer(a, b)", "a: (n,), b: (d,) -> y: (n, d)"),
    # keyword and positional parameters
    ("sum(X, axis=1)", "X: (n, d) -> y: (n,)"),
    ("sum(X, 1)", "X: (n, d) -> y: (n,)"),
    ("sum(X, axis=0)", "X: (n, d) -> y: (d,)"),
    ("sum(X)", "X: () -> y: ()"),
    ("mean(X, axis=-1, keepdims=True)", "X: (n, d) -> y: (n, 1)"),
    ("mean(X, axis=1)", "X: (n, d) -> y: (n,)"),
    ("sum(X, dim=0, keepdim=True)", "X: (n, d) -> y: (1, d)"),
    ("sum((relu(X@W1)@W2 - Y)**2)", "X: (n, d), W1: (d, h), W2: (h, o), Y: () -> y: ()"),
    # programs: `;` and newlines, named intermediates, the last line is the output
    ("H = relu(X @ W1); Y = H @ W2", "X: (n, d), W1: (d, h), W2: (h, o) -> Y: (n, o)"),
    ("H = relu(X @ W1)\nY = H @ W2\n", "X: (n, d), W1: (d, h), W2: (h, o) -> Y: (n, o)"),
    ("H = relu(X @ W1)\nH @ W2", "X: (n, d), W1: (d, h), W2: (h, o) -> y: (n, o)"),
    ("H = relu(X @ W1)\r\nH @ W2\r\n", "X: (n, d), W1: (d, h), W2: (h, o) -> y: (n, o)"),
    (
        "# a two-layer net\n\nH = relu(X @ W1)  # hidden layer\n\nH @ W2  # output\n",
        "X: (n, d), W1: (d, h), W2: (h, o) -> y: (n, o)",
    ),
    ("x@W;", "x: (n, d), W: (d, h) -> y: (n, h)"),
    ("H = X @ W\nY = H.T", "X: (n, d), W: (d, h) -> Y: (h, n)"),
    # shape annotations: matrices, vectors, scalars, concrete sizes, annotated intermediates
    ("X: (n, d)\nX * 2", "X: (n, d) -> y: (n, d)"),
    ("b: (h,)\nb * 2", "b: (h,) -> y: (h,)"),
    ("s: ()\ns * 2", "s: () -> y: ()"),
    ("X: (n, d)\nb: (h,)\ns: ()\nW: (d, h)\nX @ W + b * s", "X: (n, d), W: (d, h), b: (h,), s: () -> y: (n, h)"),
    ("X: (n, d); W: (d, h)\nX @ W", "X: (n, d), W: (d, h) -> y: (n, h)"),
    ("x: (3, 4)\nW: (4, 5)\nx @ W", "x: (3, 4), W: (4, 5) -> y: (3, 5)"),
    ("x: (3, 4)\nx @ W", "x: (3, 4), W: (4, n) -> y: (3, n)"),
    ("H: (n, h) = relu(X @ W1)\nH @ W2", "X: (n, d), W1: (d, h), W2: (h, o) -> y: (n, o)"),
    ("H: (n, n) = relu(X @ W1)\nH @ W2", "X: (n, d), W1: (d, n), W2: (n, h) -> y: (n, h)"),
    # dimension names used as numbers
    ("X: (n, d)\nsum(X)/n", "X: (n, d) -> y: ()"),
    ("X: (n, d); Y = sum(X, axis=0) / n", "X: (n, d) -> Y: (d,)"),
    ("x: (n,)\nn * x", "x: (n,) -> y: (n,)"),
]


@pytest.mark.parametrize("source, expected", ACCEPTED)
def test_accepted(source, expected):
    assert summary(parse(source)) == expected


ACCEPTED_WITH_SHAPES = [
    ("X @ W.T + b", {"b": ("h",)}, "X: (n, d), W: (h, d), b: (h,) -> y: (n, h)"),
    ("relu(x@W1)@W2", {"x": ("n", "d")}, "x: (n, d), W1: (d, h), W2: (h, o) -> y: (n, o)"),
    ("relu(x@W1)@W2", {"x": (3, 4), "W2": (5, 2)}, "x: (3, 4), W1: (4, 5), W2: (5, 2) -> y: (3, 2)"),
    ("x@W", {"x": (3, 4)}, "x: (3, 4), W: (4, n) -> y: (3, n)"),
    ("sum(X)/n", {"X": ("n", "d")}, "X: (n, d) -> y: ()"),
    ("X: (n, d)\nsum(X)/n", {"X": ("n", "d")}, "X: (n, d) -> y: ()"),
    ("sum(sigmoid(X) * log(X))", {"X": ("n", "d")}, "X: (n, d) -> y: ()"),
    ("sin(x**2)*exp(y)", {"x": ("n", "d"), "y": ("d",)}, "x: (n, d), y: (d,) -> z: (n, d)"),
]


@pytest.mark.parametrize("source, shapes, expected", ACCEPTED_WITH_SHAPES)
def test_accepted_with_shapes(source, shapes, expected):
    assert summary(parse(source, shapes)) == expected


def test_dimension_names_are_constants_not_variables():
    graph = parse("X: (n, d)\nsum(X)/n")
    assert [v.name for v in graph.variables] == ["X"]
    assert graph.dims == ["n", "d"]


def test_intermediates_keep_their_names():
    graph = parse("H = relu(X @ W1)\nZ = H @ W2\nL = sum(Z)")
    names = [n.name for n in graph.op_nodes]
    assert {"H", "Z", "L"} <= set(names)
    assert graph.output.name == "L"


def test_unused_assignment_is_noted():
    graph = parse("G = sin(x)\nH = cos(x)\nH * 2")
    assert any("G" in note for note in graph.notes)


# --- rejected ------------------------------------------------------------------------------------

# (source, (error class, line, col, a fragment of the message)); line/col None: no place.
REJECTED = [
    # syntax
    ("x +", (ParseError, 1, 4, "invalid syntax")),
    ("relu(x@W1", (ParseError, 1, 5, "never closed")),
    ("a = x*2\nb = a +* 3", (ParseError, 2, 8, "invalid syntax")),
    ("x\n\ny +* 3", (ParseError, 3, 4, "invalid syntax")),
    ("αβγ + +* 3", (ParseError, 1, 8, "invalid syntax")),
    ("x@W;;", (ParseError, 1, 5, "invalid syntax")),
    ("", (ParseError, None, None, "empty")),
    ("   \n  ", (ParseError, None, None, "empty")),
    ("x: (n,)", (ParseError, None, None, "only shape annotations")),
    # unknown functions, with a suggestion
    ("sinn(x)", (ParseError, 1, 1, "unknown function sinn; did you mean sin?")),
    ("αβ + sinn(x)", (ParseError, 1, 6, "did you mean sin?")),
    ("x + relux(y)", (ParseError, 1, 5, "did you mean relu?")),
    ("sin(x, y)", (ParseError, 1, 1, "sin takes 1 argument, got 2")),
    ("sum(X, foo=1)", (ParseError, 1, 12, "sum has no parameter foo")),
    ("sum(X, axis='a')", (ParseError, 1, 13, "axis must be an integer")),
    ("sum(X, axis=1.5)", (ParseError, 1, 13, "axis must be an integer")),
    ("mean(X, keepdims=1)", (ParseError, 1, 18, "keepdims must be True or False")),
    # attributes other than .T
    ("x.shape", (UnsupportedError, 1, 1, "the attribute .shape is not supported")),
    ("2 * sin(x).real", (UnsupportedError, 1, 5, ".real")),
    ("x.T.T.foo", (UnsupportedError, 1, 1, ".foo")),
    ("x.__class__", (UnsupportedError, 1, 1, ".__class__")),
    ("os.system('ls')", (UnsupportedError, 1, 1, "only the functions of backstep's op table")),
    # constructs that are Python but not formulas
    ("lambda x: x", (UnsupportedError, 1, 1, "a lambda is not allowed")),
    ("[a for a in x]", (UnsupportedError, 1, 1, "a list comprehension is not allowed")),
    ("sum([a for a in x])", (UnsupportedError, 1, 5, "a list comprehension is not allowed")),
    ("sum(a for a in x)", (UnsupportedError, 1, 4, "a generator expression is not allowed")),
    ("f'{x}'", (UnsupportedError, 1, 1, "an f-string is not allowed")),
    ("(y := x) + 1", (UnsupportedError, 1, 2, "the walrus operator := is not allowed")),
    ("E[ix, 0]", (UnsupportedError, 1, 3, "indexing by an array is supported alone")),
    ("x + y[1:4:2]", (UnsupportedError, 1, 11, "a slice with a step is not supported")),
    ("0 < x < y", (UnsupportedError, 1, 1, "only one comparison at a time")),
    ("x == y", (UnsupportedError, 1, 1, "only one comparison at a time")),
    ("x if y else z", (UnsupportedError, 1, 1, "a conditional expression is not allowed")),
    ("import os", (UnsupportedError, 1, 1, "import is not allowed")),
    ("x += 1", (UnsupportedError, 1, 1, "augmented assignment")),
    ("sin(*x)", (UnsupportedError, 1, 5, "*args is not allowed")),
    # code injection attempts: never evaluated, rejected with the place
    ("__import__('os')", (ParseError, 1, 1, "unknown function __import__")),
    ("__import__('os').system('ls')", (UnsupportedError, 1, 1, "only the functions of backstep's op table")),
    ("__x + 1", (UnsupportedError, 1, 1, "the name __x is not allowed")),
    ("y + __builtins__", (UnsupportedError, 1, 5, "the name __builtins__ is not allowed")),
    ("_x * 2", (UnsupportedError, 1, 1, "the name _x is not allowed")),
    # non-numeric constants
    ("x + 'a'", (UnsupportedError, 1, 5, "the str constant 'a' is not allowed")),
    ("x + True", (UnsupportedError, 1, 5, "the bool constant True is not allowed")),
    ("None + x", (UnsupportedError, 1, 1, "the NoneType constant None is not allowed")),
    ("x + 1j", (UnsupportedError, 1, 5, "complex")),
    ("x + 1e400", (ParseError, 1, 5, "not finite")),
    # operators without a gradient here
    ("x // y", (UnsupportedError, 1, 1, "the operator // is not supported")),
    ("x % y", (UnsupportedError, 1, 1, "the operator % is not supported")),
    ("a + (x | y)", (UnsupportedError, 1, 6, "the operator | is not supported")),
    # names: reassignment, assigning to an input, a function's name
    ("H = x*2\nH = x*3", (ParseError, 2, 1, "H is already assigned")),
    ("H = x*2\n  \nH = x*3", (ParseError, 3, 1, "H is already assigned")),
    ("y2 = x*2\nx = y2 + 1\nx", (ParseError, 2, 1, "x is an input variable")),
    ("x + y; y = 2", (ParseError, 1, 8, "y is an input variable")),
    ("sin = x*2\nsin(sin)", (ParseError, 1, 1, "sin is a function this program also calls")),
    ("sum * x", (ParseError, 1, 1, "sum is a function; a variable needs another name")),
    # shapes
    ("X: (n, d)\nsum(X, axis=5)", (ShapeError, 2, 1, "axis 5 is out of range for an array of rank 2")),
    ("X: (n, d)\nsum(X, axis=-3)", (ShapeError, 2, 1, "axis -3 is out of range")),
    ("X: (n,)\nsum(X, 1)", (ShapeError, 2, 1, "axis 1 is out of range for an array of rank 1")),
    (
        "X: (n, d)\nW1: (d, h)\nH: (n, n) = relu(X @ W1)\nH @ W2",
        (ShapeError, 3, 1, "H is annotated (n, n) but is (n, h)"),
    ),
    ("X: (n, d)\nY: (d, n)\nX + Y", (ShapeError, 3, 1, "cannot broadcast (n, d) with (d, n)")),
    ("X: (n, 0)\nX * 2", (ParseError, 1, 8, "a shape is a tuple")),
    # nothing to differentiate
    ("2+3", (ParseError, None, None, "does not depend on any variable")),
    ("x = 1\n", (ParseError, None, None, "does not depend on any variable")),
    ("log(0) * x", (ParseError, 1, 1, "not a finite real number")),
    ("(1/0) * x", (ParseError, 1, 2, "not a finite real number")),
    # limits
    ("x**100000", (ParseError, 1, 1, "the exponent 100000 is larger than 1000 (--max-exponent)")),
    ("x ** -5000", (ParseError, 1, 1, "--max-exponent")),
    ("y + x ** (2*1000)", (ParseError, 1, 5, "the exponent 2000 is larger than 1000")),
    ("x" + " " * 100_000, (ParseError, None, None, "the limit is 100000 (--max-chars)")),
]


def check_rendered(err: BackstepError, source: str) -> None:
    """One clear line (`kind at line:col: message`), then the source line and a caret under the place."""
    assert "\n" not in err.message
    assert err.message.strip() == err.message and err.message
    assert "Traceback" not in err.message
    lines = err.render().split("\n")
    if err.place is None:
        assert lines == [f"{err.kind}: {err.message}"]
        return
    line, col = err.place.line, err.place.col
    assert lines[0] == f"{err.kind} at {line}:{col}: {err.message}"
    text = source.splitlines()[line - 1]
    if len(text) <= 200:
        assert len(lines) == 3
        assert lines[1] == "  " + text
        caret = lines[2][2:]
        assert caret.index("^") == col - 1, "the caret must start under the column of the place"
        assert set(caret[col - 1 :]) == {"^"}
        assert set(caret[: col - 1]) <= {" "}
        if err.place.end_col is not None:
            assert caret.count("^") == err.place.end_col - err.place.col


@pytest.mark.parametrize("source, expected", REJECTED)
def test_rejected(source, expected):
    cls, line, col, fragment = expected
    with pytest.raises(BackstepError) as info:
        parse(source)
    err = info.value
    assert type(err) is cls, err.render()
    assert fragment in err.message
    if line is None:
        assert err.place is None
    else:
        assert (err.place.line, err.place.col) == (line, col), err.render()
    check_rendered(err, source)


REJECTED_WITH_SHAPES = [
    ("x@W", {"x": (3, 4), "W": (5, 2)}, (ShapeError, 1, 1, "inner dimensions differ (4 != 5)")),
    ("relu(x@W1)@W2", {"x": (3, 4), "W1": (5, 2)}, (ShapeError, 1, 6, "inner dimensions differ")),
    ("x + y", {"x": (3, 4), "y": (5,)}, (ShapeError, 1, 1, "")),
    ("X: (n, d)\nsum(X)", {"X": ("n", "d", "e")}, (ShapeError, 1, 1, "--shape X=(n, d, e) disagrees")),
]


@pytest.mark.parametrize("source, shapes, expected", REJECTED_WITH_SHAPES)
def test_rejected_with_shapes(source, shapes, expected):
    cls, line, col, fragment = expected
    with pytest.raises(BackstepError) as info:
        parse(source, shapes)
    err = info.value
    assert type(err) is cls, err.render()
    assert fragment in err.message
    assert (err.place.line, err.place.col) == (line, col), err.render()
    check_rendered(err, source)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeError) as info:
        parse("x@W", {"x": (3, 4), "W": (5, 2)})
    message = info.value.message
    assert "(3, 4)" in message and "(5, 2)" in message
    assert "x: (3, 4)" in message and "W: (5, 2)" in message
    assert info.value.render().splitlines()[1:] == ["  x@W", "  ^^^"]


def test_shape_error_does_not_leak_internal_dimension_names():
    """BUG: an unannotated operand shows the unifier's fresh names: `[X: (?1, ?2)]`."""
    with pytest.raises(ShapeError) as info:
        parse("sum(X, axis=5)")
    # an inferred dimension shows as `?`, never as the unifier's internal name `?1`
    assert not re.search(r"\?\d", info.value.message), info.value.message


def test_cli_shape_must_agree_with_annotation_sizes():
    """BUG: `--shape X=4,d` silently replaces the annotation `X: (3, d)` (only the rank is compared)."""
    with pytest.raises(ShapeError):
        parse("X: (3, d)\nX @ W", {"X": (4, "d")})


@pytest.mark.parametrize(
    "source",
    ["X: (n, d)\nY: (d, n)\nX + Y", "x: (n, d)\nW: (e, h)\nx @ W"],
    ids=["missing-transpose", "inner-names-differ"],
)
def test_distinct_annotated_dimension_names_are_not_unified(source):
    """Two dimensions the user named differently are never made equal: a missing `.T` is caught."""
    with pytest.raises(ShapeError):
        parse(source)


# --- hostile inputs: clean errors, never a RecursionError ------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "(" * 20000 + "x" + ")" * 20000,
        "-" * 20000 + "x",
        "+" * 20000 + "x",
        "x" + "+x" * 30000,
        "x" + "**x" * 3000,
        "sin(" * 600 + "x" + ")" * 600,
    ],
    ids=["parens", "unary-minus", "unary-plus", "long-sum", "power-tower", "nested-calls"],
)
def test_deep_nesting_is_a_clean_parse_error(source):
    with pytest.raises(ParseError) as info:
        parse(source)
    err = info.value
    assert "nested" in err.message
    assert "\n" not in err.message
    rendered = err.render()  # must not fail either, even for a 40001-character line
    assert len(rendered.splitlines()) in (1, 3)
    assert all(len(line) < 400 for line in rendered.splitlines())


def test_deep_nesting_through_derive_is_a_clean_parse_error():
    with pytest.raises(ParseError):
        backstep.derive("(" * 20000 + "x" + ")" * 20000)


def test_deep_nesting_caret_stays_under_the_place_in_a_long_line():
    source = "(" * 20000 + "x" + ")" * 20000
    with pytest.raises(ParseError) as info:
        parse(source)
    err = info.value
    if err.place is not None:
        head, text, caret = err.render().split("\n")
        assert head.startswith(f"syntax error at {err.place.line}:{err.place.col}: ")
        assert len(text) <= 202 and len(caret) <= 202
        assert caret.strip() and set(caret.strip()) == {"^"}


def test_max_depth_limit_has_a_place():
    with pytest.raises(ParseError) as info:
        parse("sin(sin(x))", limits=Limits(max_depth=2))
    assert "--max-depth" in info.value.message
    # sin(sin(x)) is three levels deep (sin, sin, x): the third, x, passes a limit of 2
    assert (info.value.place.line, info.value.place.col) == (1, 9)
    assert parse("sin(sin(x))", limits=Limits(max_depth=3))


@pytest.mark.parametrize("depth", range(3))
def test_every_max_depth_error_has_a_place(depth):
    """Only expressions count as levels; the `Load` context of `x` (no position) once made an
    error without a place (and the CLI without a caret)."""
    with pytest.raises(ParseError) as info:
        parse("sin(sin(x))", limits=Limits(max_depth=depth))
    assert info.value.place is not None, info.value.render()
    check_rendered(info.value, "sin(sin(x))")


def test_max_nodes_limit():
    with pytest.raises(ParseError, match="--max-nodes"):
        parse("x + y + z", limits=Limits(max_nodes=3))
    assert parse("x + y + z", limits=Limits(max_nodes=10))


def test_max_chars_limit():
    with pytest.raises(ParseError, match=r"the formula is 5 characters long; the limit is 4 \(--max-chars\)"):
        parse("x + y", limits=Limits(max_chars=4))
    assert parse("x + y", limits=Limits(max_chars=5))


def test_over_long_input_is_refused_before_parsing():
    source = "x+" * 60_000 + "x"
    with pytest.raises(ParseError) as info:
        parse(source)
    assert "--max-chars" in info.value.message
    assert info.value.place is None


def test_max_exponent_limit():
    with pytest.raises(ParseError, match="--max-exponent"):
        parse("x ** 20", limits=Limits(max_exponent=10))
    assert parse("x ** 10", limits=Limits(max_exponent=10))
    assert parse("x ** 2000", limits=Limits(max_exponent=5000))


def test_null_byte_is_a_clean_parse_error():
    with pytest.raises(ParseError):
        parse("x\0 + y")


def test_nothing_is_evaluated():
    """A formula is parsed, never run: no side effect can happen even for a rejected call."""
    import builtins

    calls = []
    original = builtins.__import__

    def spy(name, *args, **kwargs):
        calls.append(name)
        return original(name, *args, **kwargs)

    builtins.__import__ = spy
    try:
        with pytest.raises(BackstepError):
            parse("__import__('subprocess').call('false')")
    finally:
        builtins.__import__ = original
    assert "subprocess" not in calls


def test_a_deep_network_gets_a_name_for_every_inferred_dimension():
    # 1,200 layers infer ~1,200 dimensions: past the textbook letters, n1, n2, … (never a name in use)
    layers = 1_200
    lines = ["h0 = X + n1"] + [f"h{i} = relu(h{i - 1} @ W{i})" for i in range(1, layers + 1)]
    graph = parse("\n".join(lines), limits=Limits(max_depth=5_000))
    dims = [d for v in graph.variables for d in v.shape]
    assert "n1" not in dims and len(set(dims)) == layers + 2  # X: (n, d), then one per layer
