"""`backstep check`: verdicts, diagnoses, derivation files, batches, grading a class, the CLI."""

from __future__ import annotations

import csv
import json
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from backstep import BackstepError
from backstep.check import MISTAKE_KINDS, Problem, adjoint_spellings, split_lines
from backstep.check.grade import grade
from backstep.check.run import run_batch
from backstep.check.submissions import load_key
from backstep.cli import app

runner = CliRunner()

MLP = "relu(x@W1)@W2"
MLP_PROGRAM = """X: (n, d); W1: (d, h); W2: (h, o); Y: (n, o)
H = relu(X @ W1)
L = sum((H @ W2 - Y)**2)
"""
SCALAR = "sin(x**2)*exp(y)"
LIN = ("x@W + b", {"b": ("h",)})
LSQ = ("sum((X@W - Y)**2)", {"Y": ("n", "h")})
MSE = ("mean((X@W - Y)**2)", {"Y": ("n", "h")})
QUAD = ("x@A@x", {"x": ("n",)})


@cache
def problem(source: str, shapes: tuple = ()) -> Problem:
    return Problem(source, dict(shapes))


def check(source, wrt, claim, shapes=None):
    return problem(source, tuple(sorted((shapes or {}).items()))).check_claim(wrt, claim)


def cli(*args: str, input: str | None = None):
    result = runner.invoke(app, ["check", *args], input=input)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


# --- a plausible wrong claim of every mistake kind is rejected with that diagnosis ---------------

MISTAKES = [
    # (formula, shapes, wrt, claim, kind, a phrase of the message)
    (MLP, None, "W1", "((grad_y @ W2.T) * step(x @ W1)).T @ x", "transposed", "transpose of the gradient"),
    (MLP, None, "W1", "x @ ((grad_y @ W2.T) * step(x @ W1))", "missing_transpose", "x should be x.T"),
    (MLP, None, "W2", "relu(x @ W1).T @ grad_y.T", "extra_transpose", "grad_y.T should be grad_y"),
    (MLP, None, "W1", "x.T @ ((W2.T @ grad_y) * step(x @ W1))", "swapped_product", "should be grad_y @ W2.T"),
    (MLP, None, "x", "W1 @ ((grad_y @ W2.T) * step(x @ W1))", "swapped_product", "wrong order"),
    (*LIN, "b", "sum(grad_y, axis=1)", "wrong_axis", "axis=1 should be axis=0"),
    (*LIN, "b", "grad_y", "missing_broadcast_sum", "broadcast axis 0 (n)"),
    (SCALAR, None, "x", "-2*x*cos(x**2)*exp(y)", "sign", "sign"),
    (SCALAR, None, "x", "x*cos(x**2)*exp(y)", "constant_factor", "missing factor of 2"),
    (*LSQ, "W", "X.T @ (X@W - Y)", "constant_factor", "the 2 that differentiating a square"),
    (*LSQ, "W", "4*X.T @ (X@W - Y)", "constant_factor", "extra factor of 2"),
    (*LIN, "b", "mean(grad_y, axis=0)", "mean_instead_of_sum", "1/n"),
    (*MSE, "W", "2*X.T @ (X@W - Y)", "sum_instead_of_mean", "1/(n·h)"),
    (SCALAR, None, "x", "cos(x**2)*exp(y)", "missing_chain_factor", "∂(x**2)/∂x = 2 * x"),
    (MLP, None, "W1", "x.T @ (grad_y @ W2.T)", "missing_chain_factor", "relu′(x @ W1) = step(x @ W1)"),
    ("sum(sigmoid(X@w))", {"w": ("d",)}, "w", "X.T @ sigmoid(X@w)**2", None, None),  # no single mistake
    ("sum(tanh(x)**2)", None, "x", "2*tanh(x)", "missing_chain_factor", "tanh′(x) = 1 - tanh(x)**2"),
    (SCALAR, None, "x", "4*x**2*cos(x**2)*exp(y)", "extra_chain_factor", "appears twice"),
    ("x*sin(x)", None, "x", "x*cos(x)", "missing_chain_term", "multivariable chain rule"),
    ("x*sin(x)", None, "x", "sin(x)", "missing_chain_term", "through sin(x)"),
    (*QUAD, "x", "2*A@x", "symmetric_part", "2·A where A + A.T belongs"),
    (*QUAD, "x", "A@x", "symmetric_part", "A where A + A.T belongs"),
]


