"""The computational graph of a derivation, laid out for drawing (TikZ) and listed for Mermaid.

Read from the model only: the nodes are the variables and the forward steps, the edges are
``Derivation.edges``, and the gradient annotated on an edge ``a -> v`` is the symbol defined by
the backward step whose ``of`` is ``a`` and whose ``node`` is ``v`` (its contribution to ā).

The layout is a small layered drawing, left to right. An op node's column is one more than its
deepest op input (then as far right as its consumers allow); a variable sits in the column just
before its first consumer. Within a
column, op nodes take the mean row of their op inputs (so a chain is a straight line) and are
pushed apart where they collide; variables are then placed beside their consumer — an input
written before an op input goes above, one written after it goes below — in the nearest free row.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Derivation

MAX_DRAWN_NODES = 60  # beyond this a drawing is no longer legible

# The page a drawing must fit, in cm (A4 with backstep's margins), and how far it may be scaled down:
# its labels are \scriptsize (8 pt in an 11 pt document), never to be scaled under 7 pt.
TEXT_WIDTH, TEXT_HEIGHT = 16.4, 23.0
MIN_SCALE = 7 / 8
ROW_CM = 1.6  # between rows of an across layout
LEVEL_CM = 1.9  # between the columns of a layout drawn down the page (a node is three lines tall)
ACROSS_NODES = 8  # a graph this small is always drawn across, scaled if it must be
WRAP_GAP = 0.6  # between the columns of a chain drawn in several, in node columns


@dataclass
class GraphNode:
    id: str  # a safe identifier for TikZ and Mermaid: n1, n2, ...
    name: str
    kind: str  # "variable", "op" or "output"
    op: str | None
    shape: tuple
    requires_grad: bool
    col: int = 0
    row: float = 0.0
    x: float = 0.0  # where it is drawn, in columns (a variable may sit between two)


@dataclass
class GraphEdge:
    source: GraphNode
    target: GraphNode
    adjoint: str | None  # the symbol of the gradient flowing back along this edge
    step: int | None  # the backward step that defines it
    parallel: int = 0  # 0 for a single edge; 1, 2, ... for repeated edges between the same nodes


@dataclass
class Graph:
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    # Drawn down the page in columns side by side, this many levels each (a chain too long for one
    # column: page_layout sets it); 0: one column.
    wrap: int = 0

    def drawn_at(self, node: GraphNode, layout: str | None) -> tuple[float, float]:
        """Where TikZ draws a node, in its units: across, inputs left (x = level, y = −row); down,
        inputs on top (x = row, y = −level), a long chain in columns side by side."""
        if layout != "down":
            return node.x, -node.row
        if not self.wrap:
            return node.row, -node.x
        first = min(n.x for n in self.nodes)
        column = self.column_of(node)
        return node.row + column * self.column_pitch, -(node.x - first - column * self.wrap)

    def column_of(self, node: GraphNode) -> int:
        """The column a node is drawn in (0 unless wrapped): a variable goes with the node it feeds."""
        if not self.wrap:
            return 0
        return int((node.x - min(n.x for n in self.nodes) + 0.5) // self.wrap)

    @property
    def column_pitch(self) -> float:
        """From one wrapped column to the next, in node columns."""
        top, bottom = self.rows
        return bottom - top + 1 + WRAP_GAP

    def route(self, edge: GraphEdge) -> list[str]:
        """The corners of an edge from one wrapped column to a later one (TikZ coordinates): out of its
        source sideways to the gap before the target's column, along that gap, and in above the
        target (between two levels, so through no node of either column; an edge that skips a
        column crosses it). [] for an edge within a column, drawn straight or bent."""
        a, b = edge.source, edge.target
        if not self.wrap or self.column_of(a) == self.column_of(b):
            return []
        (_, ay), (bx, by) = self.drawn_at(a, "down"), self.drawn_at(b, "down")
        top, _ = self.rows
        gap = self.column_of(b) * self.column_pitch + top - 0.5 - WRAP_GAP / 2
        return [f"{x:g}, {y:g}" for x, y in ((gap, ay), (gap, by + 0.5), (bx, by + 0.5))]

    @property
    def width(self) -> int:
        return max((n.col for n in self.nodes), default=0) + 1

    @property
    def rows(self) -> tuple[float, float]:
        return min((n.row for n in self.nodes), default=0.0), max((n.row for n in self.nodes), default=0.0)

    @property
    def drawable(self) -> bool:
        return len(self.nodes) <= MAX_DRAWN_NODES


def page_layout(graph: Graph, column_cm: float) -> tuple[str | None, float]:
    """How the drawing fits a page legibly, and the scale it is drawn at: "across" (inputs left, output
    right), "down" (inputs at the top: a long chain such as LeNet), "landscape" (across, on a page of
    its own turned sideways), or None where none fits with labels of at least 7 pt."""
    if not graph.nodes:
        return "across", 1.0
    xs = [n.x for n in graph.nodes]
    top, bottom = graph.rows
    long_side = (max(xs) - min(xs)) * column_cm + column_cm - 1.0  # the last node's own width
    short_side = bottom - top
    across = (long_side, short_side * ROW_CM + 1.2)
    down = ((short_side + 1) * column_cm, (max(xs) - min(xs)) * LEVEL_CM + 1.2)

    def scale(size: tuple[float, float], width: float, height: float) -> float:
        return min(1.0, width / size[0], height / size[1])

    if not graph.drawable:
        return None, 1.0
    if scale(across, TEXT_WIDTH, TEXT_HEIGHT) >= MIN_SCALE or len(graph.nodes) <= ACROSS_NODES:
        # (scaled to the line's width by the template); a small circuit is drawn larger, as CS231n's are
        return "across", max(1.0, min(1.35, 0.6 * TEXT_WIDTH / long_side, TEXT_HEIGHT / across[1]))
    if scale(down, TEXT_WIDTH, TEXT_HEIGHT) >= MIN_SCALE:
        return "down", 1.0
    # a chain too long for the page's height: down the page in columns side by side
    levels = int(max(xs) - min(xs)) + 1
    columns = -(-levels // (int((TEXT_HEIGHT - 1.2) // LEVEL_CM) + 1))
    per = -(-levels // columns)  # the levels shared evenly between the columns
    wrapped = (columns * (short_side + 1 + WRAP_GAP) - WRAP_GAP) * column_cm, per * LEVEL_CM
    if scale(wrapped, TEXT_WIDTH, TEXT_HEIGHT) >= MIN_SCALE:
        graph.wrap = per
        return "down", min(1.0, TEXT_WIDTH / wrapped[0])
    # a page of its own turned sideways (the heading and the legend stay on the page before)
    sideways = scale(across, TEXT_HEIGHT + 1.5, TEXT_WIDTH)
    if sideways >= MIN_SCALE:
        return "landscape", sideways
    return None, 1.0


def build_graph(d: Derivation) -> Graph:
    nodes: dict[str, GraphNode] = {}
    for v in d.variables:
        nodes[v.name] = GraphNode("", v.name, "variable", None, tuple(v.shape), v.requires_grad)
    for f in d.forward:
        kind = "output" if f.name == d.output else "op"
        nodes[f.name] = GraphNode("", f.name, kind, f.op, tuple(f.shape), False)
    for i, node in enumerate(nodes.values(), 1):
        node.id = f"n{i}"
    requires = _requires_grad(d, nodes)
    for name, node in nodes.items():
        node.requires_grad = requires.get(name, node.requires_grad)

    edges: list[GraphEdge] = []
    seen: dict[tuple[str, str], int] = {}
    used_steps: set[int] = set()
    for a, v in d.edges:
        if a not in nodes or v not in nodes:
            continue
        k = seen.get((a, v), 0)
        seen[(a, v)] = k + 1
        step = next(
            (
                s
                for s in d.backward
                if s.kind == "rule" and s.of == a and s.index not in used_steps and _carries(d, s, a, v)
            ),
            None,
        )
        if step is not None:
            used_steps.add(step.index)
        edges.append(GraphEdge(nodes[a], nodes[v], step.target if step else None, step.index if step else None, k))
    for e in edges:  # number parallel edges 1, 2, ... only where there are several
        if seen[(e.source.name, e.target.name)] > 1:
            e.parallel += 1
    _layout(d, nodes, edges)
    return Graph(list(nodes.values()), edges)


def _carries(d: Derivation, step, a: str, v: str) -> bool:
    """Whether the edge a → v carries the step's gradient back: the step is v's rule for a, or the
    rule of a layer (--compact) that a enters by this one edge."""
    if step.layer is None:
        return step.node == v
    inside = set(step.layer.steps)
    return v in inside and sum(1 for e in d.edges if e[0] == a and e[1] in inside) == 1


@dataclass
class LayerBox:
    """A layer written by hand (--compact), boxed on the drawn graph: its op (on the box of its first
    column only, when it is wrapped over several), the nodes in the box, those of the whole layer
    (for Mermaid, which lays the graph out itself), and the nodes that bound the box on each side."""

    op: str
    ids: list[str]
    layer_ids: list[str]
    west: str
    east: str
    north: str
    south: str


def layer_boxes(d: Derivation, graph: Graph, layout: str) -> list[LayerBox]:
    """A box per layer that --compact shows as one step, around the forward steps it stands for (one
    per column where the graph is wrapped in several)."""
    by_name = {n.name: n for n in graph.nodes}
    boxes, seen = [], set()
    for s in d.backward:
        if s.layer is None or s.node in seen:
            continue
        seen.add(s.node)
        layer = [by_name[name] for name in s.layer.steps if name in by_name]
        if len(layer) < 2:
            continue
        columns = sorted({graph.column_of(n) for n in layer})
        for column in columns:
            inside = [n for n in layer if graph.column_of(n) == column]
            first = column == columns[0]
            boxes.append(_box(graph, layout, s.op if first else "", inside, layer if first else []))
    return boxes


def _box(graph: Graph, layout: str, op: str, inside: list[GraphNode], layer: list[GraphNode]) -> LayerBox:
    def x(n):
        return graph.drawn_at(n, layout)[0]

    def y(n):
        return graph.drawn_at(n, layout)[1]

    return LayerBox(
        op,
        [n.id for n in inside],
        [n.id for n in layer],
        min(inside, key=x).id,
        max(inside, key=x).id,
        max(inside, key=y).id,
        min(inside, key=y).id,
    )


def small_number(value) -> float | None:
    """A value of --at small enough to write on an edge: a number or a one-entry array, else None."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def edge_numbers(d: Derivation, graph: Graph) -> tuple[list[tuple[float | None, float | None]], bool]:
    """With --at, what each edge carries as CS231n draws a circuit: (the forward value of its source,
    the value of the gradient flowing back along it), None where there is none or it is an array;
    and whether any value was left off for being an array."""
    if not d.at:
        return [(None, None) for _ in graph.edges], False
    values = {v.name: d.at.get(v.name) for v in d.variables}
    values.update({f.name: f.value for f in d.forward})
    gradients = {s.index: s.value for s in d.backward}
    numbers, arrays = [], False
    for e in graph.edges:
        forward, backward = values.get(e.source.name), gradients.get(e.step) if e.step else None
        pair = (small_number(forward), small_number(backward))
        arrays = arrays or (forward is not None and pair[0] is None) or (backward is not None and pair[1] is None)
        numbers.append(pair)
    return numbers, arrays


