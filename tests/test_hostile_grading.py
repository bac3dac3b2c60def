"""Hostile submissions to `check --grade`, `check -d` and `check --batch`: a link or a FIFO in the
submissions folder reads nothing, a name or a line never becomes a live spreadsheet formula nor
reaches the terminal raw, and `-o` never overwrites an input or writes through a link.
"""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
from helpers import time_limit
from typer.testing import CliRunner

from backstep.check import Mistake, Result
from backstep.check.run import print_claim
from backstep.cli import app

runner = CliRunner()

SCALAR = "sin(x**2)*exp(y)"
KEY = '[[problem]]\nid = "scalar"\nfunction = "sin(x**2)*exp(y)"\nwrt = ["x"]\n'
RIGHT = "dz/dx = 2*x*cos(x**2)*exp(y)\n"
MARKER = "secret_7f3a_marker"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def cli(*args: str, input: str | None = None):
    result = runner.invoke(app, ["check", *args], input=input)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _key(tmp_path):
    key = tmp_path / "key.toml"
    key.write_text(KEY)
    return key


def _rows(path):
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- 1. a link or a special file under the submissions folder is refused, never read ---------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs symbolic links and FIFOs")
def test_grade_refuses_links_and_special_files_and_reads_nothing_through_them(tmp_path):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(f"dz/dx = {MARKER}\n")
    (tmp_path / "outside" / "scalar.txt").write_text(f"dz/dx = {MARKER}\n")
    subs = tmp_path / "submissions"
    (subs / "alice").mkdir(parents=True)
    (subs / "alice" / "scalar.txt").write_text(RIGHT)
    (subs / "mallory.txt").symlink_to(secret)  # a student file that is a link
    (subs / "trudy").symlink_to(tmp_path / "outside")  # a student folder that is a link
    (subs / "eve").mkdir()
    (subs / "eve" / "scalar.txt").symlink_to(secret)  # a file in a student folder that is a link
    (subs / "walter").mkdir()
    (subs / "walter" / "answer.md").symlink_to(secret)  # the only file of a one-problem key
    os.mkfifo(subs / "oscar.txt")  # opening a FIFO for reading blocks until a writer comes
    (subs / "peggy").mkdir()
    os.mkfifo(subs / "peggy" / "scalar.txt")
    out = tmp_path / "grades.csv"
    with time_limit(120, "the grading (blocked on a FIFO?)"):
        result = cli("--grade", str(subs), "--key", str(_key(tmp_path)), "-o", str(out), "--jobs", "1")
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert MARKER not in text and MARKER not in result.output
    by_student = {r["student"]: r for r in _rows(out)}
    assert by_student["alice"]["verdict"] == "right"
    for student in ("mallory", "trudy", "eve", "walter"):
        assert by_student[student]["verdict"] == "error", by_student[student]
        assert by_student[student]["reason"] == "refused: a symbolic link"
    for student in ("oscar", "peggy"):
        assert by_student[student]["verdict"] == "error", by_student[student]
        assert by_student[student]["reason"].startswith("refused: a FIFO")
    assert "refused: a symbolic link" in result.stdout
    assert secret.read_text() == f"dz/dx = {MARKER}\n"


