"""The op catalogue: every op of the table with its meaning and backward rules, for `backstep ops`
and docs/ops.md. The rules are not written twice: each op's example program is derived and the
general rules of its steps are printed."""

from __future__ import annotations

from dataclasses import dataclass

from .derive import derive
from .ops import OPS
from .printing import Printer


@dataclass
class Entry:
    name: str
    spelling: str
    summary: str
    example: str
    rules_text: list[str]
    rules_latex: list[str]
    grad_fn: str


def spelling(op) -> str:
    if op.syntax == "-x":
        return "-x"
    if op.syntax == ".T":
        return "A.T"
    names = list(op.arg_names[: op.arity]) if len(op.arg_names) >= op.arity else ["x"] * op.arity
    if not op.syntax.isidentifier():
        return f"{names[0]} {op.syntax} {names[1]}"
    args = names
    args += [f"{k}={v!r}" for k, v in op.params.items()]
    return f"{op.syntax}({', '.join(args)})"


def entries() -> list[Entry]:
    out = []
    for op in OPS.values():
        d = derive(op.example, verify=False)
        text, latex = Printer("text", d.symbols), Printer("latex", d.symbols)
        rules_text, rules_latex, seen = [], [], set()
        for step in d.backward:
            if step.kind != "rule" or step.op != op.name:
                continue
            r = step.general
            t = f"{text(r.forward_lhs)} = {text(r.forward_rhs)} ⇒ {text(r.adjoint_lhs)} = {text(r.adjoint_rhs)}"
            if t in seen:
                continue
            seen.add(t)
            rules_text.append(t)
            rules_latex.append(
                f"{latex(r.forward_lhs)} = {latex(r.forward_rhs)} \\Rightarrow "
                f"{latex(r.adjoint_lhs)} = {latex(r.adjoint_rhs)}"
            )
        step = next((f for f in d.forward if f.op == op.name), None)
        out.append(
            Entry(
                op.name,
                spelling(op),
                op.summary,
                op.example,
                rules_text,
                rules_latex,
                (step.grad_fn if step else None) or "—",
            )
        )
    return out


PIPE = "\\|"  # a literal | inside a Markdown table cell


def markdown() -> str:
    """docs/ops.md: generated from the op table (`backstep ops --format md`)."""
    lines = [
        "# backstep's operations",
        "",
        "Generated from the op table (`backstep ops --format md > docs/ops.md`); do not edit by hand.",
        "Each rule is the op's backward (vector-Jacobian) rule, as backstep derives it on the example.",
        "",
        "| spelling | meaning | backward rules | torch grad_fn |",
        "| --- | --- | --- | --- |",
    ]
    for e in entries():
        rules = ("<br>".join(f"${r}$" for r in e.rules_latex) or "no gradient").replace("|", PIPE)
        summary = e.summary.replace("|", PIPE)
        lines.append(f"| `{e.spelling}` | {summary} | {rules} | `{e.grad_fn}` |")
    return "\n".join(lines) + "\n"
