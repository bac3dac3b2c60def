"""The numbers of a check: two sets of sizes, random points drawn at them inside every function's
domain (every symbol's value, and the adjoints torch autograd gives), a claim's values there, the
derivation re-run with some steps changed, and a small counterexample to show."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sympy import Expr

from ..errors import BackstepError, CannotEvaluate, DomainError, UsageError
from ..shapes import concrete, free_sizes
from .claims import Term
from .records import Helper, Scope, Target

RTOL, ATOL = 1e-7, 1e-9
MAX_DRAWS = 200
# The sizes a claim is checked at: one array (a variable, an intermediate, a value a claim builds)
# may have at most MAX_ELEMENTS numbers, and the formula's arrays MAX_BYTES together (float64), so
# that one line of a batch (`"shapes": {"X": [9000, 9000]}`) cannot take the grader's memory.
MAX_ELEMENTS = 10**7
MAX_BYTES = 2**30
# A second set of sizes, each different from the first set's size of the same dimension, so that a
# factor such as 1/n (a mean) can be told from a constant.
SIZES_B = [3, 4, 7, 5, 6, 2, 9, 8, 11, 13, 10, 14, 12, 16, 17, 18, 19]


@dataclass
class Point:
    """One random point: the sizes, every symbol's value (forward and backward), autograd's adjoints."""

    sizes: dict[str, int]
    env: dict  # symbol name -> tensor: variables, seed, forward values, backward steps
    truth: dict  # node name -> the adjoint torch autograd gives
    leaves: dict  # variable name -> value (for showing a counterexample)


def _torch():
    from ..numeric import torch_module

    return torch_module()


def _close(torch, a, b) -> bool:
    if a.shape != b.shape:
        try:
            a = torch.broadcast_to(a, b.shape)
        except RuntimeError:
            return False
    if not bool(torch.isfinite(a).all()):
        return False
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL * max(1.0, scale)))


class Sampler:
    """The points one formula is checked at, drawn once (on first use) and shared by its claims."""

    def __init__(
        self,
        derivation,
        graph,
        adjoint: dict[str, str],
        *,
        points: int = 3,
        seed: int = 0,
        max_elements: int | None = MAX_ELEMENTS,
        max_bytes: int | None = MAX_BYTES,
    ):
        d = self.derivation = derivation
        self.graph = graph
        self.adjoint = adjoint  # node -> canonical symbol of its adjoint: the nodes autograd gives a truth
        self.points_per_set = points
        self.seed = seed
        self._points: list[Point] | None = None
        ints = {x for n in graph.nodes for x in n.shape if isinstance(x, int)}
        # distinct sizes for any number of dimensions (zip stops at the last dimension)
        free_a = free_sizes(ints)
        extra_b = (s for s in itertools.count(20) if s not in ints)
        free_b = itertools.chain((s for s in SIZES_B if s not in ints), extra_b)
        self.size_sets = [dict(zip(d.dims, free_a))]
        if d.dims:
            self.size_sets.append(dict(zip(d.dims, free_b)))
        self.max_elements = max_elements
        self._check_sizes(max_elements, max_bytes)

    def _check_sizes(self, max_elements: int | None, max_bytes: int | None) -> None:
        """Refuse (UsageError), before any number is drawn, a formula whose arrays are too big."""
        nodes = [n for n in self.graph.nodes if n.kind != "const"]
        for sizes in self.size_sets:
            total = 0
            for n in nodes:
                count = _elements(n.shape, sizes)
                if max_elements is not None and count > max_elements:
                    raise UsageError(
                        f"{n.name} would have {count:,} elements ({_times(n.shape, sizes)}); the limit is "
                        f"{max_elements:,} per array: give smaller sizes (the gradient's form does not depend on "
                        "them; a dimension name such as n is checked at small sizes)"
                    )
                total += count
            if max_bytes is not None and 8 * total > max_bytes:
                raise UsageError(
                    f"the formula's arrays would take {8 * total / 2**30:.1f} GiB in float64 ({total:,} numbers); "
                    f"the limit is {max_bytes / 2**30:g} GiB: give smaller sizes (a dimension name such as n is "
                    "checked at small sizes)"
                )

    @property
    def points(self) -> list[Point]:
        if self._points is None:
            torch = _torch()
            generator = torch.Generator().manual_seed(self.seed)
            pts = []
            for k, sizes in enumerate(self.size_sets):
                count = self.points_per_set if k == 0 else max(1, self.points_per_set - 1)
                pts += [self.make_point(sizes, generator) for _ in range(count)]
            self._points = pts
        return self._points

    def make_point(self, sizes: dict[str, int], generator, rounded: bool = False) -> Point:
        """Leaves inside their domains (redrawn until every op's input is), and a truth that is finite."""
        bad = None
        for attempt in range(MAX_DRAWS):
            point, bad = self._try_point(sizes, generator, rounded and attempt < MAX_DRAWS // 2)
            if point is not None:
                return point
        raise DomainError(f"could not draw a point inside every function's domain in {MAX_DRAWS} tries: {bad}")

    def _try_point(self, sizes: dict[str, int], generator, rounded: bool) -> tuple[Point | None, str | None]:
        from ..numeric import Evaluator, draw
        from ..verify import _run

        torch = _torch()
        d, graph = self.derivation, self.graph
        leaves = {}
        for v in d.variables:
            value = draw(torch, generator, concrete(v.shape, sizes), v.domain)
            if rounded:
                value = torch.round(value * 10) / 10
            leaves[v.name] = value.requires_grad_(v.requires_grad)
        nodes, bad = _run(torch, graph, leaves, sizes)
        if bad is not None:
            return None, bad
        if d.seed.is_one:
            seed_value = torch.ones((), dtype=torch.float64)
        else:
            seed_value = draw(torch, generator, concrete(d.seed.shape, sizes), "real")
            if rounded:
                seed_value = torch.round(seed_value * 10) / 10
        out = nodes[graph.output.id]
        if not bool(torch.isfinite(out).all()):
            return None, "the formula's value is not finite there (it overflows)"
        if out.requires_grad:
            out.backward(gradient=seed_value)
        truth = {}
        for n in graph.nodes:
            if n.name in self.adjoint:
                t = nodes[n.id]
                truth[n.name] = (
                    seed_value.expand(t.shape)
                    if n is graph.output
                    else (t.grad.detach() if t.grad is not None else torch.zeros_like(t.detach()))
                )
                if not bool(torch.isfinite(truth[n.name]).all()):
                    return None, f"the gradient of {n.name} is not finite there (it overflows)"
        env = {name: t.detach() for name, t in leaves.items()}
        env[d.seed.name] = seed_value
        evaluator = Evaluator(env, sizes)
        for step in d.forward:
            env[step.name] = evaluator(step.expr)
        for step in d.backward:
            shape = concrete(d.symbols.table[step.target].shape, sizes)
            env[step.target] = torch.broadcast_to(evaluator(step.result), shape)
        return Point(sizes, env, truth, {k: v.detach() for k, v in leaves.items()}), None

    def truth_value(self, point: Point, target: Target):
        torch = _torch()
        shape = concrete(target.shape, point.sizes)
        if target.kind == "adjoint":
            return point.truth[target.node]
        return torch.broadcast_to(point.env[target.node], shape)

    def env_with(self, point: Point, helpers: list[Helper], cache: dict | None = None) -> dict:
        """The point's values with the student's helpers evaluated. With `cache` (a scope's
        env_cache) a helper is evaluated once per point, not once per line that follows it."""
        if not helpers:
            return point.env
        from ..numeric import Evaluator

        torch = _torch()
        done, env = 0, None
        if cache is not None and id(point) in cache:
            kept, done, env = cache[id(point)]
            if kept is not point or done > len(helpers):
                done, env = 0, None
        env = dict(point.env) if env is None else env
        for h in helpers[done:]:
            env[h.name] = torch.broadcast_to(Evaluator(env, point.sizes)(h.expr), concrete(h.shape, point.sizes))
        if cache is not None:
            cache[id(point)] = (point, len(helpers), env)
        return env

    def sizes_text(self) -> list[dict]:
        return [dict(s) for s in self.size_sets]

    def rerun(self, point: Point, changed: dict[int, Expr], target: Target):
        """The target's adjoint at a point when some backward steps' results are replaced."""
        from ..numeric import Evaluator

        torch = _torch()
        d = self.derivation
        first = min(changed)
        env = {k: v for k, v in point.env.items()}
        evaluator = Evaluator(env, point.sizes)
        for step in d.backward:
            if step.index < first:
                continue
            expr = changed.get(step.index, step.result)
            shape = concrete(d.symbols.table[step.target].shape, point.sizes)
            env[step.target] = torch.broadcast_to(evaluator(expr), shape)
        return torch.broadcast_to(env[target.symbol], concrete(target.shape, point.sizes))

    def check_claim_sizes(self, shapes: dict[Term, tuple]) -> None:
        """A claim that would build an array over the limit (x.T @ x for a long x) is refused."""
        if self.max_elements is None:
            return
        for term, shape in shapes.items():
            for sizes in self.size_sets:
                count = _elements(shape, sizes)
                if count > self.max_elements:
                    raise UsageError(
                        f"the claim builds {term.show()} of {count:,} elements ({_times(shape, sizes)}); the limit "
                        f"is {self.max_elements:,} per array: give smaller sizes"
                    )

    def values(self, expr: Expr, envs: list[dict], target: Target) -> list | str:
        """The claim's value at every point (`envs`: the points' values, helpers included), or why it
        has none."""
        from ..numeric import Evaluator

        torch = _torch()
        out = []
        for p, env in zip(self.points, envs):
            try:
                v = Evaluator(env, p.sizes)(expr)
                v = torch.broadcast_to(v, concrete(target.shape, p.sizes))
            except (CannotEvaluate, RuntimeError, TypeError, ValueError, KeyError, ArithmeticError) as err:
                return f"the claim cannot be evaluated ({err})"
            out.append(v)
        return out

    def counterexample(self, target: Target, claim_expr: Expr, scope: Scope) -> dict | None:
        """A small point (small sizes, numbers with one decimal) where the claim and the truth differ."""
        from ..numeric import Evaluator, to_value

        torch = _torch()
        d = self.derivation
        generator = torch.Generator().manual_seed(self.seed + 7919)
        tried = [dict.fromkeys(d.dims, 1)] + self.size_sets[:1] if d.dims else self.size_sets[:1]
        for sizes in tried:
            for _ in range(8):
                try:
                    p = self.make_point(sizes, generator, rounded=True)
                    env = self.env_with(p, scope.helpers)
                    v = torch.broadcast_to(Evaluator(env, sizes)(claim_expr), concrete(target.shape, sizes))
                except (BackstepError, CannotEvaluate, RuntimeError, TypeError, ValueError, ArithmeticError):
                    continue
                t = self.truth_value(p, target)
                if _close(torch, v, t) or not bool(torch.isfinite(v).all()):
                    continue  # a point where the claim is inf or NaN shows nothing one can print or read
                values = {k: to_value(x) for k, x in p.leaves.items()}
                if not d.seed.is_one:
                    values[d.seed.name] = to_value(p.env[d.seed.name])
                return {
                    "sizes": {k: sizes[k] for k in d.dims},
                    "values": values,
                    "claim": to_value(v),
                    "expected": to_value(t),
                }
        return None


def _elements(shape: tuple, sizes: dict[str, int]) -> int:
    count = 1
    for d in shape:
        count *= d if isinstance(d, int) else sizes.get(d, 1)
    return count


def _times(shape: tuple, sizes: dict[str, int]) -> str:
    return " × ".join(str(d if isinstance(d, int) else sizes.get(d, d)) for d in shape) or "a scalar"
