"""The tracer's adapters for building and splitting tensors: torch.cat and torch.stack, torch.chunk and
torch.split (and their tensor methods), indexing and slicing a tensor (``operator.getitem``) and
``narrow``. Each writes backstep's spelling: ``cat((a, b), axis=1)``, ``x[:, 1:3]``,
``chunk(Z, 4, axis=1)[0]``.

chunk and split give a tuple: their node stands for the call's text (an Alias of it), and each
``getitem`` that takes a part writes ``chunk(...)[i]``, one part node each, as
``i, f, g, o = Z.chunk(4, dim=1)`` traces.
"""

from __future__ import annotations

import operator

import torch

from ..ops.joins import python_index, slice_text
from .adapters import size_index
from .index_adapters import rows_pick
from .reduction_adapters import values_or_indices
from .registry import Alias, Unmapped, adapts, adapts_method
from .torch_ops import op_of


def _dim(args, kw, position: int, default=0):
    dim = args[position] if len(args) > position else kw.get("dim", default)
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise Unmapped(f"with dim={dim!r}; backstep needs an integer axis")
    return dim


def _operands(w, node, tensors) -> str:
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise Unmapped("on something other than a list of tensors")
    names = [w.arg(node, t) for t in tensors]
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


@adapts(torch.cat, torch.concat, torch.concatenate)
def cat(w, node, args, kw) -> str:
    operands = _operands(w, node, args[0] if args else kw.get("tensors"))
    return f"{op_of(torch.cat).syntax}({operands}, axis={_dim(args, kw, 1)})"


@adapts(torch.stack)
def stack(w, node, args, kw) -> str:
    operands = _operands(w, node, args[0] if args else kw.get("tensors"))
    return f"{op_of(torch.stack).syntax}({operands}, axis={_dim(args, kw, 1)})"


@adapts(torch.chunk)
@adapts_method(torch.Tensor.chunk)
def chunk(w, node, args, kw) -> Alias:
    chunks = args[1] if len(args) > 1 else kw.get("chunks")
    if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1:
        raise Unmapped(f"with chunks={chunks!r}")
    return Alias(f"{op_of(torch.chunk).syntax}({w.arg(node, args[0])}, {chunks}, axis={_dim(args, kw, 2)})")


@adapts(torch.split)
@adapts_method(torch.Tensor.split)
def split(w, node, args, kw) -> Alias:
    sizes = args[1] if len(args) > 1 else kw.get("split_size_or_sections", kw.get("split_size"))
    if isinstance(sizes, int):
        raise Unmapped("with one size for every part; give the list of the parts' sizes, or use chunk")
    if not isinstance(sizes, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise Unmapped(f"with the sizes {sizes!r}")
    text = "(" + ", ".join(map(str, sizes)) + ("," if len(sizes) == 1 else "") + ")"
    return Alias(f"{op_of(torch.split).syntax}({w.arg(node, args[0])}, {text}, axis={_dim(args, kw, 2)})")


@adapts(torch.narrow)
@adapts_method(torch.Tensor.narrow)
def narrow(w, node, args, kw) -> str:
    x = w.arg(node, args[0])
    dim = _dim(args, kw, 1)
    start = args[2] if len(args) > 2 else kw.get("start")
    length = args[3] if len(args) > 3 else kw.get("length")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, length)):
        raise Unmapped("with a start or length that is not a number")
    if start < 0:
        raise Unmapped("with a negative start")
    return f"{_wrapped(x)}[{python_index(dim, slice_text(start, start + length))}]"


def _wrapped(text: str) -> str:
    return text if text.replace("_", "a").isalnum() else f"({text})"


def _item(w, node, item) -> str:
    """One index of a subscript as backstep text: an integer, a slice of integers, or `...`."""
    if item is Ellipsis:
        return "..."
    if isinstance(item, int) and not isinstance(item, bool):
        return str(item)
    if isinstance(item, slice):
        bounds = (item.start, item.stop)
        if item.step not in (None, 1):
            raise Unmapped("(a slice with a step) is not supported")
        if not all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds):
            raise Unmapped("(a slice whose bounds are not numbers) is not supported")
        return slice_text(*bounds)
    if isinstance(item, torch.fx.Node):
        raise Unmapped("(indexing by a tensor) is not basic slicing: an embedding lookup is embedding(ix, E)")
    if item is None:
        raise Unmapped("(a new axis, None) is not supported; use unsqueeze")
    raise Unmapped(f"(indexing by {type(item).__name__}) is not supported")


@adapts(operator.getitem)
def getitem(w, node, args, kw):
    """Every reading of a subscript, in turn: P[torch.arange(N), y] (pick, index_adapters.py's);
    values, indices = torch.max(x, dim) (reduction_adapters.py's); x[:, 1:3] and x[..., -1] on a
    tensor, part i of chunk/split (here); else x.shape[k] (adapters.py's)."""
    picked = rows_pick(w, node, args)
    if picked is None:
        picked = values_or_indices(w, args)
    if picked is not None:
        return picked
    base, index = args[0], args[1]
    text = w.value.get(base) if isinstance(base, torch.fx.Node) else None
    if not isinstance(text, str):
        return size_index(w, node, args, kw)
    if text.startswith((f"{op_of(torch.chunk).syntax}(", f"{op_of(torch.split).syntax}(")):
        if not isinstance(index, int) or isinstance(index, bool):
            raise Unmapped("(a part of chunk or split taken by other than an integer) is not supported")
        return f"{text}[{index}]"
    items = index if isinstance(index, tuple) else (index,)
    return f"{_wrapped(text)}[{', '.join(_item(w, node, item) for item in items)}]"
