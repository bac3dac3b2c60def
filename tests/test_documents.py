"""Documents: Markdown, LaTeX (fragment and standalone), PDF, the drawn graph, notations, Chinese,
notebooks, and teachers' own templates."""

from __future__ import annotations

import re
import shutil
import string
import subprocess
from pathlib import Path

import pytest
from helpers import grad_fn_names
from tex_tools import compile_tex, need_tex, overfull_lines, pdf_text
from typer.testing import CliRunner

import backstep
from backstep.cli import app
from backstep.ops import OPS
from backstep.render import pdf as pdf_module
from backstep.render import render
from backstep.render.documents import Templates, tex_escape, tex_text
from backstep.render.graph import build_graph
from backstep.render.i18n import LANGS, MESSAGES, Messages, format_date
from backstep.render.pdf import PdfError, describe_failure

runner = CliRunner()

NET = """X: (n, d); W1: (d, h); W2: (h, o); Y: (n, o)
H = relu(X @ W1)
L = sum((H @ W2 - Y)**2)"""


@pytest.fixture(scope="module")
def net() -> backstep.Derivation:
    return backstep.derive(NET, verify=True)


@pytest.fixture(scope="module")
def product() -> backstep.Derivation:
    return backstep.derive("x*y")


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


def block(text: str, begin: str, end: str) -> str:
    """The text from the line `begin` to the line `end`, both included."""
    start = text.index(begin)
    return text[start : text.index(end, start) + len(end)]


# --- LaTeX: exact output for a small case ---------------------------------------------------------


def test_latex_backward_pass_exact(product):
    tex = render(product, "latex")
    assert block(tex, r"\begin{align}", r"\end{align}") == (
        "\\begin{align}\n"
        "  \\bar{y} &= x\n"
        "    && \\backstepshape{\\text{scalar}}\n"
        "    && \\backsteprule{product: }{c = a b \\Rightarrow \\bar{b} = a \\bar{c}} \\tag{1} \\\\\n"
        "  \\bar{x} &= y\n"
        "    && \\backstepshape{\\text{scalar}}\n"
        "    && \\backsteprule{product: }{c = a b \\Rightarrow \\bar{a} = b \\bar{c}} \\tag{2}\n"
        "\\end{align}"
    )


def test_latex_forward_and_gradients_exact(product):
    tex = render(product, "latex")
    assert block(tex, r"\begin{align*}", r"\end{align*}") == (
        "\\begin{align*}\n"
        "  z &= x y\n"
        "    && \\backstepshape{\\text{scalar}} && \\backsteptorch{MulBackward0}\n"
        "\\end{align*}"
    )
    gradients = tex[tex.index(r"\subsection*{Gradients}") :]
    assert block(gradients, r"\begin{align*}", r"\end{align*}") == (
        "\\begin{align*}\n"
        "  \\frac{\\partial z}{\\partial x} &= y && \\backstepshape{\\text{scalar}} \\\\\n"
        "  \\frac{\\partial z}{\\partial y} &= x && \\backstepshape{\\text{scalar}}\n"
        "\\end{align*}"
    )


def test_math_only_for_jupyter_exact(product):
    assert product._repr_latex_() == (
        "$$\n\\begin{aligned}\n"
        "&\\textbf{Forward pass} \\\\\n"
        "z &= x y && \\scriptstyle \\text{scalar} \\\\\n"
        "&\\textbf{Backward pass} \\quad \\bar{z} = \\frac{\\partial z}{\\partial z} = 1 \\\\\n"
        "\\bar{y} &= x && \\text{(1)} \\\\\n"
        "\\bar{x} &= y && \\text{(2)} \\\\\n"
        "&\\textbf{Gradients} \\\\\n"
        "\\frac{\\partial z}{\\partial x} &= y && \\scriptstyle \\text{scalar} \\\\\n"
        "\\frac{\\partial z}{\\partial y} &= x && \\scriptstyle \\text{scalar}\n"
        "\\end{aligned}\n$$\n"
    )


