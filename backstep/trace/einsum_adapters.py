"""The tracer's adapters for torch.einsum and torch.swapaxes (and their tensor methods), which
take parameters besides their operands: the subscripts, the two axes."""

from __future__ import annotations

import re

import torch

from .registry import Unmapped, adapts
from .torch_ops import op_of

# What an einsum equation may hold: letters, commas, the arrow, spaces (backstep refuses "..." with
# its own message). Anything else never reaches the program text, which puts it between quotes.
EQUATION = re.compile(r"[A-Za-z ,.>-]{1,64}")


@adapts(torch.einsum)
def einsum(w, node, args, kw) -> str:
    equation, operands = (args[0] if args else kw.get("equation")), list(args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])  # torch.einsum(eq, [a, b])
    if not isinstance(equation, str) or not EQUATION.fullmatch(equation):
        raise Unmapped("with subscripts other than a string of letters such as 'nij,njk->nik'")
    if len(operands) != 2:
        raise Unmapped(f"of {len(operands)} operands; backstep's einsum takes two operands")
    a, b = (w.arg(node, x) for x in operands)
    return f'{op_of(torch.einsum).syntax}("{equation}", {a}, {b})'


@adapts(torch.swapaxes, torch.swapdims)
def swapaxes(w, node, args, kw) -> str:
    first = args[1] if len(args) > 1 else kw.get("axis0", kw.get("dim0"))
    second = args[2] if len(args) > 2 else kw.get("axis1", kw.get("dim1"))
    if not isinstance(first, int) or not isinstance(second, int):
        raise Unmapped("without two integer axes")
    return f"{op_of(torch.swapaxes).syntax}({w.arg(node, args[0])}, {first}, {second})"


@adapts(torch.nn.functional.scaled_dot_product_attention)
def scaled_dot_product_attention(w, node, args, kw) -> str:
    """softmax(Q Kᵀ · scale) V, decomposed into the ops it is made of (each a step of the derivation)."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    given = dict(zip(names, args)) | kw
    if given.get("attn_mask") is not None or given.get("is_causal"):
        raise Unmapped("with a mask (attn_mask= or is_causal=True): write the masked scores out")
    if given.get("dropout_p"):
        raise Unmapped("with dropout (random while training): give dropout_p=0.0")
    if given.get("enable_gqa"):
        raise Unmapped("with enable_gqa=True")
    scale = given.get("scale")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        # torch's default is 1/sqrt(the query's last size), which the tracer cannot read off a tensor
        raise Unmapped("without scale=: give it, e.g. scale=1 / math.sqrt(d), the default for queries of size d")
    q, k, v = (w.arg(node, given[n]) for n in ("query", "key", "value"))
    swap, softmax = op_of(torch.swapaxes).syntax, op_of(torch.softmax).syntax
    return f"{softmax}({q} @ {swap}({k}, -2, -1) * {float(scale)!r}, axis=-1) @ {v}"
