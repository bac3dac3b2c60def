"""The numbers of a check: two sets of sizes, random points drawn at them inside every function's
domain (every symbol's value, and the adjoints torch autograd gives), a claim's values there, the
derivation re-run with some steps changed, and a small counterexample to show."""

from __future__ import annotations

from dataclasses import dataclass

from sympy import Expr

from ..errors import BackstepError, CannotEvaluate, DomainError, UsageError
from ..numeric import (
    MAX_DRAWS,
    MAX_ELEMENTS,
    TOLERANCE,
    Evaluator,
    draw_leaves,
    draw_seed,
    run_graph,
    run_steps,
    size_sets,
    to_value,
    torch_module,
)
from ..shapes import concrete
from .claims import Term
from .records import Helper, Scope, Target

# The sizes a claim is checked at: one array (a variable, an intermediate, a value a claim builds)
# may have at most MAX_ELEMENTS numbers (numeric's limit), and the formula's arrays MAX_BYTES
# together (float64), so that one line of a batch (`"shapes": {"X": [9000, 9000]}`) cannot take
# the grader's memory.
MAX_BYTES = 2**30


@dataclass
class Point:
    """One random point: the sizes, every symbol's value (forward and backward), autograd's adjoints."""

    sizes: dict[str, int]
    env: dict  # symbol name -> tensor: variables, seed, forward values, backward steps
    truth: dict  # node name -> the adjoint torch autograd gives
    leaves: dict  # variable name -> value (for showing a counterexample)


def _torch():
    return torch_module()


def _close(torch, a, b) -> bool:
    if a.shape != b.shape:
        try:
            a = torch.broadcast_to(a, b.shape)
        except RuntimeError:
            return False
    if not bool(torch.isfinite(a).all()):
        return False
    return TOLERANCE.close(torch, a, b)


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
        self.size_sets = size_sets(d.dims, ints)
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
        torch = _torch()
        d, graph = self.derivation, self.graph
        leaves = draw_leaves(torch, generator, d, sizes, rounded=rounded)
        nodes, bad = run_graph(torch, graph, leaves, sizes)
        if bad is not None:
            return None, bad
        seed_value = draw_seed(torch, generator, d, sizes, rounded)
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
        run_steps(d, env, sizes).run()
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
        torch = _torch()
        env = dict(point.env)
        for _ in run_steps(self.derivation, env, point.sizes).backward(replaced=changed):
            pass
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
