"""einsum: a sum of products over named indices, as NumPy's and torch's einsum of two operands;
and the equations of the batched matrix product, which `@` on operands of rank 3 and more is.

`einsum("nij,njk->nik", a, b)` is y_nik = Σ_j a_nij b_njk. Its vector-Jacobian product is again
an einsum: the gradient of an operand swaps the output's subscripts with that operand's,
ā = einsum("nik,njk->nij", ȳ, b). That holds when every index of an operand also appears in the
output or the other operand; an index summed within one operand alone (`"ij,jk->"`'s i) is
refused, as are "..." and repeated indices within one operand (a diagonal), with a message.
"""

from __future__ import annotations

import functools
import string

from sympy import Expr

from .. import symbolic as sb
from ..shapes import Shape, ShapeEnv, ShapeMismatch
from ..shapes import fmt_shape_plain as fmt
from .registry import register
from .spec import ByParams, Ctx, Op, Param, Printing

MAX_EQUATION = 64  # characters: two operands of at most 26 axes each is far more than any program


def parse_equation(equation: str, n_operands: int = 2) -> tuple[list[str], str]:
    """The operands' subscripts and the output's, the output made explicit as NumPy does (the
    indices that appear once, in alphabetical order) where the equation has no "->"."""
    eq = equation.replace(" ", "")
    if "." in eq:
        raise ShapeMismatch(f'einsum "{equation}": "..." is not supported; name every axis with a letter')
    if eq.count("->") > 1:
        raise ShapeMismatch(f'einsum "{equation}": more than one "->"')
    lhs, arrow, out = eq.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != n_operands:
        raise ShapeMismatch(
            f'einsum "{equation}": {n_operands} operands need {n_operands} comma-separated subscripts, '
            f"got {len(inputs)}"
        )
    for k, subs in enumerate(inputs, 1):
        bad = [c for c in subs if c not in string.ascii_letters]
        if bad:
            raise ShapeMismatch(f'einsum "{equation}": operand {k}\'s subscripts may only be letters, not {bad[0]!r}')
        repeated = sorted({c for c in subs if subs.count(c) > 1})
        if repeated:
            raise ShapeMismatch(
                f'einsum "{equation}": index {repeated[0]} repeats within operand {k} (a diagonal), '
                "which is not supported"
            )
    counts = {c: sum(s.count(c) for s in inputs) for c in "".join(inputs)}
    if not arrow:
        out = "".join(sorted(c for c, n in counts.items() if n == 1))
    for c in out:
        if c not in counts:
            raise ShapeMismatch(f'einsum "{equation}": output index {c} appears in no operand')
        if out.count(c) > 1:
            raise ShapeMismatch(f'einsum "{equation}": output index {c} repeats')
    for k, subs in enumerate(inputs, 1):
        others = out + "".join(s for j, s in enumerate(inputs, 1) if j != k)
        alone = [c for c in subs if c not in others]
        if alone:
            raise ShapeMismatch(
                f'einsum "{equation}": index {alone[0]} is summed within operand {k} alone; '
                f"sum that axis first (sum(x, axis={subs.index(alone[0])}))"
            )
    return inputs, out


def canonical(equation: str, n_operands: int = 2) -> str:
    inputs, out = parse_equation(equation, n_operands)
    return ",".join(inputs) + "->" + out


def einsum_shape(env: ShapeEnv, shapes, params) -> Shape:
    equation = params["equation"]
    inputs, out = parse_equation(equation, len(shapes))
    sizes: dict[str, int | str] = {}
    where: dict[str, int] = {}
    for k, (subs, shape) in enumerate(zip(inputs, shapes), 1):
        shape = env.resolve(shape)
        if len(subs) != len(shape):
            raise ShapeMismatch(
                f'einsum "{equation}": operand {k} is {fmt(shape)}, of rank {len(shape)}, but its subscripts '
                f'"{subs}" name {len(subs)} ax{"is" if len(subs) == 1 else "es"}'
            )
        for c, d in zip(subs, shape):
            if c not in sizes:
                sizes[c], where[c] = d, k
                continue
            try:
                sizes[c] = env.unify(sizes[c], d)
            except ShapeMismatch:
                raise ShapeMismatch(
                    f'einsum "{equation}": index {c} has size {sizes[c]} in operand {where[c]} and {d} in operand {k}'
                ) from None
    return env.resolve(tuple(sizes[c] for c in out))


