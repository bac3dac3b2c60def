"""The derivation's data model: pure data (no printer, renderer or verifier imported), the facts
it records for its consumers, and the facade that ``backstep.derive`` returns."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import backstep
from backstep import model

FORMULAS = [
    "relu(x@W1)@W2",
    "x*x + sin(x)",
    "-sum(Y * log_softmax(S, axis=-1))",
    "x: (N, 3, 8, 6); K: (4, 3, 3, 2)\nsum(conv2d(x, K, stride=2))",
]


def test_the_model_imports_no_printer_renderer_or_verifier():
    tree = ast.parse(Path(model.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"ops", "shapes", "symbolic"}, imported


def test_derive_returns_the_facade_over_the_model():
    d = backstep.derive("x*y")
    assert isinstance(d, backstep.Derivation) and isinstance(d, model.Derivation)
    assert type(d) is not model.Derivation and backstep.Derivation.__mro__[1] is model.Derivation
    assert {"to_text", "to_json", "verify"} <= set(vars(backstep.Derivation))
    assert not {"to_text", "to_json", "verify"} & set(vars(model.Derivation))


@pytest.mark.parametrize("formula", FORMULAS)
def test_adjoint_of_names_every_adjoint_symbol(formula):
    d = backstep.derive(formula)
    assert d.adjoint_of[d.seed.name] == d.output
    for s in d.backward:
        assert d.adjoint_of[s.target] == s.of
    # the general rules' generic symbols: `_r5_gB` is the adjoint of `_r5_B`
    generic = {name: of for name, of in d.adjoint_of.items() if name.startswith("_r")}
    for name in d.symbols.table:
        m = re.fullmatch(r"(_r\d+_)g(\w+)", name)
        if m and m.group(1) + m.group(2) in d.symbols.table:
            assert generic.pop(name) == m.group(1) + m.group(2)
    assert not generic
    assert set(d.adjoint_of) <= set(d.symbols.table)


@pytest.mark.parametrize("formula", [*FORMULAS, "x*x", "x@x.T"])
def test_input_index_is_the_position_of_the_input_in_its_node(formula):
    d = backstep.derive(formula)
    nodes = {n.name: n for n in d.graph.nodes}
    for s in d.backward:
        if s.kind == "sum":
            assert s.input_index is None
        else:
            assert nodes[s.node].inputs[s.input_index].name == s.of
    if formula == "x*x":  # the sweep visits a node's inputs last to first
        assert [s.input_index for s in d.backward if s.kind == "rule"] == [1, 0]


def test_adjoint_step_is_the_step_that_defines_an_adjoint_last():
    d = backstep.derive("x*x + sin(x)")
    step = d.adjoint_step("x")
    assert step.kind == "sum" and step.target == "grad_x" and step is d.backward[-1]
    assert d.adjoint_step(d.output) is None and d.adjoint_step("no_such_name") is None