def test_latex_fragment_has_every_part(net):
    tex = render(net, "latex")
    assert r"\documentclass" not in tex and r"\begin{document}" not in tex
    assert tex.startswith("% Backpropagation derived by backstep")
    for heading in ("Function", "Computational graph", "Forward pass", "Backward pass", "Gradients", "Verification"):
        assert rf"\subsection*{{{heading}}}" in tex
    # one numbered step per line, each with its rule named beside it
    for step in net.backward:
        assert rf"\tag{{{step.index}}}" in tex
    assert tex.count(r"\backsteprule{matrix product: }") == 4
    assert r"\backsteprule{ReLU: }{y = \operatorname{relu}\left(x\right) \Rightarrow" in tex
    # shapes, and the verification table
    assert r"W_{1} & \mathbb{R}^{d \times h}" in tex
    assert r"\backstepshape{n \times h}" in tex
    assert r"\texttt{W1.grad} & & \backstepok" in tex
    assert r"every intermediate (retain\_grad) & 9/9 & \backstepok" in tex


def test_standalone_is_a_complete_document(net):
    tex = render(net, "latex", standalone=True)
    assert tex.startswith(r"\documentclass[11pt]{article}")
    assert tex.rstrip().endswith(r"\end{document}")
    assert r"\section*{Backward pass}" in tex
    assert "xeCJK" not in tex


def test_a_long_gradient_is_fitted_to_the_line():
    # (expanded: in its named form, the default, this gradient is short)
    d = backstep.derive("sum(tanh(W3 @ tanh(W2 @ tanh(W1 @ x + b1) + b2) + b3))", expand=True)
    tex = render(d, "latex")
    # TeX measures it: at its size if it fits, scaled a little if it nearly fits, else the named step
    assert r"\frac{\partial y}{\partial W_{1}} &= \backstepfitor{\dimexpr\linewidth-8em\relax}{$\displaystyle" in tex
    assert r"{$\displaystyle \bar{v}_{1} x^{\top}$\quad\backstepaside{step (16)}}" in tex
    assert "or, where that is too long to print, of the named steps" in tex


def test_values_of_a_hand_calculation():
    d = backstep.derive("x**2 + 3", at={"x": 2.0})
    tex = render(d, "latex")
    assert r"\frac{\partial y}{\partial x} &= 2 x = 4" in tex
    md = render(d, "md")
    assert r"\frac{\partial y}{\partial x} = 2 x = 4" in md


# --- notation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "notation, adjoint, rule",
    [
        ("bar", r"\bar{W}_{1} &= X^{\top} \bar{v}_{1}", r"\bar{B} = A^{\top} \bar{C}"),
        (
            "partial",
            r"\frac{\partial L}{\partial W_{1}} &= X^{\top} \frac{\partial L}{\partial v_{1}}",
            r"\frac{\partial L}{\partial B} = A^{\top} \frac{\partial L}{\partial C}",
        ),
        ("delta", r"\delta_{W_{1}} &= X^{\top} \delta_{v_{1}}", r"\delta_{B} = A^{\top} \delta_{C}"),
    ],
)
def test_notation_names_every_adjoint(net, notation, adjoint, rule):
    tex = render(net, "latex", notation=notation)
    assert adjoint in tex
    assert rule in tex
    if notation != "bar":
        assert r"\bar{" not in block(tex, r"\begin{align}", r"\end{align}")


def test_partial_contributions_in_each_notation():
    d = backstep.derive("sin(x)*exp(x)")
    assert r"\bar{x} &= {\bar{x}^{(1)}} + {\bar{x}^{(2)}}" in render(d, "latex")
    partial = render(d, "latex", notation="partial")
    dx = r"\frac{\partial y}{\partial x}"
    assert rf"{dx} &= {{{dx}^{{(1)}}}} + {{{dx}^{{(2)}}}}" in partial
    assert r"\delta_{x} &= {\delta_{x}^{(1)}} + {\delta_{x}^{(2)}}" in render(d, "latex", notation="delta")


def test_terminal_speaks_the_notation(net):
    out = render(net, "text", notation="delta")
    assert "δW1 = Xᵀ δv1" in out
    assert "C = A B ⇒ δB = Aᵀ δC" in out


# --- Markdown ------------------------------------------------------------------------------------


