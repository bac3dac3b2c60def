"""Integer index arrays: `--assume NAME=index:V` and the rules of their use.

An index array (an embedding's ix, pick's and cross_entropy's class targets, onehot's input) is a
variable drawn as whole numbers 0 … V−1 (the draw domain class_index:V), with no gradient. It is
inferred from the ops that read it (derive.infer_domains) or declared with --assume; either way it
is read only as indices, never as a real operand, and what an op reads as indices is such a variable.
"""

from __future__ import annotations

from .errors import UsageError
from .graph import Graph, Node

# The draw domain of an integer index array, class_index:V (values 0 … V−1: cross_entropy's class
# targets, onehot's input, an embedding's indices), and the --assume spelling of it, index:V.
INDEX = "class_index"
INDEX_ASSUMPTION = "index"


def assumed_domains(graph: Graph, assume: dict[str, str], inferred: dict[str, str]) -> dict[str, str]:
    """--assume's domains as drawn (index:V becomes class_index:V), each checked against the graph and
    the domains inferred from its ops: V a positive integer or a dimension of the formula, an index
    array used only as one."""
    out = {}
    for name, kind in assume.items():
        if kind.startswith(INDEX_ASSUMPTION):
            kind = _index_domain(graph, name, kind)
            if inferred[name].startswith(INDEX) and inferred[name] != kind:
                raise UsageError(
                    f"--assume {name}={assume[name]}: {name} indexes an axis of {_bound(inferred[name])} entries, "
                    f"so its values are 0 … {_bound(inferred[name])}−1: --assume {name}=index:{_bound(inferred[name])} "
                    "(or leave it out: it is inferred)"
                )
        elif inferred[name].startswith(INDEX):
            raise UsageError(
                f"--assume {name}={kind}: {name} is an integer index array (values 0 … {_bound(inferred[name])}−1), "
                "not a real array"
            )
        out[name] = kind
    check_index_uses(graph, {**inferred, **out})
    return out


def _bound(domain: str) -> str:
    return domain.split(":", 1)[1]


def _index_domain(graph: Graph, name: str, kind: str) -> str:
    """class_index:V for --assume NAME=index:V, V a positive integer or one of the graph's dimensions."""
    head, _, bound = kind.partition(":")
    if head != INDEX_ASSUMPTION or not bound:
        raise UsageError(
            f"--assume {name}={kind}: an index array needs the number of values it takes: {name}=index:V, with V "
            "a dimension name or a number (values 0 … V−1)"
        )
    if bound.isdigit() and int(bound) >= 1:
        return f"{INDEX}:{int(bound)}"
    if bound in graph.dims:
        return f"{INDEX}:{bound}"
    dims = f" (its dimensions: {', '.join(graph.dims)})" if graph.dims else " (it has no named dimensions)"
    raise UsageError(
        f"--assume {name}={kind}: {bound} is neither a positive integer nor a dimension of the formula{dims}"
    )


def _index_use(node: Node, i: int) -> bool:
    """Whether input i of this node reads integer indices (an embedding's ix, onehot's t, class targets)."""
    domain = node.op.domains[i] if node.op.domains else None
    return domain is not None and (domain.demand(node, i) or "").startswith(INDEX)


def check_index_uses(graph: Graph, domains: dict[str, str]) -> None:
    """An integer index array is read only as indices, and what an op reads as indices is such an array
    (a variable, or a value with no gradient such as argmax's): never silently a float operand, never a
    computed float taken for an integer."""
    variables = {v.id for v in graph.variables}
    for node in graph.op_nodes:
        for i, a in enumerate(node.inputs):
            as_index = _index_use(node, i)
            if a.id in variables and domains[a.name].startswith(INDEX) and not as_index:
                raise UsageError(
                    f"{a.name} is an integer index array (values 0 … {_bound(domains[a.name])}−1): it picks entries, "
                    f"and cannot be an operand of {node.op.syntax}, which computes with real numbers",
                    node.place,
                    graph.source,
                )
            # a computed value with no gradient (argmax) may be indices; a real-valued one (ix + 1) not
            if as_index and not (a.id in variables or a.is_const or a.op.grad_fn is None):
                raise UsageError(
                    f"the indices of {node.op.syntax} must be an integer input variable (declare it with --assume "
                    f"NAME=index:V), not the computed value {a.name}",
                    node.place,
                    graph.source,
                )
