"""Numbers from backstep's SymPy expressions: the Evaluator, the torch function of each node, and
the one loop that evaluates a derivation's steps at a point (``run_steps``).

The evaluator is backstep's own (SymPy's ``lambdify`` cannot evaluate elementwise functions of
arrays): it walks the expression, maps each class to the torch counterpart declared in the op
table, and broadcasts the operands of every shape-dependent op to their recorded shapes.
``node_function`` is that mapping for one node, so that a compiled evaluation (``backstep
train``'s tape) makes exactly the torch calls the Evaluator makes. torch is imported only when
numbers are needed, so that deriving without numbers stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sympy
from sympy import Expr

from ..errors import CannotEvaluate, UsageError
from ..ops import OP_OF_CLASS
from ..shapes import concrete
from ..symbolic import Dim, TensorOp
from ..util import postorder

DTYPE_NAME = "float64"


def torch_module():
    """torch, imported only when numbers are needed; its absence is a clear message, not a traceback."""
    try:
        import torch
    except ModuleNotFoundError:
        raise UsageError(
            "PyTorch is not installed: install it (pip install torch; for a CPU-only build follow "
            "PyTorch's install instructions), or use --no-verify"
        ) from None
    return torch


def is_leaf(e: Expr) -> bool:
    """A symbol, a number or a dimension: evaluated by itself (an op with no operand, `eye(n)`, is not)."""
    return not e.args or isinstance(e, Dim)


def expression_children(e: Expr) -> tuple:
    """The operands an evaluation needs first (a TensorOp's parameters are not operands)."""
    if is_leaf(e):
        return ()
    return e.operands if isinstance(e, TensorOp) else e.args


def add_all(*args):
    out = args[0]
    for a in args[1:]:
        out = out + a
    return out


def multiply_all(*args):
    out = args[0]
    for a in args[1:]:
        out = out * a
    return out


def node_function(torch, e: Expr, sizes: dict[str, int]) -> Callable:
    """The torch function that computes node `e` from its operands' values, for these sizes: the op
    table's torch counterpart, with the operands of a shape-dependent op broadcast to their recorded
    shapes (SymPy's cancellation may have dropped broadcast axes) and its parameters made concrete."""
    if e.is_Add:
        return add_all
    if e.is_Mul:
        return multiply_all
    if e.is_Pow:
        return torch.pow
    op = OP_OF_CLASS.get(type(e))
    if op is None:
        raise CannotEvaluate(f"backstep cannot evaluate {type(e).__name__}")
    if isinstance(e, TensorOp):
        shapes = [concrete(s, sizes) for s in e.in_shapes]
        params = concrete_params(e.params, sizes)
        return lambda *a: op.torch(torch, [torch.broadcast_to(x, s) for x, s in zip(a, shapes)], params)
    return lambda *a: op.torch(torch, list(a), {})


class Evaluator:
    """Evaluates expressions at one point: `env` maps symbol names to tensors."""

    def __init__(self, env: dict[str, Any], sizes: dict[str, int]):
        self.torch = torch_module()
        self.env = env
        self.sizes = sizes
        self.memo: dict[Expr, Any] = {}

    def scalar(self, value: float):
        return self.torch.tensor(value, dtype=self.torch.float64)

    def __call__(self, expr: Expr):
        memo = self.memo
        for e in postorder(expr, expression_children, memo.__contains__):
            memo[e] = self.atom(e) if is_leaf(e) else self.apply(e, [memo[a] for a in expression_children(e)])
        return memo[expr]

    def atom(self, e: Expr):
        if isinstance(e, Dim):
            return self.scalar(float(self.sizes[e.name]))
        if e.is_Symbol:
            try:
                return self.env[e.name]
            except KeyError:
                raise RuntimeError(f"no value for {e.name}") from None
        if e is sympy.E:
            return self.scalar(math.e)
        if e.is_Number or e.is_NumberSymbol:
            return self.scalar(float(e))
        raise CannotEvaluate(f"cannot evaluate {e!r}")

    def apply(self, e: Expr, args: list):
        return node_function(self.torch, e, self.sizes)(*args)


def concrete_params(params: dict, sizes: dict[str, int]) -> dict:
    """Parameters naming a dimension (onehot's classes, eye's n) get that dimension's size."""

    def size(v):
        return sizes.get(v, v) if isinstance(v, str) else v

    return {k: tuple(map(size, v)) if isinstance(v, tuple) else size(v) for k, v in params.items()}


def const_value(torch, node, sizes):
    """A constant node of the graph: a number as a Python float (so torch names its grad_fn as for a
    literal); an array as a tensor."""
    value = Evaluator({}, sizes)(node.value)
    return float(value) if not node.shape else value


# --- a derivation's steps at one point ---------------------------------------------------------------


class StepRun:
    """The derivation's steps evaluated at one point by one Evaluator, in the derivation's order.

    Each value is written into `env` (a forward step under its name; a backward step under its
    target, broadcast to the target's shape) before it is yielded, so that a caller can stop at a
    value that will not do (one that is not finite) and the steps after it see the ones before."""

    def __init__(self, derivation, env: dict[str, Any], sizes: dict[str, int]):
        self.derivation = derivation
        self.env = env
        self.sizes = sizes
        self.evaluator = Evaluator(env, sizes)

    def forward(self) -> Iterator[tuple[Any, Any]]:
        """(step, value) of each forward step."""
        for step in self.derivation.forward:
            value = self.evaluator(step.expr)
            self.env[step.name] = value
            yield step, value

    def backward(self, replaced: dict[int, Expr] | None = None) -> Iterator[tuple[Any, Any]]:
        """(step, value) of each backward step. With `replaced` ({step index: result}), the steps from
        the first replaced one on, with those results instead of their own (the earlier steps'
        values are in `env` already)."""
        torch = self.evaluator.torch
        table = self.derivation.symbols.table
        first = min(replaced) if replaced else None
        for step in self.derivation.backward:
            if first is not None and step.index < first:
                continue
            expr = replaced.get(step.index, step.result) if replaced else step.result
            value = torch.broadcast_to(self.evaluator(expr), concrete(table[step.target].shape, self.sizes))
            self.env[step.target] = value
            yield step, value

    def gradients(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, Any]]:
        """(variable, value) of each gradient (of those `names`), broadcast to the variable's shape,
        once the passes have run. A gradient in terms of the inputs is evaluated by an evaluator that
        knows only the inputs and the seed (one for all of them), so that it cannot lean on the value
        of an intermediate."""
        d = self.derivation
        torch = self.evaluator.torch
        inputs = {v.name for v in d.variables} | {d.seed.name}
        fresh = None
        for name in d.gradients if names is None else names:
            grad = d.gradients[name]
            if grad.in_inputs:
                if fresh is None:
                    fresh = Evaluator({k: v for k, v in self.env.items() if k in inputs}, self.sizes)
                value = fresh(grad.expr)
            else:
                value = self.evaluator(grad.expr)
            yield name, torch.broadcast_to(value, concrete(grad.shape, self.sizes))

    def run(self) -> dict[str, Any]:
        """Both passes to the end: `env`, holding every step's value."""
        for _ in self.forward():
            pass
        for _ in self.backward():
            pass
        return self.env


