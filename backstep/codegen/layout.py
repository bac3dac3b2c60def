"""Lines of the generated module laid out as ``ruff format`` lays them out: a call or a tuple on one
line when it fits in ``LINE`` columns, else one item a line with a trailing comma (the layouts that
ruff keeps as they are at any line length)."""

from __future__ import annotations

from .printer import INDENT, LINE


def bracketed(head: str, items: list[str], tail: str, indent: int, one_tuple: bool = False) -> list[str]:
    """`head(items)tail` on one line, else one item a line with a trailing comma: the two layouts
    that ruff keeps as they are at any line length (so the module is clean under ruff's default
    88 columns and under a project's longer limit alike)."""
    inner = ", ".join(items) + ("," if one_tuple and len(items) == 1 else "")
    if indent + len(head) + len(inner) + len(tail) <= LINE:
        return [head + inner + tail]
    return [head] + [" " * INDENT + item + "," for item in items] + [tail]


def unpack_lines(names: list[str], rhs: str, indent: int) -> list[str]:
    """`a, b = rhs` (`(a,) = rhs` for one name), else the names one a line in parentheses."""
    lhs = f"({names[0]},)" if len(names) == 1 else ", ".join(names)
    if indent + len(lhs) + 3 + len(rhs) <= LINE:
        return [f"{lhs} = {rhs}"]
    return ["("] + [" " * INDENT + name + "," for name in names] + [f") = {rhs}"]


def needs_lines(flags: list[str | None], indent: int) -> list[str]:
    if not any(flags):
        return []
    return unpack_lines([f"need_{f}" if f else "_" for f in flags], "ctx.needs_input_grad", indent)


def none_lines(names: list[str], indent: int) -> list[str]:
    line = " = ".join(names + ["None"])
    if not names:
        return []
    if indent + len(line) <= LINE:
        return [line]
    return [f"{name} = None" for name in names]


def return_lines(items: list[str], indent: int) -> list[str]:
    if len(items) > 1 and indent + 7 + len(", ".join(items)) <= LINE:
        return ["return " + ", ".join(items)]
    return bracketed("return (", items, ")", indent, one_tuple=True)
