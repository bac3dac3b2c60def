"""Templates and problem files from strangers: documents that try to run code, read files or
overwrite them.

A teacher's `--template DIR` and a problem file are shared, so untrusted. Each payload here tries
to create a canary file or to copy a secret file (with a unique marker) into the output; none may
succeed. A template is refused with exit code 2, a message that says "template" (with the file and
line), and no traceback; a problem file's TeX that could read a file is refused by name; LaTeX runs
in kpathsea's paranoid mode; Markdown code blocks cannot be broken out of; and no output is written
through a symbolic link or over an input.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from tex_tools import need_tex, pdf_text
from typer.testing import CliRunner

from backstep.cli import app
from backstep.render import pdf as pdf_module
from backstep.render.documents import TemplateError, Templates, check_math, md_code, tex_escape, tex_text
from backstep.render.pdf import PdfError, compile_pdf

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def bait(tmp_path):
    """A canary path (payloads try to create it) and a secret file (payloads try to read it)."""
    marker = f"SECRET{uuid.uuid4().hex}"
    secret = tmp_path / "secret.txt"
    secret.write_text(marker + "\n")
    return tmp_path / "canary", secret, marker


def assert_untouched(bait, result, *outputs: Path):
    canary, _, marker = bait
    assert not canary.exists(), "a payload ran code"
    assert marker not in result.output, "a payload read the secret"
    for path in outputs:
        if path.exists():
            assert marker not in path.read_text(errors="replace")


# --- 1. templates are not code ----------------------------------------------------------------------

# Each tries to run a command (create {canary}) or read {secret}; {rel} is the secret's path relative
# to the template folder. Written in jinja2's own syntax; `tex_syntax` rewrites them for .tex.j2.
TEMPLATE_ATTACKS = {
    "cycler globals": "{{ cycler.__init__.__globals__.os.system('touch {canary}') }}",
    "joiner globals": "{{ joiner.__init__.__globals__.os.popen('cat {secret}').read() }}",
    "lipsum globals": "{{ lipsum.__globals__['os'].popen('touch {canary}').read() }}",
    "template reference": (
        "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch {canary}') }}"
    ),
    "mro subclasses": (
        "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == '_wrap_close' %}"
        "{{ c.__init__.__globals__['popen']('touch {canary}').read() }}{% endif %}{% endfor %}"
    ),
    "flask request": "{{ request.application.__globals__.__builtins__.__import__('os').popen('touch {canary}') }}",
    "flask config": "{{ config.__class__.__init__.__globals__['os'].popen('cat {secret}').read() }}",
    "helper globals": "{{ format_value.__globals__['__builtins__']['open']('{secret}').read() }}",
    # a public method of a SymPy expression that evaluates a string (sympify): the stock sandbox allows it
    "sympy eval": "{{ D.d.forward[0].expr.diff(\"__import__('os').system('touch {canary}')\") }}",
    "derivation method": "{{ D.d.to_json() }}{{ D.d.to_markdown(template_dir='{folder}') }}",
    "include absolute": "{% include '{secret}' %}",
    "include traversal": "{% include '{rel}' %}",
    "import traversal": "{% import '{rel}' as leaked %}{{ leaked }}",
    "extends traversal": "{% extends '{rel}' %}",
    "include symlink": "{% include 'leak.j2' %}",
    "str format": "{{ '{0.__class__.__init__.__globals__}'.format(cycler) }}",
}


def tex_syntax(payload: str) -> str:
    return payload.replace("{{ ", "\\VAR{").replace(" }}", "}").replace("{% ", "\\BLOCK{").replace(" %}", "}")


def hostile_template(tmp_path, bait, name: str, attack: str) -> Path:
    canary, secret, _ = bait
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "leak.j2").symlink_to(secret)  # a shared folder can hold a link to anywhere
    payload = TEMPLATE_ATTACKS[attack]
    fields = {"canary": canary, "secret": secret, "rel": os.path.relpath(secret, folder), "folder": tmp_path}
    for key, value in fields.items():
        payload = payload.replace("{" + key + "}", str(value))
    if name.endswith(".tex.j2"):
        payload = tex_syntax(payload)
    (folder / name).write_text("a first line\n" + payload + "\n")
    return folder


HW = 'title = "T"\n[[problem]]\nfunction = "x*y"\n'

TARGETS = {
    "md": ("derivation.md.j2", ["derive", "x*y", "--format", "md", "--no-verify"]),
    "latex": ("fragment.tex.j2", ["derive", "x*y", "--format", "latex", "--no-verify"]),
    "standalone": ("document.tex.j2", ["derive", "x*y", "--format", "latex", "--standalone", "--no-verify"]),
    "exercises": ("exercises.tex.j2", ["sheet", "{hw}", "--format", "latex"]),
    "solutions": ("solutions.tex.j2", ["sheet", "{hw}", "--format", "latex"]),
}


def run_target(tmp_path, target: str, folder: Path):
    name, args = TARGETS[target]
    hw = tmp_path / "hw.toml"
    hw.write_text(HW)
    args = [a.replace("{hw}", str(hw)) for a in args]
    return invoke(*args, "--template", str(folder)), [hw.parent / "hw-exercises.tex", hw.parent / "hw-solutions.tex"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("attack", TEMPLATE_ATTACKS)
def test_a_hostile_template_is_refused(tmp_path, bait, target, attack):
    folder = hostile_template(tmp_path, bait, TARGETS[target][0], attack)
    result, outputs = run_target(tmp_path, target, folder)
    assert_untouched(bait, result, *outputs)
    assert result.exit_code == 2, result.output
    assert "template" in result.stderr.lower()
    assert result.stdout == ""
    assert not any(path.exists() for path in outputs)


@pytest.mark.parametrize("attack", ["cycler globals", "sympy eval", "include traversal"])
def test_a_hostile_template_makes_no_pdf(tmp_path, bait, attack):
    need_tex("en")
    folder = hostile_template(tmp_path, bait, "document.tex.j2", attack)
    out = tmp_path / "out.pdf"
    result = invoke("derive", "x*y", "--format", "pdf", "-o", str(out), "--template", str(folder), "--no-verify")
    assert_untouched(bait, result)
    assert result.exit_code == 2 and "template" in result.stderr
    assert not out.exists()


def test_a_template_cannot_reach_outside_its_folders(tmp_path, bait):
    """FileSystemLoader refuses `..`; an absolute name is looked up inside the folders; a link out is refused."""
    _, secret, marker = bait
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "leak.j2").symlink_to(secret)
    templates = Templates(folder)
    for name in ("../secret.txt", str(secret), "leak.j2", "./../secret.txt"):
        with pytest.raises(TemplateError) as caught:
            templates.render(name)
        assert marker not in str(caught.value)


def test_a_template_may_include_its_own_files(tmp_path):
    folder = tmp_path / "t"
    (folder / "parts").mkdir(parents=True)
    (folder / "parts" / "greeting.j2").write_text("hello {{ who }}")
    (folder / "page.md.j2").write_text("{% include 'parts/greeting.j2' %}, {{ 'a b'.split() | join('+') }}")
    assert Templates(folder).render("page.md.j2", who="you") == "hello you, a+b"


@pytest.mark.parametrize(
    "body, line, says",
    [
        ("{{ 1/0 }}", 3, "ZeroDivisionError"),
        ("{{ no_such_name }}", 3, "no_such_name"),
        ("{{ cycler.__init__ }}", 3, "unsafe"),
        ("{{ msg('no_such_key') }}", 3, "no_such_key"),
        ("{{ D.d.to_json() }}", 3, "not allowed"),
        ("{{ range(10**9) | list }}", 3, "range"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", 3, "template"),
    ],
)
def test_a_template_failing_while_it_renders_says_where(tmp_path, body, line, says):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "derivation.md.j2").write_text(f"one\ntwo\n{body}\nfour\n")
    result = invoke("derive", "x*y", "--format", "md", "--no-verify", "--template", str(folder))
    assert result.exit_code == 2, result.output
    assert "template error" in result.stderr
    assert f"derivation.md.j2:{line}" in result.stderr, result.stderr
    assert says in result.stderr
    assert result.stdout == ""


def test_a_latex_template_failing_says_where(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "fragment.tex.j2").write_text("one\n\\VAR{D.nothing}\n")
    result = invoke("derive", "x*y", "--format", "latex", "--no-verify", "--template", str(folder))
    assert result.exit_code == 2
    assert "fragment.tex.j2:2" in result.stderr and "nothing" in result.stderr


def test_the_default_templates_still_render_in_the_sandbox():
    for formula, at in (("sum(relu(X@W1)@W2)", []), ("sin(x)*y", ["--at", "x=2", "--at", "y=3"])):
        for args in (["--format", "md"], ["--format", "latex"], ["--format", "latex", "--standalone"]):
            result = invoke("derive", formula, *args, *at)
            assert result.exit_code == 0, result.output
            assert "template" not in result.stderr


# --- 2. a problem file's text: prose, and math without commands that reach files ----------------------

READS = [
    r"\input{SECRET}",
    r"\include{SECRET}",
    r"\openin5=SECRET \read5 to\x \x",
    r"\csname input\endcsname{SECRET}",
    r"\catcode`\|=0 |input{SECRET}",
    r"\def\x{\input}\x{SECRET}",
    r"\immediate\write18{touch CANARY}",
    r"\usepackage{SECRET}",
    r"^^5cinput{SECRET}",
    r"\begin{filecontents}{CANARY}x\end{filecontents}",
    r"\IfFileExists{SECRET}{a}{b}",
    r"\frac{a}{b}\input{SECRET}",
]


def toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def problem_file(tmp_path, field: str, value: str) -> Path:
    value = toml_string(value)
    top = {"title": '"T"', "course": None, "instructions": None}
    problem = {"title": None, "text": None}
    if field in top:
        top[field] = value
    else:
        problem[field] = value
    lines = [f"{k} = {v}" for k, v in top.items() if v is not None]
    lines += ["[[problem]]", 'function = "x*y"'] + [f"{k} = {v}" for k, v in problem.items() if v is not None]
    path = tmp_path / "hw.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("field", ["title", "course", "instructions", "text", "problem title"])
@pytest.mark.parametrize("payload", READS)
def test_tex_that_reads_files_is_refused_in_a_problem_file(tmp_path, bait, field, payload):
    canary, secret, marker = bait
    payload = payload.replace("SECRET", str(secret)).replace("CANARY", str(canary))
    hw = problem_file(tmp_path, field.replace("problem ", ""), f"Let ${payload}$ be given")
    result = invoke("sheet", str(hw), "--format", "latex")
    assert_untouched(bait, result)
    assert result.exit_code == 2, result.output
    assert f"error in {hw}" in result.stderr
    assert field.replace("problem ", "") in result.stderr
    assert "math" in result.stderr and "not allowed" in result.stderr
    assert not list(tmp_path.glob("*.tex"))


def test_the_refusal_names_the_command_and_the_line(tmp_path):
    hw = tmp_path / "hw.toml"
    hw.write_text('title = "T"\n[[problem]]\nfunction = "x*y"\ntext = "See $\\\\input{/etc/passwd}$"\n')
    result = invoke("sheet", str(hw), "--format", "latex")
    assert result.exit_code == 2
    assert "at 4:1: problem 1 (line 2): text: \\input is not allowed in $…$ math" in result.stderr, result.stderr


def test_a_tex_payload_in_a_sheet_pdf_reads_nothing(tmp_path, bait):
    need_tex("en")
    _, secret, marker = bait
    hw = problem_file(tmp_path, "title", f"$\\input{{{secret}}}$")
    result = invoke("sheet", str(hw))
    assert_untouched(bait, result)
    assert result.exit_code == 2
    for pdf in tmp_path.glob("*.pdf"):
        assert marker not in pdf_text(pdf)


def test_plain_text_is_literal_and_math_still_works(tmp_path):
    title = r"Costs & 50% #1 x_hat a\b {c} ~ ^ $5"
    course = r"Week 3: $W_1^{\top}$ & $x \in \mathbb{R}^n$"
    text = r"Find $\frac{\partial L}{\partial W} = \sum_i \alpha_i \cdot x_i$."
    hw = tmp_path / "hw.toml"
    hw.write_text(
        f"title = {toml_string(title)}\ncourse = {toml_string(course)}\n"
        f'[[problem]]\nfunction = "x*y"\ntext = {toml_string(text)}\n'
    )
    result = invoke("sheet", str(hw), "--format", "latex")
    assert result.exit_code == 0, result.output
    tex = (tmp_path / "hw-exercises.tex").read_text()
    assert r"Costs \& 50\% \#1 x\_hat a\textbackslash{}b \{c\} \textasciitilde{} \textasciicircum{} \$5" in tex
    assert r"$\frac{\partial L}{\partial W} = \sum_i \alpha_i \cdot x_i$" in tex
    assert r"$x \in \mathbb{R}^n$" in tex


def test_plain_text_and_math_in_a_sheet_pdf(tmp_path):
    need_tex("en")
    title = r"Costs & 50% #1 x_hat a\b"
    text = r"Find $\frac{\partial L}{\partial W}$ now."
    hw = tmp_path / "hw.toml"
    hw.write_text(f'title = {toml_string(title)}\n[[problem]]\nfunction = "x*y"\ntext = {toml_string(text)}\n')
    result = invoke("sheet", str(hw))
    assert result.exit_code == 0, result.output
    text = pdf_text(tmp_path / "hw-exercises.pdf")
    assert "Costs & 50% #1 x_hat a\\b" in text
    assert "∂L" in text and "now." in text


def test_the_math_rule():
    assert check_math(r"\frac{\partial L}{\partial W_{1}} \in \mathbb{R}^{n \times d}") is None
    assert check_math(r"\left( \sqrt{x} \right) \le \log \exp x, \; \ldots \quad \top") is None
    assert check_math(r"\begin{pmatrix} a & b \\ c & d \end{pmatrix}") is None
    for math, refused in [
        (r"\input{x}", r"\input"),
        (r"\frac{a}{b} \openin", r"\openin"),
        (r"^^5cinput", "^^"),
        (r"\begin{filecontents}", r"\begin{filecontents}"),
        (r"\inputα", r"\inputα"),
        ("a}b", "}"),
        ("a{b", "{"),
        ("a%b", "%"),
        ("x\x0dy", "\\x0d"),
        ("a\\", "\\"),
    ]:
        assert refused in check_math(math), math


def test_tex_text_escapes_math_it_does_not_allow():
    assert tex_text("Let $\\sigma_1$ be 50% of x_1") == "Let $\\sigma_1$ be 50\\% of x\\_1"
    assert "\\input" not in tex_text("$\\input{/etc/passwd}$")
    assert tex_text("$\\input{a}$") == tex_escape("$\\input{a}$")
    assert "\\catcode" not in tex_text("a $\\catcode`|=0$ b")


def test_tex_escape_makes_control_characters_visible():
    # XeTeX ends a line at U+2028: in a comment, the rest would be live LaTeX
    assert "\u2028" not in tex_escape("a\u2028b") and "\x0d" not in tex_escape("a\x0db")


@pytest.mark.parametrize(
    "document",
    [
        "\\input{SECRET}",
        "\\newread\\f\\openin\\f=SECRET \\read\\f to\\x \\x",
        "\\input{../secret.txt}",
        "\\immediate\\write18{touch CANARY}",
    ],
)
def test_latex_runs_in_paranoid_mode(tmp_path, bait, monkeypatch, document):
    need_tex("en")
    canary, secret, marker = bait
    build = tmp_path / "build"  # the folder LaTeX runs in, beside the secret
    monkeypatch.setattr(pdf_module.tempfile, "mkdtemp", lambda **_: build.mkdir() or str(build))
    body = document.replace("SECRET", str(secret)).replace("CANARY", str(canary))
    tex = f"\\documentclass{{article}}\n\\begin{{document}}\nstart {body} end\n\\end{{document}}\n"
    out = tmp_path / "out.pdf"
    try:
        compile_pdf(tex, out)
    except PdfError as err:
        assert marker not in str(err)
    else:
        assert marker not in pdf_text(out)
    assert not canary.exists()
    logs = [p.read_text(errors="replace") for p in build.glob("*.log")]
    assert not any(marker in log for log in logs)


def test_latex_is_run_without_shell_escape(monkeypatch, tmp_path):
    seen = {}

    def fake_engine(command, folder, env):  # what the engine is started with; it "fails" at once
        seen.update(command=command, env=env)
        return 1, "! fake engine"

    monkeypatch.setattr(pdf_module, "missing_engine", lambda lang="en": None)
    monkeypatch.setattr(pdf_module, "_run_engine", fake_engine)
    with pytest.raises(PdfError):
        compile_pdf("\\documentclass{article}", tmp_path / "x.pdf")
    assert seen["env"]["openin_any"] == "p" and seen["env"]["openout_any"] == "p"
    assert seen["env"]["shell_escape"] == "f"
    assert "-latexoption=-no-shell-escape" in seen["command"] and "-norc" in seen["command"]


# --- 3. Markdown: no way out of a code block ------------------------------------------------------------

BREAKOUTS = ["\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\r"]


@pytest.mark.parametrize("separator", BREAKOUTS, ids=[hex(ord(c)) for c in BREAKOUTS])
def test_a_comment_cannot_break_out_of_the_code_block(separator):
    payload = f"{separator}```{separator}<img src=x onerror=alert(1)>{separator}````"
    program = f"y = x * 2  # {payload}\nz = y * w  # ``````"
    result = invoke("derive", program, "--format", "md", "--no-verify")
    if result.exit_code == 2:  # a line separator Python itself refuses is fine too
        return
    md = result.stdout
    assert not any(line.lstrip().startswith("<img") for line in md.splitlines())
    assert not any(line.lstrip().startswith("<img") for line in re.split(r"\r\n|\r|\n", md))
    block = md[md.index("```") :]
    opening = re.match(r"`+", block).group()
    inside, _, _ = block[len(opening) :].partition("\n" + opening + "\n")
    assert len(opening) > max(len(run) for run in re.findall(r"`+", inside))
    assert separator not in md


@pytest.mark.parametrize("separator", ["\u2028", "\x1c", "\x85", "\r"], ids=repr)
def test_a_comment_cannot_break_out_of_a_latex_comment(separator):
    program = f"y = x * 2  # {separator}\\input{{/etc/passwd}}\nz = y * w"
    result = invoke("derive", program, "--format", "latex", "--no-verify")
    if result.exit_code == 2:
        return
    tex = result.stdout
    assert separator not in tex
    for line in re.split(r"\r\n|\r|\n", tex):  # every line that shows the program is a TeX comment
        if "input{/etc/passwd}" in line:
            assert line.startswith("%")


def test_md_code_fences_longer_than_any_backticks():
    block = md_code(["a = 1  # ```` x", "b"], "python")
    assert block.splitlines()[0] == "`````python" and block.splitlines()[-1] == "`````"
    assert md_code(["plain"]).splitlines()[0] == "```"
    assert "\\x1c" in md_code(["a\x1cb"])


# --- 4. outputs: never through a link, never over an input ----------------------------------------------


def test_a_sheet_is_not_written_through_a_symlink(tmp_path):
    hw = tmp_path / "hw.toml"
    hw.write_text(HW)
    other = tmp_path / "other.txt"
    other.write_text("keep me")
    (tmp_path / "hw-solutions.tex").symlink_to(other)
    result = invoke("sheet", str(hw), "--format", "latex")
    assert result.exit_code == 2
    assert "symbolic link" in result.stderr
    assert other.read_text() == "keep me"
    assert not (tmp_path / "hw-exercises.tex").exists()  # refused before anything is written


def test_a_sheet_never_overwrites_its_problem_file(tmp_path):
    hw = tmp_path / "hw.toml"
    hw.write_text(HW)
    os.link(hw, tmp_path / "hw-exercises.tex")  # the same file under the output's name
    result = invoke("sheet", str(hw), "--format", "latex")
    assert result.exit_code == 2
    assert "input" in result.stderr
    assert hw.read_text() == HW


def test_a_sheet_pdf_is_not_written_through_a_symlink(tmp_path):
    need_tex("en")
    hw = tmp_path / "hw.toml"
    hw.write_text(HW)
    other = tmp_path / "other.txt"
    other.write_text("keep me")
    (tmp_path / "hw-exercises.pdf").symlink_to(other)
    result = invoke("sheet", str(hw))
    assert result.exit_code == 2 and "symbolic link" in result.stderr
    assert other.read_text() == "keep me"


def test_compile_pdf_refuses_a_symlink_output(tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("keep me")
    link = tmp_path / "out.pdf"
    link.symlink_to(other)
    with pytest.raises(Exception) as caught:  # refused before LaTeX runs: no TeX needed
        compile_pdf("\\documentclass{article}\\begin{document}x\\end{document}", link)
    assert "symbolic link" in str(caught.value)
    assert other.read_text() == "keep me" and link.is_symlink()


def test_derive_pdf_refuses_a_symlink_output(tmp_path):
    need_tex("en")
    other = tmp_path / "other.txt"
    other.write_text("keep me")
    link = tmp_path / "out.pdf"
    link.symlink_to(other)
    result = invoke("derive", "x*y", "--format", "pdf", "-o", str(link), "--no-verify")
    assert result.exit_code == 2 and "symbolic link" in result.stderr
    assert other.read_text() == "keep me"


def test_compile_pdf_keeps_the_old_pdf_when_latex_fails(tmp_path):
    need_tex("en")
    out = tmp_path / "out.pdf"
    out.write_bytes(b"%PDF old")
    with pytest.raises(PdfError) as caught:
        compile_pdf("\\documentclass{article}\\begin{document}\\frobnicate\\end{document}", out)
    if caught.value.folder is not None:
        import shutil

        shutil.rmtree(caught.value.folder)
    assert out.read_bytes() == b"%PDF old"