def _requires_grad(d: Derivation, nodes: dict[str, GraphNode]) -> dict[str, bool]:
    req = {v.name: v.requires_grad for v in d.variables}
    for f in d.forward:
        req[f.name] = any(req.get(a, False) for a, v in d.edges if v == f.name)
    return req


def _layout(d: Derivation, nodes: dict[str, GraphNode], edges: list[GraphEdge]) -> None:
    ops = [f.name for f in d.forward if f.name in nodes]
    inputs: dict[str, list[str]] = {name: [] for name in nodes}
    consumers: dict[str, list[str]] = {name: [] for name in nodes}
    for e in edges:
        inputs[e.target.name].append(e.source.name)
        consumers[e.source.name].append(e.target.name)
    is_op = set(ops)

    # Columns: ops by depth; a variable just before its first consumer.
    for name in ops:
        nodes[name].col = 1 + max((nodes[a].col for a in inputs[name] if a in is_op), default=0)
    # An op whose value is needed only further right moves right, next to its first consumer
    # (`exp(y)` beside `sin(x**2)`, not under `x**2`): the edges stay short.
    for name in reversed(ops):
        later = [nodes[c].col for c in consumers[name]]
        if later:
            nodes[name].col = max(nodes[name].col, min(later) - 1)
    for v in d.variables:
        if v.name in nodes:
            cols = [nodes[c].col for c in consumers[v.name]]
            nodes[v.name].col = min(cols) - 1 if cols else 0

    # Rows of op nodes: the mean of their op inputs, pushed apart within a column.
    by_col: dict[int, list[str]] = {}
    for name in ops:
        by_col.setdefault(nodes[name].col, []).append(name)

    def mean(names: list[str], default: float) -> float:
        rows = [nodes[a].row for a in names if a in is_op]
        return sum(rows) / len(rows) if rows else default

    def sweep_right() -> None:
        for col in sorted(by_col):
            _spread(nodes, by_col[col], {n: mean(inputs[n], nodes[n].row) for n in by_col[col]})

    sweep_right()
    # Then an op fed only by variables lines up with what it feeds, and the rest follows again.
    for col in sorted(by_col, reverse=True):
        wanted = {
            n: nodes[n].row if any(a in is_op for a in inputs[n]) else mean(consumers[n], nodes[n].row)
            for n in by_col[col]
        }
        _spread(nodes, by_col[col], wanted)
    sweep_right()

    # Variables: beside their first consumer, in the nearest free place. One that joins a chain of
    # ops (`H @ W2`) hangs half a column before its consumer, above it if written before the op
    # input and below if after; one that starts the graph sits a whole column before it.
    for node in nodes.values():
        node.x = float(node.col)
    taken = [(nodes[name].x, nodes[name].row) for name in ops]
    for v in d.variables:  # a variable feeding several nodes sits at their mean row
        users = list(dict.fromkeys(consumers.get(v.name, [])))
        if len(users) > 1:
            near = sum(nodes[c].row for c in users) / len(users)
            node = nodes[v.name]
            node.row = _free_row(taken, node.x, near, above=True, alone=True)
            taken.append((node.x, node.row))
    for name in ops:
        leaves = [
            a
            for a in dict.fromkeys(inputs[name])
            if a not in is_op and consumers[a][0] == name and len(set(consumers[a])) == 1
        ]
        if not leaves:
            continue
        node = nodes[name]
        args = list(dict.fromkeys(inputs[name]))
        first_op = next((i for i, a in enumerate(args) if a in is_op), None)
        x = node.col - (1.0 if first_op is None else 0.5)
        if first_op is None and _free(taken, x, [node.row + j - (len(leaves) - 1) / 2 for j in range(len(leaves))]):
            # Only variables feed this node, and there is room: centre them on it.
            for j, leaf in enumerate(leaves):
                nodes[leaf].x, nodes[leaf].row = x, node.row + j - (len(leaves) - 1) / 2
                taken.append((x, nodes[leaf].row))
            continue
        for leaf in leaves:
            above = first_op is not None and args.index(leaf) < first_op
            nodes[leaf].x = x
            nodes[leaf].row = _free_row(taken, x, node.row, above, alone=len(args) == 1)
            taken.append((x, nodes[leaf].row))

    # Variables used by no op (the output is a variable): first column.
    if not ops:
        for i, v in enumerate(d.variables):
            nodes[v.name].x, nodes[v.name].row = 0.0, float(i)


def _spread(nodes: dict[str, GraphNode], names: list[str], wanted: dict[str, float]) -> None:
    """Rows as close to `wanted` as possible, at least 1 apart, keeping the wanted order."""
    order = sorted(names, key=lambda n: wanted[n])
    rows: list[float] = []
    for n in order:
        rows.append(wanted[n] if not rows else max(wanted[n], rows[-1] + 1))
    shift = sum(wanted[n] - r for n, r in zip(order, rows)) / len(rows)
    for n, r in zip(order, rows):
        nodes[n].row = r + shift


def _free(taken: list[tuple[float, float]], x: float, rows: list[float]) -> bool:
    """No node drawn near (x, row) for any of `rows`: nodes less than 0.75 columns apart need a row between them."""
    return all(abs(row - r) >= 1 for row in rows for tx, r in taken if abs(tx - x) < 0.75)


def _free_row(taken: list[tuple[float, float]], x: float, near: float, above: bool, alone: bool) -> float:
    """The free row nearest `near` at `x`, on the preferred side (above: a smaller row)."""
    candidates = [near] if alone else []
    for k in range(1, 200):
        candidates += [near - k, near + k] if above else [near + k, near - k]
    for row in candidates:
        if _free(taken, x, [row]):
            return row
    return near + 200
