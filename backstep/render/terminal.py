"""The terminal view: what a student copies into their notebook, laid out with rich."""

from __future__ import annotations

import io

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..model import BackwardStep, Derivation
from .common import Notation, format_number, format_value
from .registry import renderer


def build(d: Derivation, notation: str = "bar", lang: str = "en") -> Group:
    """The terminal view; `notation` names the adjoints (bar, partial, delta), `lang` is the prose's language."""
    n = Notation(d, notation, lang)
    parts = [header(d, n), Text()]
    parts += [forward_table(d, n), Text()]
    parts += [backward_table(d, n), Text()]
    parts += [gradient_table(d, n)]
    if d.verification is not None:
        parts += [Text(), verification_block(d, n)]
    for note in d.all_notes:
        parts.append(Text(n.msg("note", note=note), style="yellow"))
    return Group(*parts)


def header(d: Derivation, n: Notation) -> Text:
    t = Text()
    if len(d.program) > 1:
        for line in d.program:
            t.append(line + "\n", style="bold")
    else:
        t.append(f"{d.output} = {n.text(d.output_expr)}", style="bold")
        t.append("\n")
    shapes = "   ".join(variable_text(v, n) for v in d.variables)
    t.append(f"{shapes}   →   {d.output}: {n.shape_text(d.output_shape)}", style="dim")
    wrt = d.wrt
    if len(wrt) < len(d.variables):
        t.append("\n" + n.msg("wrt_only", wrt=n.msg("list_sep").join(wrt)), style="dim")
    if d.at:
        given = ", ".join(f"{k} = {format_value(v, 6)}" for k, v in d.at.items())
        t.append("\n" + n.msg("at_values", values=given), style="dim")
    return t


def variable_text(v, n: Notation) -> str:
    """`x: N×D`; class labels as the set they are drawn from, `t ∈ {0,…,9}^N`."""
    kind, _, classes = v.domain.partition(":")
    if kind == "class_index" and classes and classes != "None":
        last = str(int(classes) - 1) if classes.isdigit() else f"{classes}−1"
        power = f"^{n.shape_text(v.shape)}" if v.shape else ""
        return f"{v.name} ∈ {{0,…,{last}}}{power}"
    return f"{v.name}: {n.shape_text(v.shape)}"


def forward_table(d: Derivation, n: Notation) -> Table:
    msg = n.msg
    table = Table(title=msg("forward"), title_justify="left", title_style="bold cyan", box=None, pad_edge=False)
    table.add_column(msg("col_step"))
    table.add_column(msg("col_shape"), style="dim")
    if d.at:
        table.add_column(msg("col_value"), style="green")
    table.add_column(msg("col_torch"), style="magenta")
    for s in d.forward:
        row = [f"{s.name} = {n.text(s.expr)}", n.shape_text(s.shape)]
        if d.at:
            row.append(format_value(s.value))
        row.append(d.grad_fn_of(s) or "—")
        table.add_row(*map(Text, row))
    return table


def step_text(s: BackwardStep, n: Notation) -> str:
    lhs = n.text(n.sym(s.target))
    shape = n.step_shape(s)
    applied, result = n.array_text(s.applied, shape), n.array_text(s.result, shape)
    line = f"{lhs} = {result}" if applied == result else f"{lhs} = {applied} = {result}"
    if s.unsimplified:
        line += f"   ({n.msg('not_simplified')})"
    return line


def rule_text(s: BackwardStep, n: Notation) -> tuple[str, str]:
    """(the node the step belongs to, the op's general rule) for the 'from' and 'rule' columns."""
    if s.kind == "sum":
        return n.msg("feeds_several", name=s.of), n.msg("chain_rule_sum")
    r = s.rule
    if s.layer is not None:  # a hand-written layer (--compact): the op it computes, and its steps
        steps = n.msg("list_sep").join(s.layer.steps)
        origin = f"{s.node} = {n.text(s.layer.forward)}  ({steps})"
    else:
        origin = f"{s.node} = {n.text(next(f for f in n.d.forward if f.name == s.node).expr)}"
    return (
        origin,
        f"{n.text(r.forward_lhs)} = {n.text(r.forward_rhs)} ⇒ {n.text(r.adjoint_lhs)} = {n.text(r.adjoint_rhs)}",
    )


