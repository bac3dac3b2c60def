"""A wrong claim diagnosed: candidate fixes (a transpose, a sign, a missing sum, a factor, ...) tried
until one equals the true gradient at every point; its kind and text are the named mistake. The
families built from the derivation's own steps (a chain-rule factor or term) are in chain.py."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from itertools import combinations

import sympy
from sympy import Expr

from .. import symbolic as sb
from ..derive import sum_to
from ..errors import CannotEvaluate, CannotPrint
from ..ops import MATMUL, OPS, TRANSPOSE
from ..printing import to_lang
from .chain import ChainRuleFamilies
from .claims import (
    ClaimShapeError,
    Term,
    _replace_at,
    _transposed,
    _walk,
    broadcast_sum_axes,
    broadcasts_to,
    infer_shapes,
    term_to_sympy,
)
from .points import _close, _torch
from .proof import normalize
from .records import Mistake, Scope

MAX_CANDIDATES = 400  # fixes tried for one wrong claim before it says it cannot name the mistake
# What a family may meet on its way (a candidate that cannot be evaluated or printed, one that does
# not type-check, numbers that overflow): that family names nothing, and the next one is tried.
_FAMILY_FAILURES = (
    CannotEvaluate,
    CannotPrint,
    RuntimeError,
    TypeError,
    ValueError,
    ZeroDivisionError,
    RecursionError,
    ClaimShapeError,
)


class Diagnosis(ChainRuleFamilies):
    """Try candidate fixes for a wrong claim; the first that makes it equal the truth everywhere."""

    def __init__(self, problem, target, term, shapes, claim_expr, values, truths, envs, scope: Scope):
        self.p = problem
        self.target = target
        self.term = term
        self.shapes = shapes
        self.claim_expr = claim_expr
        self.values = values
        self.truths = truths
        self.envs = envs
        self.name_of = scope.name_of
        self.shape_of = scope.shape_of
        self.torch = _torch()
        self.tried = 0

    def run(self) -> Mistake | None:
        families = [self.ratio, self.symmetric, self.chain, self.structural, self.broadcast_sum, self.extra_factor]
        for family in families:
            try:
                found = family()
            except _FAMILY_FAILURES:
                found = None
            if found is not None:
                return found
        return None

    # helpers

    def matches(self, expr: Expr) -> bool:
        self.tried += 1
        values = self.p.sampler.values(expr, self.envs, self.target)
        if isinstance(values, str):
            return False
        return all(_close(self.torch, v, t) for v, t in zip(values, self.truths))

    def shaped(self, term: Term):
        """(expr, shapes) of a candidate term that type-checks and has a usable shape, else None."""
        try:
            shapes = infer_shapes(term, self.shape_of)
        except ClaimShapeError:
            return None
        if not broadcasts_to(shapes[term], self.target.shape):
            return None
        return term_to_sympy(term, shapes, self.name_of), shapes

    def lang(self, expr: Expr) -> str:
        try:
            return to_lang(expr, self.p.derivation.symbols)
        except CannotPrint:  # an expression the printer has no rule for: SymPy's own text
            return str(expr)

    def written(self, term: Term) -> str:
        """A candidate fix as the student would write it (their names)."""
        try:
            shapes = infer_shapes(term, self.shape_of)
            return to_lang(term_to_sympy(term, shapes))
        except (ClaimShapeError, CannotPrint):
            return term.show()

    # families

    def ratio(self) -> Mistake | None:
        """claim = c · truth: a sign, a constant factor, or a dimension (a mean's 1/n)."""
        if self.values is None:
            return None
        torch = self.torch
        ratios = []
        start = 0
        sampler = self.p.sampler
        for k, _ in enumerate(sampler.size_sets):
            count = sampler.points_per_set if k == 0 else max(1, sampler.points_per_set - 1)
            vals = self.values[start : start + count]
            truths = self.truths[start : start + count]
            start += count
            flat_t = torch.cat([t.reshape(-1) for t in truths])
            flat_v = torch.cat([v.reshape(-1) for v in vals])
            if flat_t.numel() == 0:
                return None
            i = int(flat_t.abs().argmax())
            if abs(float(flat_t[i])) < 1e-9:
                return None
            c = float(flat_v[i] / flat_t[i])
            if c == 0 or not all(_close(torch, v / c, t) for v, t in zip(vals, truths)):
                return None
            ratios.append(c)
        if len(set(round(r, 9) for r in ratios)) == 1 or len(ratios) == 1:
            return self._constant(ratios[0])
        return self._dimension(ratios)

    def _constant(self, c: float) -> Mistake | None:
        frac = Fraction(c).limit_denominator(1000)
        if abs(float(frac) - c) > 1e-9 * max(1.0, abs(c)):
            # e or π, perhaps (our own number: nsimplify never sees the user's text)
            exact = sympy.nsimplify(c, [sympy.E, sympy.pi], tolerance=1e-10, rational=False)
            if exact.is_Float or abs(float(exact) - c) > 1e-9 * max(1.0, abs(c)):
                exact = sympy.Float(c, 12)
                desc = f"{c:.6g}"
            else:
                desc = to_lang(exact)
        else:
            exact = sympy.Rational(frac.numerator, frac.denominator)
            desc = str(frac)
        fixed = self.claim_expr / exact
        if not self.matches(fixed):
            return None
        fix = self.lang(fixed)
        if exact == -1:
            return Mistake("sign", "a sign error: the claim is the negative of the gradient", fix)
        sign = "a sign error and " if c < 0 else ""
        a = abs(frac)
        if a.denominator == 1 and a.numerator > 1 and exact.is_Rational:
            return Mistake(
                "constant_factor",
                f"{sign}an extra factor of {a.numerator}: the claim is {desc} × the gradient",
                fix,
            )
        if a.numerator == 1 and a.denominator > 1 and exact.is_Rational:
            hint = (
                " — the 2 that differentiating a square brings down" if a.denominator == 2 and self.p.has_square else ""
            )
            return Mistake(
                "constant_factor",
                f"{sign}a missing factor of {a.denominator}: the claim is {desc} × the gradient{hint}",
                fix,
            )
        return Mistake("constant_factor", f"{sign}a constant factor: the claim is {desc} × the gradient", fix)

    def _dimension(self, ratios: list[float]) -> Mistake | None:
        """c = ±(product of dimensions)^±1, the same at both sets of sizes: a mean's 1/n."""
        dims = self.p.derivation.dims
        sets = self.p.sampler.size_sets
        for r in range(1, min(3, len(dims)) + 1):
            for combo in combinations(dims, r):
                sizes = [float(sympy.prod([s[dm] for dm in combo])) for s in sets]
                for power in (-1, 1):
                    for sign in (1, -1):
                        if all(abs(c - sign * size**power) <= 1e-9 * abs(c) for c, size in zip(ratios, sizes)):
                            dim_expr = sympy.Mul(*[sb.Dim(dm) for dm in combo])
                            fixed = self.claim_expr / (sign * dim_expr**power)
                            if not self.matches(fixed):
                                continue
                            name = "·".join(combo)
                            over = name
                            name = name if r == 1 else f"({name})"
                            signed = "a sign error and " if sign < 0 else ""
                            if power == -1:
                                return Mistake(
                                    "mean_instead_of_sum",
                                    f"{signed}an extra factor 1/{name}: a mean over {over} where the gradient sums",
                                    self.lang(fixed),
                                )
                            return Mistake(
                                "sum_instead_of_mean",
                                f"{signed}a missing factor 1/{name}: the formula takes a mean over {over}, "
                                f"so its gradient carries 1/{name}",
                                self.lang(fixed),
                            )
        return None

    def structural(self) -> Mistake | None:
        """Transposes removed or added, a product's order swapped, another axis — one edit at a time.

        Edits that remove or reorder come first; then a missing transpose, innermost first, so that
        the fix names the smallest part; the whole claim transposed comes last."""
        root = self.term
        shapes = self.shapes or {}
        nodes = list(_walk(root))
        edits = []
        for path, t in nodes:
            if t.kind == "op" and t.op == TRANSPOSE.name:
                edits.append(
                    ("extra_transpose", f"an extra transpose: {t.show()} should be {t.args[0].show()}", path, t.args[0])
                )
        for path, t in nodes:
            if t.kind == "op" and t.op == MATMUL.name:
                a, b = t.args
                # B A, and the column-vector habit: A B where the row convention needs B Aᵀ (or Bᵀ A)
                for args in ((b, a), (b, _transposed(a)), (_transposed(b), a)):
                    new = Term("op", op=MATMUL.name, args=args)
                    message = f"the matrix product is in the wrong order: {t.show()} should be {new.show()}"
                    edits.append(("swapped_product", message, path, new))
        for path, t in nodes:
            params = dict(t.params)
            # (over one axis: a claim that reduces over several, axis=(0, 2), is not guessed at)
            if t.kind == "op" and OPS[t.op].param("keepdims") and isinstance(params.get("axis"), int):
                rank = len(shapes.get(t.args[0], ())) or 2
                for k in range(rank):
                    if k == params["axis"] % rank:
                        continue
                    new = replace(t, params=tuple(sorted({**params, "axis": k}.items())), text=None)
                    message = f"{t.op} over the wrong axis: axis={params['axis']} should be axis={k}"
                    edits.append(("wrong_axis", message, path, new))
        for path, t in nodes:
            if t.kind == "const" or (t.kind == "op" and t.op == TRANSPOSE.name):
                continue
            if t in shapes and len(shapes[t]) < 2:
                continue
            new = Term("op", op=TRANSPOSE.name, args=(t,))
            if path:
                edits.append(
                    ("missing_transpose", f"a missing transpose: {t.show()} should be {new.show()}", path, new)
                )
            else:
                message = "the claim is the transpose of the gradient (transpose the whole result)"
                edits.append(("transposed", message, path, new))
        for kind, message, path, new in edits:
            if self.tried > MAX_CANDIDATES:
                return None
            candidate = _replace_at(root, path, new)
            shaped = self.shaped(candidate)
            if shaped is None:
                continue
            expr, _ = shaped
            if self.matches(expr):
                return Mistake(kind, message, self.written(candidate))
        return None

    def broadcast_sum(self) -> Mistake | None:
        """A claim shaped like the broadcast result (n×h for a bias of shape (h,)): sum it back."""
        if self.shapes is None or self.claim_expr is None:
            return None
        have = self.shapes[self.term]
        axes = broadcast_sum_axes(have, self.target.shape)
        if axes is None:
            return None
        fixed = sum_to(self.claim_expr, have, self.target.shape)
        if not self.matches(fixed):
            return None
        where = ", ".join(f"{k} ({have[k]})" for k in axes)
        return Mistake(
            "missing_broadcast_sum",
            f"a forgotten sum over the broadcast {'axes' if len(axes) > 1 else 'axis'} {where}: "
            f"{self.target.node} is broadcast along it in the forward pass, so its gradient sums over it",
            self.lang(fixed),
        )

    def symmetric(self) -> Mistake | None:
        """A (or 2A) where A + Aᵀ belongs: the rule for xᵀAx used as if A were symmetric."""
        if self.claim_expr is None:
            return None
        for name, shape in self.shape_of.items():
            if len(shape) != 2 or shape[0] != shape[1] or name not in {v.name for v in self.p.derivation.variables}:
                continue
            a = sb.var(name)
            if a not in self.claim_expr.free_symbols:
                continue
            sym = a + sb.TransposeOp.build([a], [shape])
            for replacement, what in ((sym, name), (sym / 2, f"2·{name}")):
                fixed = self.claim_expr.xreplace({a: replacement})
                if self.matches(fixed):
                    return Mistake(
                        "symmetric_part",
                        f"{what} where {name} + {name}.T belongs: that holds only for a symmetric {name}",
                        self.lang(normalize(fixed, lambda s: len(self.shape_of.get(s.name, ())))),
                    )
        return None
