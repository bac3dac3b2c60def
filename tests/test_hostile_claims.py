"""`backstep check` against hostile claims: a claim that uses the gradient it claims (forged full
marks), and names written with letters of other scripts that look like ASCII ones."""

from __future__ import annotations

import csv
import json
import unicodedata
from functools import cache

import pytest
from typer.testing import CliRunner

from backstep import BackstepError
from backstep.check import Problem
from backstep.check.grade import grade
from backstep.check.run import run_batch
from backstep.cli import app

runner = CliRunner()

MLP = "relu(x@W1)@W2"
MLP_PROGRAM = """X: (n, d); W1: (d, h); W2: (h, o); Y: (n, o)
H = relu(X @ W1)
L = sum((H @ W2 - Y)**2)
"""
# u is used by z only, so that ∂z/∂u = ∂z/∂x / (2x) holds at every point
CHAIN = "u = x**2\nz = sin(u)*exp(y)"
# a and b on paths of their own: neither adjoint is computed from the other
SIBLINGS = "sin(a) + sin(b)"
TRUE_W1 = "x.T @ ((grad_y @ W2.T) * step(x @ W1))"
CYRILLIC_X = "\u0445"  # х, CYRILLIC SMALL LETTER HA


@cache
def problem(source: str) -> Problem:
    return Problem(source)


