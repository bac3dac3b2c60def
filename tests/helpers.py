"""Helpers several test files share: a time limit, how to spell an op of the table, and torch's conventions.

- ``time_limit``: a block that hangs fails the test instead of hanging the suite;
- ``spell``, ``param_candidates``, ``number_in_domain``: how the generated tests
  (tests/test_ops_generated.py) and the property tests (tests/test_property.py) write a formula
  applying an op of ``backstep.ops.OPS`` and choose its parameters and constant operands;
- ``torch_grad_fn``, ``check_grad_fn``, ``check_kink``: what the installed torch does, asked at test
  time, so that no test assumes one torch version. A grad_fn name or a convention at a kink that
  differs from the op table's is a ``TorchConventionWarning`` (a note, as in verification), not a
  failure; whether an op is differentiable and its derivative away from the kinks must agree.
"""

from __future__ import annotations

import math
import signal
import threading
import warnings
from contextlib import contextmanager

import torch

from backstep import derive
from backstep import parser as backstep_parser
from backstep.numeric import Evaluator
from backstep.ops import OPS, Op
from backstep.ops.joins import is_variadic

# --- a time limit ----------------------------------------------------------------------------------


class Hung(BaseException):
    """The test's own alarm. Not an Exception, so that no `except Exception` in the code under test
    (around the user's code, say) takes it for an error of its own."""


@contextmanager
def time_limit(seconds: float, what: str = "the block"):
    """Fail with `Hung` when the block runs longer than `seconds` (SIGALRM: main thread only; elsewhere
    the block runs unguarded)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise Hung(f"{what} was still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- spelling an op --------------------------------------------------------------------------------

# Ops whose spelling is not their `syntax` field used as a function name or an infix operator.
EXPLICIT_SPELLINGS = {
    "neg": ("-{0}", "unary minus: its syntax field '-x' is a description, not a token to put between operands"),
    "transpose": ("{0}.T", "a postfix attribute, not a function or an infix operator"),
}

# Tokens the parser reads between two operands (`a + b`, `a > b`).
INFIX_TOKENS = set(backstep_parser.BINARY.values()) | set(getattr(backstep_parser, "COMPARE", {}).values())

# where's condition holds where it is positive: the tests feed it ±1 (or a comparison), away from 0.
INDICATOR_INPUTS = {"where": 0}

# Values of keyword parameters that are neither an axis, a bool, a float with a default nor a declared
# choice: by name. A new kind of parameter must be added here (or its op is not covered).
PARAM_VALUES = {
    "min": [None, -0.5, 0.0],  # clamp's bounds: one-sided both ways, and both
    "max": [None, 0.75],
    "classes": [4],  # a size that is none of the test shapes' 2, 3, 5, 7
    "n": [4],
    "axis1": [0, -1],  # swapaxes's two axes: the first and last, the second and second-to-last
    "axis2": [1, -2],
    "correction": [1, 0],  # var's and std's: torch's default (Bessel's) and the biased one
    # einsum's, for two operands of one shape: dot, elementwise, Frobenius, A Bᵀ, a transpose, rank 3
    "axes": [None, (1, 0), (0, 2, 1), (2, 0, 1)],  # transpose(x, axes): reversed, a matrix's, two of rank 3
    "equation": ["i,i->", "i,i->i", "ij,ij->", "ij,kj->ik", "ij,ij->ji", "ijk,ijk->ik"],
}
AXES = [0, 1, 2, -1, -2]


def spell(op: Op, operands: list[str], params, grouped: bool = False) -> str | None:
    """The formula applying `op` to operand texts (names, numbers, formulas), or None if unknown.
    Parameters equal to their default are left out; `grouped` puts an infix expression in parentheses
    (to nest it in another one)."""
    params = dict(params)
    if op.name in EXPLICIT_SPELLINGS:
        return EXPLICIT_SPELLINGS[op.name][0].format(*operands)
    if is_variadic(op):  # cat((a, b), axis=1): the operands are one tuple
        operands = ["(" + ", ".join(operands) + ")"]
    if op.syntax.isidentifier():
        keywords = [f"{k}={v!r}" for k, v in params.items() if v != op.params.get(k)]
        return f"{op.syntax}({', '.join(list(operands) + keywords)})"
    if op.arity == 2 and op.syntax in INFIX_TOKENS and not params:
        text = f"{operands[0]} {op.syntax} {operands[1]}"
        return f"({text})" if grouped else text
    return None


def param_candidates(op: Op, name: str, default, axes: list[int] = AXES) -> list | None:
    """Every value a generic test gives a keyword parameter, or None when it cannot know them."""
    choices = getattr(op, "choices", None) or {}
    if name in choices:
        return list(choices[name])
    if isinstance(default, bool):
        return [False, True]
    if name in ("axis", "dim") and (default is None or isinstance(default, int)):
        return ([None] if default is None else []) + list(axes)
    if isinstance(default, float):
        return [default, 0.3]
    if name in PARAM_VALUES:
        return list(PARAM_VALUES[name])
    return None


def pow_base_domain(exponent: float | None) -> str | None:
    """Where pow's base may be drawn, given its exponent (a number, or None for an array)."""
    if exponent is not None and float(exponent).is_integer():
        return "nonzero" if exponent < 0 else None
    return "positive"