@pytest.mark.parametrize("source, shapes, wrt, claim, kind, phrase", MISTAKES)
def test_every_mistake_kind_is_rejected_with_its_diagnosis(source, shapes, wrt, claim, kind, phrase):
    result = check(source, wrt, claim, shapes)
    assert result.verdict == "wrong", result.reason
    if kind is None:
        assert result.mistake is None
        assert "I could not name the mistake" in result.reason
        return
    assert result.mistake is not None, result.reason
    assert result.mistake.kind == kind, result.mistake
    assert phrase in result.mistake.message


def test_every_declared_mistake_kind_is_tested():
    tested = {m[4] for m in MISTAKES if m[4]}
    assert tested == set(MISTAKE_KINDS)


@pytest.mark.parametrize(
    "source, shapes, wrt, claim",
    [
        (m[0], m[1], m[2], m[3])
        for m in MISTAKES
        if m[4] in ("missing_transpose", "swapped_product", "transposed", "missing_broadcast_sum", "sign")
    ],
)
def test_the_fix_is_itself_a_right_claim(source, shapes, wrt, claim):
    """A named fix was tested against the truth: checked again, it is right."""
    result = check(source, wrt, claim, shapes)
    assert result.mistake.fix
    assert check(source, wrt, result.mistake.fix, shapes).verdict == "right"


def test_a_claim_of_the_wrong_shape_is_wrong_not_an_error():
    result = check("x@W", "W", "grad_y.T @ x", {"x": (3, 4), "W": (4, 5)})
    assert result.verdict == "wrong"
    assert result.reason == "shape (5, 4), expected (4, 5)"
    assert result.mistake.kind == "transposed"


def test_a_claim_that_does_not_type_check_is_wrong():
    result = check(MLP, "W1", "x @ grad_y")
    assert result.verdict == "wrong"
    assert "does not type-check" in result.reason


def test_never_a_guess_when_nothing_fits():
    result = check("x*sin(x)", "x", "cos(x) + x*cos(x)")
    assert result.verdict == "wrong" and result.mistake is None
    assert result.reason.endswith("I could not name the mistake")


def test_a_wrong_claim_shows_a_small_counterexample_and_the_correct_gradient():
    result = check(MLP, "x", "grad_y @ W2.T @ W1.T")
    cx = result.counterexample
    assert cx is not None
    assert cx["sizes"] == {"n": 1, "d": 1, "h": 1, "o": 1}  # the smallest point that shows it
    assert set(cx["values"]) == {"x", "W1", "W2", "grad_y"}
    assert cx["claim"] != cx["expected"]
    assert result.expected == "((grad_y @ W2.T) * step(x @ W1)) @ W1.T"


# --- a right claim written differently is accepted -------------------------------------------------

