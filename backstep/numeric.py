"""Numbers: evaluate backstep's SymPy expressions with torch, draw points, fill in `--at` values.

The evaluator is backstep's own (SymPy's ``lambdify`` cannot evaluate elementwise functions of
arrays): it walks the expression, maps each class to the torch counterpart declared in the op
table, and broadcasts the operands of every shape-dependent op to their recorded shapes.
torch is imported only here and in the verifier, so that deriving without numbers stays fast.
"""

from __future__ import annotations

import math
from typing import Any

import sympy
from sympy import Expr

from .errors import DomainError, ShapeError, UsageError
from .ops import OP_OF_CLASS
from .shapes import concrete
from .symbolic import Dim, TensorOp

DTYPE_NAME = "float64"


def torch_module():
    import torch

    return torch


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
        # Iterative post-order: deep expressions must not overflow the stack.
        stack = [(expr, False)]
        memo = self.memo
        while stack:
            e, ready = stack.pop()
            if e in memo:
                continue
            if not e.args or isinstance(e, Dim):
                memo[e] = self.atom(e)
                continue
            children = e.operands if isinstance(e, TensorOp) else e.args
            if ready:
                memo[e] = self.apply(e, [memo[a] for a in children])
            else:
                stack.append((e, True))
                stack.extend((a, False) for a in children if a not in memo)
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
        raise TypeError(f"cannot evaluate {e!r}")

    def apply(self, e: Expr, args: list):
        t = self.torch
        if e.is_Add:
            out = args[0]
            for a in args[1:]:
                out = out + a
            return out
        if e.is_Mul:
            out = args[0]
            for a in args[1:]:
                out = out * a
            return out
        if e.is_Pow:
            return t.pow(args[0], args[1])
        op = OP_OF_CLASS.get(type(e))
        if op is None:
            raise TypeError(f"backstep cannot evaluate {type(e).__name__}")
        if isinstance(e, TensorOp):
            # The operand may have lost broadcast axes to SymPy's cancellation: restore them.
            args = [t.broadcast_to(a, concrete(s, self.sizes)) for a, s in zip(args, e.in_shapes)]
            return op.torch(t, args, concrete_params(e.params, self.sizes))
        return op.torch(t, args, {})


def concrete_params(params: dict, sizes: dict[str, int]) -> dict:
    """Parameters naming a dimension (onehot's classes, eye's n) get that dimension's size."""

    def size(v):
        return sizes.get(v, v) if isinstance(v, str) else v

    return {k: tuple(map(size, v)) if isinstance(v, tuple) else size(v) for k, v in params.items()}


# --- drawing points ----------------------------------------------------------------------------


