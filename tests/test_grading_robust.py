"""No hang, no traceback, nothing lost: `check --grade`, `check -d` and `check --batch` against
submissions that are slow, huge, oddly encoded or in conflict, and runs that are interrupted.

No wall time is asserted (the machines are shared): a linear pass is asserted by counting parses,
a time-out by the rows it leaves.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import backstep.check.grade as grade_module
import backstep.check.problem as check_module
from backstep.check import MAX_BYTES, MAX_ELEMENTS, Problem
from backstep.check.grade import GradingInterrupted, grade
from backstep.check.grades import GradesFile
from backstep.check.run import run_batch
from backstep.cli import app

runner = CliRunner()

SCALAR = "sin(x**2)*exp(y)"
KEY = '[[problem]]\nid = "scalar"\nfunction = "sin(x**2)*exp(y)"\nwrt = ["x", "y"]\n'
RIGHT = "dz/dx = 2*x*cos(x**2)*exp(y)\ndz/dy = sin(x**2)*exp(y)\n"
MLP = "H = relu(X @ W1)\nL = sum((H @ W2 - Y)**2)"
MLP_SHAPES = {"X": ("n", "d"), "W1": ("d", "h"), "W2": ("h", "o"), "Y": ("n", "o")}
GRAD_W1 = "grad_W1 = X.T @ ((2*(H @ W2 - Y) @ W2.T) * step(X @ W1))"


def cli(*args: str):
    result = runner.invoke(app, ["check", *args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def a_class(tmp_path: Path, students: int = 6) -> tuple[Path, Path]:
    subs = tmp_path / "subs"
    subs.mkdir()
    for k in range(1, students + 1):
        (subs / f"s{k}.txt").write_text(RIGHT)
    key = tmp_path / "key.toml"
    key.write_text(KEY)
    return subs, key


def csv_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def reversed_chain(n: int) -> str:
    """n lines, each naming the value the next line defines: a1 = a2, a2 = a3, …, an = X @ W1."""
    lines = [f"a{k} = a{k + 1}" for k in range(1, n)] + [f"a{n} = X @ W1"]
    return "\n".join(lines + [GRAD_W1]) + "\n"


# --- a long derivation file is one linear pass ---------------------------------------------------


def test_an_800_line_chain_is_parsed_a_bounded_number_of_times_per_line(monkeypatch):
    problem = Problem(MLP, MLP_SHAPES)
    calls = 0
    real = check_module.parse_expression

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(check_module, "parse_expression", counting)
    lines = 801
    results = problem.check_lines(reversed_chain(lines - 1))
    assert len(results) == lines
    assert all(r.verdict == "defined" and "names X @ W1" in r.reason for r in results[:-1]), results[0]
    assert results[-1].verdict == "right"
    # Each line once to find the aliases, once to check it (the old fixpoint retried every pending
    # line on every pass: n²/2 = 320,000 parses, 168 s)
    assert calls <= 3 * lines, calls


def test_the_chain_in_any_order_names_the_same_nodes():
    problem = Problem(MLP, MLP_SHAPES)
    forward = ["a1 = X @ W1"] + [f"a{k} = a{k - 1}" for k in range(2, 60)]
    mixed = forward[30:] + forward[:30]
    for text in ("\n".join(forward), "\n".join(mixed), reversed_chain(59)):
        results = problem.check_lines(text + f"\ndL/da{len(forward)} = 2*(H @ W2 - Y) @ W2.T * step(X @ W1)")
        assert results[-1].verdict == "right", results[-1].reason


# --- a time budget per submission --------------------------------------------------------------


def slow_claims(monkeypatch, marker: str, seconds: float):
    """Problem.check sleeps `seconds` on a claim that ends with `marker`: a slow line, made to order."""
    real = Problem.check

    def slow(self, target, claim, *args, **kwargs):
        if claim.strip().endswith(marker):
            time.sleep(seconds)
        return real(self, target, claim, *args, **kwargs)

    monkeypatch.setattr(Problem, "check", slow)


def test_a_slow_submission_times_out_and_the_others_are_graded(tmp_path, monkeypatch):
    subs, key = a_class(tmp_path)
    # the 6th: the chain that took minutes before, then 40 lines that each take 0.25 s
    slow = reversed_chain(300).replace(GRAD_W1, "") + "\n".join(["dz/dx = 2*x*cos(x**2)*exp(y) * 1"] * 40)
    (subs / "s6.txt").write_text(slow)
    slow_claims(monkeypatch, "* 1", 0.25)
    out = tmp_path / "grades.csv"
    rows = grade(subs, key, jobs=1, progress=False, timeout=1.5, csv_path=out)
    for k in range(1, 6):
        mine = [(r["step"], r["verdict"]) for r in rows if r["student"] == f"s{k}"]
        assert mine == [("dz/dx", "right"), ("dz/dy", "right")]
    sixth = [r for r in rows if r["student"] == "s6"]
    timed_out = [r for r in sixth if r["reason"].startswith("timed out")]
    assert timed_out and all(r["verdict"] == "error" for r in timed_out)
    assert "1.5 s budget" in timed_out[0]["reason"] and "not checked" in timed_out[0]["reason"]
    assert any(r["step"] == "dz/dy" and "timed out before" in r["reason"] for r in sixth)  # not "missing"
    checked = [r for r in sixth if r["verdict"] == "right"]
    assert 0 < len(checked) < 40  # the lines checked in time keep their rows
    assert csv_rows(out) == [{k: str(v) for k, v in r.items()} for r in rows]


def test_one_line_that_never_ends_is_interrupted(tmp_path, monkeypatch):
    if not hasattr(signal, "setitimer"):
        pytest.skip("needs SIGALRM")
    subs, key = a_class(tmp_path, students=2)
    (subs / "s2.txt").write_text("dz/dx = 2*x*cos(x**2)*exp(y) * 7\n")
    slow_claims(monkeypatch, "* 7", 60)
    rows = grade(subs, key, jobs=1, progress=False, timeout=1)
    assert [r["verdict"] for r in rows if r["student"] == "s1"] == ["right", "right"]
    second = [r for r in rows if r["student"] == "s2"]
    assert second[0]["verdict"] == "error" and second[0]["reason"].startswith("timed out"), second
    assert second[0]["line"] == 1


# --- an interrupted run keeps its rows ---------------------------------------------------------


def interrupt_at(monkeypatch, call: int, action):
    real = grade_module.grade_task
    count = 0

    def task(*args, **kwargs):
        nonlocal count
        count += 1
        if count == call:
            action()
        return real(*args, **kwargs)

    monkeypatch.setattr(grade_module, "grade_task", task)


def ctrl_c():
    raise KeyboardInterrupt


def test_ctrl_c_after_five_students_leaves_their_rows_in_grades_csv(tmp_path, monkeypatch):
    subs, key = a_class(tmp_path)
    out = tmp_path / "grades.csv"
    out.write_text("the previous run\n")
    interrupt_at(monkeypatch, 6, ctrl_c)
    result = cli("--grade", str(subs), "--key", str(key), "--jobs", "1", "-o", str(out))
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "5 of 6 students" in result.output, result.output
    rows = csv_rows(out)
    assert sorted({r["student"] for r in rows}) == ["s1", "s2", "s3", "s4", "s5"]
    assert all(r["verdict"] == "right" for r in rows) and len(rows) == 10
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary file is renamed


def test_an_interrupt_before_any_row_keeps_the_previous_csv(tmp_path, monkeypatch):
    subs, key = a_class(tmp_path, students=2)
    out = tmp_path / "grades.csv"
    out.write_text("the previous run\n")
    interrupt_at(monkeypatch, 1, ctrl_c)
    with pytest.raises(GradingInterrupted) as caught:
        grade(subs, key, jobs=1, progress=False, csv_path=out)
    assert caught.value.tasks_done == 0 and "as it was" in caught.value.message()
    assert out.read_text() == "the previous run\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sigterm_keeps_the_rows_done(tmp_path, monkeypatch):
    subs, key = a_class(tmp_path)
    out = tmp_path / "grades.csv"
    interrupt_at(monkeypatch, 4, lambda: os.kill(os.getpid(), signal.SIGTERM))
    result = cli("--grade", str(subs), "--key", str(key), "--jobs", "1", "-o", str(out))
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert "SIGTERM" in result.output and "3 of 6 students" in result.output
    assert sorted({r["student"] for r in csv_rows(out)}) == ["s1", "s2", "s3"]
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None) or callable(signal.getsignal(signal.SIGTERM))


def test_an_error_in_the_run_keeps_the_rows_done(tmp_path, monkeypatch):
    subs, key = a_class(tmp_path)
    out = tmp_path / "grades.csv"

    def boom():
        raise RuntimeError("a bug")

    interrupt_at(monkeypatch, 3, boom)
    with pytest.raises(RuntimeError):
        grade(subs, key, jobs=1, progress=False, csv_path=out)
    assert sorted({r["student"] for r in csv_rows(out)}) == ["s1", "s2"]


def test_rows_graded_out_of_order_are_written_in_order(tmp_path):
    out = tmp_path / "g.csv"
    f = GradesFile(out)
    row = dict.fromkeys(grade_module.CSV_COLUMNS, "")
    f.add(1, [row | {"student": "b"}])
    f.add(0, [row | {"student": "a"}])
    f.add(3, [row | {"student": "d"}])  # 2 never comes: an interrupted run
    assert not out.exists()
    f.close()
    assert [r["student"] for r in csv_rows(out)] == ["a", "b", "d"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or not hasattr(os, "killpg"), reason="needs /proc")
def test_ctrl_c_in_a_parallel_run_ends_the_workers_and_keeps_the_rows(tmp_path):
    subs, key = a_class(tmp_path, students=1)
    for name in ("x", "y", "z"):  # after s1; ~3000 checked lines each: long enough to be interrupted
        (subs / f"{name}.txt").write_text("dz/dx = 2*x*cos(x**2)*exp(y)\n" * 3000)
    out = tmp_path / "grades.csv"
    command = [sys.executable, "-m", "backstep", "check", "--grade", str(subs), "--key", str(key)]
    proc = subprocess.Popen(
        [*command, "--jobs", "2", "-o", str(out)],
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches it
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = _children(proc.pid)
        assert len(workers) >= 2, "the workers did not start"
        while time.monotonic() < deadline and not any(
            "s1," in t.read_text(encoding="utf-8") for t in tmp_path.glob(".grades.csv.*.tmp")
        ):
            time.sleep(0.2)  # s1's rows are in the temporary file: a row done, the others running
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = output.decode("utf-8", "replace")
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "interrupted" in text, text
    time.sleep(0.5)
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived the run"
    assert "s1" in {r["student"] for r in csv_rows(out)}


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- odd files: a BOM, U+2028, two submissions of one student ------------------------------------


def test_a_bom_does_not_hide_the_first_line(tmp_path):
    d = tmp_path / "bob.txt"
    d.write_bytes(b"\xef\xbb\xbf" + RIGHT.encode())
    result = cli(SCALAR, "-d", str(d), "--format", "json")
    assert result.exit_code == 0, result.output
    assert [line["verdict"] for line in json.loads(result.output)["lines"]] == ["right", "right"]
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "bob.txt").write_bytes(b"\xef\xbb\xbf[one]\n" + RIGHT.encode() + b"[two]\ndz/dy = sin(x**2)*exp(y)\n")
    key = tmp_path / "key.toml"
    key.write_bytes(
        b"\xef\xbb\xbf" + KEY.replace('"scalar"', '"one"').encode() + KEY.replace('"scalar"', '"two"').encode()
    )
    rows = grade(subs, key, jobs=1, progress=False)
    assert [(r["problem"], r["step"], r["verdict"]) for r in rows] == [
        ("one", "dz/dx", "right"),
        ("one", "dz/dy", "right"),
        ("two", "dz/dy", "right"),
        ("two", "dz/dx", "missing"),
    ]


def test_a_raw_line_separator_inside_a_json_string_does_not_split_the_line(tmp_path):
    lines = [
        {"id": "a\u2028b\u0085c", "expr": SCALAR, "wrt": "x", "claim": "2*x*cos(x**2)*exp(y)"},
        {"id": 2, "expr": SCALAR, "wrt": "y", "claim": "sin(x**2)*exp(y)"},
    ]
    claims = tmp_path / "claims.jsonl"
    claims.write_text("\ufeff" + "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8")
    assert "\u2028" in claims.read_text(encoding="utf-8")
    result = cli("--batch", str(claims))
    assert result.exit_code == 0, result.output
    out = [json.loads(x) for x in result.output.strip().split("\n")]
    assert [(o["id"], o["verdict"], o["line"]) for o in out] == [("a\u2028b\u0085c", "right", 1), (2, "right", 2)]


def test_a_folder_and_a_file_of_the_same_student_are_a_conflict(tmp_path):
    subs, key = a_class(tmp_path, students=1)
    (subs / "alice").mkdir()
    (subs / "alice" / "scalar.txt").write_text(RIGHT)
    (subs / "alice.txt").write_text("dz/dx = 0\n")
    rows = grade(subs, key, jobs=1, progress=False)
    alice = [r for r in rows if r["student"] == "alice"]
    assert [r["verdict"] for r in alice] == ["error"]
    assert alice[0]["reason"].startswith("conflict: alice/ and alice.txt"), alice
    assert [r["verdict"] for r in rows if r["student"] == "s1"] == ["right", "right"]


# --- sizes are capped --------------------------------------------------------------------------


def test_a_batch_line_with_huge_shapes_is_an_error_for_that_line_only():
    assert MAX_ELEMENTS == 10**7 and MAX_BYTES == 2**30
    lines = [
        json.dumps({"id": 1, "expr": "sum(X*X)", "wrt": "X", "claim": "2*X", "shapes": {"X": [9000, 9000]}}),
        json.dumps({"id": 2, "expr": "sum(X*X)", "wrt": "X", "claim": "2*X", "shapes": {"X": [3, 4]}}),
    ]
    out = list(run_batch(lines))
    assert out[0]["verdict"] == "error"
    assert "81,000,000 elements" in out[0]["reason"] and "10,000,000" in out[0]["reason"]
    assert "smaller sizes" in out[0]["reason"]
    assert out[1]["verdict"] == "right"
    # the total over the formula's arrays, and the caps as parameters
    total = list(run_batch(lines[1:], max_bytes=100))
    assert total[0]["verdict"] == "error" and "GiB" in total[0]["reason"]
    assert list(run_batch(lines[1:], max_elements=5))[0]["verdict"] == "error"


def test_a_claim_that_builds_a_huge_array_is_refused():
    problem = Problem("sum(x * y)", {"x": (1, 5000), "y": (1, 5000)})
    from backstep.errors import UsageError

    with pytest.raises(UsageError, match="25,000,000 elements"):
        problem.check_claim("x", "y @ (x.T @ x) / sum(x**2)")
    result = cli("sum(X*X)", "--shape", "X=9000x9000", "--wrt", "X", "--claim", "2*X")
    assert result.exit_code == 2 and "elements" in result.output, result.output


# --- claims that overflow or are NaN -------------------------------------------------------------


@pytest.mark.parametrize("claim", ["0 ** x", "x ** x ** x", "exp(exp(exp(100*x)))"])
def test_an_infinite_or_nan_claim_is_a_verdict_not_a_traceback(claim):
    text = cli(SCALAR, "--wrt", "x", "--claim", claim)
    assert text.exit_code in (1, 2), text.output
    result = cli(SCALAR, "--wrt", "x", "--claim", claim, "--format", "json")
    assert result.exit_code == text.exit_code
    stdout = result.stdout[result.stdout.index("{") :]  # (an error's message may come first, from stderr)
    out = json.loads(stdout, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert out["verdict"] in ("wrong", "error") and out["reason"]
    out = list(run_batch([json.dumps({"expr": SCALAR, "wrt": "x", "claim": claim})]))[0]
    assert out["verdict"] in ("wrong", "error") and "internal error" not in out["reason"]