RIGHT = [
    (SCALAR, None, "x", "2*x*cos(x**2)*exp(y)"),
    (SCALAR, None, "x", "exp(y) * (cos(x**2) * (x + x))"),  # factored, reordered
    (SCALAR, None, "x", "2*x*exp(y)*cos(x*x)"),
    (MLP, None, "W1", "x.T @ ((grad_y @ W2.T) * step(x @ W1))"),
    (MLP, None, "W1", "(((grad_y @ W2.T) * step(x @ W1)).T @ x).T"),  # transposed twice
    (MLP, None, "W1", "x.T.T.T @ (step(x @ W1) * (grad_y @ W2.T))"),
    (MLP, None, "W1", "x.T @ ((y_bar @ W2.T) * step(x @ W1))"),  # spellings of the seed
    (MLP, None, "W1", "x.T @ ((dL/dy @ W2.T) * step(x @ W1))"),
    (MLP, None, "W1", "x.T @ ((∂L/∂y @ W2.T) * step(x @ W1))"),
    (MLP, None, "W1", "x.T @ ((\u0233 @ W2.T) * step(x @ W1))"),  # ȳ
    (MLP, None, "W2", "(grad_y.T @ relu(x @ W1)).T"),
    (*LSQ, "W", "2*X.T@(X@W - Y)"),
    (*LSQ, "W", "2*(X.T@X@W - X.T@Y)"),  # distributed, reassociated
    (*LSQ, "W", "-2*X.T@Y + 2*X.T@(X@W)"),  # reordered sum
    (*MSE, "W", "2*X.T@(X@W - Y)/(n*h)"),  # dimension names as sizes
    (*LIN, "b", "sum(grad_y, axis=0)"),
    (*LIN, "b", "sum(grad_y.T, axis=1)"),
    (*QUAD, "x", "A@x + A.T@x"),
    (*QUAD, "x", "(A + A.T)@x"),
    ("x*sin(x)", None, "x", "sin(x) + x*cos(x)"),
    ("sum(X)", None, "X", "1"),  # broadcast to X's shape
    ("log(x)*y", None, "x", "y/x"),
]


@pytest.mark.parametrize("source, shapes, wrt, claim", RIGHT)
def test_a_right_claim_written_differently_is_accepted(source, shapes, wrt, claim):
    result = check(source, wrt, claim, shapes)
    assert result.verdict == "right", (result.reason, result.mistake)
    assert result.mistake is None and result.counterexample is None


def test_right_claims_are_proved_symbolically_where_sympy_can():
    assert check(*RIGHT[4][:1], "W1", RIGHT[4][3]).proof == "symbolic"
    assert check(LSQ[0], "W", "2*(X.T@X@W - X.T@Y)", LSQ[1]).proof == "symbolic"
    result = check("sin(x)**2", "x", "sin(2*x)")
    assert result.verdict == "right" and result.proof in ("symbolic", "numeric")


def test_a_claim_right_at_some_points_only_is_wrong():
    """relu's mask is 1 at positive inputs only: a claim without it can agree at a few points."""
    result = check("relu(x)", "x", "1")
    assert result.verdict == "wrong"


def test_the_claim_may_carry_its_left_side():
    assert check(SCALAR, "x", "dz/dx = 2*x*cos(x**2)*exp(y)").verdict == "right"
    with pytest.raises(BackstepError, match="written for"):
        check(SCALAR, "x", "dz/dy = 2*x*cos(x**2)*exp(y)")


def test_adjoint_spellings():
    spellings = adjoint_spellings("H", "L")
    for s in ("grad_H", "H_grad", "H_bar", "dH", "dL_dH", "delta_H", "H\u0304"):
        assert s in spellings


def test_points_use_two_sets_of_distinct_non_square_sizes():
    p = problem(MLP)
    assert len(p.size_sets) == 2
    for sizes in p.size_sets:
        assert len(set(sizes.values())) == len(sizes)
    assert all(p.size_sets[0][k] != p.size_sets[1][k] for k in p.size_sets[0])
    assert len(p.points) == 5


# --- derivation files -------------------------------------------------------------------------------

ALICE = """# Alice: every step right, in her own names
P = H @ W2 - Y
dL/dP = 2*P
dL/dW2 = H.T @ dL/dP
dL/dH = dL/dP @ W2.T
Z = X @ W1
dL/dZ = dL/dH * step(Z)
dL/dW1 = X.T @ dL/dZ
"""

BOB = """grad_W2 = H.T @ (2*(H @ W2 - Y))
H_bar = 2*(H @ W2 - Y) @ W2          # the first mistake: a missing transpose
mask = step(X @ W1)
W1_bar = X.T @ (H_bar * mask)        # right, if H_bar were right
dX = (H_bar * mask) @ W1             # a second mistake
"""


