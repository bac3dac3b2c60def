"""The command line as a well-made Unix tool: --version, completion, examples in --help, stdin and
stdout as files, formulas that begin with "-", the format from -o's extension, one name per
option, ranges of numeric options, no hang on special files, and no traceback on Ctrl-C, a
closed pipe, a full disk or an ASCII terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

import backstep
from backstep.cli import app
from backstep.cli_io import clean_program, formula_first, looks_like_formula, output_format

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def ok(*args: str, input: str | None = None):
    result = invoke(*args, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def bad(*args: str, input: str | None = None):
    result = invoke(*args, input=input)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def run_python(code: str, *args: str, env: dict | None = None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONSTARTUP", "PYTHONPROFILEIMPORTTIME", "COLUMNS")}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        errors="replace",  # a cp1252 child writes bytes that are not UTF-8
        timeout=120,
        env={**base, **(env or {})},
    )


def run_cli(*args: str, env: dict | None = None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    return run_python(
        "import sys; from backstep.cli import main; sys.argv[0] = 'backstep'; main()", *args, env=env, stdout=stdout
    )


# --- 1. --version, completion, examples in --help ----------------------------------------------------


def test_version():
    assert ok("--version").stdout == f"backstep {backstep.__version__}\n"


def test_python_dash_m_backstep():
    proc = subprocess.run([sys.executable, "-m", "backstep", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == f"backstep {backstep.__version__}\n"


def test_shell_completion_is_offered():
    out = ok("--help").stdout
    assert "--install-completion" in out and "--show-completion" in out


@pytest.mark.parametrize("command", ["derive", "check", "codegen", "train", "sheet", "ops"])
def test_every_command_help_has_examples(command):
    out = ok(command, "--help").stdout
    assert "Examples" in out
    assert f"backstep {command}" in out.split("Examples", 1)[1]


# --- 2. -f - reads stdin, -o - writes stdout ----------------------------------------------------------


def test_file_dash_reads_stdin():
    out = ok("derive", "-f", "-", "--no-verify", input="H = x*2\nH*y\n").stdout
    assert out.splitlines()[:2] == ["H = x*2", "H*y"]


def test_output_dash_is_stdout():
    data = json.loads(ok("derive", "x*y", "--no-verify", "--format", "json", "-o", "-").stdout)
    assert data["schema"].startswith("backstep.derivation/")
    assert not Path("-").exists()


def test_check_and_codegen_and_train_read_stdin_and_write_stdout():
    result = ok("check", "-f", "-", "--wrt", "x", "--claim", "2*x", "--format", "json", "-o", "-", input="x**2")
    assert json.loads(result.stdout)["verdict"] == "right"
    assert "class " in ok("codegen", "-f", "-", "-o", "-", input="x * w").stdout
    train = ok(
        "train",
        "-f",
        "-",
        "--data",
        "x=1,2",
        "--data",
        "y=2,4",
        "--init",
        "w=1",
        "--epochs",
        "2",
        "--format",
        "json",
        "-o",
        "-",
        input="(x*w - y)**2",
    )
    assert json.loads(train.stdout)


def test_sheet_output_dir_is_not_stdout(tmp_path):
    problems = tmp_path / "hw.toml"
    problems.write_text('title = "t"\n[[problem]]\nfunction = "x*y"\n', encoding="utf-8")
    assert "stdout" in bad("sheet", str(problems), "-o", "-", "--format", "latex").stderr


def test_two_stdin_readers_are_refused():
    assert "stdin" in bad("check", "-f", "-", "--derivation", "-", input="x").stderr


# --- 3. a formula that begins with "-" ------------------------------------------------------------------


@pytest.mark.parametrize(
    "formula, first_line",
    [
        ("-x**2", "y = -x²"),
        ("-sum(Y * log_softmax(S, axis=-1))", None),
        ("- x*y", None),
        ("-2*x", None),
    ],
)
def test_formula_that_begins_with_minus(formula, first_line):
    out = ok("derive", formula, "--no-verify").stdout
    if first_line:
        assert out.splitlines()[0] == first_line
    assert "Gradients" in out


def test_minus_formula_among_options():
    data = json.loads(ok("derive", "--no-verify", "-sum(x * y)", "-s", "x=3", "--wrt", "x", "--format", "json").stdout)
    assert data["input"].strip() == "-sum(x * y)"
    assert {v["name"]: v["shape"] for v in data["variables"]}["x"] == [3]
    assert list(data["gradients"]) == ["x"]
    assert ok("derive", "--no-verify", "--", "-x**2").stdout.splitlines()[0] == "y = -x²"  # -- still works


def test_option_values_that_begin_with_minus_are_left_alone():
    result = invoke("check", "x**2", "--wrt", "x", "--claim", "-2*x")
    assert result.exit_code == 1  # the claim was read, and is wrong
    assert ok("check", "-x**2", "--wrt", "x", "--claim", "-2*x").exit_code == 0


def test_attached_short_option_values_stay_options():
    """-sx=3 is --shape x=3; -sum(...) is a formula."""
    out = ok("derive", "x*y", "-sx=3", "--no-verify").stdout
    assert "x: 3" in out
    assert not looks_like_formula("-sx=3x4", {"-s", "-f", "-o"})
    assert not looks_like_formula("-ffile.bs", {"-s", "-f", "-o"})
    assert not looks_like_formula("-sX=(3,4)", {"-s", "-f", "-o"})
    assert looks_like_formula("-sum(Y)", {"-s", "-f", "-o"})
    assert looks_like_formula("-x", {"-s", "-f", "-o"})
    assert not looks_like_formula("--shape", {"-s"})


def test_unknown_short_option_says_how_to_pass_a_minus_formula():
    err = " ".join(bad("derive", "x", "-y").stderr.replace("│", " ").split())
    assert 'goes after --: backstep derive -- "-x**2"' in err


def test_formula_first_moves_the_formula_behind_the_separator():
    from typer.main import get_command

    derive = get_command(app).commands["derive"]
    assert formula_first(["-x**2", "--no-verify"], derive) == ["--no-verify", "--", "-x**2"]
    assert formula_first(["--claim", "-x"], get_command(app).commands["check"]) == ["--claim", "-x"]
    assert formula_first(["--", "-x"], derive) == ["--", "-x"]


@pytest.mark.parametrize("source", ["  x*y", "\ufeffx*y", "\n\n  H = x*2\n  H*y\n", "\ufeff    H = x*2\n    H*y"])
def test_leading_whitespace_bom_and_indentation(source, tmp_path):
    assert ok("derive", source, "--no-verify").exit_code == 0
    program = tmp_path / "p.bs"
    program.write_bytes(source.encode("utf-8"))
    assert ok("derive", "-f", str(program), "--no-verify").exit_code == 0
    assert not clean_program(source).startswith((" ", "\ufeff", "\n"))


# --- 4. the format from -o's extension --------------------------------------------------------------------


@pytest.mark.parametrize("suffix, check", [(".json", "json"), (".md", "md"), (".tex", "latex"), (".txt", "text")])
def test_output_extension_picks_the_format(tmp_path, suffix, check):
    target = tmp_path / f"out{suffix}"
    ok("derive", "x*y", "--no-verify", "-o", str(target))
    text = target.read_text(encoding="utf-8")
    if check == "json":
        assert json.loads(text)["schema"]
    elif check == "md":
        assert text.startswith("#")
    elif check == "latex":
        assert "\\" in text
    else:
        assert text.startswith("z = x y")


def test_format_that_contradicts_the_extension_is_an_error(tmp_path):
    err = bad("derive", "x*y", "--no-verify", "--format", "md", "-o", str(tmp_path / "x.pdf")).stderr
    assert ".pdf" in err and "md" in err
    assert not (tmp_path / "x.pdf").exists()
    bad("check", "x**2", "--wrt", "x", "--claim", "2*x", "--format", "text", "-o", str(tmp_path / "c.json"))


def test_output_format_rules():
    formats = ("text", "json", "md", "latex", "pdf")
    assert output_format(None, Path("a.PDF"), formats) == ("pdf", Path("a.PDF"))
    assert output_format(None, Path("a.csv"), formats) == ("text", Path("a.csv"))
    assert output_format("json", Path("a.txt"), formats) == ("json", Path("a.txt"))
    assert output_format(None, Path("-"), formats) == ("text", None)
    assert output_format("json", None, formats) == ("json", None)


def test_check_writes_json_for_a_json_extension(tmp_path):
    target = tmp_path / "verdict.json"
    ok("check", "x**2", "--wrt", "x", "--claim", "2*x", "-o", str(target))
    assert json.loads(target.read_text(encoding="utf-8"))["verdict"] == "right"


# --- 5. one name per option -----------------------------------------------------------------------------------


def test_sheet_output_dir_is_o(tmp_path):
    problems = tmp_path / "hw.toml"
    problems.write_text('title = "t"\n[[problem]]\nfunction = "x*y"\n', encoding="utf-8")
    out = tmp_path / "out"
    result = ok("sheet", str(problems), "-o", str(out), "--format", "latex")
    assert (out / "hw-exercises.tex").exists()
    assert result.stdout.splitlines()[0] == str(out / "hw-exercises.tex")
    old = ok("sheet", str(problems), "-d", str(tmp_path / "old"), "--format", "latex")  # the deprecated spelling
    assert "deprecated" in old.stderr and (tmp_path / "old" / "hw-solutions.tex").exists()
    assert not [word for word in ok("sheet", "--help").stdout.split() if word == "-d"]  # hidden


def test_check_accepts_simplify_budget_and_timeout():
    for flag in ("--simplify-budget", "--timeout"):
        assert ok("check", "x**2", "--wrt", "x", "--claim", "2*x", flag, "3").exit_code == 0
    bad("check", "x**2", "--wrt", "x", "--claim", "2*x", "--simplify-budget", "nan")


def test_wrt_accumulates_and_takes_commas():
    def grads(*wrt: str) -> list[str]:
        return list(json.loads(ok("derive", "x*y*z", "--no-verify", "--format", "json", *wrt).stdout)["gradients"])

    assert grads("--wrt", "x", "--wrt", "y") == ["x", "y"]
    assert grads("--wrt", "x,z") == ["x", "z"]
    assert grads("--wrt", "x", "--wrt", "y,z") == ["x", "y", "z"]
    assert "one variable" in bad("check", "x*y", "--wrt", "x", "--wrt", "y", "--claim", "y").stderr


def test_shape_for_a_name_not_in_the_formula_is_an_error():
    err = bad("derive", "x*y", "--shape", "q=3", "--no-verify").stderr
    assert "--shape names q" in err and "its variables: x, y" in err
    assert "--shape names q" in bad("codegen", "x*y", "--shape", "q=3").stderr


# --- 7. numeric options and their ranges ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["derive", "x", "--simplify-budget", "nan"],
        ["derive", "x", "--simplify-budget", "inf"],
        ["derive", "x", "--simplify-budget", "1e308"],
        ["derive", "x", "--simplify-budget", "-1"],
        ["derive", "x", "--max-depth", "1000000000"],
        ["derive", "x", "--max-chars", "-5"],
        ["derive", "x", "--max-nodes", "0"],
        ["derive", "x", "--points", "0"],
        ["sheet", "hw.toml", "--seed", str(2**64)],
        ["codegen", "x", "--seed", "-1"],
        ["check", "x", "--jobs", "0"],
        ["check", "x", "--timeout", "inf"],
        ["train", "x*w", "--lr", "nan"],
        ["train", "x*w", "--lr", "0"],
        ["train", "x*w", "--epochs", "0"],
        ["train", "x*w", "--momentum", "nan"],
        ["train", "x*w", "--seed", str(2**64)],
    ],
)
def test_numeric_options_are_checked_with_their_range(args):
    err = bad(*args).stderr
    option = next(a for a in args if a.startswith("--"))
    assert option in err


def test_out_of_range_message_gives_the_range():
    err = " ".join(bad("derive", "x", "--simplify-budget", "nan").stderr.replace("│", " ").split())
    assert "[0, 86400]" in err
    err = " ".join(bad("derive", "x", "--max-depth", "1000000000").stderr.replace("│", " ").split())
    assert "100000" in err


# --- 8. reading: no hang, no MemoryError --------------------------------------------------------------------


def test_special_files_are_refused_before_reading(tmp_path):
    assert "not a regular file" in bad("derive", "-f", "/dev/zero").stderr
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "FIFO" in bad("derive", "-f", str(fifo)).stderr  # returns at once: nothing opened the FIFO
    folder = tmp_path / "dir"
    folder.mkdir()
    assert "folder" in bad("derive", "-f", str(folder)).stderr


def test_a_long_program_is_refused_with_the_figure(tmp_path):
    program = tmp_path / "long.bs"
    program.write_text("x" * 2000, encoding="utf-8")
    assert (
        "longer than 1000 characters (--max-chars)" in bad("derive", "-f", str(program), "--max-chars", "1000").stderr
    )
    assert "longer than 1000" in bad("derive", "-f", "-", "--max-chars", "1000", input="y" * 5000).stderr


# --- 6, 9, 10. streams: encodings, widths, Ctrl-C, closed pipes, full disks ---------------------------------------


def test_ascii_stdout_degrades_instead_of_a_traceback():
    proc = run_cli("derive", "x**2", "--no-verify", env={"PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "y = x\\xb2" in proc.stdout


def test_cp1252_stdout_degrades():
    proc = run_cli("derive", "relu(x@W1)@W2", "--no-verify", env={"PYTHONIOENCODING": "cp1252"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr


def test_piped_output_follows_columns():
    narrow = run_cli("derive", "relu(x@W1)@W2", "--no-verify", env={"COLUMNS": "50"})
    wide = run_cli("derive", "relu(x@W1)@W2", "--no-verify")
    assert narrow.returncode == 0 and wide.returncode == 0
    assert max(cell_len(line) for line in narrow.stdout.splitlines()) <= 50  # cells: ȳ is y and a combining mark
    assert max(cell_len(line) for line in wide.stdout.splitlines()) > 50


def test_ops_lines_have_no_trailing_spaces():
    proc = run_cli("ops")
    assert proc.returncode == 0
    assert not [line for line in proc.stdout.splitlines() if line != line.rstrip()]
    assert not [line for line in ok("ops").stdout.splitlines() if line != line.rstrip()]


def test_ops_writes_a_file(tmp_path):
    ok("ops", "-o", str(tmp_path / "ops.md"))
    assert (tmp_path / "ops.md").read_text(encoding="utf-8").startswith("#")


def test_ctrl_c_is_one_line_and_exit_130():
    code = (
        "import sys, backstep.cli as cli\n"
        "def interrupted(*a, **k): raise KeyboardInterrupt\n"
        "import importlib; importlib.import_module('backstep.derive').derive = interrupted\n"
        "sys.argv = ['backstep', 'derive', 'x*y', '--no-verify']\n"
        "cli.main()\n"
    )
    proc = run_python(code)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "backstep: interrupted\n"


@pytest.mark.parametrize("args", [["derive", "x*y", "--no-verify"], ["ops"], ["--version"]])
def test_a_closed_pipe_ends_quietly(args):
    code = (
        "import os, sys\n"
        "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
        "from backstep.cli import main\n"
        f"sys.argv = ['backstep', *{args!r}]\n"
        "main()\n"
    )
    proc = run_python(code, stdout=subprocess.DEVNULL)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_full_stdout_is_one_message(fmt):
    with open("/dev/full", "w") as full:
        proc = run_cli("derive", "x*y", "--no-verify", "--format", fmt, stdout=full)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "backstep: cannot write the output: No space left on device"


def test_output_to_dev_full_is_refused():
    assert "not a regular file" in bad("derive", "x", "--no-verify", "--format", "json", "-o", "/dev/full").stderr
