"""The command line: every option of `derive` and its effect, `ops`, exit codes, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from backstep import BackstepError, parse
from backstep.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def ok(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.output
    return result


def derive_json(*args: str) -> dict:
    return json.loads(ok("derive", *args, "--format", "json").stdout)


def bad(*args: str):
    """Bad input: exit code 2, a message on stderr, nothing on stdout, no traceback."""
    result = invoke(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stderr.strip()
    assert result.stdout == ""
    return result


# --- derive: the basics ---------------------------------------------------------------------------


def test_derive_text_has_every_section():
    out = ok("derive", "relu(x@W1)@W2").stdout
    assert out.splitlines()[0] == "y = relu(x W1) W2"
    assert "x: n×d   W1: d×h   W2: h×o   →   y: n×o" in out
    for section in ("Forward pass", "Backward pass", "Gradients"):
        assert section in out
    assert "∂L/∂W2 = relu(x W1)ᵀ y\u0304" in out  # ȳ: y and a combining macron
    assert "✓ verified with PyTorch autograd" in out


def test_at_gives_the_hand_calculation():
    out = ok("derive", "x**2 + 3", "--at", "x=2").stdout
    assert "∂y/∂x = 2 x = 4" in out
    assert "at x = 2" in out


def test_at_with_an_array_and_a_shape():
    data = derive_json("x * y", "--shape", "x=2,3", "--at", "x=[[1,2,3],[4,5,6]]", "--at", "y=2", "--no-verify")
    assert data["at"]["x"] == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert data["gradients"]["x"]["value"] == [[2.0] * 3] * 2
    assert data["gradients"]["y"]["value"] == 21.0


def test_at_draws_the_rest_with_the_seed():
    def drawn(seed: str) -> float:
        return derive_json("x * y", "--at", "x=2", "--seed", seed, "--no-verify")["at"]["y"]

    assert drawn("1") == drawn("1")
    assert drawn("1") != drawn("2")


# --- derive: every option has its effect ------------------------------------------------------------


def test_file_option(tmp_path):
    source = tmp_path / "net.bs"
    source.write_text("H = relu(X @ W1)\nY = H @ W2\n", encoding="utf-8")
    long_form = ok("derive", "--file", str(source), "--no-verify").stdout
    short_form = ok("derive", "-f", str(source), "--no-verify").stdout
    assert long_form == short_form
    assert long_form.splitlines()[:2] == ["H = relu(X @ W1)", "Y = H @ W2"]
    assert "∂L/∂W1" in long_form


def test_shape_option_long_short_and_semicolon():
    a = derive_json("x@W", "--shape", "x=3x4", "--no-verify")
    b = derive_json("x@W", "-s", "x=3,4", "--no-verify")
    c = derive_json("x@W", "--shape", "x=3x4;W=4x5", "--no-verify")
    d = derive_json("x@W", "--shape", "x=3x4", "--shape", "W=(4, 5)", "--no-verify")
    assert a["variables"] == b["variables"]
    assert {v["name"]: v["shape"] for v in a["variables"]} == {"x": [3, 4], "W": [4, "n"]}
    assert {v["name"]: v["shape"] for v in c["variables"]} == {"x": [3, 4], "W": [4, 5]}
    assert c["variables"] == d["variables"]
    assert c["output"]["shape"] == [3, 5]
    assert "x: 3×4   W: 4×5   →   y: 3×5" in ok("derive", "x@W", "-s", "x=3x4", "-s", "W=4x5", "--no-verify").stdout


def test_shape_option_symbolic_and_scalar():
    data = derive_json("X @ W.T + b", "--shape", "b=h", "--shape", "X=n,d", "--no-verify")
    assert {v["name"]: v["shape"] for v in data["variables"]} == {"X": ["n", "d"], "W": ["h", "d"], "b": ["h"]}
    data = derive_json("x * y", "--shape", "x=scalar", "--shape", "y=5", "--no-verify")
    assert {v["name"]: v["shape"] for v in data["variables"]} == {"x": [], "y": [5]}


def test_wrt_option():
    out = ok("derive", "relu(x@W1)@W2", "--wrt", "W1,W2").stdout
    assert "gradients with respect to W1, W2 (the others are constants)" in out
    assert "∂L/∂W1" in out and "∂L/∂W2" in out
    assert "∂L/∂x" not in out
    data = derive_json("relu(x@W1)@W2", "--wrt", "W1", "--no-verify")
    assert list(data["gradients"]) == ["W1"]
    assert {v["name"]: v["requires_grad"] for v in data["variables"]} == {"x": False, "W1": True, "W2": False}


def test_assume_option():
    default = derive_json("x * y", "--at", "x=1", "--no-verify")
    assumed = derive_json("x * y", "--assume", "y=positive", "--at", "x=1", "--no-verify")
    domains = {v["name"]: v["domain"] for v in assumed["variables"]}
    assert domains == {"x": "real", "y": "positive"}
    assert {v["name"]: v["domain"] for v in default["variables"]}["y"] == "real"
    assert assumed["at"]["y"] > 0
    for seed in range(5):  # drawn inside the assumed domain, whatever the seed
        data = derive_json("x * y", "--assume", "y=positive", "--at", "x=1", "--seed", str(seed), "--no-verify")
        assert data["at"]["y"] > 0
    both = derive_json("x * y", "--assume", "x=nonzero;y=nonnegative", "--no-verify")
    assert {v["name"]: v["domain"] for v in both["variables"]} == {"x": "nonzero", "y": "nonnegative"}


def test_no_verify_option():
    out = ok("derive", "relu(x@W1)@W2", "--no-verify").stdout
    assert "verified" not in out
    assert derive_json("relu(x@W1)@W2", "--no-verify")["verification"] is None
    assert derive_json("relu(x@W1)@W2")["verification"]["ok"] is True


def test_points_option():
    assert "5 random points" in ok("derive", "x * y", "--points", "5").stdout
    assert derive_json("x * y", "--points", "2")["verification"]["points"] == 2
    assert derive_json("x * y")["verification"]["points"] == 3


def test_seed_option():
    assert derive_json("x * y", "--seed", "7")["verification"]["seed"] == 7
    assert derive_json("x * y")["verification"]["seed"] == 0


def test_format_option():
    text = ok("derive", "x * y", "--format", "text", "--no-verify").stdout
    assert text.startswith("z = x y")
    data = json.loads(ok("derive", "x * y", "--format", "json", "--no-verify").stdout)
    assert data["schema"].startswith("backstep.derivation/")


@pytest.mark.parametrize("flag", ["-o", "--output"])
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_output_option(tmp_path, flag, fmt):
    target = tmp_path / f"out.{fmt}"
    result = ok("derive", "x**2 + 3", "--at", "x=2", "--format", fmt, flag, str(target))
    assert result.stdout == ""
    written = target.read_text(encoding="utf-8")
    if fmt == "json":
        data = json.loads(written)
        assert data["gradients"]["x"]["value"] == 4.0
    else:
        assert "∂y/∂x = 2 x = 4" in written


def test_max_chars_option():
    source = "x" + " " * 100_001
    bad("derive", source, "--no-verify")
    assert "--max-chars" in bad("derive", "x + y", "--max-chars", "4").stderr
    ok("derive", source, "--max-chars", "200000", "--no-verify")


def test_max_depth_option():
    err = bad("derive", "sin(sin(x))", "--max-depth", "2").stderr
    assert "syntax error at 1:9: the formula is nested more than 2 levels deep (--max-depth)" in err
    ok("derive", "sin(sin(x))", "--max-depth", "10", "--no-verify")


def test_max_nodes_option():
    assert "--max-nodes" in bad("derive", "x + y + z", "--max-nodes", "3").stderr
    ok("derive", "x + y + z", "--max-nodes", "10", "--no-verify")


def test_max_exponent_option():
    assert "the exponent 2000 is larger than 1000 (--max-exponent)" in bad("derive", "x**2000").stderr
    assert "--max-exponent" in bad("derive", "x**20", "--max-exponent", "10").stderr
    ok("derive", "x**2000", "--max-exponent", "5000", "--no-verify")


# --- ops ------------------------------------------------------------------------------------------------


def test_ops_lists_the_operations():
    out = ok("ops").stdout
    for spelling in ("a + b", "relu", "sigmoid", "sum", "mean", "exp", "log", "@"):
        assert spelling in out
    assert "Traceback" not in out


def test_help():
    assert "derive" in ok("--help").stdout
    out = ok("derive", "--help").stdout
    for option in ("--shape", "--wrt", "--assume", "--at", "--no-verify", "--points", "--seed", "--format", "--output"):
        assert option in out


# --- bad input: exit code 2, one clear message with its place --------------------------------------


BAD_INPUT = [
    pytest.param(["x +"], "syntax error at 1:4", id="bad-syntax"),
    pytest.param(["relu(x@W1"], "syntax error at 1:5", id="unclosed-paren"),
    pytest.param(["sinn(x)"], "unknown function sinn; did you mean sin?", id="unknown-function"),
    pytest.param(["x.shape"], "unsupported at 1:1", id="attribute"),
    pytest.param(["__import__('os')"], "unknown function __import__", id="dunder-import"),
    pytest.param(["2+3"], "does not depend on any variable", id="no-variable"),
    pytest.param(["x@W", "--shape", "x=3x4", "--shape", "W=5x2"], "shape error at 1:1", id="shape-mismatch"),
    pytest.param(["x * y", "--wrt", "q"], "--wrt names q", id="wrt-missing"),
    pytest.param(["x * y", "--wrt", "x,q"], "--wrt names q", id="wrt-one-missing"),
    pytest.param(["x * y", "--shape", "x=0"], "--shape x=0", id="shape-zero"),
    pytest.param(["x * y", "--shape", "x=a-b"], "--shape x=a-b", id="shape-not-a-dim"),
    pytest.param(["x * y", "--shape", "x"], "--shape x: write NAME=VALUE", id="shape-no-equals"),
    pytest.param(["x * y", "--shape", "1x=3"], "is not a variable name", id="shape-bad-name"),
    pytest.param(["X: (n, d)\nX * 2", "--shape", "X=3"], "disagrees with the annotation", id="shape-vs-annotation"),
    pytest.param(["x * y", "--assume", "x=bogus"], "--assume x=bogus: unknown domain", id="assume-bad-domain"),
    pytest.param(["x * y", "--assume", "q=positive"], "--assume names q", id="assume-missing"),
    pytest.param(["x * y", "--assume", "x"], "--assume x: write NAME=VALUE", id="assume-no-equals"),
    pytest.param(["x * y", "--at", "x=abc"], "--at x=abc: not a number", id="at-not-a-number"),
    pytest.param(["x * y", "--at", "x=[[1,2],[3]]"], "not a rectangular array", id="at-ragged"),
    pytest.param(["x: (3,)\nx * y", "--at", "x=[1,2]"], "--at x is an array of shape (2,)", id="at-wrong-shape"),
    pytest.param(["x * y", "--at", "x=missing.npy"], "cannot read the array", id="at-missing-npy"),
    pytest.param(["x * y", "--at", "q=2"], "--at names q, which is not a variable", id="at-not-a-variable"),
    pytest.param(["sum(X)/n", "--shape", "X=n,d", "--at", "n=3"], "--at names n", id="at-a-dimension"),
    pytest.param(["log(x)", "--at", "x=-1"], "domain error", id="at-outside-domain"),
    pytest.param(["x", "--at", "x=1e400", "--no-verify"], "", id="at-infinite"),
    pytest.param(["-f", "/nonexistent/formula.bs"], "cannot read /nonexistent/formula.bs", id="file-missing"),
    pytest.param(["x * y", "--format", "xml"], "--format xml: choose one of text, json", id="bad-format"),
    pytest.param(["x * y", "-f", "formula.bs"], "not both", id="expr-and-file"),
    pytest.param([], "give a formula", id="neither"),
    pytest.param(["x * y", "--points", "0"], "--points", id="points-zero"),
    pytest.param(["x * y", "--points", "many"], "--points", id="points-not-int"),
    pytest.param(["x * y", "--bogus"], "--bogus", id="unknown-option"),
]


@pytest.mark.parametrize("args, fragment", BAD_INPUT)
def test_bad_input_exits_2_with_a_clean_message(args, fragment):
    err = bad("derive", *args).stderr
    assert fragment in err


def test_unreadable_file_is_exit_2(tmp_path):
    directory = tmp_path / "dir"
    directory.mkdir()
    assert "cannot read" in bad("derive", "-f", str(directory)).stderr
    binary = tmp_path / "binary.bs"
    binary.write_bytes(b"\xff\xfe x")
    assert "cannot read" in bad("derive", "-f", str(binary)).stderr


def test_unwritable_output_is_exit_2(tmp_path):
    """BUG: `-o` into a missing folder or onto a folder escapes as FileNotFoundError/IsADirectoryError."""
    assert "Traceback" not in bad("derive", "x * y", "--no-verify", "-o", str(tmp_path / "missing" / "out.txt")).stderr
    bad("derive", "x * y", "--no-verify", "--format", "json", "-o", str(tmp_path))


def test_huge_seed_is_exit_2():
    """BUG: a seed torch cannot take escapes from verify() as `ValueError: Overflow when unpacking long long`."""
    bad("derive", "x * y", "--seed", str(2**70))


def test_ops_bad_format_is_exit_2():
    bad("ops", "--format", "xml")


def test_error_message_is_the_parser_error_rendered():
    """stderr is exactly `kind at line:col: message`, the source line and a caret, nothing more."""
    source = "x@W"
    with pytest.raises(BackstepError) as caught:
        parse(source, {"x": (3, 4), "W": (5, 2)})
    expected = caught.value.render()
    assert "(3, 4)" in expected and "(5, 2)" in expected
    err = bad("derive", source, "--shape", "x=3x4", "--shape", "W=5x2").stderr
    assert err.rstrip("\n") == expected


def test_caret_under_the_place():
    err = bad("derive", "x + sinn(y)").stderr.rstrip("\n").split("\n")
    assert err == ["syntax error at 1:5: unknown function sinn; did you mean sin?", "  x + sinn(y)", "      ^^^^"]


def test_caret_in_a_long_line_is_not_wrapped():
    """A formula wider than the terminal: the message, the line and the caret each stay one line."""
    source = "a_long_variable_name_number_one * another_long_variable_name_number_two + third + sinn(x)"
    col = source.index("sinn") + 1
    lines = bad("derive", source).stderr.rstrip("\n").split("\n")
    assert lines[0] == f"syntax error at 1:{col}: unknown function sinn; did you mean sin?"
    assert lines[1] == "  " + source
    assert lines[2] == "  " + " " * (col - 1) + "^^^^"
    assert len(lines) == 3


def test_place_on_a_later_line_of_a_program_file(tmp_path):
    source = tmp_path / "net.bs"
    source.write_text("H = relu(X @ W1)\nY = H @ W2 +* 1\n", encoding="utf-8")
    lines = bad("derive", "-f", str(source)).stderr.rstrip("\n").split("\n")
    assert lines[0] == "syntax error at 2:13: invalid syntax"
    assert lines[1:] == ["  Y = H @ W2 +* 1", "  " + " " * 12 + "^"]


@pytest.mark.parametrize(
    "source, place",
    [("x +", "1:4"), ("sinn(x)", "1:1"), ("a = x*2\nb = a // x", "2:5"), ("x[0] + y", "1:1")],
)
def test_message_shows_line_col_and_caret(source, place):
    err = bad("derive", source).stderr
    head, text, caret = err.rstrip("\n").split("\n")
    assert f" at {place}: " in head
    line, col = map(int, place.split(":"))
    assert text == "  " + source.splitlines()[line - 1]
    assert caret.index("^") == 2 + col - 1


def test_deep_nesting_is_exit_2():
    err = bad("derive", "(" * 20000 + "x" + ")" * 20000).stderr
    assert "RecursionError" not in err
    assert "nested" in err


# --- torch is imported only to compute numbers -------------------------------------------------------


def run_python(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSTARTUP", "PYTHONPROFILEIMPORTTIME")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, env=env)


def imported_modules(importtime_stderr: str) -> set[str]:
    """The modules `python -X importtime` reports: `import time: self | cumulative | name`."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_importing_the_cli_does_not_import_torch():
    proc = run_python("-c", "import sys, backstep.cli; assert 'torch' not in sys.modules, 'torch imported'")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_verify_never_imports_torch(fmt):
    proc = run_python("-X", "importtime", "-m", "backstep", "derive", "relu(x@W1)@W2", "--no-verify", "--format", fmt)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "∂L/∂W1" in proc.stdout or '"W1"' in proc.stdout
    modules = imported_modules(proc.stderr)
    assert "sympy" in modules  # the check itself works
    assert "torch" not in modules
    assert not any(m.startswith("torch.") for m in modules)


def test_verify_does_import_torch():
    """The other side of the check above: the same probe sees torch when it is used."""
    proc = run_python("-X", "importtime", "-m", "backstep", "derive", "x * y", "--points", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch" in imported_modules(proc.stderr)


def test_bad_input_in_a_real_process_is_clean():
    proc = run_python("-m", "backstep", "derive", "relu(x@W1", "--no-verify")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.split("\n")[:3] == ["syntax error at 1:5: '(' was never closed", "  relu(x@W1", "      ^"]