def test_grade_never_reads_proc_environ_through_a_link(tmp_path, monkeypatch):
    if not os.path.exists("/proc/self/environ"):
        pytest.skip("needs /proc")
    monkeypatch.setenv("BACKSTEP_TEST_SECRET", MARKER)
    subs = tmp_path / "submissions"
    subs.mkdir()
    (subs / "mallory.txt").symlink_to("/proc/self/environ")
    out = tmp_path / "grades.csv"
    result = cli("--grade", str(subs), "--key", str(_key(tmp_path)), "-o", str(out), "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert MARKER not in out.read_text(encoding="utf-8") and MARKER not in result.output
    assert [r["reason"] for r in _rows(out)] == ["refused: a symbolic link"]


# --- 2. nothing a student writes becomes a live spreadsheet formula ---------------------------------


def test_grades_csv_has_no_live_formula(tmp_path):
    subs = tmp_path / "submissions"
    hyperlink = '=HYPERLINK("https:evil.example","y")'
    (subs / hyperlink).mkdir(parents=True)
    (subs / hyperlink / "scalar.txt").write_text(RIGHT)
    (subs / "+cmd.txt").write_text("-2+3 = 5\n@SUM(A1) = 1\n+x = 1\n")
    (subs / "@sum.txt").write_text("dz/dx = cos(x**2)*exp(y)\n")
    (subs / "-minus").mkdir()
    (subs / "-minus" / "scalar.txt").write_text("\t=1+1\n")
    out = tmp_path / "grades.csv"
    result = cli("--grade", str(subs), "--key", str(_key(tmp_path)), "-o", str(out), "--jobs", "1")
    assert result.exit_code == 0, result.output
    with out.open(newline="", encoding="utf-8") as f:
        cells = [cell for row in csv.reader(f) for cell in row]
    live = [cell for cell in cells if cell.startswith(FORMULA_START)]
    assert live == [], live
    rows = _rows(out)
    students = {r["student"] for r in rows}
    assert {"'" + hyperlink, "'+cmd", "'@sum", "'-minus"} <= students
    written = {r["written"] for r in rows}
    assert {"'-2+3 = 5", "'@SUM(A1) = 1", "'+x = 1"} <= written


# --- 3. what a student writes reaches the terminal as text, never as escapes or markup --------------

HOSTILE_LINES = (
    RIGHT + "\x1b[2J\x1b[H✓ every step right\n"  # clears the screen and forges a verdict
    "dz/dx = [/x]\n"  # a closing tag that rich cannot match: MarkupError
    "[conceal]mallory = 1\n"  # hides the rest of the line
    "dz/dx = 2*x \x1b]0;pwned\x07\n"  # sets the terminal's title
)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_derivation_file_with_escapes_and_markup(tmp_path, fmt):
    path = tmp_path / "hostile.txt"
    path.write_text(HOSTILE_LINES, encoding="utf-8")
    result = cli(SCALAR, "-d", str(path), "--format", fmt)
    assert result.exit_code == 2, result.output  # lines that cannot be checked
    assert "\x1b" not in result.output and "\x07" not in result.output
    if fmt == "text":
        assert "[/x]" in result.stdout and "[conceal]mallory" in result.stdout
        assert "\\x1b[2J" in result.stdout  # shown, visibly, as what it is
    else:
        lines = json.loads(result.stdout)["lines"]
        assert lines[1]["written"].startswith("\x1b[2J")  # JSON keeps the text, escaped by json


def test_derivation_file_written_to_a_file_has_no_escapes(tmp_path):
    path = tmp_path / "hostile.txt"
    path.write_text(HOSTILE_LINES, encoding="utf-8")
    out = tmp_path / "report.txt"
    result = cli(SCALAR, "-d", str(path), "-o", str(out))
    assert result.exit_code == 2, result.output
    text = out.read_text(encoding="utf-8")
    assert "\x1b" not in text and "[conceal]mallory" in text and "[/x]" in text


def test_grade_table_shows_hostile_names_and_lines_as_text(tmp_path):
    subs = tmp_path / "submissions"
    (subs / "[conceal]mallory").mkdir(parents=True)
    (subs / "[conceal]mallory" / "scalar.txt").write_text(RIGHT)
    (subs / "eve\x1b[2J").mkdir()
    (subs / "eve\x1b[2J" / "scalar.txt").write_text("dz/dx = [/x] \x1b[31m\n")
    (subs / "[bold red]trent").mkdir()
    (subs / "[bold red]trent" / "scalar.txt").write_text("dz/dx = cos(x**2)*exp(y)\n")
    out = tmp_path / "grades.csv"
    result = cli("--grade", str(subs), "--key", str(_key(tmp_path)), "-o", str(out), "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert "[conceal]mallory" in result.stdout and "[bold red]trent" in result.stdout
    assert "eve\\x1b[2J" in result.stdout
    assert "\x1b" not in out.read_text(encoding="utf-8")  # `cat grades.csv` is safe too


def test_print_claim_escapes_what_the_user_wrote():
    result = Result(
        verdict="wrong",
        reason="because \x1b[2J",
        target="∂z/∂x",
        claim="[conceal]2*x\x1b]0;pwned\x07",
        mistake=Mistake("sign", "a sign error [/x]", fix="-[b]2*x\x1b[31m"),
        expected="2*x",
        expected_text="2 x",
    )
    buffer = io.StringIO()
    from rich.console import Console

    print_claim(result, Console(file=buffer, width=140, color_system=None))
    text = buffer.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "[conceal]2*x" in text and "a sign error [/x]" in text and "-[b]2*x" in text


# --- 4. -o never overwrites an input and never writes through a link ---------------------------------


def _class(tmp_path):
    subs = tmp_path / "submissions"
    (subs / "alice").mkdir(parents=True)
    (subs / "alice" / "scalar.txt").write_text(RIGHT)
    return subs, _key(tmp_path)


def test_grade_output_is_never_the_key_or_a_submission(tmp_path):
    subs, key = _class(tmp_path)
    for target in (key, subs / "alice" / "scalar.txt"):
        before = target.read_bytes()
        result = cli("--grade", str(subs), "--key", str(key), "-o", str(target), "--jobs", "1")
        assert result.exit_code == 2, result.output
        assert "input" in result.output
        assert target.read_bytes() == before


def test_grade_output_never_follows_a_link(tmp_path):
    subs, key = _class(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "grades.csv"
    link.symlink_to(victim)
    result = cli("--grade", str(subs), "--key", str(key), "-o", str(link), "--jobs", "1")
    assert result.exit_code == 2, result.output
    assert "symbolic link" in result.output
    assert victim.read_text() == "precious" and link.is_symlink()


def test_grade_csv_is_written_whole_by_a_temporary_file(tmp_path):
    subs, key = _class(tmp_path)
    out = tmp_path / "out" / "grades.csv"
    out.parent.mkdir()
    out.write_text("the previous grades")
    result = cli("--grade", str(subs), "--key", str(key), "-o", str(out), "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert [r["student"] for r in _rows(out)] == ["alice"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["grades.csv"]  # no temporary file left


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_derivation_output_is_never_the_derivation_file_or_a_link(tmp_path, fmt):
    derivation = tmp_path / "alice.txt"
    derivation.write_text(RIGHT)
    result = cli(SCALAR, "-d", str(derivation), "-o", str(derivation), "--format", fmt)
    assert result.exit_code == 2, result.output
    assert derivation.read_text() == RIGHT
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "report.txt"
    link.symlink_to(victim)
    result = cli(SCALAR, "-d", str(derivation), "-o", str(link), "--format", fmt)
    assert result.exit_code == 2, result.output
    assert victim.read_text() == "precious" and link.is_symlink()


def test_batch_output_is_never_the_batch_file_or_a_link(tmp_path):
    claims = tmp_path / "claims.jsonl"
    line = json.dumps({"id": "a", "expr": SCALAR, "wrt": "x", "claim": "2*x*cos(x**2)*exp(y)"}) + "\n"
    claims.write_text(line)
    result = cli("--batch", str(claims), "-o", str(claims))
    assert result.exit_code == 2, result.output
    assert claims.read_text() == line
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.jsonl"
    link.symlink_to(victim)
    result = cli("--batch", str(claims), "-o", str(link))
    assert result.exit_code == 2, result.output
    assert victim.read_text() == "precious" and link.is_symlink()
    out = tmp_path / "results.jsonl"
    assert cli("--batch", str(claims), "-o", str(out)).exit_code == 0
    assert json.loads(out.read_text())["verdict"] == "right"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs symbolic links and FIFOs")
def test_a_submission_swapped_for_a_link_or_a_fifo_after_listing_is_not_read(tmp_path):
    from backstep.check.grade import grade_task
    from backstep.check.submissions import ProblemSpec, Task

    secret = tmp_path / "secret.txt"
    secret.write_text(f"dz/dx = {MARKER}\n")
    link = tmp_path / "link.txt"
    link.symlink_to(secret)
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    spec = ProblemSpec("scalar", SCALAR, ["x"])
    with time_limit(120, "the grading (blocked on a FIFO?)"):
        for path, reason in ((link, "refused: a symbolic link"), (fifo, "refused: not a regular file")):
            rows = grade_task(spec, Task("mallory", "scalar", str(path)), 3, 0, 2.0)
            assert [(r["verdict"], r["reason"]) for r in rows] == [("error", reason)]
            assert MARKER not in repr(rows)


def test_output_is_never_the_program_file(tmp_path):
    from backstep.check.run import run_check_command
    from backstep.errors import UsageError

    program = tmp_path / "f.bs"
    program.write_text(SCALAR + "\n")
    derivation = tmp_path / "alice.txt"
    derivation.write_text(RIGHT)
    common = dict(source=SCALAR, wrt=None, claim=None, batch=None, grade=None, key=None, shapes={}, assume={})
    common |= dict(points=3, seed=0, budget=2.0, jobs=None, fmt="text", source_file=program)
    with pytest.raises(UsageError, match="input"):
        run_check_command(derivation=derivation, output=program, **common)
    assert program.read_text() == SCALAR + "\n"
