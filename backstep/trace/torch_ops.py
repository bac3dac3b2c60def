"""The op table seen from torch: each op's torch_aliases, resolved once, when a model is traced.

An op record names the torch spellings that mean it as dotted names (``Op.torch_aliases``): a
function (``torch.relu``, ``torch.nn.functional.relu``, ``operator.add``), a tensor method
(``torch.Tensor.relu``) or an nn.Module class (``torch.nn.ReLU``). They are strings so that
importing backstep imports no torch; ``ops_by_torch()`` resolves them the first time the tracer
asks, into three tables: function -> op, method name -> op, module class -> op. The adapters
find their op here, by the torch function they are registered for, and write it with its syntax.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field

from ..ops import OPS, Op
from ..ops.spec import TENSOR_METHOD_PREFIX
from .registry import Unmapped


@dataclass
class TorchOps:
    functions: dict[object, Op] = field(default_factory=dict)  # torch function (or operator.add) -> op
    methods: dict[str, Op] = field(default_factory=dict)  # tensor method name -> op
    modules: dict[type, Op] = field(default_factory=dict)  # nn.Module class -> op
    unresolved: list[str] = field(default_factory=list)  # aliases the installed torch does not have


def resolve(dotted: str):
    """The object a dotted name means, importing its modules as it goes; None where there is none."""
    root, *attributes = dotted.split(".")
    try:
        obj = importlib.import_module(root)
    except ImportError:
        return None
    path = root
    for attribute in attributes:
        path += "." + attribute
        if hasattr(obj, attribute):
            obj = getattr(obj, attribute)
            continue
        try:
            obj = importlib.import_module(path)
        except ImportError:
            return None
    return obj


@functools.cache
def ops_by_torch() -> TorchOps:
    """Every op's torch aliases, resolved; a torch spelling claimed by two ops is a mistake here."""
    import torch

    found = TorchOps()
    for op in OPS.values():
        for alias in op.torch_aliases:
            target = resolve(alias)
            if target is None:
                found.unresolved.append(alias)
                continue
            if alias.startswith(TENSOR_METHOD_PREFIX):
                table, key = found.methods, alias[len(TENSOR_METHOD_PREFIX) :]
            elif isinstance(target, type) and issubclass(target, torch.nn.Module):
                table, key = found.modules, target
            else:
                table, key = found.functions, target
            claimed = table.setdefault(key, op)
            if claimed is not op:
                raise RuntimeError(f"the torch alias {alias} means both {claimed.name} and {op.name}")
    return found


def op_of(target) -> Op:
    """The op a torch function is (an adapter asks for the op of the function it is registered for)."""
    op = ops_by_torch().functions.get(target)
    if op is None:
        raise Unmapped("is not in backstep's op table yet")
    return op


def op_of_module(mod) -> Op:
    """The op an nn.Module is: its class's, or the nearest base class's that is an alias."""
    modules = ops_by_torch().modules
    op = next((modules[cls] for cls in type(mod).__mro__ if cls in modules), None)
    if op is None:
        raise Unmapped("is not in backstep's op table yet")
    return op


def reduction_op(reduction) -> Op | None:
    """The op a loss's torch `reduction=` names ("sum" is torch.sum over the losses, "mean"
    torch.mean); None for "none" or anything else."""
    if not isinstance(reduction, str):
        return None
    import torch

    return ops_by_torch().functions.get(vars(torch).get(reduction))
