"""Final gradients in named form (issue #13): in terms of the program's named intermediates and
their adjoints, as d2l writes them, in every format; the expanded form on request; both checked
against torch autograd."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import backstep
from backstep.cli import app
from backstep.printing import bar_text
from backstep.render import render
from backstep.render.common import Notation

ROOT = Path(__file__).resolve().parent.parent

# d2l §5.3: z = W⁽¹⁾x, h = φ(z), o = W⁽²⁾h, L = l(o, y), s = λ/2 (‖W⁽¹⁾‖² + ‖W⁽²⁾‖²), J = L + s
# (rows of a batch here, so the products are the other way round). Sizes 3, 4, 5, 2 are distinct.
D2L_MLP = """X: (n, d); W1: (d, m); W2: (m, q); t: (n,)
z = X @ W1
h = relu(z)
o = h @ W2
L = cross_entropy(o, t)
s = lam / 2 * (sum(W1 ** 2) + sum(W2 ** 2))
J = L + s
"""


def named_text(d, name: str) -> str:
    n = Notation(d)
    return n.text(d.shown_gradient(name))


def test_d2l_mlp_with_weight_decay_gives_d2ls_gradient_forms():
    d = backstep.derive(D2L_MLP, shapes={"X": (3, 4), "W1": (4, 5), "W2": (5, 2), "t": (3,)}, wrt="W1,W2")
    n = Notation(d)
    # d2l: ∂J/∂W⁽²⁾ = ∂J/∂o hᵀ + λW⁽²⁾, ∂J/∂W⁽¹⁾ = ∂J/∂z xᵀ + λW⁽¹⁾ (here hᵀ ō and Xᵀ z̄)
    assert named_text(d, "W2") == "W2 λ + hᵀ " + n.adjoint_text("o")
    assert named_text(d, "W1") == "W1 λ + Xᵀ " + n.adjoint_text("z")
    # and the adjoints they refer to, in the order of the backward pass: ∂J/∂o, ∂J/∂h, ∂J/∂z
    where = {a.of: n.text(a.expr) for a in d.named_adjoints}
    assert list(where) == ["o", "h", "z"]
    assert where["o"] == "(softmax(o, axis=1) - onehot(t)) / 3"
    assert where["h"] == n.adjoint_text("o") + " W2ᵀ"
    assert where["z"] == n.adjoint_text("h") + " ⊙ 1[z > 0]"
    # the expanded form is kept beside it, written in the inputs
    assert {s.name for s in d.gradients["W2"].expr.free_symbols} == {"X", "W1", "W2", "lam", "t"}
    d.verify()
    assert d.verification.ok


def test_every_final_gradient_of_lenet_is_short_in_the_terminal():
    d = backstep.derive((ROOT / "examples" / "lenet.bs").read_text(encoding="utf-8"), verify=False)
    n = Notation(d)
    text = render(d, "text", width=400)
    lines = [f"{n.partial(name)} = {named_text(d, name)}" for name in d.wrt]
    lines += [f"{n.text(n.sym(a.symbol))} = {n.text(a.expr)}" for a in d.named_adjoints]
    for line in lines:
        assert line in text
        assert len(line) <= 120, line
    assert len(d.wrt) == 7 and all(d.gradients[name].named is not None for name in d.wrt)
    # the expanded forms are the walls the named ones replace
    assert all(len(n.text(d.gradients[name].expr)) > 120 for name in ("x", "K1", "W1"))


def test_named_forms_are_checked_against_autograd():
    d = backstep.derive(D2L_MLP, wrt="W1,W2", verify=True)
    assert d.verification.ok
    d.gradients["W2"].named = 2 * d.gradients["W2"].named  # a wrong named form fails its gradient's check
    assert not d.verify().ok
    assert d.verification.first_failure.name == "W2"
    d = backstep.derive(D2L_MLP, wrt="W1,W2", verify=False)
    d.named_adjoints[1].expr = 2 * d.named_adjoints[1].expr  # ... and a wrong named adjoint its adjoint's
    assert not d.verify().ok
    assert d.verification.first_failure.name == "h"


def test_a_repeated_forward_value_is_written_with_its_name():
    d = backstep.derive("xc = x - m; L = sum(xc * sin(x - m))", verify=True)
    assert d.verification.ok
    assert named_text(d, "x") == f"{Notation(d).adjoint_text('xc')} + xc cos(xc)"


def test_a_small_formula_is_shown_in_the_inputs():
    d = backstep.derive("sin(x**2)*exp(y)", verify=False)
    assert all(g.named is None for g in d.gradients.values())
    assert d.named_adjoints == []
    assert named_text(d, "x") == "2 x cos(x²) exp(y)"


def test_expand_shows_the_gradients_in_the_inputs():
    d = backstep.derive(D2L_MLP, wrt="W1,W2", verify=False, expand=True)
    n = Notation(d)
    text = render(d, "text", width=300)
    assert f"∂J/∂W2 = {n.text(d.gradients['W2'].expr)}" in text
    assert "hᵀ" not in text.split("Gradients")[-1]
    md = render(d, "md")
    assert r"h^{\top} \bar{o}" not in md.split("## Gradients")[-1]
    named = render(backstep.derive(D2L_MLP, wrt="W1,W2", verify=False), "md").split("## Gradients")[-1]
    assert r"h^{\top} \bar{o}" in named and "\nwith\n" in named


def test_cli_expand_and_json_keep_both_forms():
    runner = CliRunner()
    args = ["derive", D2L_MLP, "--wrt", "W1,W2", "--no-verify"]
    named = runner.invoke(app, args)
    expanded = runner.invoke(app, [*args, "--expand"])
    assert named.exit_code == 0 and expanded.exit_code == 0, (named.output, expanded.output)
    assert "∂J/∂W2 = W2 λ + hᵀ" in named.output and "∂J/∂W2 = W2 λ + relu(X W1)ᵀ" in expanded.output
    data = json.loads(runner.invoke(app, [*args, "--format", "json"]).stdout)
    w2 = data["gradients"]["W2"]
    assert w2["named"]["expr"] == "W2 * lam + h.T @ grad_o"
    backstep.parse(w2["expr"], {"X": ("n", "d"), "W1": ("d", "m"), "W2": ("m", "q"), "t": ("n",)})  # in the inputs
    assert [a["of"] for a in data["named_adjoints"]] == ["o", "h", "z"]


# --- rules (issue #13, items 1 and 5) ------------------------------------------------------------------


def program_names(d) -> set[str]:
    return {v.name for v in d.variables} | {f.name for f in d.forward} | {d.output} | set(d.dims)


def rule_letters(d, step) -> set[str]:
    r = step.rule
    symbols = set().union(*(e.free_symbols for e in (r.forward_lhs, r.forward_rhs, r.adjoint_lhs, r.adjoint_rhs)))
    return {d.symbols.table[s.name].text for s in symbols if s.name.startswith("_")}


def test_no_rule_is_written_in_the_programs_own_names():
    for source in ("sin(x**2)*exp(y)", (ROOT / "examples" / "lenet.bs").read_text(encoding="utf-8")):
        d = backstep.derive(source, verify=False)
        names = program_names(d)
        for step in d.backward:
            if step.rule is not None:
                assert not rule_letters(d, step) & names, (step.index, rule_letters(d, step))
    d = backstep.derive("sin(x**2)*exp(y)", verify=False)
    text = render(d, "text")
    assert "y = exp(x)" not in text and f"w = exp(u) ⇒ {bar_text('u')} = {bar_text('w')} w" in text
    # the op catalog keeps the op's own letters
    assert [s.general for s in d.backward if s.op == d.forward[2].op][0].forward_lhs is not None


def test_a_broadcast_rule_has_the_sum_its_step_takes():
    d = backstep.derive("X: (n, d); b: (d,)\nL = sum(tanh(X + b))", verify=False)
    step = next(s for s in d.backward if s.of == "b")
    rule = render(d, "text", width=300)
    assert "c = a + b" not in rule  # b is the program's: the rule uses other letters
    n = Notation(d)
    assert n.text(step.rule.adjoint_rhs).startswith("sum(")
    assert n.text(step.result).startswith("sum(")


def test_steps_show_no_arithmetic_noise():
    d = backstep.derive("x**2 + 3", verify=False)
    text = render(d, "text")
    assert "2 - 1" not in text
    d = backstep.derive((ROOT / "examples" / "lenet.bs").read_text(encoding="utf-8"), verify=False)
    assert "= 1 (softmax" not in render(d, "text", width=300)


# --- teaching defaults (issue #13, item 9) ------------------------------------------------------------


def test_targets_of_loss_functions_are_constants_unless_asked_for():
    d = backstep.derive("a: (n, d); b: (n, d)\nmse(a, b)", verify=False)
    assert d.wrt == ["a"]
    d = backstep.derive("z: (n, c); p: (n, c)\ncross_entropy(z, p)", verify=False)
    assert d.wrt == ["z"]
    d = backstep.derive("a: (n, d); b: (n, d)\nmse(a, b)", wrt="a,b", verify=True)
    assert d.wrt == ["a", "b"] and d.verification.ok
    # a variable used as a target and elsewhere keeps its gradient
    d = backstep.derive("a: (n, d); b: (n, d)\nmse(a, b) + sum(b)", verify=False)
    assert d.wrt == ["a", "b"]


def test_class_labels_are_shown_as_the_set_they_are_drawn_from():
    d = backstep.derive((ROOT / "examples" / "lenet.bs").read_text(encoding="utf-8"), verify=False)
    assert "t ∈ {0,…,9}^N" in render(d, "text", width=300)


def test_sympy_latex_prints_backsteps_classes_as_backstep_does():
    import sympy

    d = backstep.derive("relu(x@W1)@W2", verify=False)
    tex = sympy.latex(d.gradients["W1"].expr)
    assert "operatorname{MatrixProduct}" not in tex and "TransposeOp" not in tex
    assert tex.startswith(r"x^{\top}") and r"\odot" in tex


def test_sympy_latex_prints_the_elementwise_functions_as_backstep_does_too():
    """Relu, Step (the 1[·] of relu's rule), Maximum, Where, Softplus, Gelu are plain SymPy Functions
    (not TensorOps): sympy.latex() prints them through backstep's printer as well."""
    import sympy

    source = "sum(maximum(relu(x * w), 0.5) + where(x > 0, softplus(x * w), gelu(x * w)))"
    d = backstep.derive(source, verify=False)
    for gradient in d.gradients.values():
        tex = sympy.latex(gradient.expr)
        for raw in ("operatorname{Step}", "operatorname{Relu}", "operatorname{Maximum}", "operatorname{Where}"):
            assert raw not in tex, tex
    assert r"\mathbf{1}\left[" in sympy.latex(d.gradients["x"].expr)