def draw(torch, generator, shape: tuple[int, ...], domain: str, sizes: dict[str, int] | None = None):
    """A random array inside a domain, in float64."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    if domain.startswith("class_index"):
        classes = domain.split(":", 1)[1]
        count = int(classes) if classes.isdigit() else (sizes or {})[classes]
        return torch.floor(u * count).clamp(max=count - 1)
    if domain in ("spd", "invertible", "symmetric", "orthogonal") and (len(shape) != 2 or shape[0] != shape[1]):
        raise DomainError(f"a {domain} matrix must be square, not of shape {shape}")
    if domain == "spd":
        m = 2.0 * u - 1.0
        return m @ m.T / shape[0] + torch.eye(shape[0], dtype=torch.float64)
    if domain == "invertible":  # general and non-symmetric, but well conditioned
        return 2.0 * u - 1.0 + (1.0 + shape[0] ** 0.5) * torch.eye(shape[0], dtype=torch.float64)
    if domain == "symmetric":
        m = 2.0 * u - 1.0
        return (m + m.T) / 2
    if domain == "orthogonal":
        q, r = torch.linalg.qr(2.0 * u - 1.0)
        return q * torch.sign(torch.diagonal(r))
    if domain == "probability":
        return torch.softmax(4.0 * u - 2.0, dim=-1)
    if domain == "onehot":
        index = torch.argmax(u, dim=-1, keepdim=True)
        return torch.zeros(shape, dtype=torch.float64).scatter_(-1, index, 1.0)
    if domain == "positive":
        return 0.5 + 1.5 * u
    if domain == "nonnegative":
        return 2.0 * u
    if domain == "nonzero":
        sign = torch.where(torch.rand(shape, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
        return sign * (0.5 + 1.5 * u)
    return 4.0 * u - 2.0


def in_domain(torch, domain: str | None, value) -> bool:
    """Is an op's input value inside the op's declared domain (away from kinks and poles)?"""
    if domain is None or not torch.is_tensor(value):
        return True
    if domain == "positive":
        return bool((value > 1e-6).all())
    if domain in ("nonzero", "off_kink"):
        return bool((value.abs() > 1e-6).all())
    if domain == "off_pole":
        return bool((torch.cos(value).abs() > 1e-3).all())
    if domain == "spd":
        return bool(torch.linalg.det(value.detach()) > 1e-8)
    if domain == "invertible":
        return bool(torch.linalg.cond(value.detach()) < 1e8)
    return True


def op_input_domain(node, i: int) -> str | None:
    """The domain an op asks of its i-th input, at this node (pow's base depends on its exponent)."""
    declared = node.op.domain[i] if node.op.domain else None
    if declared == "pow_base":
        exponent = node.inputs[1]
        if exponent.is_const and exponent.value.is_integer:
            return "nonzero" if exponent.value.is_negative else None
        return "positive"
    return declared


def to_value(tensor) -> float | list:
    """A tensor as plain Python numbers, for the data model and JSON."""
    if tensor.dim() == 0:
        return float(tensor)
    return tensor.detach().tolist()


# --- --at ----------------------------------------------------------------------------------------


def parse_at_value(name: str, text: str):
    """`2`, `-1.5`, `[1, 2, 3]`, `[[1, 2], [3, 4]]` or `file.npy` -> a float64 tensor."""
    import json

    torch = torch_module()
    text = text.strip()
    if text.endswith(".npy"):
        try:
            import numpy as np

            array = np.load(text, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UsageError(f"--at {name}={text}: cannot read the array ({err})") from None
        return finite(name, text, torch.tensor(array, dtype=torch.float64))
    try:
        data = json.loads(text)
    except ValueError:
        raise UsageError(f"--at {name}={text}: not a number, a [list] of numbers, or a .npy file") from None
    try:
        value = torch.tensor(data, dtype=torch.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise UsageError(f"--at {name}={text}: not a rectangular array of numbers ({err})") from None
    return finite(name, text, value)


def finite(name: str, text: str, value):
    torch = torch_module()
    if not bool(torch.isfinite(value).all()):
        raise UsageError(f"--at {name}={text}: every number must be finite (no inf or nan)")
    return value


def sizes_from_values(derivation, values: dict[str, Any]) -> dict[str, int]:
    """Bind each symbolic dimension to the size the given values have; check fixed sizes."""
    from .shapes import SAMPLE_SIZES

    sizes: dict[str, int] = {}
    for v in derivation.variables:
        if v.name not in values:
            continue
        got = tuple(values[v.name].shape)
        if len(got) != len(v.shape):
            raise ShapeError(f"--at {v.name}: a value of shape {got}, but {v.name} has shape {tuple(v.shape)}")
        for want, have in zip(v.shape, got):
            if isinstance(want, int):
                if want != have:
                    raise ShapeError(f"--at {v.name}: shape {got}, but {v.name} has shape {tuple(v.shape)}")
            elif sizes.setdefault(want, have) != have:
                raise ShapeError(f"--at {v.name}: dimension {want} is {have} here but {sizes[want]} elsewhere")
    free = iter([s for s in SAMPLE_SIZES if s not in sizes.values()] + list(range(16, 100)))
    for d in derivation.dims:
        if d not in sizes:
            sizes[d] = next(free)
    return sizes


def evaluate_at(derivation, at: dict, seed: int = 0) -> None:
    """Fill in the number of every forward step, backward step and gradient at one point."""
    torch = torch_module()
    names = {v.name for v in derivation.variables}
    values = {}
    for name, raw in at.items():
        if name not in names:
            raise UsageError(f"--at names {name}, which is not a variable (its variables: {', '.join(sorted(names))})")
        values[name] = finite(name, str(raw), raw if torch.is_tensor(raw) else torch.tensor(raw, dtype=torch.float64))
    sizes = sizes_from_values(derivation, values)
    generator = torch.Generator().manual_seed(seed)
    for v in derivation.variables:
        if v.name not in values:
            values[v.name] = draw(torch, generator, concrete(v.shape, sizes), v.domain, sizes)
    env = dict(values)
    env[derivation.seed.name] = torch.ones(concrete(derivation.seed.shape, sizes), dtype=torch.float64)
    evaluator = Evaluator(env, sizes)
    for step in derivation.forward:
        value = evaluator(step.expr)
        if not bool(torch.isfinite(value).all()):
            raise DomainError(f"{step.name} is not finite at this point (a value outside the domain of {step.op})")
        env[step.name] = value
        step.value = to_value(value)
    for step in derivation.backward:
        shape = concrete(derivation.symbols.table[step.target].shape, sizes)
        value = torch.broadcast_to(evaluator(step.result), shape)
        env[step.target] = value
        step.value = to_value(value)
    for grad in derivation.gradients.values():
        value = torch.broadcast_to(evaluator(grad.expr), concrete(grad.shape, sizes))
        grad.value = to_value(value)
    derivation.at = {name: to_value(t) for name, t in values.items()}
    derivation.sizes = sizes
