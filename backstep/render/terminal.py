"""The terminal view: what a student copies into their notebook, laid out with rich."""

from __future__ import annotations

import io

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..model import BackwardStep, Derivation
from ..shapes import format_shape
from . import renderer
from .common import Notation, format_number, format_value


def build(d: Derivation) -> Group:
    n = Notation(d)
    parts = [header(d, n), Text()]
    parts += [forward_table(d, n), Text()]
    parts += [backward_table(d, n), Text()]
    parts += [gradient_table(d, n)]
    if d.verification is not None:
        parts += [Text(), verification_block(d)]
    for note in d.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    return Group(*parts)


def header(d: Derivation, n: Notation) -> Text:
    t = Text()
    if len(d.program) > 1:
        for line in d.program:
            t.append(line + "\n", style="bold")
    else:
        t.append(f"{d.output} = {n.text(d.output_expr)}", style="bold")
        t.append("\n")
    shapes = "   ".join(f"{v.name}: {format_shape(v.shape)}" for v in d.variables)
    t.append(f"{shapes}   →   {d.output}: {format_shape(d.output_shape)}", style="dim")
    wrt = d.wrt
    if len(wrt) < len(d.variables):
        t.append(f"\ngradients with respect to {', '.join(wrt)} (the others are constants)", style="dim")
    if d.at:
        given = ", ".join(f"{k} = {format_value(v, 6)}" for k, v in d.at.items())
        t.append(f"\nat {given}", style="dim")
    return t


def forward_table(d: Derivation, n: Notation) -> Table:
    table = Table(title="Forward pass", title_justify="left", title_style="bold cyan", box=None, pad_edge=False)
    table.add_column("step")
    table.add_column("shape", style="dim")
    if d.at:
        table.add_column("value", style="green")
    table.add_column("torch", style="magenta")
    for s in d.forward:
        row = [f"{s.name} = {n.text(s.expr)}", format_shape(s.shape)]
        if d.at:
            row.append(format_value(s.value))
        row.append(s.grad_fn or "—")
        table.add_row(*map(Text, row))
    return table


def step_text(s: BackwardStep, n: Notation) -> str:
    lhs = n.text(n.sym(s.target))
    applied, result = n.text(s.applied), n.text(s.result)
    if applied == result:
        return f"{lhs} = {result}"
    return f"{lhs} = {applied} = {result}"


def rule_text(s: BackwardStep, n: Notation) -> tuple[str, str]:
    """(the node the step belongs to, the general rule) for the 'from' and 'rule' columns."""
    if s.kind == "sum":
        return f"{s.of} feeds several nodes", "multivariable chain rule: add the contributions"
    r = s.rule
    forward = next(f for f in n.d.forward if f.name == s.node)
    return (
        f"{s.node} = {n.text(forward.expr)}",
        f"{n.text(r.forward_lhs)} = {n.text(r.forward_rhs)} ⇒ {n.text(r.adjoint_lhs)} = {n.text(r.adjoint_rhs)}",
    )


def backward_table(d: Derivation, n: Notation) -> Table:
    table = Table(
        title=f"Backward pass   seed: {n.seed_text()}",
        title_justify="left",
        title_style="bold cyan",
        box=None,
        pad_edge=False,
    )
    table.add_column("#", justify="right", style="dim")
    table.add_column("step")
    if d.at:
        table.add_column("value", style="green")
    table.add_column("from", style="dim")
    table.add_column("rule", style="dim")
    for s in d.backward:
        row = [str(s.index), step_text(s, n)]
        if d.at:
            row.append(format_value(s.value))
        row.extend(rule_text(s, n))
        table.add_row(*map(Text, row))
    return table


def gradient_table(d: Derivation, n: Notation) -> Table:
    table = Table(title="Gradients", title_justify="left", title_style="bold cyan", box=None, pad_edge=False)
    table.add_column("gradient", style="bold")
    table.add_column("shape", style="dim")
    for name in d.wrt:
        g = d.gradients[name]
        text = f"{n.partial(name)} = {n.text(g.expr)}"
        if g.value is not None:
            text += f" = {format_value(g.value)}"
        if not g.in_inputs:
            text += "   (in terms of the named steps: expanded it is too long to read)"
        table.add_row(Text(text), Text(format_shape(g.shape)))
    return table


def verification_block(d: Derivation) -> Text:
    v = d.verification
    sizes = " ".join(f"{k}={s}" for k, s in v.sizes.items())
    t = Text()
    status = ("✓ verified", "bold green") if v.ok else ("✗ MISMATCH", "bold red")
    t.append(status[0], style=status[1])
    t.append(f" with PyTorch autograd ({v.dtype}, {v.points} random points{', ' + sizes if sizes else ''})\n")
    items = []
    for c in v.gradients:
        items.append((f"{c.name}.grad", c))
    for c in items:
        label, check = c
        t.append(f"  {label} ")
        t.append("✓" if check.ok else "✗", style="green" if check.ok else "bold red")
        t.append(f" {format_number(float(f'{check.max_abs_err:.1g}'))}" if check.max_abs_err else " 0")
    n_adj = len(v.adjoints)
    ok_adj = sum(c.ok for c in v.adjoints)
    n_fwd = sum(c.ok for c in v.forward)
    t.append(f"\n  every intermediate (retain_grad): {ok_adj}/{n_adj} ✓   forward values: {n_fwd}/{len(v.forward)} ✓")
    bad_fn = [c for c in v.grad_fns if not c.ok]
    t.append(f"   grad_fn names: {len(v.grad_fns) - len(bad_fn)}/{len(v.grad_fns)} ✓")
    failure = v.first_failure
    if failure is not None:
        t.append(f"\n  first mismatch: {failure.kind} of {failure.name}: {failure.detail or ''}", style="bold red")
        if failure.kind != "grad_fn":
            t.append(f" (max abs error {failure.max_abs_err:.3g})", style="bold red")
    for p in v.problems:
        t.append(f"\n  {p}", style="bold red")
    return t


@renderer("text")
def render_text(d: Derivation, width: int = 120, color: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=color, color_system="standard" if color else None)
    console.print(build(d))
    return buffer.getvalue()
