"""--compact: pass-through backward steps dropped, later steps referring to the adjoint they copied,
every step kept still checked against torch autograd (issue #13)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import backstep
from backstep.cli import app

# Two adds without broadcasting pass their adjoint through unchanged (v̄4 = v̄5, v̄3 = v̄5, v̄1 = v̄2);
# the bias add broadcasts b (b̄ = Σ₀ v̄2, kept). Sizes 2, 3, 5 are distinct, so a transpose cannot hide.
PROGRAM = "sum(tanh(X @ W + b) + X @ V)"
SHAPES = {"X": ("n", "d"), "W": ("d", "k"), "V": ("d", "k"), "b": ("k",)}


def results(d) -> dict[str, str]:
    return {s.target: str(s.result) for s in d.backward}


def names_in(expr) -> set[str]:
    return {s.name for s in expr.free_symbols}


def test_compact_drops_each_copy_and_refers_to_the_adjoint_it_copied():
    full = backstep.derive(PROGRAM, shapes=SHAPES, verify=False)
    short = backstep.derive(PROGRAM, shapes=SHAPES, verify=False, compact=True)
    assert {"grad_v4", "grad_v3", "grad_v1"} <= set(results(full))
    assert results(full)["grad_v4"] == "grad_v5"  # the copy compact drops
    kept = results(short)
    assert not {"grad_v4", "grad_v3", "grad_v1"} & set(kept)
    steps = {s.target: s for s in short.backward}
    assert names_in(steps["grad_V"].result) - {"n", "d", "k"} == {"X", "grad_v5"}
    assert names_in(steps["grad_W"].result) - {"n", "d", "k"} == {"X", "grad_v2"}
    assert "grad_v1" not in names_in(steps["grad_W"].applied)
    assert [s.index for s in short.backward] == list(range(1, len(short.backward) + 1))
    assert len(short.backward) == len(full.backward) - 3
    assert short.compact and not full.compact
    used = set().union(
        *(names_in(s.result) for s in short.backward), *(names_in(g.shown) for g in short.gradients.values())
    )
    assert not used & {"grad_v4", "grad_v3", "grad_v1"}


def test_every_step_kept_is_verified_against_autograd():
    d = backstep.derive(PROGRAM, shapes=SHAPES, compact=True)
    v = d.verification
    assert v.ok, v.first_failure
    # each kept step that is the whole adjoint of its name is one autograd comparison
    assert {c.name for c in v.adjoints} == {s.of for s in d.backward if s.partial is None}
    assert {c.name for c in v.gradients} == {"X", "W", "b", "V"}


def test_a_leafs_own_step_is_kept_and_a_copied_contribution_to_it_goes():
    d = backstep.derive("sum(tanh(x*w + b) + x)", compact=True)
    assert d.verification.ok
    kept = results(d)
    assert kept["grad_b"] == "grad_v2"  # b̄ = v̄2: b's gradient, shown though it is a copy
    assert "grad_x_1" not in kept  # x̄⁽¹⁾ = v̄4 goes; the sum takes v̄4 itself
    assert "grad_v4" in names_in({s.target: s for s in d.backward}["grad_x"].result)


def test_without_compact_nothing_changes():
    d = backstep.derive(PROGRAM, shapes=SHAPES, verify=False)
    again = backstep.derive(PROGRAM, shapes=SHAPES, verify=False, compact=False)
    assert results(d) == results(again) and not again.compact


def test_cli_compact_in_the_terminal_and_json():
    runner = CliRunner()
    args = ["derive", PROGRAM, "-s", "X=n,d", "-s", "W=d,k", "-s", "V=d,k", "-s", "b=k"]
    full = runner.invoke(app, args)
    short = runner.invoke(app, [*args, "--compact"])
    assert full.exit_code == 0 and short.exit_code == 0, (full.output, short.output)
    assert "v̄4 = v̄5" in full.output and "v̄4 = v̄5" not in short.output
    assert "V̄ = Xᵀ v̄5" in short.output and "✓ verified" in short.output
    data = json.loads(runner.invoke(app, [*args, "--compact", "--format", "json"]).stdout)
    assert "grad_v4" not in {s["target"] for s in data["backward"]}


# --- class labels as the set they are drawn from, in every document (issue #13) ------------------------

CLASSIFIER = (
    "X: (n, d); W: (d, c); t: (n,); ix: (n, 2); Em: (v, d)\nE = sum(embedding(ix, Em))\nL = cross_entropy(X @ W, t) + E"
)


def test_class_labels_are_a_set_in_the_markdown_and_latex_headers():
    from backstep.render import render

    d = backstep.derive(CLASSIFIER, verify=False)
    domains = {v.name: v.domain for v in d.variables}
    assert domains["t"] == "class_index:c" and domains["ix"] == "class_index:v"
    md = render(d, "md")
    assert r"| $t$ | $\{0,\dots,c-1\}^{n}$ |" in md
    assert r"| $X$ | $n \times d$ |" in md  # a real array keeps its shape
    latex = render(d, "latex")
    assert r"t & \{0,\dots,c-1\}^{n} &" in latex
    assert r"\mathit{ix} & \{0,\dots,v-1\}^{n \times 2} &" in latex
    assert r"X & \mathbb{R}^{n \times d} &" in latex


# --- a number standing for an array prints as the array of ones it is (issue #13) ---------------------


def test_the_seed_of_a_sum_over_an_array_is_a_matrix_of_ones():
    from backstep.render import render

    d = backstep.derive("sum(X * X)", shapes={"X": ("n", "d")})
    assert d.verification.ok
    assert d.backward[0].result == 1  # the symbolic value stays the number
    text = render(d, "text", width=200)
    assert "v̄1 = 𝟏 " in text and "v̄1 = 1 " not in text
    assert r"\bar{v}_{1} = \mathbf{1}_{n \times d}$" in render(d, "md")
    assert r"\bar{v}_{1} &= \mathbf{1}_{n \times d}" in render(d, "latex")
    biased = backstep.derive("sum(X * X) + sum(b)", shapes={"X": ("n", "d"), "b": (3,)}, verify=False)
    assert "∂y/∂b = 𝟏" in render(biased, "text", width=200)
    assert r"\mathbf{1}_{3}" in render(biased, "md").split("## Gradients")[-1]
    assert "v̄3 = 1 " in render(biased, "text", width=200)  # a scalar's 1 is the number


def test_the_notes_say_which_pass_through_steps_are_not_shown():
    d = backstep.derive("sum(tanh(x*w + b) + x)", compact=True, verify=False)
    (note,) = [n for n in d.notes if "pass an adjoint through" in n]
    assert note.endswith("x̄⁽¹⁾ = v̄4, v̄3 = v̄4, v̄1 = v̄2")
    full = backstep.derive("sum(tanh(x*w + b) + x)", verify=False)
    assert not [n for n in full.notes if "--compact" in n]