def cli(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


# --- forged full marks: a claim that uses the gradient it claims ------------------------------------


@pytest.mark.parametrize(
    "claim",
    [
        "grad_W1",
        "W1_bar",
        "dL/dW1",
        "∂L/∂W1",
        "dy/dW1",
        "W1\u0304",
        "grad_W1.T.T",
        "dL/dW1 = grad_W1",
        f"{TRUE_W1} + grad_W1 - grad_W1",  # the true gradient, and its own adjoint that cancels
        "2 * grad_W1 - W1_grad",
    ],
)
def test_cli_a_claim_that_uses_its_own_gradient_is_wrong(claim):
    result = cli("check", MLP, "--wrt", "W1", "--claim", claim)
    assert result.exit_code == 1, result.output
    assert "✓ right" not in result.stdout
    assert "circular: the claim uses ∂L/∂W1, the gradient it claims" in result.stdout


def test_a_claim_that_uses_an_adjoint_computed_from_its_own_is_wrong():
    # ∂z/∂x is computed from ∂z/∂u: using it for ∂z/∂u is a cycle, though the value is right
    result = problem(CHAIN).check_claim("u", "grad_x / (2*x)")
    assert result.verdict == "wrong" and result.exit_code == 1
    assert result.reason.startswith("circular: the claim uses ∂z/∂x, which is computed from ∂z/∂u")


def test_the_seed_and_downstream_adjoints_may_be_used():
    assert problem(MLP).check_claim("W1", TRUE_W1).verdict == "right"
    assert problem(MLP).check_claim("W1", "x.T @ grad_v1").verdict == "right"
    assert problem(CHAIN).check_claim("x", "2*x*grad_u").verdict == "right"
    assert problem(MLP).check_claim("y", "grad_y").verdict == "right"  # the output's adjoint is the seed


def test_an_adjoint_of_another_path_is_not_available():
    # each line bound to the other's true value: a pair that forges two right answers
    result = problem(SIBLINGS).check_claim("a", "grad_b * cos(a) / cos(b)")
    assert result.verdict == "wrong"
    assert "/∂b, which is not available for" in result.reason


def test_batch_claims_are_checked_for_cycles():
    line = '{"id": 1, "expr": "relu(x@W1)@W2", "wrt": "W1", "claim": "grad_W1"}'
    (out,) = run_batch([line])
    assert out["verdict"] == "wrong" and out["reason"].startswith("circular:")


def test_json_for_a_circular_claim():
    result = cli("check", MLP, "--wrt", "W1", "--claim", "grad_W1", "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["verdict"] == "wrong" and data["reason"].startswith("circular:")
    assert data["proof"] is None and data["mistake"] is None


# --- derivation files --------------------------------------------------------------------------------

LEGIT = """# every adjoint a line uses is one the true derivation computes before it
grad_v2 = grad_y @ W2.T
grad_v1 = grad_v2 * step(x @ W1)
grad_W1 = x.T @ grad_v1
grad_W2 = relu(x @ W1).T @ grad_y
"""


def _verdicts(source: str, text: str) -> list[tuple[str, str]]:
    return [(r.verdict, r.reason) for r in problem(source).check_lines(text) if r.verdict != "defined"]


def test_a_line_that_uses_its_own_left_side_is_wrong():
    for text in ("grad_W1 = grad_W1", "W1_bar = dL/dW1", "dL/dW1 = 0.5 * (W1_bar + grad_W1)"):
        ((verdict, reason),) = _verdicts(MLP, text)
        assert verdict == "wrong" and reason == "circular: the claim uses ∂L/∂W1, the gradient it claims", text


def test_a_line_may_not_reach_its_own_gradient_through_a_name_of_its_own():
    # G is a helper (not checked); Z names x @ W1, so that dL/dZ is an adjoint downstream of W1
    text = "G = 2 * grad_W1\ngrad_W1 = G / 2"
    assert _verdicts(MLP, text)[0][0] == "wrong"
    assert _verdicts(MLP, text)[0][1].startswith("circular: the claim uses ∂L/∂W1")
    text = "Z = X @ W1\nG = dL/dW1\ndL/dW1 = G"
    assert _verdicts(MLP_PROGRAM, text)[0][1].startswith("circular:")
    text = "Z = X @ W1\ndL/dW1 = X.T @ dL/dZ"
    assert [v for v, _ in _verdicts(MLP_PROGRAM, text)] == ["right"]


def test_a_cycle_between_two_lines_is_caught_at_the_line_that_goes_upstream():
    # without the check both lines pass: each is checked with the other bound to its true value
    text = "grad_u = grad_x / (2*x)\ngrad_x = 2*x*grad_u"
    (first, second) = _verdicts(CHAIN, text)
    assert first[0] == "wrong" and first[1].startswith("circular: the claim uses ∂z/∂x, which is computed from ∂z/∂u")
    assert second[0] == "right"


def test_a_pair_of_lines_on_separate_paths_cannot_vouch_for_each_other():
    text = "grad_a = grad_b * cos(a) / cos(b)\ngrad_b = grad_a * cos(b) / cos(a)"
    assert [v for v, _ in _verdicts(SIBLINGS, text)] == ["wrong", "wrong"]


def test_a_forward_line_may_not_use_its_own_value():
    results = _verdicts(MLP_PROGRAM, "H = H\nH = relu(X @ W1)\nH = relu(X @ W1) + 0 * L")
    assert results[0] == ("wrong", "circular: the line uses H, the value it claims")
    assert results[1][0] == "right"
    assert results[2][0] == "wrong" and results[2][1].startswith("circular: the line uses L, which is computed from H")


def test_a_legitimate_derivation_with_downstream_adjoints_is_right():
    assert [v for v, _ in _verdicts(MLP, LEGIT)] == ["right"] * 4


def test_cli_derivation_file_with_a_circular_line(tmp_path):
    path = tmp_path / "forged.txt"
    path.write_text("grad_W1 = grad_W1\n")
    result = cli("check", MLP, "-d", str(path))
    assert result.exit_code == 1
    assert "circular" in result.stdout and "first wrong line: 1" in result.stdout


# --- grading a class ----------------------------------------------------------------------------------

KEY = """
[[problem]]
id = "mlp"
function = "relu(x@W1)@W2"
wrt = ["W1", "W2"]
"""


def test_grade_a_forged_file_scores_nothing_and_a_legitimate_one_full_marks(tmp_path):
    subs = tmp_path / "submissions"
    for student, text in {
        "mallory": "grad_W1 = grad_W1\ngrad_W2 = W2_bar\n",
        "trudy": "grad_v1 = grad_W1 * 1\ngrad_W1 = x.T @ grad_v1\n",  # a cycle (shapes aside)
        "alice": LEGIT,
    }.items():
        (subs / student).mkdir(parents=True)
        (subs / student / "mlp.txt").write_text(text)
    key = tmp_path / "key.toml"
    key.write_text(KEY)
    rows = grade(subs, key, jobs=1, progress=False)
    by = {(r["student"], r["step"]): r for r in rows}
    for step in ("dL/dW1", "dL/dW2"):
        assert by[("mallory", step)]["verdict"] == "wrong"
        assert by[("mallory", step)]["reason"].startswith("circular:")
    assert by[("trudy", "dL/d(x @ W1)")]["verdict"] == "wrong"
    assert by[("trudy", "dL/d(x @ W1)")]["reason"].startswith("circular:")
    assert all(r["verdict"] == "right" for r in rows if r["student"] == "alice")
    out = tmp_path / "grades.csv"
    result = cli("check", "--grade", str(subs), "--key", str(key), "-o", str(out), "--jobs", "1")
    assert result.exit_code == 0, result.output
    with out.open() as f:
        written = list(csv.DictReader(f))
    mallory = [r for r in written if r["student"] == "mallory"]
    assert mallory and all(r["verdict"] == "wrong" and "circular" in r["reason"] for r in mallory)
    assert all(r["verdict"] == "right" for r in written if r["student"] == "alice")


# --- look-alike names ---------------------------------------------------------------------------------


def test_derive_names_a_cyrillic_letter_in_a_function_name():
    result = cli("derive", f"e{CYRILLIC_X}p(x) * x")
    assert result.exit_code == 2
    assert "U+0445 CYRILLIC SMALL LETTER HA, which looks like x" in result.stderr
    assert "did you mean exp?" in result.stderr


def test_check_names_a_cyrillic_letter_in_a_claim():
    claim = TRUE_W1.replace("x.T", f"{CYRILLIC_X}.T")
    result = cli("check", MLP, "--wrt", "W1", "--claim", claim)
    assert result.exit_code == 2
    assert f"unknown name {CYRILLIC_X}" in result.stderr
    assert "U+0445 CYRILLIC SMALL LETTER HA, which looks like x" in result.stderr
    assert "did you mean x?" in result.stderr


@pytest.mark.parametrize(
    "name, described, suggestion",
    [
        ("W\u0445", "U+0445 CYRILLIC SMALL LETTER HA, which looks like x", None),  # no such name: no suggestion
        ("gr\u0430d_y", "U+0430 CYRILLIC SMALL LETTER A, which looks like a", "grad_y"),
        ("\u03bd1", "U+03BD GREEK SMALL LETTER NU, which looks like v", "v1"),
        ("W\u0406", "U+0406 CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I, which looks like I", None),
        ("x\u3164", "U+1160 HANGUL JUNGSEONG FILLER, which is invisible", "x"),  # Python folds U+3164 to U+1160
    ],
)
def test_unknown_names_with_look_alike_letters(name, described, suggestion):
    with pytest.raises(BackstepError) as err:
        problem(MLP).check_claim("W1", f"x.T @ {name}")
    message = err.value.message
    assert message.startswith(f"unknown name {unicodedata.normalize('NFKC', name)}") and described in message
    if suggestion:
        assert f"did you mean {suggestion}?" in message
    else:
        assert "did you mean" not in message


def test_a_plain_unknown_name_keeps_its_short_message():
    with pytest.raises(BackstepError) as err:
        problem(MLP).check_claim("W1", "x.T @ q")
    assert err.value.message == "unknown name q"


def test_a_latin_name_for_a_cyrillic_variable_is_pointed_at():
    # the formula was written with х: the claim's Latin x is the unknown name
    source = f"relu({CYRILLIC_X}@W1)@W2"
    with pytest.raises(BackstepError) as err:
        problem(source).check_claim("W1", "x.T @ grad_v1")
    assert err.value.message.startswith("unknown name x; did you mean х (U+0445 CYRILLIC SMALL LETTER HA")
    with pytest.raises(BackstepError) as err:
        problem(source).check_claim("x", "grad_v1 @ W1.T")
    assert "U+0445 CYRILLIC SMALL LETTER HA" in err.value.message