def number_in_domain(domain: str | None, value: float) -> bool:
    """May a constant operand take this value in this domain (ops.Op.domain)?"""
    if domain == "positive":
        return value > 0
    if domain in ("nonzero", "off_kink"):
        return value != 0
    if domain == "off_pole":
        return abs(math.cos(value)) > 1e-3
    if domain == "indicator":
        return value in (0, 1, -1)
    return domain in (None, "off_tie", "off_bounds")


# --- what the installed torch does -----------------------------------------------------------------


class TorchConventionWarning(UserWarning):
    """The installed torch names a grad_fn, or picks a derivative at a kink, unlike the op table."""


def grad_fn_of(out: torch.Tensor) -> str | None:
    return out.grad_fn.name() if out.grad_fn is not None else None


def torch_grad_fn(fn, *shapes: tuple) -> str | None:
    """The grad_fn name the installed torch gives fn(*leaves), for float64 leaves of these shapes."""
    gen = torch.Generator().manual_seed(0)
    leaves = [torch.rand(s, generator=gen, dtype=torch.float64).add_(0.5).requires_grad_(True) for s in shapes]
    return grad_fn_of(fn(*leaves))


def grad_fn_names(table: str, fn, *shapes: tuple) -> set[str]:
    """The grad_fn names a step may show: the op table's, or the one the installed torch gives fn(*leaves)."""
    return {table, torch_grad_fn(fn, *shapes)}


def check_grad_fn(declared: str | None, actual: str | None, what: str) -> None:
    """The op table's grad_fn against the installed torch's: both say whether there is one; a name that
    differs is a TorchConventionWarning (torch renames them between versions)."""
    assert (declared is None) == (actual is None), f"{what}: the op table says {declared}, torch says {actual}"
    if declared != actual:
        warnings.warn(
            TorchConventionWarning(f"{what}: the op table says {declared}, torch {torch.__version__} says {actual}"),
            stacklevel=2,
        )


# Ops with a kink where their two inputs tie that declare no domain for it (random points never tie).
TIE_OPS = ("maximum", "minimum")


def kink_cases() -> list[tuple[str, dict, str]]:
    """(op, params, id) for every op with a kink: at 0 (off_kink), at clamp's bounds, at a tie (off_tie,
    TIE_OPS)."""
    out = []
    for name, op in sorted(OPS.items()):
        if "off_kink" in op.domain:
            out.append((name, dict(op.params), name))
        if "off_bounds" in op.domain:
            for lo, hi in [(0.0, None), (None, 0.75), (-0.5, 0.75)]:
                out.append((name, {"min": lo, "max": hi}, f"{name}-min={lo}-max={hi}"))
        if ("off_tie" in op.domain or name in TIE_OPS) and op.arity == 2 and op.elementwise:
            out.append((name, dict(op.params), f"{name}-tie"))
    return out


