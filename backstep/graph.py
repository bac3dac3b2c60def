"""The computational graph: what the parser builds and everything downstream reads.

Nodes are kept in creation order, which is a topological order (an op is created after its
inputs). Each node has a shape whose symbolic dimensions have been unified and named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from .errors import Place
from .ops import Op
from .shapes import Shape


@dataclass(eq=False)
class Node:
    id: int
    kind: str  # "var" (a leaf the user names), "const" (a number or a dimension) or "op"
    shape: Shape = ()
    op: Op | None = None
    inputs: list[Node] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    name: str | None = None  # every var and op node has one once the graph is built
    user_named: bool = False  # the user chose this name (a variable or an assignment)
    place: Place | None = None
    value: sympy.Expr | None = None  # for constants
    annotated: tuple | None = None  # a shape the user wrote for an intermediate (H: (n, h) = ...)

    @property
    def is_const(self) -> bool:
        return self.kind == "const"

    def __repr__(self) -> str:
        what = self.op.name if self.op else self.kind
        return f"<{what} {self.name or self.value} {self.shape}>"


@dataclass
class Graph:
    source: str
    nodes: list[Node]  # op and var nodes reachable from the output, in topological order
    variables: list[Node]  # the leaves, in order of first appearance
    output: Node
    dims: list[str]  # symbolic dimensions, in order of first appearance
    notes: list[str] = field(default_factory=list)  # things worth telling the user
    statements: list[str] = field(default_factory=list)  # the program's statements, as written
    # where a variable is drawn, as the program declares it (ix: (N, T) in range(V) is "index:V")
    domains: dict[str, str] = field(default_factory=dict)

    @property
    def op_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "op"]

    def variable(self, name: str) -> Node | None:
        return next((v for v in self.variables if v.name == name), None)
