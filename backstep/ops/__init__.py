"""The op table: every operation backstep knows, each declared once, as one block of its family.

The record (spec.py: Op, Param, Domain, Printing, Ctx) says everything about one op; the
families register their ops on import (registry.py, which cross-checks each entry):

- elementwise.py: arithmetic, math functions, indicators and comparisons, maximum/minimum/where;
- activations.py: sigmoid, relu and its relatives, gelu, softplus, clamp;
- einsum.py: einsum of two operands, and the equations of `@`'s batched product;
- linalg.py: matmul (batched on operands of rank 3 and more), transpose, outer, dot, norm, trace, det,
  logdet, inv, diag, eye;
- reductions.py: sum, mean, unsqueeze, softmax, log_softmax, logsumexp;
- losses.py: onehot, cross_entropy, mse, linear;
- conv.py and pool.py: conv2d and pooling on 4-d NCHW images, with their gradient ops;
- views.py: flatten, unflatten, reshape, broadcast_to;
- indexing.py: embedding (E[ix]), its scatter-add scatter_rows, pick (P[range(N), y]).
- joins.py: cat, stack, slicing (slice, select), the parts of chunk and split, pad.
- norms.py: layer_norm, batch_norm (training mode), and their statistics standardize (x̂), norm_std (σ).

Everything else (parser, derivation, printers, numeric evaluator, verifier, per-op tests) reads
this table; adding an op means adding one block to its family plus nothing but tests.
"""

from __future__ import annotations

import difflib

# The families register their ops on import, in this order: the order `backstep ops` lists them.
# isort: off
from . import (  # noqa: F401
    elementwise,
    activations,
    einsum,
    linalg,
    reductions,
    losses,
    conv,
    pool,
    views,
    indexing,
    joins,
    norms,
)

# isort: on
from .registry import OPS, OpDeclarationError, check, register
from .rules import (
    broadcast_all,
    broadcast_shapes,
    expand_back,
    normalize_axis,
    number,
    reduce_shape,
    same_shape,
    size_of,
    sum_to,
)
from .spec import (
    DOMAINS,
    ONE_HOT_ROWS,
    PARAM_KINDS,
    PREC_ADD,
    PREC_ATOM,
    PREC_MATMUL,
    PREC_MUL,
    PREC_POSTFIX,
    PREC_POW,
    PREC_UNARY,
    TARGETS,
    TUPLE_KINDS,
    ByParams,
    Ctx,
    Domain,
    Op,
    Param,
    Printing,
)

# Ops by their spelling in the input language, and the SymPy classes that mean an op (for the
# printers and the numeric evaluator). Add, Mul and Pow are SymPy's own algebra; the printers
# and the evaluator handle them by structure.
OPERATOR_OPS = {op.syntax: op for op in OPS.values() if not op.syntax.isidentifier()}
FUNCTION_OPS = {op.syntax: op for op in OPS.values() if op.syntax.isidentifier()}
OP_OF_CLASS: dict[type, Op] = {op.sympy_class: op for op in OPS.values() if op.sympy_class is not None}

# The records other modules need as such: the claim language's matrix product and transpose, the
# parser's checks of a power's exponent and of a division by zero, the printers' spellings of
# x**(1/2), e**x and of an operand the op broadcasts.
MATMUL = OPS["matmul"]
TRANSPOSE = OPS["transpose"]
POW = OPS["pow"]
DIV = OPS["div"]
SQRT = OPS["sqrt"]
EXP = OPS["exp"]
BROADCAST_TO = OPS["broadcast_to"]


def unknown_function_hint(name: str) -> str:
    close = difflib.get_close_matches(name, list(FUNCTION_OPS), n=1)
    return f"; did you mean {close[0]}?" if close else f"; known functions: {', '.join(sorted(FUNCTION_OPS))}"


__all__ = [
    "BROADCAST_TO",
    "DIV",
    "DOMAINS",
    "EXP",
    "FUNCTION_OPS",
    "MATMUL",
    "ONE_HOT_ROWS",
    "OPERATOR_OPS",
    "OPS",
    "OP_OF_CLASS",
    "PARAM_KINDS",
    "POW",
    "PREC_ADD",
    "PREC_ATOM",
    "PREC_MATMUL",
    "PREC_MUL",
    "PREC_POSTFIX",
    "PREC_POW",
    "PREC_UNARY",
    "SQRT",
    "TARGETS",
    "TRANSPOSE",
    "TUPLE_KINDS",
    "ByParams",
    "Ctx",
    "Domain",
    "Op",
    "OpDeclarationError",
    "Param",
    "Printing",
    "broadcast_all",
    "broadcast_shapes",
    "check",
    "expand_back",
    "normalize_axis",
    "number",
    "reduce_shape",
    "register",
    "same_shape",
    "size_of",
    "sum_to",
    "unknown_function_hint",
]
