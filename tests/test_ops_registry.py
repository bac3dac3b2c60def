"""The op table's cross-checks: each one fires, with a sentence naming the op, on an entry made
wrong on purpose (registered into a throwaway table, so that OPS stays as it is), and every
registered op passes all of them."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from backstep import parse
from backstep import symbolic as sb
from backstep.derive import infer_domains
from backstep.numeric import in_domain
from backstep.ops import DOMAINS, OPS, PARAM_KINDS, Domain, OpDeclarationError, Param, check, register
from backstep.ops.spec import NONZERO


def refused(op, sentence: str, table: dict | None = None) -> None:
    """Registering `op` fails with an error that names it and says `sentence`."""
    before = dict(OPS)
    with pytest.raises(OpDeclarationError) as info:
        register(op, {} if table is None else table)
    message = str(info.value)
    assert f"{op.name!r}" in message, message
    assert re.search(sentence, message), message
    assert OPS == before


def wrong(name: str, **changes):
    """A copy of a registered op under a new name, with `changes`."""
    return replace(OPS[name], name=f"wrong_{name}", **changes)


def one_rule(c):
    return c.g


# --- each cross-check fires ----------------------------------------------------------------------


def test_an_op_declared_twice():
    refused(OPS["add"], "declared twice", table={"add": OPS["add"]})


def test_arity_against_backward_rules():
    refused(wrong("mul", backward=(one_rule,)), "2 inputs but 1 backward rule")


def test_arity_against_arg_names():
    refused(wrong("mul", arg_names=("a",)), r"2 inputs but 1 arg_names \('a',\)")


def test_arity_against_input_ranks():
    refused(wrong("conv2d", input_ranks=(4,)), "input_ranks must give one rank per input")


def test_targets_are_positions_of_the_inputs():
    refused(wrong("mse", targets=(2,)), r"targets \(2,\) must be positions of its 2 inputs")


def test_a_hand_written_form_names_what_it_is_made_of():
    from backstep.ops.spec import HandWritten

    refused(wrong("addmm", hand_written=HandWritten(frozenset())), "hand_written needs the ops")


def test_param_names_against_the_sympy_class():
    params = (Param("stride", "pair", 1), Param("pad", "pair", 0))
    refused(wrong("conv2d", parameters=params), r"parameters \('stride', 'pad'\) differ from its SymPy class Conv2d's")


def test_arity_against_the_sympy_class():
    op = wrong("sum", arity=2, backward=(one_rule, one_rule), arg_names=("x", "z"))
    refused(op, "2 inputs but its SymPy class SumOp takes 1 operands")


def test_arity_against_a_sympy_function():
    refused(wrong("maximum", arity=1, backward=(one_rule,), arg_names=("a",)), r"SymPy class Maximum takes \{2\}")


def test_parameters_of_a_sympy_function():
    refused(wrong("relu", parameters=(Param("alpha", "number", 1.0),)), "a SymPy function such as Relu cannot carry")


def test_a_title_in_every_language():
    refused(wrong("matmul", title={"en": "matrix product"}), r"has no title in zh \(each language of the catalogue")
    refused(wrong("matmul", title={}), "has no title in en, zh")


def test_a_title_in_a_language_the_catalogue_does_not_have():
    title = {"en": "matrix product", "zh": "矩阵乘法", "fr": "produit matriciel"}
    refused(wrong("matmul", title=title), "has a title in fr, which is not a language of the catalogue")


def test_a_parameter_kind_that_is_not_known():
    refused(wrong("sum", parameters=(Param("axis", "integer"),)), "parameter axis has the unknown kind 'integer'")


def test_a_choice_without_its_values():
    refused(
        wrong("cross_entropy", parameters=(Param("reduction", "choice", "mean"),)), "a choice lists its allowed values"
    )


def test_allowed_values_on_a_parameter_that_is_not_a_choice():
    refused(wrong("sum", parameters=(Param("axis", "axis", choices=(0, 1)),)), "a choice lists its allowed values")


def test_a_choice_whose_default_is_not_allowed():
    params = (Param("reduction", "choice", "none", choices=("mean", "sum")),)
    refused(wrong("cross_entropy", parameters=params), r"the default 'none' is not one of \('mean', 'sum'\)")


def test_a_keyword_that_means_two_parameters():
    params = (Param("axis", "axis", aliases=("dim",)), Param("keepdims", "bool", False, aliases=("dim",)))
    refused(wrong("sum", parameters=params), "the keyword dim means two parameters")


def test_a_default_that_is_not_of_its_kind():
    params = (Param("axis", "axis", "last"), Param("keepdims", "bool", False))
    refused(wrong("sum", parameters=params), "the default 'last' is not an integer")


def test_a_sympy_class_without_printing():
    refused(wrong("sum", printing=None), "a SymPy class of its own needs a printing rule")


def test_printing_for_every_target():
    printing = replace(OPS["sum"].printing, torch="", latex="")
    refused(wrong("sum", printing=printing), "its printing has no template for latex, torch")


def test_one_domain_per_input():
    refused(wrong("div", domains=(NONZERO,)), "domains must name one entry per input")


def test_a_domain_that_is_not_known():
    fuzzy = Domain("fuzzy", "somewhere")
    refused(wrong("log", domains=(fuzzy,)), "the domain Domain\\('fuzzy'\\) is not one of the known domains")


def test_a_domain_of_the_same_name_that_is_not_the_known_one():
    refused(wrong("log", domains=(Domain("positive", "a copy"),)), "is not one of the known domains")


def test_an_op_without_an_example():
    refused(wrong("matmul", example=""), "is not elementwise: declare an example program")


def test_an_elementwise_op_gets_a_default_example():
    table: dict = {}
    op = register(wrong("mul", example=""), table)
    assert table == {"wrong_mul": op}
    assert op.example == "a: (n, d); b: (n, d)\na * b"


# --- every registered op passes --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_registered_op_passes_the_checks(name):
    op = OPS[name]
    check(op)
    parse(op.example)  # its example is a program of the input language


@pytest.mark.parametrize("name", sorted(OPS))
def test_a_tensor_op_class_knows_its_parameter_kinds(name):
    cls = OPS[name].sympy_class
    if isinstance(cls, type) and issubclass(cls, sb.TensorOp):
        assert cls.param_kinds == tuple(p.kind for p in OPS[name].parameters)


# --- the typed fields and their views --------------------------------------------------------------


def test_the_views_of_the_typed_fields():
    assert OPS["sum"].params == {"axis": None, "keepdims": False}
    assert OPS["cross_entropy"].choices == {"reduction": ("mean", "sum")}
    assert OPS["div"].domain == (None, "nonzero")
    assert OPS["add"].domain == ()
    assert OPS["sum"].param("dim").name == "axis" and OPS["sum"].param("keepdim").name == "keepdims"
    assert OPS["sum"].param("axes") is None


@pytest.mark.parametrize("kind", sorted(PARAM_KINDS))
def test_every_kind_is_stored_and_read_back(kind):
    values = {
        "axis": [-1, 0, 2],
        "bool": [False, True],
        "number": [0.01, -0.5, 2],
        "choice": ["mean"],
        "size": [4, "n"],
        "pair": [2, (2, 1)],
        "ints": [(6, 4, 4), 3],
        "shape": [(-1, 96), ("n", 3)],
        "subscripts": ["nij,njk->nik", "ij,jk"],
    }[kind]
    for value in [None, *values]:
        assert sb.decode_param(kind, sb.encode_param(kind, value)) == value


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_a_domain_checks_values_as_the_numeric_code_does(name):
    domain = DOMAINS[name]
    generator = torch.Generator().manual_seed(0)
    values = [torch.rand((3, 3), generator=generator, dtype=torch.float64) * 4 - 2 for _ in range(20)]
    values += [torch.zeros(3, 3), torch.eye(3, dtype=torch.float64), torch.full((3, 3), 1.5708), 2.0]
    for v in values:
        inside = domain.contains is None or domain.contains(torch, v)
        assert inside == in_domain(torch, name, v), (name, v)


@pytest.mark.parametrize(
    "source",
    [
        "x: (n,); y: (n,)\nsum(x ** y)",
        "x: (n,)\nsum(x ** -2)",
        "x: (n,)\nsum(x ** 3)",
        "Z: (n, c); t: (n,)\ncross_entropy(Z, t)",
        "Z: (n, c); t: (n, c)\ncross_entropy(Z, t)",
        "t: (n,); Z: (n, c)\nsum(onehot(t, c) * Z)",
        "A: (n, n)\nlogdet(A)",
        "A: (n, n)\ntrace(inv(A))",
        "x: (n,)\nsum(log(x))",
    ],
)
def test_a_domain_demands_what_the_derivation_draws(source):
    """Where a variable is an input of one op, its drawing domain is that input's demand."""
    graph = parse(source)
    demanded = {}
    for node in graph.op_nodes:
        for i, a in enumerate(node.inputs):
            if a.kind == "var" and node.op.domains and node.op.domains[i] is not None:
                demanded[a.name] = node.op.domains[i].demand(node, i) or "real"
    drawn = infer_domains(graph)
    assert demanded and all(drawn[name] == kind for name, kind in demanded.items()), (demanded, drawn)


