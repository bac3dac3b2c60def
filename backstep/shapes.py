"""Shapes with symbolic dimensions, and their unification.

A shape is a tuple whose entries are ints (a known size) or strs (a symbolic dimension such as
``"n"``). ``()`` is a scalar. Where a user gives no shape, the graph builder creates fresh
dimensions and ``ShapeEnv.unify`` makes them equal as the ops demand (``x@W1`` makes the
columns of x the rows of W1), the way a type checker unifies type variables.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

Shape = tuple  # tuple[int | str, ...]

# Names given, in this order, to inferred dimensions (the letters a textbook uses).
NICE_DIM_NAMES = ["n", "d", "h", "o", "m", "k", "p", "q", "r", "s", "t", "u", "c", "e"]

# Sizes a symbolic dimension takes when backstep evaluates numbers: distinct (the primes first), so
# that no two dimensions are equal and no matrix is square (a missing transpose cannot hide).
# Past these, 16, 17, 18, ...: any number of dimensions gets distinct sizes, each as small as can be.
SAMPLE_SIZES = [2, 3, 5, 7, 11, 13, 4, 6, 9, 10, 8, 12, 14, 15]


def free_sizes(taken: Iterable[int] = ()) -> Iterator[int]:
    """SAMPLE_SIZES, then 16, 17, ... without end, skipping the sizes in `taken`."""
    taken = set(taken)
    return (s for s in itertools.chain(SAMPLE_SIZES, itertools.count(16)) if s not in taken)


def sample_sizes(dims: Iterable[str], fixed: dict[str, int] | None = None) -> dict[str, int]:
    """A distinct size for every dimension not in `fixed` (which keeps its own), however many there are."""
    sizes = dict(fixed or {})
    free = free_sizes(sizes.values())
    for d in dims:
        if d not in sizes:
            sizes[d] = next(free)
    return sizes


class ShapeMismatch(Exception):
    """Raised by unification; the caller turns it into a ShapeError with the place."""


class ShapeEnv:
    """Union-find over symbolic dimensions; an int binds a dimension to a size.

    A dimension may also be an integer-linear expression of one name, `4*H` or `H+1` (from an
    annotation such as `W: (D, 4*H)`): it becomes a number as soon as its name does, and a
    number it must equal fixes its name (`4*H` = 12 makes H 3). Relations between two names
    (`4*H` = `D`) are not represented: unifying them is a mismatch, never a guess."""

    def __init__(self) -> None:
        self._parent: dict[str, int | str] = {}
        self._fresh = 0
        self.fresh_dims: set[str] = set()
        self.linear: dict[str, tuple[int, str, int]] = {}  # "4*H+1" -> (4, "H", 1)

    def fresh(self) -> str:
        self._fresh += 1
        name = f"?{self._fresh}"
        self.fresh_dims.add(name)
        return name

    def linear_dim(self, coef: int, base: str, const: int) -> int | str:
        """The dimension coef*base + const (coef >= 1): the name itself for 1*base + 0."""
        if coef == 1 and const == 0:
            return base
        text = linear_text(coef, base, const)
        self.linear[text] = (coef, base, const)
        return text

    def state(self) -> tuple:
        """What `restore` puts back: the unifications made so far."""
        return dict(self._parent), self._fresh, set(self.fresh_dims), dict(self.linear)

    def restore(self, state: tuple) -> None:
        parent, self._fresh, fresh_dims, linear = state
        self._parent, self.fresh_dims, self.linear = dict(parent), set(fresh_dims), dict(linear)

    def find(self, dim: int | str) -> int | str:
        if isinstance(dim, int):
            return dim
        root = dim
        while isinstance(root, str) and root in self._parent:
            root = self._parent[root]
        # Path compression keeps long chains of unifications cheap.
        while isinstance(dim, str) and dim in self._parent and self._parent[dim] != root:
            self._parent[dim], dim = root, self._parent[dim]
        if isinstance(root, str) and root in self.linear:  # 4*H is a number once H is
            coef, base, const = self.linear[root]
            size = self.find(base)
            if isinstance(size, int):
                return coef * size + const
        return root

    def unify(self, a: int | str, b: int | str) -> int | str:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if isinstance(ra, int) and isinstance(rb, int):
            raise ShapeMismatch(f"{ra} != {rb}")
        if isinstance(ra, int):
            ra, rb = rb, ra
        if ra in self.linear and isinstance(rb, int):  # 4*H = 12: H = 3
            coef, base, const = self.linear[ra]
            if (rb - const) % coef or (rb - const) // coef < 1:
                raise ShapeMismatch(f"{ra} cannot be {rb} (no positive whole {base} gives it)")
            self.unify(base, (rb - const) // coef)
            return rb
        for dim, other in ((ra, rb), (rb, ra)):  # an inferred dimension may be 4*H
            if dim in self.fresh_dims and isinstance(other, str) and other in self.linear:
                self._parent[dim] = other
                return other
        if isinstance(rb, str) and (ra in self.linear or rb in self.linear):
            raise ShapeMismatch(f"{ra} != {rb} (backstep does not relate two dimension names)")
        # ra is symbolic here. Two names the user chose are two different sizes: never merge them.
        if isinstance(rb, str) and ra not in self.fresh_dims and rb not in self.fresh_dims:
            raise ShapeMismatch(f"{ra} != {rb}")
        # Prefer to keep a user-chosen name over a fresh one.
        if isinstance(rb, str) and ra not in self.fresh_dims and rb in self.fresh_dims:
            ra, rb = rb, ra
        self._parent[ra] = rb
        if isinstance(rb, int):
            self._check_linear(ra)
        return rb

    def _check_linear(self, name: str) -> None:
        """A name that has just become a number: every `coef*name + const` built on it must be positive."""
        for text, (coef, base, const) in self.linear.items():
            if self.find(base) == self.find(name) and coef * self.find(name) + const < 1:
                raise ShapeMismatch(f"{text} would be {coef * self.find(name) + const} with {base} = {self.find(name)}")

    def resolve(self, shape: Iterable[int | str]) -> Shape:
        return tuple(self.find(d) for d in shape)


def linear_text(coef: int, base: str, const: int) -> str:
    """`4*H`, `H+1`, `2*D-1`: a linear dimension as an annotation writes it."""
    term = base if coef == 1 else f"{coef}*{base}"
    return term if const == 0 else f"{term}{const:+d}"


def broadcast(env: ShapeEnv, a: Shape, b: Shape) -> Shape:
    """NumPy broadcasting of two shapes; equal symbolic dimensions are unified."""
    a, b = env.resolve(a), env.resolve(b)
    out: list[int | str] = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da == 1:
            out.append(db)
        elif db == 1:
            out.append(da)
        else:
            out.append(env.unify(da, db))
    return tuple(reversed(out))


def fmt_shape_plain(shape: Shape) -> str:
    """`(n, d)`, `(5,)`, `()`: a shape as Python writes the tuple."""
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def format_shape(shape: Shape, sep: str = "×") -> str:
    """`n×d` for a matrix, `scalar` for a 0-d value."""
    if len(shape) == 0:
        return "scalar"
    return sep.join(str(d) for d in shape)


def shape_to_json(shape: Shape) -> list:
    return list(shape)


def concrete(shape: Shape, sizes: dict[str, int]) -> tuple[int, ...]:
    """The shape with every symbolic dimension replaced by its sample size."""
    return tuple(d if isinstance(d, int) else sizes[d] for d in shape)


def parse_shape_text(text: str) -> Shape:
    """`n,d` or `64x1000` or `5` or `(n, d)` or `scalar` -> a shape tuple (CLI --shape)."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    if text in ("", "scalar"):
        return ()
    parts = [p.strip() for p in text.replace("×", "x").replace("*", "x").split(",")]
    if len(parts) == 1 and "x" in parts[0] and not parts[0].isidentifier():
        parts = [p.strip() for p in parts[0].split("x")]
    dims: list[int | str] = []
    for p in parts:
        if p.isdigit():
            if int(p) < 1:
                raise ValueError(f"a dimension must be at least 1, not {p}")
            dims.append(int(p))
        elif p.isidentifier():
            dims.append(p)
        else:
            raise ValueError(f"{p!r} is not a dimension (a positive integer or a name)")
    return tuple(dims)