class Einsum(sb.TensorOp):
    n_operands = 2
    param_names = ("equation",)

    @classmethod
    def eval(cls, a, b, *rest):
        # A number with no indices times the other operand in its own order is a product: the seed
        # ȳ = 1 of einsum("i,i->", a, b) gives ā = einsum(",i->i", 1, b) = b
        inputs, out = parse_equation(decode_equation(rest[0]))
        for number, other, subs in ((a, b, inputs[1]), (b, a, inputs[0])):
            if number.is_Number and subs == out and not inputs[0 if other is b else 1]:
                return number * other
        # A number factor comes out, as a textbook writes it: einsum(2 a, b) = 2 einsum(a, b)
        for i, operand in enumerate((a, b)):
            coeff, core = operand.as_coeff_Mul()
            if coeff != 1 and coeff.is_Number and not core.is_Number:
                operands = [a, b]
                operands[i] = core
                return coeff * cls(*operands, *rest)
        return None


def decode_equation(raw) -> str:
    """The equation as Einsum stores it among its args (a Symbol in a Tuple)."""
    return sb.decode_param("subscripts", raw)


def einsum_of(operands, shapes, equation: str) -> Expr:
    return Einsum.build(list(operands), list(shapes), equation=canonical(equation, len(operands)))


def einsum_vjp(i: int):
    """The gradient of operand i: the einsum of ȳ and the other operand into operand i's subscripts."""

    def rule(c: Ctx) -> Expr:
        inputs, out = parse_equation(c.params["equation"])
        other = 1 - i
        return einsum_of([c.g, c.args[other]], [c.out_shape, c.shapes[other]], f"{out},{inputs[other]}->{inputs[i]}")

    return rule


# --- the batched matrix product ------------------------------------------------------------------

BATCH_LETTERS = "nopqrstuvw"  # batch axes; the matrix axes are i, j, k as in y_nik = Σ_j a_nij b_njk


def is_batched(shapes) -> bool:
    """`@` of these shapes is a batched product (an operand of rank 3 or more), not a matrix one."""
    return len(shapes) == 2 and max(len(s) for s in shapes) > 2 and min(len(s) for s in shapes) >= 1


def batched_equation(shapes) -> str:
    """torch.matmul's product of these ranks as an einsum: the batch axes (right-aligned, as
    torch.matmul broadcasts them) are shared; a 1-d operand is a vector (no i or no k)."""
    ra, rb = (len(s) for s in shapes)
    batch = BATCH_LETTERS[: max(ra, rb) - 2]
    a = batch[len(batch) - max(ra - 2, 0) :] + ("ij" if ra >= 2 else "j")
    b = batch[len(batch) - max(rb - 2, 0) :] + ("jk" if rb >= 2 else "j")
    out = batch + ("i" if ra >= 2 else "") + ("k" if rb >= 2 else "")
    return f"{a},{b}->{out}"