def test_a_right_derivation_file():
    results = problem(MLP_PROGRAM).check_lines(ALICE)
    graded = [r for r in results if r.verdict != "defined"]
    assert [r.verdict for r in graded] == ["right"] * 5
    assert [r.step for r in graded] == ["dL/d(H @ W2 - Y)", "dL/dW2", "dL/dH", "dL/d(X @ W1)", "dL/dW1"]
    defined = {r.line: r.reason for r in results if r.verdict == "defined"}
    assert defined == {2: "P names H @ W2 - Y", 6: "Z names X @ W1"}


def test_the_first_wrong_line_is_named_and_later_lines_assume_it_right():
    results = problem(MLP_PROGRAM).check_lines(BOB)
    by_line = {r.line: r for r in results}
    assert by_line[1].verdict == "right"
    assert by_line[2].verdict == "wrong" and by_line[2].mistake.kind == "missing_transpose"
    assert by_line[3].verdict == "defined"
    # H_bar here is the true ∂L/∂H, although the student's line 2 was wrong:
    assert by_line[4].verdict == "right"
    assert by_line[5].verdict == "wrong" and by_line[5].mistake.kind == "missing_transpose"
    assert next(r for r in results if r.verdict == "wrong").line == 2


def test_derivation_file_lines_that_cannot_be_checked():
    text = "dL/dQ = 3\nthis is not a line\ngrad_W1 = X.T @ (\n"
    results = problem(MLP_PROGRAM).check_lines(text)
    assert [r.verdict for r in results] == ["error", "error", "error"]
    assert "Q is not a node of the formula" in results[0].reason


def test_split_lines_skips_comments_and_blank_lines():
    lines = list(split_lines("# c\n\nx_bar = 2 # note\n a == b\n"))
    assert lines[0][:3] == (3, "x_bar ", " 2")
    assert lines[1][1] is None


# --- the CLI: one claim -----------------------------------------------------------------------------


def test_cli_right_wrong_and_bad_input_exit_codes(tmp_path):
    marker = tmp_path / "hacked"
    right = cli(SCALAR, "--wrt", "x", "--claim", "2*x*cos(x**2)*exp(y)")
    assert right.exit_code == 0 and "✓ right" in right.stdout
    wrong = cli(SCALAR, "--wrt", "x", "--claim", "cos(x**2)*exp(y)")
    assert wrong.exit_code == 1
    assert "a missing chain-rule factor" in wrong.stdout and "correct" in wrong.stdout
    for args in (
        [SCALAR, "--wrt", "x", "--claim", "2*x*"],  # syntax
        [SCALAR, "--wrt", "x", "--claim", "2*q"],  # unknown name
        [SCALAR, "--wrt", "q", "--claim", "2*x"],  # unknown variable
        [SCALAR, "--claim", "2*x"],  # no --wrt
        [SCALAR, "--wrt", "x"],  # nothing to check
        [SCALAR, "--wrt", "x", "--claim", f"__import__('os').system('touch {marker}')"],
        ["x@@W", "--wrt", "W", "--claim", "x"],
    ):
        bad = cli(*args)
        assert bad.exit_code == 2, (args, bad.output)
        assert bad.stderr.strip() and bad.stdout == ""
    assert not marker.exists()


def test_cli_wrong_shape_exit_1_with_the_reason():
    result = cli("x@W", "--shape", "x=3x4", "--shape", "W=4x5", "--wrt", "W", "--claim", "grad_y.T @ x")
    assert result.exit_code == 1
    assert "shape (5, 4), expected (4, 5)" in result.stdout


