"""The shape of the code under ``backstep/``, by static analysis (issue #11's "Done when").

- no module over 800 lines, no function over 120;
- no import cycle between backstep's modules, function-level imports counted;
- op names as string literals only in the op table (``backstep/ops/``): everything else asks the op's
  record, so that an op is one block there.

Nothing here imports the modules it measures (but ``backstep.ops``, for the op names): the source is
read with ``ast``. Each failure names what violates (file:line, name, size).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from backstep.ops import OPS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "backstep"
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 120

# String literals equal to an op name that are not references to the op: an English word or a
# record's field. (file under backstep/, the word, a piece of its line or None for every line of the
# file) -> why it is not the op.
NOT_OP_REFERENCES = {
    ("check/grade.py", "step", None): "the step of a student's derivation: a CSV column and a row's key",
    ("check/grades.py", "step", None): "the step of a student's derivation: a CSV column and a row's key",
    ("check/run.py", "step", None): "the step of a checked derivation file: a JSON field",
    ("train_report.py", "step", None): "a training step: a table column and the plot's x label",
    ("render/i18n.py", "step", '"col_step": "step"'): "the heading of the step column in report tables",
    ("train_report.py", "norm", None): "the key of a gradient's norm in a training record",
    ("train_loop.py", "norm", None): "the key of a gradient's norm in a training record",
    ("render/terminal.py", "sum", None): 'BackwardStep.kind "sum": the contributions summed at a fan-out',
    ("render/documents.py", "sum", None): 'BackwardStep.kind "sum": the contributions summed at a fan-out',
    ("codegen/text.py", "sum", None): 'BackwardStep.kind "sum": the contributions summed at a fan-out',
    ("derive.py", "sum", 'kind="sum"'): 'BackwardStep.kind "sum": the contributions summed at a fan-out',
    ("derive.py", "sum", 'kind == "sum"'): 'BackwardStep.kind "sum": the contributions summed at a fan-out',
    ("check/chain.py", "sum", 'kind == "sum"'): 'BackwardStep.kind "sum": the contributions summed at a fan-out',
    ("check/chain.py", "sum", 'kind != "sum"'): 'BackwardStep.kind "sum": the contributions summed at a fan-out',
    ("check/problem.py", "sum", 'kind == "sum"'): 'BackwardStep.kind "sum": the contributions summed at a fan-out',
    ("check/records.py", "sign", '"sign": "a sign error"'): 'the mistake kind "sign" (a sign error), a JSON value',
    ("check/diagnose.py", "sign", 'Mistake("sign"'): 'the mistake kind "sign" (a sign error), a JSON value',
    ("parser.py", "var", None): 'Node.kind "var": a graph node that is a variable, not the op var',
    ("annotations.py", "var", 'kind == "var"'): 'Node.kind "var": a graph node that is a variable, not the op var',
    ("derive.py", "var", 'kind == "var"'): 'Node.kind "var": a graph node that is a variable, not the op var',
    ("numeric/sampling.py", "var", 'kind == "var"'): 'Node.kind "var": a graph node that is a variable',
    ("layers.py", "var", 'kind == "var"'): 'Node.kind "var": a graph node that is a variable, not the op var',
    ("layers.py", "sum", 'kind == "sum"'): 'BackwardStep.kind "sum": the contributions summed at a fan-out',
    ("train_loop.py", "var", 'kind == "var"'): 'Node.kind "var": a graph node that is a variable, not the op var',
    ("check/claims.py", "var", None): 'Node.kind and Term.kind "var": a variable in a claim, not the op var',
    ("check/problem.py", "var", 'kind == "var"'): 'Term.kind "var": a variable in a claim, not the op var',
    ("check/problem.py", "equal", None): 'the English word ("proved symbolically and equal"), not the op equal',
    ("trace/adapters.py", "min", None): "torch.clamp's keyword min=, not the op min",
    ("trace/adapters.py", "max", None): "torch.clamp's keyword max=, not the op max",
}


def allowed_by(file: str, line: int, word: str):
    """The NOT_OP_REFERENCES entry that allows this literal, or None."""
    text = (PACKAGE / file).read_text(encoding="utf-8").splitlines()[line - 1]
    for key in NOT_OP_REFERENCES:
        if key[:2] == (file, word) and (key[2] is None or key[2] in text):
            return key
    return None


def rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def in_op_table(path: Path) -> bool:
    """The op table's home: the ops/ package."""
    return rel(path).startswith("ops/")


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module under the package by dotted name (a package by its own name, not ``.__init__``)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in MODULES.items()}


# --- sizes -------------------------------------------------------------------------------------------


def long_modules(limit: int = MAX_MODULE_LINES) -> list[str]:
    out = []
    for path in MODULES.values():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            out.append(f"backstep/{rel(path)}: {lines} lines")
    return out


def functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for name, tree in TREES.items():
        for qualname, node in functions(tree):
            size = node.end_lineno - node.lineno + 1  # from `def` to the last line of the body
            if size > limit:
                out.append((size, f"backstep/{rel(MODULES[name])}:{node.lineno} {qualname}: {size} lines"))
    return [text for _, text in sorted(out, reverse=True)]


def test_no_module_is_over_800_lines():
    too_long = long_modules()
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(too_long)