def test_markdown_renders_on_github(net):
    md = render(net, "md")
    assert md.startswith("# Backpropagation of $L$\n")
    assert "$$\nL = " in md
    assert "```mermaid\nflowchart LR\n" in md
    # numbered steps, each with its rule; shapes
    for step in net.backward:
        assert re.search(rf"^{step.index}\. \$", md, re.M), step.index
    assert r"5. $\bar{W}_{2} = H^{\top} \bar{v}_{2}$ &nbsp; ($h \times o$)" in md
    mm = grad_fn_names("MmBackward0", lambda x, w: x @ w, (3, 4), (4, 5))
    assert any(f"| 1 | $v_{{1}} = X W_{{1}}$ | $n \\times h$ | `{name}` |" in md for name in mm), md
    # GitHub's math: every $ is paired on its line; no LaTeX environments it does not know
    for line in md.splitlines():
        if not line.startswith("$$"):
            assert line.replace("$$", "").count("$") % 2 == 0, line
    assert r"\begin{align" not in md and r"\tag" not in md
    assert "✓ **verified** with PyTorch autograd" in md


def test_markdown_table_cells_never_hold_a_bare_pipe():
    md = render(backstep.derive("sum(abs(x - y))"), "md")
    for line in md.splitlines():
        if line.startswith("| "):
            assert "\\left|" not in line, line


def test_mermaid_graph_has_nodes_edges_and_gradients(net):
    md = render(net, "md")
    mermaid = block(md, "```mermaid", "\n```")
    assert mermaid.count("-->") == len(net.edges)
    # Mermaid's markdown strings: notebooks show raw HTML labels (`<br/>`) as text
    assert '["`**v1**\nmatmul\nn×h`"]' in mermaid
    assert "<" not in mermaid and ">" not in mermaid.replace("-->", "")
    assert '-->|"W̄1"|' in mermaid


# --- the graph --------------------------------------------------------------------------------------


def test_graph_layout_of_the_two_layer_net(net):
    g = build_graph(net)
    where = {n.name: (n.x, n.row) for n in g.nodes}
    chain = ["v1", "H", "v2", "v3", "v4", "L"]
    assert [where[n] for n in chain] == [(float(i), 0.0) for i in range(1, 7)]  # one straight line
    assert where["X"] == (0.0, -0.5) and where["W1"] == (0.0, 0.5)  # the first layer's inputs, left
    assert where["W2"] == (2.5, 1.0) and where["Y"] == (3.5, 1.0)  # joining the chain from below
    labels = {(e.source.name, e.target.name): e.adjoint for e in g.edges}
    assert labels[("X", "v1")] == "grad_X" and labels[("v4", "L")] == "grad_v4"


def test_tikz_graph_draws_every_node_and_edge(net):
    tex = render(net, "latex")
    picture = block(tex, r"\begin{tikzpicture}", r"\end{tikzpicture}")
    assert picture.count(r"\node[") == len(net.variables) + len(net.forward)
    assert picture.count(r"\draw[bsedge]") == len(net.edges)
    assert r"\node[bsop] (n5) at (1, 0) {$v_{1}$\\[-1pt]{\scriptsize\texttt{matmul}}" in picture
    assert r"node[bsgrad, auto=right] {$\bar{W}_{1}$}" in picture
    assert r"\node[bsout] (n10) at (6, 0)" in picture


def test_graph_no_gradient_for_a_constant():
    d = backstep.derive(NET, wrt="W1,W2")
    tex = render(d, "latex")
    assert r"\node[bsconst] (n1)" in tex  # X: a constant, dashed
    assert r"\draw[bsedge] (n4) to[bend left=0] (n8);" in tex  # Y -> v3 carries no gradient back


def test_a_value_used_twice_gets_two_edges():
    g = build_graph(backstep.derive("x*x"))
    assert [(e.parallel, e.adjoint) for e in g.edges] == [(1, "grad_x_1"), (2, "grad_x_2")]


# --- language --------------------------------------------------------------------------------------


def test_catalogue_has_every_sentence_in_every_language():
    keys = set(MESSAGES["en"])
    for lang in LANGS:
        assert set(MESSAGES[lang]) == keys, lang
        for key in keys:
            fields = {f for _, f, _, _ in string.Formatter().parse(MESSAGES["en"][key]) if f}
            theirs = {f for _, f, _, _ in string.Formatter().parse(MESSAGES[lang][key]) if f}
            assert fields == theirs, (lang, key)


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_has_a_name_in_every_language(op):
    for lang in LANGS:
        assert Messages(lang).op(op) == OPS[op].title[lang], f"op {op!r} has no title in {lang!r} (Op.title)"