# --- torch aliases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "aliases, sentence",
    [
        ("torch.relu", "must be a tuple of dotted names, not the string 'torch.relu'"),
        (("torch",), "the torch alias 'torch' is not a dotted name"),
        (("torch.nn.functional relu",), "is not a dotted name"),
        (("torch..relu",), "is not a dotted name"),
        ((None,), "the torch alias None is not a dotted name"),
        (("F.relu",), "the torch alias 'F.relu' does not start from torch or operator"),
        (("torch.relu", "torch.Tensor.relu", "torch.relu"), "lists the torch alias torch.relu twice"),
    ],
)
def test_torch_aliases_are_dotted_names_from_torch(aliases, sentence):
    refused(wrong("relu", torch_aliases=aliases), sentence)


def test_a_torch_alias_means_one_op():
    op = wrong("tanh", torch_aliases=("torch.tanh", "torch.relu"))
    refused(op, "the torch alias torch.relu already means the op 'relu'", table={"relu": OPS["relu"]})


def test_every_torch_alias_resolves_under_the_installed_torch():
    from backstep.trace.torch_ops import ops_by_torch, resolve

    assert not ops_by_torch().unresolved
    for op in OPS.values():
        for alias in op.torch_aliases:
            target = resolve(alias)
            assert callable(target), (op.name, alias, target)