def test_no_function_is_over_120_lines():
    too_long = long_functions()
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)


# --- import cycles -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    function_level: bool

    def __str__(self) -> str:
        where = "in a function" if self.function_level else "at the top"
        return f"backstep/{rel(MODULES[self.source])}:{self.line} {self.source} -> {self.target} ({where})"


def imported_modules(name: str, path: Path, tree: ast.AST, known: set[str]):
    """(target module, line, function level?) of every import of a backstep module anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nested = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import name` imports the module pkg.name when there is one, else pkg itself
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        for target in targets:
            if target in known and target != name:
                yield target, node.lineno, id(node) in nested


def import_graph() -> dict[str, dict[str, Edge]]:
    """module -> {imported module: the first import of it}, backstep's modules only."""
    known = set(MODULES)
    graph: dict[str, dict[str, Edge]] = defaultdict(dict)
    for name, tree in TREES.items():
        for target, line, function_level in imported_modules(name, MODULES[name], tree, known):
            graph[name].setdefault(target, Edge(name, target, line, function_level))
    return graph


def strongly_connected(graph: dict[str, set[str] | dict]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm, without recursion)."""
    nodes = sorted(set(graph) | {w for targets in graph.values() for w in targets})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    two = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c", "e"}, "e": set()}
    assert strongly_connected(two) == [["a", "b"], ["c", "d"]]
    assert strongly_connected({"a": {"a"}}) == []  # a module does not import itself in a circle
    chain = {f"m{i}": {f"m{i + 1}"} for i in range(5000)}  # deep: no recursion limit to hit
    assert strongly_connected({**chain, "m5000": {"m0"}}) == [sorted(f"m{i}" for i in range(5001))]


def test_the_import_graph_sees_function_level_and_relative_imports():
    known = {"backstep.ops", "backstep.render", "backstep.render.json", "backstep.shapes", "backstep.verify"}
    model = ast.parse(
        "from . import ops\nfrom .render import json\nimport backstep.shapes\nimport torch\n"
        "def f():\n    from .verify import verify\n"
    )
    assert set(imported_modules("backstep.model", PACKAGE / "model.py", model, known)) == {
        ("backstep.ops", 1, False),  # `from pkg import name`: the module pkg.name
        ("backstep.render.json", 2, False),
        ("backstep.shapes", 3, False),
        ("backstep.verify", 6, True),
    }
    json = ast.parse("from .. import verify\nfrom ..render import x\nfrom . import x")
    assert set(imported_modules("backstep.render.json", PACKAGE / "render" / "json.py", json, known)) == {
        ("backstep.verify", 1, False),
        ("backstep.render", 2, False),  # x is no module: the package itself
        ("backstep.render", 3, False),  # `.` from render/json.py: render/__init__.py
    }
    init = ast.parse("from .json import x")
    assert set(imported_modules("backstep.render", PACKAGE / "render" / "__init__.py", init, known)) == {
        ("backstep.render.json", 1, False)
    }


def test_no_import_cycle_between_backstep_modules():
    graph = import_graph()
    cycles = strongly_connected({k: set(v) for k, v in graph.items()})
    report = []
    for component in cycles:
        members = set(component)
        edges = sorted(str(e) for m in component for t, e in graph[m].items() if t in members)
        report.append(f"{len(component)} modules import each other: {', '.join(component)}\n  " + "\n  ".join(edges))
    assert not cycles, "import cycles (function-level imports counted):\n" + "\n".join(report)


# --- op names ----------------------------------------------------------------------------------------


def docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def op_name_literals(names: set[str]) -> list[tuple[str, int, str]]:
    """(file under backstep/, line, name) of every string constant equal to an op name outside the op table."""
    out = []
    for name, tree in TREES.items():
        path = MODULES[name]
        if in_op_table(path):
            continue
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                if id(node) not in skip:
                    out.append((rel(path), node.lineno, node.value))
    return sorted(out)


def test_the_allow_list_names_existing_files_and_op_names():
    missing = [f for f, _, _ in NOT_OP_REFERENCES if not (PACKAGE / f).is_file()]
    not_ops = [w for _, w, _ in NOT_OP_REFERENCES if w not in OPS]
    assert not missing, f"NOT_OP_REFERENCES names files that are not under backstep/ any more: {missing}"
    assert not not_ops, f"NOT_OP_REFERENCES names words that are not op names: {not_ops}"
    used = {allowed_by(f, line, w) for f, line, w in op_name_literals(set(OPS))}
    stale = sorted(set(NOT_OP_REFERENCES) - used, key=str)
    assert not stale, f"NOT_OP_REFERENCES entries that match no literal any more (remove them): {stale}"


def test_op_names_as_string_literals_appear_only_in_the_op_table():
    found = [hit for hit in op_name_literals(set(OPS)) if allowed_by(*hit) is None]
    by_file = defaultdict(list)
    for file, line, name in found:
        by_file[file].append(f"{line} {name!r}")
    report = [f"backstep/{f}: {len(hits)}: " + ", ".join(hits) for f, hits in sorted(by_file.items())]
    assert not found, f"{len(found)} op names as string literals outside backstep/ops/:\n" + "\n".join(report)
