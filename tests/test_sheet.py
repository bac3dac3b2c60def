"""`backstep sheet`: problem files, the exercise and solution sheets, and bad input."""

from __future__ import annotations

import datetime

import pytest
from tex_tools import need_tex, pdf_text
from typer.testing import CliRunner

from backstep import sheet as sheet_module
from backstep.cli import app
from backstep.sheet import derive_problems, load_sheet, render_sheets

runner = CliRunner()

HW = '''title = "Backpropagation by hand"
course = "Deep Learning, week 3"
date = "2026-03-02"

[[problem]]
title = "A two-layer network"
function = """
X: (n, d); W1: (d, h); W2: (h, o); Y: (n, o)
H = relu(X @ W1)
L = sum((H @ W2 - Y)**2)
"""
wrt = ["W1", "W2"]
text = "A ReLU network trained with the squared error on $n$ examples."

[[problem]]
function = "sin(x**2)*exp(y)"

[[problem]]
function = "sum(sigmoid(X @ w + b))"
shapes = { X = "n,d", w = ["d"], b = "n" }
assume = { X = "real" }
wrt = "w,b"
'''


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def hw(tmp_path):
    path = tmp_path / "hw.toml"
    path.write_text(HW, encoding="utf-8")
    return path


def write(tmp_path, text: str):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the problem file ------------------------------------------------------------------------------


def test_load_a_problem_file(hw):
    sheet = load_sheet(hw)
    assert (sheet.title, sheet.course, sheet.date) == ("Backpropagation by hand", "Deep Learning, week 3", "2026-03-02")
    assert [p.number for p in sheet.problems] == [1, 2, 3]
    assert [p.line for p in sheet.problems] == [5, 15, 18]
    first, _, third = sheet.problems
    assert first.wrt == ["W1", "W2"] and first.title == "A two-layer network"
    assert third.shapes == {"X": ("n", "d"), "w": ("d",), "b": ("n",)} and third.wrt == ["w", "b"]


def test_a_toml_date_is_read_too(tmp_path):
    path = write(tmp_path, 'title = "T"\ndate = 2026-03-02\n[[problem]]\nfunction = "x*y"\n')
    assert load_sheet(path).date == "2026-03-02"


@pytest.mark.parametrize(
    "text, message",
    [
        ('title = "T"\n[[problem]\nfunction = "x"\n', "bad.toml at 2:"),
        ('title = "T"\nauthor = "me"\n[[problem]]\nfunction = "x"\n', "unknown key 'author'"),
        ('[[problem]]\nfunction = "x"\n', "the sheet needs a title"),
        ('title = "T"\n', "the sheet has no problems"),
        (
            'title = "T"\n[[problem]]\nfunction = "x"\n\n[[problem]]\nfuncion = "x*y"\n',
            "problem 2 (line 5): unknown key",
        ),
        ('title = "T"\n[[problem]]\nwrt = ["x"]\n', "problem 1 (line 2): needs a function"),
        ('title = "T"\n[[problem]]\nfunction = "x"\nwrt = [1]\n', "wrt must be a list of variable names"),
        ('title = "T"\n[[problem]]\nfunction = "x"\nshapes = { x = "n,-1" }\n', "shape of x"),
        ('title = "T"\n[[problem]]\nfunction = "x"\nassume = "positive"\n', "assume must be a table"),
    ],
)
def test_bad_problem_files(tmp_path, text, message):
    path = write(tmp_path, text)
    result = invoke("sheet", str(path), "--format", "latex")
    assert result.exit_code == 2
    assert message in result.stderr, result.stderr
    assert f"error in {path}" in result.stderr
    assert result.stdout == ""


def test_unknown_problem_key_points_at_its_line(tmp_path):
    path = write(tmp_path, 'title = "T"\n[[problem]]\nfunction = "x"\n  wrtt = ["x"]\n')
    result = invoke("sheet", str(path), "--format", "latex")
    assert result.exit_code == 2
    assert "at 4:3: problem 1 (line 2): unknown key 'wrtt'" in result.stderr
    assert '  wrtt = ["x"]\n    ^^^^' in result.stderr


def test_a_function_that_does_not_parse_names_the_problem(tmp_path):
    path = write(tmp_path, 'title = "T"\n[[problem]]\nfunction = "x*y"\n[[problem]]\nfunction = "rleu(x) + 1"\n')
    result = invoke("sheet", str(path), "--format", "latex")
    assert result.exit_code == 2
    assert "problem 2 (line 4), its function:" in result.stderr
    assert "rleu" in result.stderr and "^" in result.stderr
    assert not list(tmp_path.glob("*.tex"))