def backward_table(d: Derivation, n: Notation) -> Table:
    msg = n.msg
    table = Table(
        title=f"{msg('backward')}   {msg('seed')}{msg('colon')}{n.seed_text()}",
        title_justify="left",
        title_style="bold cyan",
        box=None,
        pad_edge=False,
    )
    table.add_column("#", justify="right", style="dim")
    table.add_column(msg("col_step"))
    if d.at:
        table.add_column(msg("col_value"), style="green")
    table.add_column(msg("col_from"), style="dim")
    table.add_column(msg("col_rule"), style="dim")
    for s in d.backward:
        row = [str(s.index), step_text(s, n)]
        if d.at:
            row.append(format_value(s.value))
        row.extend(rule_text(s, n))
        table.add_row(*map(Text, row))
    return table


def gradient_table(d: Derivation, n: Notation) -> Table:
    msg = n.msg
    table = Table(title=msg("gradients"), title_justify="left", title_style="bold cyan", box=None, pad_edge=False)
    table.add_column(msg("col_gradient"), style="bold")
    table.add_column(msg("col_shape"), style="dim")
    for name in d.wrt:
        g = d.gradients[name]
        shown = d.shown_gradient(name)
        text = f"{n.partial(name)} = {n.array_text(shown, g.shape)}"
        if g.value is not None:
            text += f" = {format_value(g.value)}"
        if not g.in_inputs and shown is g.expr:
            text += f"   ({msg('too_long')})"
        if g.unsimplified and shown is g.expr:
            text += f"   ({msg('not_simplified')})"
        table.add_row(Text(text), Text(n.shape_text(g.shape)))
    for i, a in enumerate(d.shown_adjoints):  # what the named forms refer to, as d2l lists ∂J/∂o
        lead = f"{msg('where_named')} " if i == 0 else " " * (len(msg("where_named")) + 1)
        line = f"{lead}{n.text(n.sym(a.symbol))} = {n.array_text(a.expr, a.shape)}"
        table.add_row(Text(line), Text(n.shape_text(a.shape)))
    return table


def verification_block(d: Derivation, n: Notation) -> Text:
    v = d.verification
    msg = n.msg
    sizes = " ".join(f"{k}={s}" for k, s in v.sizes.items())
    t = Text()
    status = (f"✓ {msg('verified')}", "bold green") if v.ok else (f"✗ {msg('mismatch')}", "bold red")
    t.append(status[0], style=status[1])
    suffix = msg("sizes_suffix", sizes=sizes) if sizes else ""
    t.append(msg("verified_with", dtype=v.dtype, points=v.points, sizes=suffix) + "\n")
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
    colon = msg("colon")
    t.append(f"\n  {msg('every_intermediate')}{colon}{ok_adj}/{n_adj} ✓")
    t.append(f"   {msg('forward_values')}{colon}{n_fwd}/{len(v.forward)} ✓")
    bad_fn = [c for c in v.grad_fns if not c.ok]
    t.append(f"   {msg('grad_fn_names')}{colon}{len(v.grad_fns) - len(bad_fn)}/{len(v.grad_fns)} ✓")
    failure = v.first_failure
    if failure is not None:
        kind = msg(f"kind_{failure.kind}") if f"kind_{failure.kind}" in msg.table else failure.kind
        mismatch = msg("first_mismatch", kind=kind, name=failure.name, detail=failure.detail or "")
        t.append("\n  " + mismatch, style="bold red")
        if failure.kind != "grad_fn":
            t.append(f" ({msg('max_abs_error', error=f'{failure.max_abs_err:.3g}')})", style="bold red")
    for p in v.problems:
        t.append(f"\n  {p}", style="bold red")
    return t


@renderer("text", choices=("notation", "lang"), show=build)
def render_text(d: Derivation, width: int = 120, color: bool = False, notation: str = "bar", lang: str = "en") -> str:
    buffer = io.StringIO()
    console = Console(
        emoji=False, file=buffer, width=width, force_terminal=color, color_system="standard" if color else None
    )
    console.print(build(d, notation=notation, lang=lang))
    return buffer.getvalue()
