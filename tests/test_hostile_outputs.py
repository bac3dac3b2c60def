"""Hostile corpus, outputs and what is shown: `-o` never follows a link or overwrites an input, a
failed write keeps the previous file, and a user's control characters never reach the terminal raw.
"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from backstep import BackstepError
from backstep.cli import app
from backstep.errors import ParseError, Place
from backstep.safetext import csv_cell, markup_safe, printable
from backstep.userfiles import open_output, write_output

runner = CliRunner()


def derive(*args):
    return runner.invoke(app, ["derive", *args])


@pytest.mark.parametrize("fmt", ["json", "md", "latex", "text"])
def test_output_never_follows_a_symbolic_link(tmp_path, fmt):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.file"
    link.symlink_to(victim)
    result = derive("x**2 + 3", "--no-verify", "--format", fmt, "-o", str(link))
    assert result.exit_code == 2, result.output
    assert "symbolic link" in result.output and "Traceback" not in result.output
    assert victim.read_text() == "precious" and link.is_symlink()


def test_output_never_overwrites_the_program_it_reads(tmp_path):
    program = tmp_path / "net.txt"
    program.write_text("X: (n, d); W: (d, h)\nL = sum(relu(X @ W))\n")
    result = derive("-f", str(program), "--no-verify", "--format", "md", "-o", str(program))
    assert result.exit_code == 2 and "input of this command" in result.output
    assert program.read_text().startswith("X: (n, d)")
    # the same file under another name (a hard link) is still the input
    alias = tmp_path / "alias.md"
    os.link(program, alias)
    result = derive("-f", str(program), "--no-verify", "--format", "md", "-o", str(alias))
    assert result.exit_code == 2 and program.read_text().startswith("X: (n, d)")


def test_output_never_overwrites_an_at_file(tmp_path):
    np = pytest.importorskip("numpy")
    values = tmp_path / "x.npy"
    np.save(values, np.arange(3.0))
    before = values.read_bytes()
    result = derive("sum(x**2)", "--at", f"x={values}", "--no-verify", "--format", "json", "-o", str(values))
    assert result.exit_code == 2 and values.read_bytes() == before


def test_codegen_output_never_overwrites_its_program(tmp_path):
    program = tmp_path / "f.py"
    program.write_text("y = x * 2\n")
    result = runner.invoke(app, ["codegen", "-f", str(program), "-o", str(program)])
    assert result.exit_code == 2 and program.read_text() == "y = x * 2\n"


def test_a_refused_run_keeps_the_previous_output(tmp_path):
    out = tmp_path / "d.json"
    assert derive("x**2", "--no-verify", "--format", "json", "-o", str(out)).exit_code == 0
    before = out.read_text()
    assert json.loads(before)["gradients"]
    assert derive("x +* 2", "--no-verify", "--format", "json", "-o", str(out)).exit_code == 2
    assert out.read_text() == before


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "grades.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), open_output(target) as f:
        f.write("half a new fi")
        raise RuntimeError("the disk is full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv"]
    write_output(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv"]


def test_an_output_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(BackstepError, match="not a regular file"):
        write_output(tmp_path / "pipe", "x")


# --- what is shown -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "comment",
    ["\x1b[2J\x1b[32m✓ every step right", "\x1b]0;owned\x07", "\u202eevil", "\x9b31m", "[bold]x[/] [/x]"],
)
def test_an_error_excerpt_shows_control_characters_as_escapes(tmp_path, comment):
    program = tmp_path / "p.txt"
    program.write_text(f"x +* 2  # {comment}\n", encoding="utf-8")
    result = derive("-f", str(program))
    assert result.exit_code == 2, result.output
    assert not any(ch in result.output for ch in "\x1b\x07\u202e\x9b")
    assert "Traceback" not in result.output
    if "[/x]" in comment:
        assert "[bold]x[/] [/x]" in result.output  # markup shown as written, not interpreted


def test_the_caret_stays_under_the_place_after_escapes():
    err = ParseError("invalid syntax", Place(1, 6), source="\x1b\x1bx +* 2")
    excerpt, caret = err.render().splitlines()[1:]
    assert excerpt == "  \\x1b\\x1bx +* 2"
    assert excerpt[caret.index("^")] == "*"


def test_printable_and_markup_safe_and_csv_cell():
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("line\nnext", keep_newlines=True) == "line\nnext"
    assert printable("x\u2028y") == "x\\u2028y"
    assert markup_safe("[conceal]mallory") == "\\[conceal]mallory"
    for formula in ("=HYPERLINK(1)", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(formula) == "'" + formula
    assert csv_cell("alice") == "alice" and csv_cell(3) == 3