def test_wrt_naming_no_variable(tmp_path):
    path = write(tmp_path, 'title = "T"\n[[problem]]\nfunction = "x*y"\nwrt = ["z"]\n')
    result = invoke("sheet", str(path), "--format", "latex")
    assert result.exit_code == 2
    assert "problem 1 (line 2), its function:" in result.stderr and "z" in result.stderr


# --- the sheets ------------------------------------------------------------------------------------


def test_sheets_in_latex(hw):
    result = invoke("sheet", str(hw), "--format", "latex")
    assert result.exit_code == 0, result.output
    exercises, solutions = (hw.parent / "hw-exercises.tex"), (hw.parent / "hw-solutions.tex")
    assert result.stdout.splitlines() == [str(exercises), str(solutions)]
    ex, sol = exercises.read_text(), solutions.read_text()
    for tex in (ex, sol):
        assert "Backpropagation by hand" in tex and "Deep Learning, week 3" in tex and "2 March 2026" in tex
        for k in (1, 2, 3):
            assert rf"\section*{{Problem {k}" in tex
        assert r"A ReLU network trained with the squared error on $n$ examples." in tex
    assert r"{\large Exercises}" in ex and r"{\large Solutions}" in sol
    # the exercise sheet asks; the solution sheet answers
    assert r"give $\frac{\partial L}{\partial W_{1}}$ and $\frac{\partial L}{\partial W_{2}}$" in ex
    assert r"\tag{" not in ex and r"\bar{W}_{1}" not in ex and r"\backstepworkspace{Work space}" in ex
    assert r"\bar{W}_{1} &= X^{\top} \bar{v}_{1}" in sol and r"\backstepok" in sol


def test_date_is_overridable_and_defaults_to_today(hw, monkeypatch):
    sheet = load_sheet(hw)
    derivations = derive_problems(sheet)
    assert "31 December 2027" in render_sheets(sheet, derivations, date="2027-12-31")["exercises"]
    assert datetime.date.fromisoformat(sheet_module.today()) == datetime.date.today()
    sheet.date = ""
    monkeypatch.setattr(sheet_module, "today", lambda: "2030-01-15")
    assert "15 January 2030" in render_sheets(sheet, derivations)["solutions"]


def test_sheets_in_chinese(hw):
    result = invoke("sheet", str(hw), "--format", "latex", "--lang", "zh", "--date", "2026-03-02")
    assert result.exit_code == 0
    ex = (hw.parent / "hw-exercises.tex").read_text()
    assert "第 1 题" in ex and "习题" in ex and "2026年3月2日" in ex and "演算区" in ex
    assert r"\usepackage{xeCJK}" in ex
    assert "Problem" not in ex and "Exercises" not in ex


def test_teacher_templates(hw, tmp_path):
    own = tmp_path / "mine"
    own.mkdir()
    (own / "exercises.tex.j2").write_text(
        r"\documentclass{article}\begin{document}\VAR{sheet.title | tex_text} for"
        r" \VAR{sheet.course | tex_text}: \BLOCK{for p in problems}[\VAR{p.number}: $\VAR{p.D.output_expr}$]"
        r"\BLOCK{endfor}\end{document}"
    )
    result = invoke("sheet", str(hw), "--format", "latex", "--template", str(own), "-d", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    ex = (tmp_path / "out" / "hw-exercises.tex").read_text()
    assert ex.startswith(r"\documentclass{article}\begin{document}Backpropagation by hand for Deep Learning, week 3:")
    assert r"[2: $e^{y} \sin\left(x^{2}\right)$]" in ex
    assert r"{\large Solutions}" in (tmp_path / "out" / "hw-solutions.tex").read_text()  # not overridden


def test_sheets_as_pdf(hw, tmp_path):
    need_tex("en")
    out = tmp_path / "pdf"
    result = invoke("sheet", str(hw), "-d", str(out), "--date", "2026-03-09")
    assert result.exit_code == 0, result.output
    exercises, solutions = out / "hw-exercises.pdf", out / "hw-solutions.pdf"
    assert result.stdout.splitlines() == [str(exercises), str(solutions)]
    ex, sol = pdf_text(exercises), pdf_text(solutions)
    for text in (ex, sol):
        assert "Backpropagation by hand" in text and "9 March 2026" in text and "Deep Learning, week 3" in text
        for k in (1, 2, 3):
            assert f"Problem {k}" in text
    assert "Exercises" in ex and "Work space" in ex and "Name:" in ex
    assert "Solutions" in sol and "verified with PyTorch autograd" in sol and "matrix product:" in sol
    assert ex.count("\f") >= 3  # each problem on a page of its own


def test_missing_engine_for_a_sheet(hw, monkeypatch):
    from backstep.render import pdf

    monkeypatch.setattr(pdf.shutil, "which", lambda name: None)
    result = invoke("sheet", str(hw))
    assert result.exit_code == 2
    assert "PDF output needs a LaTeX engine" in result.stderr and "--format latex" in result.stderr