# --- the fields that stand for what consumers used to test by an op's name ------------------------


def test_a_math_function_computes_the_op_on_a_number():
    """Printing.math_function: the torch code of an op on a number (torch.sqrt(2) fails)."""
    import math

    with_math = [op for op in OPS.values() if op.printing is not None and op.printing.math_function]
    assert {op.name for op in with_math} >= {"sqrt", "exp", "log", "sin"}
    for op in with_math:
        function = eval(op.printing.math_function, {"math": math})
        x = torch.tensor(0.7, dtype=torch.float64)
        assert function(0.7) == pytest.approx(float(op.torch(torch, [x], op.params))), op.name


def test_undefined_outside_marks_poles_not_kinks():
    """Domain.undefined_outside: a pole or a singular matrix (a gradcheck draws again), never a kink."""
    assert all(d.undefined_outside for d in (DOMAINS["positive"], NONZERO, DOMAINS["spd"], DOMAINS["invertible"]))
    assert not any(DOMAINS[name].undefined_outside for name in ("off_kink", "off_tie", "off_bounds", "class_index"))


@pytest.mark.parametrize(
    "source, ranks",
    [
        ("A @ B", {"A": 2, "B": 2}),
        ("outer(a, b)", {"a": 1, "b": 1}),
        ("sum(X.T @ W)", {"X": 2, "W": 2}),  # shape_passes_rank: through the transpose
        ("sum(exp(X) @ W)", {"X": 2, "W": 2}),  # and through an elementwise op
        ("sum(sin(x))", {"x": 0}),
    ],
)
def test_input_ranks_give_unannotated_variables_their_rank(source, ranks):
    graph = parse(source)
    assert {v.name: len(v.shape) for v in graph.variables} == ranks


def test_positive_through_passes_a_demand_for_positive_inputs():
    """Op.positive_through: log(a + b) draws a and b positive; log(a - b) cannot demand it of b."""
    assert infer_domains(parse("x: (n,); y: (n,)\nsum(log(x + y))")) == {"x": "positive", "y": "positive"}
    assert infer_domains(parse("x: (n,); y: (n,)\nsum(log(x - y))")) == {"x": "real", "y": "real"}
    assert OPS["add"].positive_through and not OPS["sub"].positive_through


def test_codegen_templates_fill_in_a_tensor_in_scope():
    """Printing.code and code_with_number: codegen's own templates, where torch's (float64 on the CPU) won't do."""
    for op in OPS.values():
        if op.printing is None:
            continue
        if op.printing.code_with_number:
            assert op.printing.code, op.name  # both operands tensors: the plain code
            assert "{x}" in op.printing.code_with_number and "{c}" in op.printing.code_with_number, op.name
        if op.printing.code:
            assert "float64" not in op.printing.code, op.name