def test_cli_class_indices_counted_by_a_dimension_are_drawn_at_its_size():
    # t's classes are W's columns, a dimension h: the points are drawn knowing h's size (this crashed
    # with a KeyError when the checker drew without the sizes).
    wrong = cli("cross_entropy(X@W, t)", "--shape", "t=n", "--wrt", "W", "--claim", "0")
    assert wrong.exit_code == 1, wrong.output
    assert "✗ wrong" in wrong.stdout and "correct" in wrong.stdout and "h=5" in wrong.stdout
    data = json.loads(
        cli("cross_entropy(X@W, t)", "--shape", "t=n", "--wrt", "W", "--claim", "0", "--format", "json").stdout
    )
    example = data["counterexample"]
    assert all(c == int(c) and 0 <= c < example["sizes"]["h"] for c in example["values"]["t"])
    right = cli(
        "cross_entropy(X@W, t)", "--shape", "t=n", "--wrt", "W",
        "--claim", "X.T @ (softmax(X@W, axis=1) - onehot(t, h)) / n",
    )  # fmt: skip
    assert right.exit_code == 0 and "✓ right" in right.stdout


def test_cli_json_for_one_claim():
    result = cli(MLP, "--wrt", "W1", "--claim", "x @ ((grad_y @ W2.T) * step(x @ W1))", "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["schema"] == "backstep.check/1"
    assert data["verdict"] == "wrong"
    assert data["mistake_kind"] == "missing_transpose"
    assert data["fix"] == "x.T @ ((grad_y @ W2.T) * step(x @ W1))"
    assert data["expected_shape"] == ["d", "h"] and data["claim_shape"] is None
    assert data["points"] == 5 and len(data["sizes"]) == 2
    right = json.loads(cli(SCALAR, "--wrt", "x", "--claim", "2*x*cos(x**2)*exp(y)", "--format", "json").stdout)
    assert right["verdict"] == "right" and right["proof"] == "symbolic" and right["mistake"] is None
    bad = cli(SCALAR, "--wrt", "x", "--claim", "2*", "--format", "json")
    assert bad.exit_code == 2 and json.loads(bad.stdout)["verdict"] == "error"


def test_cli_derivation_file(tmp_path):
    (tmp_path / "bob.txt").write_text(BOB)
    result = cli("-f", str(_program(tmp_path)), "--derivation", str(tmp_path / "bob.txt"))
    assert result.exit_code == 1
    assert "first wrong line: 2" in result.stdout
    data = json.loads(
        cli("-f", str(_program(tmp_path)), "--derivation", str(tmp_path / "bob.txt"), "--format", "json").stdout
    )
    assert data["first_wrong_line"] == 2 and data["verdict"] == "wrong"
    assert [line["verdict"] for line in data["lines"]] == ["right", "wrong", "defined", "right", "wrong"]
    (tmp_path / "alice.txt").write_text(ALICE)
    assert cli("-f", str(_program(tmp_path)), "-d", str(tmp_path / "alice.txt")).exit_code == 0
    assert cli("-f", str(_program(tmp_path)), "-d", str(tmp_path / "missing.txt")).exit_code == 2


def _program(tmp_path):
    path = tmp_path / "mlp.bs"
    path.write_text(MLP_PROGRAM)
    return path


# --- --batch ----------------------------------------------------------------------------------------

BATCH = [
    {"id": "a", "expr": SCALAR, "wrt": "x", "claim": "2*x*cos(x**2)*exp(y)"},
    {"id": "b", "expr": SCALAR, "wrt": "x", "claim": "cos(x**2)*exp(y)"},
    "this line is not JSON",
    {"id": "d", "expr": "x@W + b", "wrt": "b", "claim": "grad_y", "shapes": {"b": ["h"]}},
    {"id": "e", "expr": "x@W", "wrt": "W", "claim": "x.T @ grad_y", "shapes": {"x": [3, 1]}},
    {"id": "f", "expr": "x@@W", "wrt": "W", "claim": "x"},
    {"id": "g", "expr": "log(x)*y", "wrt": "x", "claim": "y/x", "assume": {"x": "positive"}},
    {"id": "h", "expr": SCALAR, "wrt": "nope", "claim": "x"},
    {"id": "i", "expr": SCALAR, "wrt": "x"},
]


def _batch_lines() -> list[str]:
    return [line if isinstance(line, str) else json.dumps(line) for line in BATCH]


def test_batch_keeps_order_and_isolates_broken_lines():
    out = list(run_batch(_batch_lines()))
    assert [o["id"] for o in out] == ["a", "b", None, "d", "e", "f", "g", "h", "i"]
    verdicts = ["right", "wrong", "error", "wrong", "right", "error", "right", "error", "error"]
    assert [o["verdict"] for o in out] == verdicts
    assert out[1]["mistake_kind"] == "missing_chain_factor"
    assert out[3]["mistake_kind"] == "missing_broadcast_sum"
    assert "not a JSON object" in out[2]["reason"]
    assert out[5]["reason"].startswith("syntax error at 1:3")
    assert '"claim" is missing' in out[8]["reason"]
    assert [o["line"] for o in out] == list(range(1, 10))
    for o in out:
        assert set(o) >= {"id", "verdict", "reason", "mistake"}


def test_batch_cli_one_json_line_per_input_line(tmp_path):
    path = tmp_path / "claims.jsonl"
    path.write_text("\n".join(_batch_lines()) + "\n\n")
    result = cli("--batch", str(path))
    assert result.exit_code == 1  # some claims are wrong
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["id"] for o in lines] == ["a", "b", None, "d", "e", "f", "g", "h", "i"]
    good = cli("--batch", "-", input=json.dumps(BATCH[0]) + "\n")
    assert good.exit_code == 0 and json.loads(good.stdout)["verdict"] == "right"
    assert cli("--batch", str(tmp_path / "none.jsonl")).exit_code == 2