def run_steps(derivation, env: dict[str, Any], sizes: dict[str, int]) -> StepRun:
    """The derivation's steps at the point `env` (symbol name -> tensor: every variable, and the
    seed), for these sizes: iterate `.forward()`, then `.backward()`, then `.gradients()`; or
    `.run()` both passes at once."""
    return StepRun(derivation, env, sizes)


# --- values ------------------------------------------------------------------------------------------


def to_value(tensor) -> float | list:
    """A tensor as plain Python numbers, for the data model and JSON."""
    if tensor.dim() == 0:
        return float(tensor)
    return tensor.detach().tolist()


def nonfinite(torch, value) -> str | None:
    """`inf`, `-inf` or `nan`: the first number of `value` that is not finite; None if all are."""
    if not torch.is_tensor(value) or value.is_floating_point() is False:
        return None
    bad = ~torch.isfinite(value.detach())
    if not bool(bad.any()):
        return None
    return str(float(value.detach()[bad].flatten()[0]))


def step_text(derivation, step) -> str:
    """`h = relu(x @ W1)`: a forward step as messages show it (cut short past 80 characters)."""
    from ..printing import to_text

    text = to_text(step.expr, derivation.symbols)
    return f"{step.name} = {text if len(text) <= 80 else text[:77] + '...'}"
