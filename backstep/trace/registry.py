"""The adapters' registry, and the small values they hand back to the walk.

An adapter turns one torch call of the traced graph into backstep text. It is registered for
the torch targets it stands for and is looked up by the walk (``fx.py``):

- ``@adapts(torch.relu, F.relu)``: a function (an fx ``call_function`` node), called as
  ``adapter(walk, node, args, kw)``;
- ``@adapts_method(torch.Tensor.view)``: a tensor method (``call_method``, by the method's name),
  called the same way;
- ``@adapts(nn.Linear)``: a module class (``call_module``), called as ``adapter(walk, node, mod, x)``
  with ``x`` the program text of the module's first argument. A module matches by isinstance, in
  the order the adapters were registered (``exact=True``: only that very class).

What an adapter may use of the walk: ``walk.arg(node, a)`` (an argument as program text),
``walk.parameter(target, tensor, node)``, ``walk.value`` (fx node -> name or SizeOf),
``walk.annotations`` (variable -> shape), ``walk.fused`` and ``walk.transposes``.
An adapter returns the statement's expression, an Alias or a SizeOf, or raises Unmapped.
It finds the op it writes through the torch function it stands for (torch_ops.op_of) and
spells it from the op's record (``spell``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InternalSignal

FUNCTIONS: dict[object, Callable] = {}  # torch function (or operator.add, getattr) -> adapter
METHODS: dict[str, Callable] = {}  # tensor method name -> adapter
MODULES: list[tuple[type, bool, Callable]] = []  # (nn.Module class, exact, adapter), in order


class Unmapped(InternalSignal):
    """An operation the op table has no counterpart for (turned into an UnsupportedError)."""


@dataclass
class SizeOf:
    """`x.size(k)` / `x.shape[k]`: a number, usable only where a reshape asks for the batch size."""

    node: object
    axis: int | None  # None: the whole x.shape


@dataclass
class Alias:
    """An op that changes nothing backstep sees (dropout in eval mode, .contiguous()): its input."""

    name: str


def register_function(target, adapter: Callable) -> None:
    """One adapter per torch function: a second, different one is a mistake in this package."""
    known = FUNCTIONS.setdefault(target, adapter)
    if known is not adapter:
        raise RuntimeError(f"two tracer adapters for {target!r}: {known.__name__} and {adapter.__name__}")


def adapts(*targets, exact: bool = False):
    """Register the decorated adapter for torch functions, or for nn.Module classes."""

    def register(adapter: Callable) -> Callable:
        for target in targets:
            if isinstance(target, type):
                MODULES.append((target, exact, adapter))
            else:
                register_function(target, adapter)
        return adapter

    return register


def adapts_method(*methods):
    """Register the decorated adapter for tensor methods (torch.Tensor.view: `x.view(...)`)."""

    def register(adapter: Callable) -> Callable:
        for method in methods:
            METHODS[method.__name__] = adapter
        return adapter

    return register


def function_adapter(target) -> Callable:
    adapter = FUNCTIONS.get(target)
    if adapter is None:
        raise Unmapped("")
    return adapter


def method_adapter(name: str) -> Callable:
    adapter = METHODS.get(name)
    if adapter is None:
        raise Unmapped("")
    return adapter


def module_adapter(mod) -> Callable:
    for cls, exact, adapter in MODULES:
        if (type(mod) is cls) if exact else isinstance(mod, cls):
            return adapter
    raise Unmapped("")


# --- helpers the adapters share -----------------------------------------------------------------


def spell(op, operands: list[str]) -> str:
    """The op applied to its operands, in backstep's language (`x + y`, `-x`, `x.T`, `relu(x)`)."""
    if op.syntax.isidentifier():
        return f"{op.syntax}({', '.join(operands)})"
    if op.syntax.startswith("."):  # a postfix operator: .T
        return operands[0] + op.syntax
    if op.arity == 2:
        return f"{operands[0]} {op.syntax} {operands[1]}"
    return op.syntax[:-1] + operands[0]  # a prefix operator: its syntax is "-x"


def only(kw: dict, **defaults) -> None:
    """Keyword arguments must be absent or at their defaults (the op table has no others)."""
    for key, value in kw.items():
        if key in defaults and value != defaults[key]:
            raise Unmapped(f"with {key}={value!r}")
        if key not in defaults and key not in ("input", "out", "dtype") and value is not None:
            raise Unmapped(f"with {key}={value!r}")


def pair(value) -> tuple:
    if isinstance(value, (tuple, list)):
        return tuple(value) if len(value) == 2 else (value[0], value[0])
    return (value, value)


def compact(value):
    """2 or (2, 3): a pair with equal halves written as one number."""
    p = pair(value)
    return p[0] if p[0] == p[1] else p