# --- --grade ----------------------------------------------------------------------------------------

KEY = '''
[[problem]]
id = "mlp"
function = """
X: (n, d); W1: (d, h); W2: (h, o); Y: (n, o)
H = relu(X @ W1)
L = sum((H @ W2 - Y)**2)
"""
wrt = ["W1", "W2"]

[[problem]]
id = "scalar"
function = "sin(x**2)*exp(y)"
wrt = ["x"]
'''


def _class(tmp_path):
    subs = tmp_path / "submissions"
    (subs / "alice").mkdir(parents=True)
    (subs / "alice" / "mlp.txt").write_text(ALICE)
    (subs / "alice" / "scalar.txt").write_text("dz/dx = 2*x*cos(x**2)*exp(y)\n")
    (subs / "bob").mkdir()
    (subs / "bob" / "mlp.txt").write_text(BOB)
    (subs / "bob" / "scalar.txt").write_text("dz/dx = cos(x**2)*exp(y)\n")
    carol = "[mlp]\ngrad_W2 = H.T @ (2*(H @ W2 - Y))\n[scalar]\nx_bar = -2*x*cos(x**2)*exp(y)\n"
    (subs / "carol.txt").write_text(carol)
    (subs / "dave").mkdir()
    (subs / "dave" / "mlp.txt").write_bytes(b"\xff\xfe\x00 not text")
    key = tmp_path / "key.toml"
    key.write_text(KEY)
    return subs, key


def test_grade_a_class(tmp_path):
    subs, key = _class(tmp_path)
    rows = grade(subs, key, jobs=2, progress=False)
    by = {(r["student"], r["problem"], r["step"]): r for r in rows}
    assert all(by[("alice", "mlp", s)]["verdict"] == "right" for s in ("dL/dW1", "dL/dW2", "dL/dH"))
    assert by[("alice", "scalar", "dz/dx")]["verdict"] == "right"
    assert by[("bob", "mlp", "dL/dH")]["verdict"] == "wrong"
    assert "missing transpose" in by[("bob", "mlp", "dL/dH")]["mistake"]
    assert by[("bob", "mlp", "dL/dW1")]["verdict"] == "right"
    assert "chain-rule factor" in by[("bob", "scalar", "dz/dx")]["mistake"]
    assert by[("carol", "mlp", "dL/dW2")]["verdict"] == "right"
    assert by[("carol", "mlp", "dL/dW1")]["verdict"] == "missing"
    assert by[("carol", "scalar", "dz/dx")]["mistake"].startswith("a sign error")
    dave = [r for r in rows if r["student"] == "dave"]
    assert {(r["problem"], r["verdict"]) for r in dave} == {("mlp", "error"), ("scalar", "missing")}
    assert "not UTF-8" in next(r["reason"] for r in dave if r["problem"] == "mlp")
    # the same answers in one process as spread over two
    assert grade(subs, key, jobs=1, progress=False) == rows