def test_chinese_everywhere(net):
    tex = render(net, "latex", lang="zh", standalone=True)
    for heading in ("函数", "计算图", "前向传播", "反向传播", "梯度", "验证"):
        assert rf"\section*{{{heading}}}" in tex
    assert r"\backsteprule{矩阵乘法：}" in tex
    assert r"\usepackage{xeCJK}" in tex
    for english in ("Backward pass", "matrix product", "verified", "every intermediate", "scalar"):
        assert english not in tex
    md = render(net, "md", lang="zh")
    assert "## 反向传播" in md and "✓ **已验证**（与 PyTorch 自动求导比对" in md
    out = render(net, "text", lang="zh")
    assert "反向传播   初始梯度：" in out and "所有中间量（retain_grad）：9/9 ✓" in out
    assert "Backward pass" not in out and "verified" not in out


def test_dates_in_each_language():
    assert format_date("2026-03-02", "en") == "2 March 2026"
    assert format_date("2026-03-02", "zh") == "2026年3月2日"
    assert format_date("Week 3", "zh") == "Week 3"


def test_messages_join_lists():
    assert Messages("en").join(["a", "b", "c"]) == "a, b and c"
    assert Messages("zh").join(["a", "b"]) == "a 和 b"


# --- determinism, escaping ----------------------------------------------------------------------------


def test_documents_are_deterministic():
    first = backstep.derive(NET, verify=True)
    second = backstep.derive(NET, verify=True)
    for fmt, options in (("md", {}), ("latex", {}), ("latex", {"standalone": True, "lang": "zh"})):
        assert render(first, fmt, **options) == render(second, fmt, **options)


def test_tex_escaping():
    assert tex_escape("x_hat & 50% #1 {a} ~ ^") == r"x\_hat \& 50\% \#1 \{a\} \textasciitilde{} \textasciicircum{}"
    assert tex_text("Let $\\sigma_1$ be 50% of x_1") == "Let $\\sigma_1$ be 50\\% of x\\_1"


# --- PDF ---------------------------------------------------------------------------------------------


def test_pdf_in_english(tmp_path):
    need_tex("en")
    out = tmp_path / "net.pdf"
    result = invoke("derive", NET, "--format", "pdf", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF")
    text = pdf_text(out)
    for phrase in ("Backpropagation of", "Computational graph", "Forward pass", "Backward pass", "Gradients"):
        assert phrase in text
    mm = grad_fn_names("MmBackward0", lambda x, w: x @ w, (3, 4), (4, 5))
    relu = grad_fn_names("ReluBackward0", lambda x: x.relu(), (3, 5))
    assert any(n in text for n in mm) and any(n in text for n in relu)
    assert "verified with PyTorch autograd (float64, 3 random points" in text
    assert "matrix product:" in text
    assert re.search(r"\(9\)", text)  # the last backward step, numbered

    # a page drawn as an image: a real PNG of an A4 page at 80 dpi
    subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", str(out), str(tmp_path / "page")], check=True)
    png = next(tmp_path.glob("page*.png"))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert abs(width - 661) <= 1 and abs(height - 935) <= 1  # A4 at 80 dpi
    assert len(data) > 20_000  # a page with text and a drawing on it, not a blank one
    # and ink on it: the same page in grey levels (PGM), a few percent of it dark
    gray = subprocess.run(["pdftoppm", "-gray", "-r", "40", "-f", "1", "-l", "1", str(out)], capture_output=True).stdout
    pixels = gray.split(b"\n", 3)[3]
    dark = sum(1 for value in pixels if value < 128) / len(pixels)
    assert 0.003 < dark < 0.3


def test_pdf_in_chinese(tmp_path):
    need_tex("zh")
    out = tmp_path / "net-zh.pdf"
    result = invoke("derive", NET, "--format", "pdf", "-o", str(out), "--lang", "zh", "--notation", "partial")
    assert result.exit_code == 0, result.output
    text = pdf_text(out)
    for phrase in ("反向传播推导", "计算图", "前向传播", "反向传播", "梯度", "验证", "矩阵乘法", "已验证"):
        assert phrase in text, phrase
    fonts = subprocess.run(["pdffonts", str(out)], capture_output=True, text=True).stdout
    assert re.search(r"CJK|Fandol|UMing", fonts), fonts  # the Chinese is set in a CJK font, embedded


def test_api_to_pdf(tmp_path, product):
    need_tex("en")
    product.to_pdf(tmp_path / "p.pdf", notation="delta")
    assert "δ" in pdf_text(tmp_path / "p.pdf")


def test_latex_errors_are_shown_clearly(tmp_path):
    need_tex("en")
    tex = "\\documentclass{article}\n\\begin{document}\nfine\n\\frobnicate{x}\n\\end{document}\n"
    with pytest.raises(PdfError) as caught:
        pdf_module.compile_pdf(tex, tmp_path / "bad.pdf")
    message = str(caught.value)
    assert caught.value.folder is not None and (caught.value.folder / "document.log").is_file()
    shutil.rmtree(caught.value.folder)  # kept for a person to read; a test cleans up after itself
    assert "Undefined control sequence" in message
    assert "line 4 of the document: \\frobnicate{x}" in message
    assert not (tmp_path / "bad.pdf").exists()


def test_describe_failure_reads_a_log():
    log = (
        "This is XeTeX\n(./document.tex\n./document.tex:4: Undefined control sequence.\n"
        "l.4 \\frobnicate\n                {x}\n"
    )
    message = describe_failure(log, "a\nb\nc\n\\frobnicate{x}\n")
    assert message.splitlines() == [
        "LaTeX could not compile the document:",
        "  ./document.tex:4: Undefined control sequence.",
        "  l.4 \\frobnicate",
        "  line 4 of the document: \\frobnicate{x}",
    ]


def test_missing_engine_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(pdf_module.shutil, "which", lambda name: None)
    result = invoke("derive", "x*y", "--format", "pdf", "-o", str(tmp_path / "x.pdf"))
    assert result.exit_code == 2
    assert "PDF output needs a LaTeX engine (latexmk and xelatex not found)" in result.stderr
    assert "apt-get install --no-install-recommends latexmk texlive-xetex" in result.stderr
    assert "--format latex" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "x.pdf").exists()