def kink_points(name: str, params: dict, shape: tuple) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    """(inputs, which entries are at the kink) for each kink of the op; entries 1 and 3 of a vector lie
    on either side of it, away from it."""
    op = OPS[name]
    if "off_tie" in op.domain or name in TIE_OPS:
        a = torch.linspace(-1.0, 1.5, math.prod(shape), dtype=torch.float64).reshape(shape)
        b = a.clone()
        if shape:
            b[1], b[3] = a[1] + 1.5, a[3] - 2.0
        return [([a, b], a == b)]
    kinks = [b for b in (params.get("min"), params.get("max")) if b is not None] or [0.0]
    points = []
    for kink in kinks:
        x = torch.full(shape, kink, dtype=torch.float64)
        if shape:
            x[1], x[3] = kink - 1.5, kink + 2.0
        points.append(([x], x == kink))
    return points


def torch_gradients(op: Op, inputs: list[torch.Tensor], params: dict, upstream: torch.Tensor) -> list[torch.Tensor]:
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    out = op.torch(torch, leaves, params)
    if not out.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(out, leaves, upstream, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]


def check_kink(name: str, params: dict, shape: tuple) -> None:
    """backstep's derivative of the op at its kinks, against the installed torch's:

    - away from the kink, equal to the last bits of float64;
    - at the kink, between the one-sided derivatives (measured with torch just beside the kink): a
      derivative some convention gives there; at a tie of several inputs, the partial derivatives add
      up to the derivative along the tie (measured by central differences of torch's function);
    - a value other than torch's own choice at the kink is a TorchConventionWarning."""
    op = OPS[name]
    names = [chr(ord("a") + i) for i in range(op.arity)]
    source = spell(op, names, {k: v for k, v in params.items() if v != op.params.get(k)})
    d = derive(source, shapes=dict.fromkeys(names, shape))
    for inputs, at_kink in kink_points(name, params, shape):
        upstream = torch.full(shape, 0.75, dtype=torch.float64)
        want = torch_gradients(op, inputs, params, upstream)
        seed = upstream if shape else torch.ones((), dtype=torch.float64)
        evaluate = Evaluator({**dict(zip(names, inputs)), d.seed.name: seed}, {})
        where = f"{source} at {[x.tolist() for x in inputs]}"
        total = torch.zeros_like(upstream)
        for i, x in enumerate(inputs):
            got = torch.broadcast_to(evaluate(d.gradients[names[i]].expr) * (1.0 if shape else 0.75), x.shape)
            away = ~at_kink
            assert torch.allclose(got[away], want[i][away], rtol=1e-12, atol=0.0), (
                f"∂/∂{names[i]} of {where} away from the kink: backstep {got.tolist()}, torch {want[i].tolist()}"
            )
            beside = []
            for step in (-1e-7, 1e-7):
                moved = [y + step if k == i else y for k, y in enumerate(inputs)]
                beside.append(torch_gradients(op, moved, params, upstream)[i][at_kink])
            low, high = torch.minimum(*beside), torch.maximum(*beside)
            slack = 1e-6 * (1 + low.abs() + high.abs())
            inside = bool(((got[at_kink] >= low - slack) & (got[at_kink] <= high + slack)).all())
            assert inside, (
                f"∂/∂{names[i]} of {where} at the kink: backstep {got[at_kink].tolist()}, outside the one-sided "
                f"derivatives {low.tolist()} and {high.tolist()}"
            )
            total = total + got
            if not torch.equal(got[at_kink], want[i][at_kink]):
                warnings.warn(
                    TorchConventionWarning(
                        f"∂/∂{names[i]} of {where} at the kink: backstep {got[at_kink].tolist()}, "
                        f"torch {torch.__version__} {want[i][at_kink].tolist()}"
                    ),
                    stacklevel=2,
                )
        if len(inputs) > 1:
            h = 1e-6
            up, down = (op.torch(torch, [x + s for x in inputs], params) for s in (h, -h))
            along = upstream * (up - down) / (2 * h)
            assert torch.allclose(total[at_kink], along[at_kink], rtol=1e-6, atol=1e-9), (
                f"{where}: at the tie the partial derivatives add up to {total[at_kink].tolist()}, "
                f"the derivative along the tie is {along[at_kink].tolist()}"
            )


def value_of_program(text: str, shapes: dict, env: dict):
    """The value of a program (a gradient's `expr` as JSON prints it) at the point `env`."""
    back = derive(text, shapes=shapes)
    values = dict(env)
    for step in back.forward:
        values[step.name] = Evaluator(values, {})(step.expr)
    return values[back.output]
