"""The torch functions that are exactly one op of the table, and the one adapter that writes them.

ONE_TO_ONE is the one place that says which torch function is which op (same operands, no
parameters): `torch.relu(x)` is `relu(x)`, `torch.add(x, y)` and `x + y` are `x + y`. Every entry
shares the adapter of its op, which spells the op from its record (syntax and arity). A later
step reads this mapping from the op records themselves; the adapter stays as it is.
"""

from __future__ import annotations

import functools
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import OPS
from .registry import Unmapped, only, register_function

# torch function -> the op of the table that is exactly it. The one place this mapping is
# written: a later step reads it from the op records instead.
ONE_TO_ONE = {
    operator.add: "add",
    operator.sub: "sub",
    operator.mul: "mul",
    operator.truediv: "div",
    operator.pow: "pow",
    operator.matmul: "matmul",
    torch.add: "add",
    torch.sub: "sub",
    torch.subtract: "sub",
    torch.mul: "mul",
    torch.multiply: "mul",
    torch.div: "div",
    torch.divide: "div",
    torch.true_divide: "div",
    torch.matmul: "matmul",
    torch.mm: "matmul",
    torch.pow: "pow",
    operator.gt: "gt",
    operator.ge: "ge",
    operator.lt: "lt",
    operator.le: "le",
    torch.gt: "gt",
    torch.ge: "ge",
    torch.lt: "lt",
    torch.le: "le",
    operator.neg: "neg",
    torch.neg: "neg",
    torch.negative: "neg",
    torch.relu: "relu",
    F.relu: "relu",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.exp: "exp",
    torch.log: "log",
    torch.sin: "sin",
    torch.cos: "cos",
    torch.tan: "tan",
    torch.sqrt: "sqrt",
    torch.abs: "abs",
    torch.erf: "erf",
    torch.trace: "trace",
    torch.det: "det",
    torch.linalg.det: "det",
    torch.logdet: "logdet",
    torch.inverse: "inv",
    torch.linalg.inv: "inv",
    torch.diag: "diag",
    torch.sign: "sign",
    torch.outer: "outer",
    torch.dot: "dot",
    torch.maximum: "maximum",
    torch.minimum: "minimum",
    torch.where: "where",
}

# nn.Module class -> the op it is exactly (written by modules.py, which matches only these classes)
ONE_TO_ONE_MODULES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}

ARITY_WORDS = {1: "one", 2: "two", 3: "three"}


def spell(op, operands: list[str]) -> str:
    """The op applied to its operands, in backstep's language (`x + y`, `-x`, `relu(x)`)."""
    if op.syntax.isidentifier():
        return f"{op.syntax}({', '.join(operands)})"
    if op.arity == 2:
        return f"{operands[0]} {op.syntax} {operands[1]}"
    return op.syntax[:-1] + operands[0]  # a prefix operator: its syntax is "-x"


@functools.cache
def one_to_one(op_name: str):
    """The adapter of every torch function that is exactly the op `op_name`."""
    op = OPS[op_name]

    def adapter(w, node, args: list, kw: dict) -> str:
        only(kw, alpha=1, rounding_mode=None, inplace=False)
        if len(args) != op.arity:
            raise Unmapped(f"takes {len(args)} arguments; backstep's {op.name} takes {ARITY_WORDS[op.arity]}")
        return spell(op, [w.arg(node, a) for a in args])

    adapter.__name__ = f"one_to_one({op_name!r})"
    return adapter


for _target, _op_name in ONE_TO_ONE.items():
    register_function(_target, one_to_one(_op_name))