def test_grade_cli_writes_the_table_and_the_csv(tmp_path):
    subs, key = _class(tmp_path)
    out = tmp_path / "grades.csv"
    result = cli("--grade", str(subs), "--key", str(key), "-o", str(out), "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert "problem mlp" in result.stdout and "first mistake" in result.stdout
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:5] == ["student", "problem", "step", "verdict", "mistake"]
    assert {r["student"] for r in rows} == {"alice", "bob", "carol", "dave"}
    bob = [r for r in rows if r["student"] == "bob" and r["verdict"] == "wrong"]
    assert bob and all(r["mistake"] for r in bob)
    assert any(r["student"] == "dave" and r["verdict"] == "error" for r in rows)


def test_grade_bad_key_or_folder_is_bad_input(tmp_path):
    subs, key = _class(tmp_path)
    broken = tmp_path / "broken.toml"
    broken.write_text('[[problem]]\nfunction = "x@@W"\n')
    assert cli("--grade", str(subs), "--key", str(broken)).exit_code == 2
    assert cli("--grade", str(subs)).exit_code == 2
    assert cli("--grade", str(tmp_path / "nowhere"), "--key", str(key)).exit_code == 2
    with pytest.raises(BackstepError):
        load_key(tmp_path / "missing.toml")


# --- every example's own gradients are right claims; their negatives are sign errors ---------------


@pytest.mark.parametrize("name", ["two_layer_net", "linear_layer", "linear_model", "mean_of_double", "lenet"])
def test_the_derived_gradients_of_the_examples_are_right_claims(name):
    from pathlib import Path

    from backstep.printing import to_lang

    source = (Path(__file__).parent.parent / "examples" / f"{name}.bs").read_text()
    p = Problem(source)
    assert p.derivation.gradients
    for variable, gradient in p.derivation.gradients.items():
        claim = to_lang(gradient.expr)
        assert p.check_claim(variable, claim).verdict == "right", (variable, claim)
        negated = p.check_claim(variable, f"-({claim})")
        assert negated.verdict == "wrong" and negated.mistake.kind == "sign"


# --- properties over random compositions ----------------------------------------------------------

UNARY = ["sin", "cos", "exp", "tanh", "sigmoid"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(UNARY), min_size=1, max_size=3),
    st.sampled_from([-3, -2, 2, 3, 5]),
)
def test_random_compositions_truth_right_multiples_named(functions, k):
    source = "x**2"
    for f in functions:
        source = f"{f}({source})"
    p = problem(f"sum({source})", (("x", ("n",)),))
    from backstep.printing import to_lang

    truth = to_lang(p.derivation.gradients["x"].expr)
    assert p.check_claim("x", truth).verdict == "right"
    scaled = p.check_claim("x", f"{k} * ({truth})")
    assert scaled.verdict == "wrong"
    assert scaled.mistake.kind == "constant_factor" and str(abs(k)) in scaled.mistake.message
    assert ("sign" in scaled.mistake.message) == (k < 0)


def test_timeout_zero_still_decides_numerically():
    p = Problem("sum(sigmoid(X@w))", {"w": ("d",)}, budget=0)
    result = p.check_claim("w", "X.T@(exp(-X@w)/(1+exp(-X@w))**2)")
    assert result.verdict == "right" and result.proof == "numeric"
    assert Problem("sum(sigmoid(X@w))", {"w": ("d",)}).check_claim("w", result.claim).proof == "symbolic"
