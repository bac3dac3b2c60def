"""The torch spellings that are exactly one op of the table, read from the op records.

Each op's torch_aliases (torch_ops.py) say which torch functions, tensor methods and nn.Module
classes mean it. Where adapters.py or modules.py write a spelling with an adapter of its own
(torch.sum with its axes, nn.Linear with its parameters), that adapter stands; every other
spelling is the op itself, with the same operands and no parameters, and shares the adapter
of its op, which spells the op from its record (syntax and arity): `torch.relu(x)` is
`relu(x)`, `torch.add(x, y)` and `x + y` are `x + y`. A tensor method `x.name(...)` is
`torch.name(x, ...)`: it goes to the adapter of that function.
"""

from __future__ import annotations

import functools

import torch

from ..ops import OPS

# their adapters first: only the spellings left are one-to-one
from . import adapters, einsum_adapters, index_adapters, join_adapters, modules, norm_adapters, reduction_adapters  # noqa: F401
from .registry import FUNCTIONS, METHODS, MODULES, Unmapped, function_adapter, only, register_function, spell
from .torch_ops import ops_by_torch

ARITY_WORDS = {1: "one", 2: "two", 3: "three"}


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


def same_as_function(w, node, args, kw):
    """x.name(...) is torch.name(x, ...): the adapter of that function writes it."""
    return function_adapter(getattr(torch, node.target))(w, node, args, kw)


def activation(w, node, mod, x):
    """An nn.Module class that is exactly its op (nn.ReLU is relu)."""
    return spell(ops_by_torch().modules[type(mod)], [x])


def has_module_adapter(cls: type) -> bool:
    return any(cls is known or (not exact and issubclass(cls, known)) for known, exact, _ in MODULES)


def register_the_rest() -> None:
    """Give every alias that has no adapter of its own the adapter of its op."""
    found = ops_by_torch()
    for target, op in found.functions.items():
        if target in FUNCTIONS:
            continue
        if op.parameters:
            raise RuntimeError(f"{target!r} means {op.name}, which has parameters: it needs an adapter of its own")
        register_function(target, one_to_one(op.name))
    for name, op in found.methods.items():
        if name in METHODS:
            continue
        if getattr(torch, name, None) not in FUNCTIONS:
            raise RuntimeError(f"torch.Tensor.{name} means {op.name}, but torch.{name} has no adapter")
        METHODS[name] = same_as_function
    for cls in found.modules:
        if not has_module_adapter(cls):
            MODULES.append((cls, True, activation))  # only that very class: a subclass may do more


register_the_rest()