def batched_matmul_shape(env: ShapeEnv, shapes) -> Shape:
    a, b = (env.resolve(s) for s in shapes)
    if len(a) > len(BATCH_LETTERS) + 2 or len(b) > len(BATCH_LETTERS) + 2:
        raise ShapeMismatch(f"@ of {fmt(a)} and {fmt(b)}: at most {len(BATCH_LETTERS)} batch axes")
    ba, bb = a[:-2], b[:-2]
    for x, y in zip(reversed(ba), reversed(bb)):
        if x != y and (x == 1 or y == 1):
            raise ShapeMismatch(
                f"{fmt(a)} @ {fmt(b)}: batch axes of size 1 broadcast against {y if x == 1 else x} are not "
                "supported; give both operands the same batch axes (broadcast_to)"
            )
        try:
            env.unify(x, y)
        except ShapeMismatch as err:
            raise ShapeMismatch(f"{fmt(a)} @ {fmt(b)}: batch axes differ ({err})") from None
    try:
        return einsum_shape(env, [a, b], {"equation": batched_equation([a, b])})
    except ShapeMismatch as err:
        if len(a) >= 1 and len(b) >= 1:
            inner_b = b[-2] if len(b) >= 2 else b[0]
            raise ShapeMismatch(f"{fmt(a)} @ {fmt(b)}: inner dimensions {a[-1]} and {inner_b} differ") from None
        raise err


@functools.lru_cache(maxsize=256)
def torch_grad_fn(equation: str, as_matmul: bool = False) -> str | None:
    """The grad_fn name the installed torch gives this product of small tensors (it differs by
    equation and version: ViewBackward0, UnsafeViewBackward0, MulBackward0…); None without torch."""
    try:
        import torch
    except ImportError:
        return None
    inputs, _ = parse_equation(equation)
    size = {c: 2 + k for k, c in enumerate(dict.fromkeys("".join(inputs)))}
    tensors = [torch.ones([size[c] for c in subs], dtype=torch.float64, requires_grad=True) for subs in inputs]
    out = tensors[0] @ tensors[1] if as_matmul else torch.einsum(equation, *tensors)
    return out.grad_fn.name() if out.grad_fn is not None else None


def einsum_grad_fn(ranks, consts, params) -> str:
    return torch_grad_fn(params["equation"]) or "ViewBackward0"


def latex_einsum(operands, params) -> str:
    """[y]_{nik} = Σ_j [a]_{nij} [b]_{njk}: the entries in index notation."""
    inputs, out = parse_equation(params["equation"])
    summed = "".join(c for c in dict.fromkeys("".join(inputs)) if c not in out)
    total = rf"\textstyle\sum_{{{summed}}} " if summed else ""
    body = total + r"\,".join(rf"\left[{op}\right]_{{{subs}}}" for op, subs in zip(operands, inputs))
    return rf"\left[{body}\right]_{{{out}}}" if out else body


def einsum_torch(torch, args, p):
    """torch.einsum, a number operand (a seed of 1 that SymPy made a number) as a 0-d tensor."""
    dtype = next((a.dtype for a in args if torch.is_tensor(a)), torch.float64)
    return torch.einsum(p["equation"], *[a if torch.is_tensor(a) else torch.tensor(a, dtype=dtype) for a in args])


SUBSCRIPTS = Param("equation", "subscripts", required=True, leading=True)

register(
    Op(
        name="einsum",
        example='A: (n, i, j); B: (n, j, k)\nsum(einsum("nij,njk->nik", A, B))',
        syntax="einsum",
        arity=2,
        positive_through=True,
        shape=einsum_shape,
        sympy=lambda args, shapes, p: einsum_of(args, shapes, p["equation"]),
        # ā = einsum(out,b->a)(ȳ, b), b̄ = einsum(out,a->b)(ȳ, a): the output's subscripts swapped with the operand's
        backward=(einsum_vjp(0), einsum_vjp(1)),
        torch=einsum_torch,
        torch_aliases=("torch.einsum",),
        grad_fn=einsum_grad_fn,
        summary='sum of products over named indices, einsum("nij,njk->nik", a, b) as NumPy and torch '
        "(two operands); ā = einsum of ȳ and b into a's subscripts",
        title={"en": "index contraction (einsum)", "zh": "爱因斯坦求和"},
        arg_names=("a", "b"),
        parameters=(SUBSCRIPTS,),
        sympy_class=Einsum,
        printing=Printing(
            text='einsum("{equation}", {0}, {1})',
            latex=ByParams(latex_einsum),
            lang='einsum("{equation}", {0}, {1})',
            torch='torch.einsum("{equation}", {0}, {1})',
        ),
    )
)