# --- the command line ---------------------------------------------------------------------------------


def test_cli_markdown_and_latex_to_files(tmp_path):
    md, tex = tmp_path / "d.md", tmp_path / "d.tex"
    assert invoke("derive", "relu(x@W1)@W2", "--format", "md", "-o", str(md), "--no-verify").exit_code == 0
    assert "```mermaid" in md.read_text()
    result = invoke("derive", "relu(x@W1)@W2", "--format", "latex", "--standalone", "--notation", "partial")
    assert result.exit_code == 0
    assert r"\begin{document}" in result.stdout and r"\frac{\partial L}{\partial W_{1}}" in result.stdout
    assert invoke("derive", "relu(x@W1)@W2", "--format", "latex", "-o", str(tex)).exit_code == 0
    assert r"\begin{align}" in tex.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "pdf"], "--format pdf writes a file: add -o FILE.pdf"),
        (["--format", "md", "--standalone"], "--standalone goes with --format latex"),
        (["--notation", "nabla"], "--notation nabla: choose one of bar, partial, delta"),
        (["--lang", "fr"], "--lang fr: choose one of en, zh"),
        (["--format", "docx"], "--format docx: choose one of"),
        (["--format", "md", "--template", "/no/such/folder"], "--template /no/such/folder: no such directory"),
    ],
)
def test_cli_bad_document_options(args, message):
    result = invoke("derive", "x*y", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


# --- teachers' templates ------------------------------------------------------------------------------


def test_template_dir_overrides_only_what_it_has(tmp_path, product):
    (tmp_path / "graph.md.j2").write_text(
        "{% macro mermaid(D, annotate=True) %}(a graph of {{ D.graph.nodes | length }} nodes){% endmacro %}"
    )
    md = render(product, "md", template_dir=tmp_path)
    assert "(a graph of 3 nodes)" in md
    assert "```mermaid" not in md
    assert "## Backward pass" in md  # the rest: the default templates


def test_template_dir_replaces_a_latex_template(tmp_path, product):
    (tmp_path / "fragment.tex.j2").write_text(
        r"\BLOCK{for s in D.backward}(\VAR{s.index}) $\VAR{s.lhs} = \VAR{s.result}$ \VAR{msg('col_rule')}"
        "\n\\BLOCK{endfor}"
    )
    result = invoke("derive", "x*y", "--format", "latex", "--template", str(tmp_path), "--no-verify")
    assert result.exit_code == 0
    assert result.stdout == "(1) $\\bar{y} = x$ rule\n(2) $\\bar{x} = y$ rule\n"


def test_a_broken_template_is_a_clear_error(tmp_path):
    (tmp_path / "derivation.md.j2").write_text("line one\n{% for x in %}\n")
    result = invoke("derive", "x*y", "--format", "md", "--template", str(tmp_path))
    assert result.exit_code == 2
    assert "template error" in result.stderr and "derivation.md.j2:2" in result.stderr


def test_a_template_using_an_unknown_name_is_a_clear_error(tmp_path):
    (tmp_path / "derivation.md.j2").write_text("{{ D.no_such_thing }}")
    result = invoke("derive", "x*y", "--format", "md", "--template", str(tmp_path))
    assert result.exit_code == 2
    assert "no_such_thing" in result.stderr


def test_templates_ship_with_the_package():
    names = {p.name for p in Templates().dirs[-1].glob("*.j2")}
    assert {"derivation.md.j2", "fragment.tex.j2", "document.tex.j2", "exercises.tex.j2", "solutions.tex.j2"} <= names
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"templates/*.j2", "templates/codegen/*.j2"' in pyproject


# --- notebooks ----------------------------------------------------------------------------------------


def test_notebook_reprs(net):
    assert net._repr_markdown_() == render(net, "md")
    latex = net._repr_latex_()
    assert latex.startswith("$$\n\\begin{aligned}") and latex.rstrip().endswith("$$")
    assert r"\tikz" not in latex and r"\begin{tabular}" not in latex  # MathJax shows all of it
    assert net.to_latex(standalone=True).startswith(r"\documentclass")
    assert net.to_markdown(lang="zh").startswith("# $L$ 的反向传播推导")


def test_template_comments_hold_no_braces():
    """A `\\#{…}` comment ends at its first `}`: a brace inside one would leak the rest into the document."""
    for path in Templates().dirs[-1].glob("*.tex.j2"):
        for comment in re.findall(r"\\#\{(.*?)\}", path.read_text(), re.S):
            assert "{" not in comment, (path.name, comment)


def test_a_graph_too_large_to_draw_is_said_so():
    d = backstep.derive("sin(" * 70 + "x" + ")" * 70)
    assert not build_graph(d).drawable
    tex, md = render(d, "latex"), render(d, "md")
    assert "The graph has 71 nodes: too many to draw legibly." in tex and r"\begin{tikzpicture}" not in tex
    assert "The graph has 71 nodes: too many to draw legibly." in md and "```mermaid" not in md


@pytest.mark.parametrize("notation", ["bar", "partial"])
def test_every_op_compiles_in_latex(tmp_path, notation):
    """Each op's example program (from the op table), derived and typeset in one document: every
    rule, graph and gradient that backstep can print is LaTeX that compiles, with no overfull line."""
    need_tex("en")
    parts, first = [], None
    for op in OPS.values():
        d = backstep.derive(op.example)
        first = first or d
        parts.append(f"\\clearpage\\section*{{{tex_escape(op.name)}}}\n" + render(d, "latex", notation=notation))
    document = render(first, "latex", standalone=True, notation=notation)
    document = document.replace("\\end{document}", "\n".join(parts) + "\n\\end{document}")
    code, log = compile_tex(tmp_path, "ops", document)
    assert code == 0, describe_failure(log, document, "ops.tex")
    overfull = overfull_lines(log)
    assert not overfull, overfull


def test_the_fragment_compiles_with_the_preamble_it_names(tmp_path, net):
    need_tex("en")
    fragment = render(net, "latex", notation="delta")
    named = [line[4:] for line in fragment.splitlines() if line.startswith("%   \\use")]
    assert named == [
        r"\usepackage{amsmath, amssymb, array, booktabs, graphicx, xcolor, tikz}",
        r"\usetikzlibrary{arrows.meta}",
    ]
    document = (
        "\\documentclass{article}\n" + "\n".join(named) + "\n\\begin{document}\n" + fragment + "\\end{document}\n"
    )
    pdf_module.compile_pdf(document, tmp_path / "pasted.pdf")
    assert "δ" in pdf_text(tmp_path / "pasted.pdf")
