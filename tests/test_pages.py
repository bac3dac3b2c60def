"""The pages a class is handed: names typeset as a student writes them, fractions that read right,
graphs legible at any size, steps that stay with their rules, a notation box that defines exactly
the symbols used, and Markdown that KaTeX's strict parser and Mermaid's parser accept."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import backstep
from backstep.printing import bar_latex, bar_text, latex_name, text_name
from backstep.printing.latex import _braced
from backstep.render import render
from backstep.render.documents import view
from backstep.render.graph import MIN_SCALE, build_graph, page_layout

ROOT = Path(__file__).resolve().parent.parent
LENET = (ROOT / "examples" / "lenet.bs").read_text()
BATCH_NORM = """x: (N, D); gamma: (D,); beta: (D,)
mu = mean(x, axis=0)
xc = x - mu
v = mean(xc**2, axis=0)
xhat = xc / sqrt(v + 1e-5)
y = gamma*xhat + beta"""
TWO_LAYER = (ROOT / "examples" / "two_layer_net.bs").read_text()


@pytest.fixture(scope="module")
def lenet() -> backstep.Derivation:
    return backstep.derive(LENET, verify=False)


@pytest.fixture(scope="module")
def batch_norm() -> backstep.Derivation:
    return backstep.derive(BATCH_NORM, verify=False)


@pytest.mark.parametrize(
    "name, latex, bar, text",
    [
        ("W1", "W_{1}", r"\bar{W}_{1}", "W1"),
        ("gamma", r"\gamma", r"\bar{\gamma}", "γ"),
        ("mu", r"\mu", r"\bar{\mu}", "μ"),
        ("sigma", r"\sigma", r"\bar{\sigma}", "σ"),
        ("lam", r"\lambda", r"\bar{\lambda}", "λ"),  # `lambda` is a Python keyword
        ("y_hat", r"\hat{y}", r"\bar{\hat{y}}", "ŷ"),
        ("xhat", r"\hat{x}", r"\bar{\hat{x}}", "x̂"),
        ("x_hat", r"\hat{x}", r"\bar{\hat{x}}", "x̂"),
        ("D_in", r"D_{\mathrm{in}}", r"\bar{D}_{\mathrm{in}}", "D_in"),
        ("ndiff2", r"\mathit{ndiff2}", r"\overline{\mathit{ndiff2}}", "ndiff2"),
        ("12", "12", None, "12"),  # a size: upright, never \mathit{12}
    ],
)
def test_names_are_typeset_as_a_student_writes_them(name, latex, bar, text):
    assert latex_name(name) == latex
    assert text_name(name) == text
    if bar is not None:
        assert bar_latex(name) == bar


def test_a_bar_covers_the_whole_word_not_its_first_letter():
    assert bar_text("ndiff2") == "".join(c + "\u0305" for c in "ndiff2")
    assert bar_text("W1") == "W\u03041" and bar_text("gamma") == "γ\u0304"


def test_the_terminal_shows_greek_and_hats(batch_norm):
    text = render(batch_norm, "text", width=160)
    bar = "\u0304"  # a combining macron, as every adjoint in the terminal has had it
    assert f"γ{bar} = sum(v{bar}4 ⊙ x̂, axis=0)" in text
    assert f"μ{bar} = " in text and f"β{bar} = sum(y{bar}, axis=0)" in text
    assert f"g{bar}amma" not in text and f"x{bar}hat" not in text and f"m{bar}u" not in text


def test_sizes_are_upright_digits(lenet):
    tex = render(lenet, "latex")
    assert r"\mathbb{R}^{N \times 3 \times 12 \times 12}" in tex
    assert r"\mathit{12}" not in tex and r"\mathit{96}" not in tex


def test_a_fraction_before_a_transpose_is_parenthesised(lenet):
    tex = render(lenet, "latex", notation="partial")
    assert r"\left(\frac{\partial \mathit{loss}}{\partial z}\right)^{\top}" in tex
    assert not re.search(r"\\frac\{\\partial [^{}]*\}\{\\partial [^{}]*(\{[^{}]*\})?\}\^\{\\top\}", tex)


def fractions(tex: str):
    """(numerator, denominator) of every \\frac in `tex`."""
    for m in re.finditer(r"\\frac\{", tex):
        num, after = _braced(tex, m.end() - 1)
        den, _ = _braced(tex, after)
        if num is not None and den is not None:
            yield num, den


@pytest.mark.parametrize("notation", ["bar", "partial"])
def test_no_fraction_inside_a_fraction(batch_norm, notation):
    tex = render(batch_norm, "latex", notation=notation)
    found = list(fractions(tex))
    assert found
    nested = [f for f in found if r"\frac" in f[0] or r"\frac" in f[1]]
    # in the gradient of the seed's adjoint over 2 v3, ∂L/∂v3 goes inline with a slash
    assert not nested, nested[:3]
    if notation == "partial":
        assert r"\frac{\partial L/\partial v_{3}}{2 v_{3}}" in tex


def test_a_long_chain_is_drawn_down_the_page_with_legible_labels(lenet):
    D = view(lenet)
    assert D.graph.layout == "down" and D.graph.direction == "TB"
    tex = render(lenet, "latex")
    assert r"\scalebox" not in tex.split(r"\begin{tikzpicture}")[0].rsplit(r"\begin{center}", 1)[-1]


@pytest.mark.parametrize("program", [TWO_LAYER, "x**2 + 3", LENET, BATCH_NORM])
def test_every_drawn_graph_keeps_its_labels_at_7_pt_or_more(program):
    d = backstep.derive(program, verify=False)
    D = view(d)
    graph = build_graph(d)
    layout, scale = page_layout(graph, float(D.graph.xunit))
    assert layout in ("across", "down", "landscape")
    assert scale >= MIN_SCALE
    assert 8 * MIN_SCALE >= 7  # \scriptsize is 8 pt in the 11 pt documents


def test_the_two_layer_net_stays_across():
    assert view(backstep.derive(TWO_LAYER, verify=False)).graph.layout == "across"


def test_mermaid_labels_are_markdown_strings_without_html(lenet):
    md = render(lenet, "md")
    mermaid = md.split("```mermaid\n", 1)[1].split("\n```", 1)[0]
    assert mermaid.startswith("flowchart TB")
    assert "<br" not in mermaid and "<b>" not in mermaid and "<small>" not in mermaid
    assert '["`**loss**\ncross_entropy\nscalar`"]' in mermaid


def test_each_step_stays_with_its_rule_and_the_verification_with_its_table():
    d = backstep.derive(TWO_LAYER, verify=True)
    tex = render(d, "latex", standalone=True)
    align = tex.split(r"\begin{align}", 1)[1].split(r"\end{align}", 1)[0]
    steps = [line for line in align.splitlines() if r"\tag{" in line]
    # no page break before the rule: the rule is on the step's own row, or the row ends with \\*
    assert steps and all(line.rstrip().endswith(r"\\*") or r"\backsteprule{" in line for line in steps)
    assert all(r"\backstepshape{" in block for block in align.split(r"\tag{")[:-1])  # a shape beside each step
    rows = len(d.verification.gradients) + 3
    assert rf"\backstepneedlines{{{8 + rows}}}" + "\n\\section*{Verification}" in tex


def test_the_notation_box_defines_exactly_the_symbols_used(lenet):
    keys = [row.key for row in view(lenet).glossary]
    for key in ("adjoint", "correlate", "full", "rot180", "route", "unflattened", "softmax_k", "ce_mean"):
        assert key in keys
    assert "logistic" not in keys and "mean_axis" not in keys
    small = [row.key for row in view(backstep.derive("x**2 + 3", verify=False)).glossary]
    assert small == ["adjoint"]
    tex = render(lenet, "latex")
    assert r"\textbf{Notation}" in tex and r"x \star K" in tex
    cross_entropy = next(row for row in view(lenet).glossary if row.key == "ce_mean")
    assert "1/N" in cross_entropy.meaning and "mean" in cross_entropy.meaning


def test_the_notation_box_speaks_the_documents_notation_and_language(batch_norm):
    D = view(batch_norm, notation="partial", lang="zh")
    assert D.glossary[0].symbol == r"\frac{\partial L}{\partial x}"
    assert "梯度" in D.glossary[0].meaning
    contribution = next(row for row in D.glossary if row.key == "contribution")
    assert r"\bar" not in contribution.symbol + contribution.meaning


JS = ROOT / "tests" / "js"
CLASSIFIER_BY_HAND = (ROOT / "docs" / "gallery" / "programs" / "classifier_by_hand.bs").read_text(encoding="utf-8")


def test_markdown_passes_katex_strict_and_mermaid(tmp_path, lenet, batch_norm):
    """The Markdown as GitHub and notebooks render it: KaTeX (strict) and Mermaid's own parser, run
    with node on packages that scripts/test.sh installs into tests/js/node_modules."""
    if shutil.which("node") is None or not (JS / "node_modules" / "mermaid").is_dir():
        pytest.skip("node and tests/js/node_modules (npm ci --prefix tests/js) are needed")
    files = []
    for name, d, options in [
        ("lenet", lenet, {}),
        ("lenet-zh", lenet, {"lang": "zh", "notation": "partial"}),
        ("bn-delta", batch_norm, {"notation": "delta"}),
        ("at", backstep.derive("x**2 + 3", at={"x": 2.0}), {}),
        ("layers", backstep.derive(CLASSIFIER_BY_HAND, wrt="W1,b1,W2,b2", compact=True), {"lang": "zh"}),
    ]:
        path = tmp_path / f"{name}.md"
        path.write_text(render(d, "md", **options))
        files.append(str(path))
    out = subprocess.run(["node", str(JS / "check.mjs"), *files], capture_output=True, text=True, cwd=JS)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 problems" in out.stdout and "Mermaid graphs" in out.stdout


def test_the_markdown_check_can_fail(tmp_path):
    if shutil.which("node") is None or not (JS / "node_modules" / "mermaid").is_dir():
        pytest.skip("node and tests/js/node_modules (npm ci --prefix tests/js) are needed")
    bad = tmp_path / "bad.md"
    mermaid = '```mermaid\nflowchart LR\n  a["x"] -->|"y| b\n```\n'
    bad.write_text("$\\operatorname{MatrixProduct$ and $\\foo$\n\n" + mermaid)
    out = subprocess.run(["node", str(JS / "check.mjs"), str(bad)], capture_output=True, text=True, cwd=JS)
    assert out.returncode == 1 and "3 problems" in out.stdout


LSTM = (ROOT / "docs" / "gallery" / "programs" / "lstm_cell.bs").read_text()


def test_a_wide_graph_gets_a_page_turned_sideways(tmp_path):
    from tex_tools import need_tex, pdf_text

    need_tex()
    d = backstep.derive(LSTM, verify=False)
    assert view(d).graph.layout == "landscape"
    pdf = tmp_path / "lstm.pdf"
    d.to_pdf(pdf)
    text = pdf_text(pdf)
    assert "The graph is drawn on the next page, turned sideways." in text
    info = subprocess.run(["pdfinfo", "-f", "1", "-l", "3", str(pdf)], capture_output=True, text=True).stdout
    rotations = re.findall(r"Page +\d+ rot: +(\d+)", info)
    assert rotations[0] == "0" and "90" in rotations[1:], info


def test_at_puts_values_and_gradients_on_the_edges_and_says_the_point_was_verified():
    d = backstep.derive((ROOT / "examples" / "square_plus_three.bs").read_text(), at={"x": 2.0}, verify=True)
    tex = render(d, "latex")
    assert r"node[bsval, auto=left] {$2$} node[bsgrad, auto=right] {$\bar{x} = 4$}" in tex
    assert r"node[bsval, auto=left] {$4$} node[bsgrad, auto=right] {$\bar{y} = 1$}" in tex
    assert r"$z = 7$" in tex  # the output's value in its node
    md = render(d, "md")
    assert '-->|"`2\nx\u0304 = 4`"|' in md and '["`**z** = 7\nadd\nscalar`"]' in md
    # verify.py draws its first point at the values of --at
    assert "verified** with PyTorch autograd (float64, at the values above and 2 random points)" in md
    assert "at the values above and 2 random points" in tex
    without = render(backstep.derive("x**2 + 3", verify=True), "md")
    assert "3 random points" in without and "node[bsval" not in render(backstep.derive("x**2 + 3"), "latex")


def test_arrays_are_left_to_the_tables():
    d = backstep.derive("sum(v * v)", shapes={"v": (3,)}, at={"v": [1.0, 2.0, 3.0]})
    D = view(d)
    assert not D.graph.numbers and D.graph.arrays_left_off and D.graph.output_value == "14"
    assert "Arrays are not written on the edges" in render(d, "latex")
    assert "Arrays are not written on the edges" in render(d, "md")


def test_a_power_of_ten_is_written_as_one():
    """eps = 1e-5 is 10⁻⁵ in the documents, as a textbook writes it; 2.5e-7 keeps its mantissa."""
    from backstep.printing import Printer

    d = backstep.derive("x: (N, D)\nsum(x / sqrt(mean(x**2, axis=1, keepdims=True) + 1e-5) + 2.5e-7 * x)", verify=False)
    tex = [Printer("latex", d.symbols)(f.expr) for f in d.forward]
    assert "v_{2} + 10^{-5}" in tex and r"2.5 \cdot 10^{-7} x" in tex
    assert not any(r"1 \cdot 10" in t for t in tex)


def test_compact_boxes_each_layer_written_by_hand_on_the_graph():
    d = backstep.derive(CLASSIFIER_BY_HAND, wrt="W1,b1,W2,b2", compact=True)
    tex, md = render(d, "latex", standalone=True), render(d, "md")
    # a chain of 14 levels, drawn down the page in two columns: cross-entropy's box is cut in two, titled once
    assert tex.count(r"\draw[bslayer]") == 4 and tex.count("{cross-entropy}") == 1 and tex.count("{affine map}") == 2
    assert 'subgraph layer1 ["cross-entropy"]' in md and "style layer1 stroke-dasharray" in md
    assert "A dashed box is a layer written by hand" in tex and "A dashed box" in md
    plain = backstep.derive(CLASSIFIER_BY_HAND, wrt="W1,b1,W2,b2", verify=False)
    assert "bslayer]" not in render(plain, "latex", standalone=True) and "subgraph" not in render(plain, "md")


def test_a_chain_too_long_for_the_page_is_drawn_in_columns():
    """The classifier written by hand is a chain of 14 levels: too long for one column at 7 pt, drawn
    in two side by side (it was left out as "too many to draw"); the edge from one column to the
    next is routed up the gap between them, and every label stays at 7 pt or more."""
    from backstep.render.graph import MIN_SCALE, build_graph, page_layout

    d = backstep.derive(CLASSIFIER_BY_HAND, wrt="W1,b1,W2,b2", verify=False)
    graph = build_graph(d)
    layout, scale = page_layout(graph, 2.89)
    assert layout == "down" and graph.wrap and scale >= MIN_SCALE
    assert {graph.column_of(n) for n in graph.nodes} == {0, 1}
    routed = [e for e in graph.edges if graph.route(e)]
    assert len(routed) == 1 and graph.column_of(routed[0].source) == 0 and graph.column_of(routed[0].target) == 1
    tex = render(d, "latex", standalone=True)
    assert "too many to draw" not in tex and tex.count(r"\draw[bsedge]") == len(graph.edges)
    ninja = backstep.derive((ROOT / "examples" / "backprop_ninja.bs").read_text(encoding="utf-8"), verify=False)
    assert "it does not fit a page, even in columns" in render(ninja, "latex", standalone=True)
