"""Documents (Markdown, LaTeX, exercise sheets) from jinja2 templates in ``templates/``.

A template reads one object per derivation, ``D``, built here from the model by ``view``: every
expression already printed (LaTeX, through ``backstep.printing`` in the chosen notation), every
sentence from the message catalogue, the graph laid out. Templates lay these out; they never
compute math. ``D.d`` is the derivation itself, for a teacher's template that wants more.

Two jinja2 environments share one loader. Templates whose name ends in ``.tex.j2`` use
LaTeX-safe delimiters — ``\\BLOCK{for s in D.backward}``, ``\\VAR{s.lhs}``, ``\\#{a comment}`` —
so that LaTeX's ``{%`` and ``{{`` never collide with jinja2's; the others (Markdown) use jinja2's own.
A ``--template DIR`` is searched first, then the default templates: a teacher overrides only the
files they want.
"""

from __future__ import annotations

import re
import sysconfig
from pathlib import Path
from types import SimpleNamespace as Row
from typing import Any

import jinja2

from ..errors import UsageError
from ..model import Derivation
from ..printing import latex_name
from .common import Notation, format_error, format_value, latex_error, latex_value
from .graph import build_graph

TEX_SYNTAX = {
    "block_start_string": "\\BLOCK{",
    "block_end_string": "}",
    "variable_start_string": "\\VAR{",
    "variable_end_string": "}",
    "comment_start_string": "\\#{",
    "comment_end_string": "}",
}

# Widths in printed characters (of the text form), for the layout of the LaTeX steps: a step
# `lhs = applied = result` longer than LONG_STEP puts its simplified result on a second line; a
# line longer than RULE_BESIDE, or too long with its rule beside it, puts the rule under the step. A gradient
# longer than LONG_GRADIENT is measured by TeX: scaled down a little if it almost fits, else
# written in terms of the named steps of the backward pass.
LONG_STEP = 40
RULE_BESIDE = 40
LINE, RULE_SCALE = 62, 0.85  # the room for a step and its rule (in \small) side by side
LONG_GRADIENT = 60


class TemplateError(UsageError):
    """A template that cannot be found, parsed or rendered (a teacher's own, usually)."""

    kind = "template error"


def default_template_dir() -> Path:
    """`templates/` of the source tree (an editable install), else the copy a wheel installs."""
    candidates = [
        Path(__file__).resolve().parents[2] / "templates",
        Path(sysconfig.get_path("data")) / "share" / "backstep" / "templates",
    ]
    for path in candidates:
        if (path / "derivation.tex.j2").is_file():
            return path
    raise TemplateError(
        "backstep's templates are missing (looked in " + ", ".join(str(p) for p in candidates) + "); "
        "reinstall backstep with `pip install -e .` from its source tree"
    )


class Templates:
    """The two environments (LaTeX and Markdown) over `template_dir` (optional) + the defaults."""

    def __init__(self, template_dir: Path | str | None = None):
        dirs = []
        if template_dir is not None:
            template_dir = Path(template_dir)
            if not template_dir.is_dir():
                raise TemplateError(f"--template {template_dir}: no such directory")
            dirs.append(template_dir)
        dirs.append(default_template_dir())
        self.dirs = dirs
        loader = jinja2.FileSystemLoader([str(d) for d in dirs])
        common = {"loader": loader, "undefined": jinja2.StrictUndefined, "keep_trailing_newline": True}
        self.tex = jinja2.Environment(**common, **TEX_SYNTAX, trim_blocks=True, lstrip_blocks=True)
        self.md = jinja2.Environment(**common, trim_blocks=True, lstrip_blocks=True)
        for env in (self.tex, self.md):
            env.filters.update(tex=tex_escape, tex_text=tex_text, mermaid=mermaid_escape, md=md_escape)
            env.filters.update(md_cell=md_cell, math=lambda s: f"${s}$")

    def render(self, name: str, **context: Any) -> str:
        env = self.tex if name.endswith(".tex.j2") else self.md
        try:
            return env.get_template(name).render(**context)
        except jinja2.TemplateNotFound as err:
            where = " or ".join(str(d) for d in self.dirs)
            raise TemplateError(f"template {err.name} not found in {where}") from None
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(f"{err.filename or err.name}:{err.lineno}: {err.message}") from None
        except jinja2.UndefinedError as err:
            raise TemplateError(f"template {name}: {err.message}") from None


# --- filters ------------------------------------------------------------------------------------

_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: Any) -> str:
    """Plain text made safe for LaTeX (`W1.grad`, `x_hat`, `50%`)."""
    return "".join(_TEX_SPECIAL.get(c, c) for c in str(text))


def tex_text(text: Any) -> str:
    """A teacher's text: plain prose, with `$…$` passed through as LaTeX math."""
    parts = re.split(r"(?<!\\)(\$[^$]+\$)", str(text))
    return "".join(p if p.startswith("$") and p.endswith("$") and len(p) > 1 else tex_escape(p) for p in parts)


def md_escape(text: Any) -> str:
    """Plain text made safe for Markdown prose."""
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", str(text))


def md_cell(math: Any) -> str:
    """LaTeX math inside a Markdown table cell: a `|` would end the cell."""
    return str(math).replace(r"\|", r"\Vert ").replace("|", r"\vert ")


def mermaid_escape(text: Any) -> str:
    """Text inside a quoted Mermaid label."""
    return str(text).replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


# --- the view of one derivation -------------------------------------------------------------------


def _row(**fields: Any) -> Row:
    return Row(**fields)


def view(d: Derivation, notation: str = "bar", lang: str = "en") -> Row:
    """Everything a template shows of one derivation, printed in `notation` and `lang`."""
    n = Notation(d, notation, lang)
    msg = n.msg
    tex, text = n.latex, n.text

    def sym_tex(name: str) -> str:
        return tex(n.sym(name))

    variables = [
        _row(
            name=v.name,
            tex=n.name_latex(v.name),
            shape=n.shape_latex(v.shape),
            shape_text=n.shape_text(v.shape),
            space=n.space_latex(v.shape),
            requires_grad=v.requires_grad,
            domain=msg(f"domain_{v.domain}") if f"domain_{v.domain}" in msg.table else v.domain,
            value=latex_value(d.at.get(v.name)) if d.at else "",
            at=f"{n.name_latex(v.name)} = {latex_value(d.at.get(v.name))}" if d.at else "",
        )
        for v in d.variables
    ]
    forward = [
        _row(
            index=i,
            name=s.name,
            lhs=sym_tex(s.name),
            rhs=tex(s.expr),
            text=f"{s.name} = {text(s.expr)}",
            shape=n.shape_latex(s.shape),
            shape_text=n.shape_text(s.shape),
            space=n.space_latex(s.shape),
            grad_fn=s.grad_fn,
            op=s.op,
            op_name=msg.op(s.op),
            value=_value(latex_value(s.value) if d.at else "", tex(s.expr)),
        )
        for i, s in enumerate(d.forward, 1)
    ]
    by_name = {s.name: s for s in forward}
    backward = []
    for s in d.backward:
        applied, result = tex(s.applied), tex(s.result)
        lhs_text, applied_text, result_text = text(n.sym(s.target)), text(s.applied), text(s.result)
        shown = [lhs_text, applied_text] + ([result_text] if applied_text != result_text else [])
        line = " = ".join(shown)
        split = len(shown) == 3 and len(line) > LONG_STEP
        widest = max(len(f"{lhs_text} = {applied_text}"), len(f"{lhs_text} = {result_text}")) if split else len(line)
        rule, rule_text = None, msg("chain_rule_sum")
        if s.rule is not None:
            r = s.rule
            rule = (
                f"{tex(r.forward_lhs)} = {tex(r.forward_rhs)} \\Rightarrow {tex(r.adjoint_lhs)} = {tex(r.adjoint_rhs)}"
            )
            rule_text = f"{msg.op(s.op)}: {text(r.forward_lhs)} = {text(r.forward_rhs)} ⇒ {text(r.adjoint_lhs)} = "
            rule_text += text(r.adjoint_rhs)
        node = by_name.get(s.node) if s.node else None
        target_shape = d.symbols.table[s.target].shape if s.target in d.symbols.table else ()
        backward.append(
            _row(
                index=s.index,
                target=s.target,
                of=s.of,
                kind=s.kind,
                lhs=sym_tex(s.target),
                lhs_text=text(n.sym(s.target)),
                applied=applied,
                result=result,
                text=line,
                same=applied == result,
                long=split,
                rule_below=widest > RULE_BESIDE or widest + RULE_SCALE * len(rule_text) > LINE,
                shape=n.shape_latex(target_shape),
                rule_name=msg.op(s.op) if s.op else msg("chain_rule_short"),
                rule=rule,
                rule_sentence=msg("chain_rule_sum") if s.kind == "sum" else None,
                node=node,
                of_tex=n.name_latex(s.of),
                partial=s.partial,
                value=_value(latex_value(s.value) if d.at else "", result),
            )
        )
    defining = {}  # the step that defines each adjoint last (the sum, after partial contributions)
    for s in d.backward:
        if s.partial is None:
            defining[s.of] = s
    gradients = []
    for name in d.wrt:
        g = d.gradients.get(name)
        if g is None:
            continue
        expr_text = text(g.expr)
        gradients.append(
            _row(
                name=name,
                tex=n.name_latex(name),
                lhs=n.partial_latex(name),
                lhs_text=n.partial(name),
                expr=tex(g.expr),
                text=f"{n.partial(name)} = {expr_text}",
                adjoint=n.adjoint_latex(name),
                shape=n.shape_latex(g.shape),
                space=n.space_latex(g.shape),
                in_inputs=g.in_inputs,
                long=len(expr_text) > LONG_GRADIENT,
                named=tex(defining[name].result) if name in defining else tex(g.expr),
                step=defining[name].index if name in defining else None,
                value=latex_value(g.value) if g.value is not None else "",
            )
        )
    graph = build_graph(d)
    edge_labels = {id(e): (sym_tex(e.adjoint), text(n.sym(e.adjoint))) if e.adjoint else ("", "") for e in graph.edges}
    graph_view = _row(
        graph=graph,
        drawable=graph.drawable,
        nodes=[
            _row(
                id=node.id,
                name=node.name,
                kind=node.kind,
                op=node.op,
                tex=n.name_latex(node.name),
                shape=n.shape_latex(node.shape),
                shape_text=n.shape_text(node.shape),
                requires_grad=node.requires_grad,
                col=node.col,
                row=node.row,
                x=node.x,
            )
            for node in graph.nodes
        ],
        edges=[
            _row(
                source=e.source.id,
                target=e.target.id,
                label=edge_labels[id(e)][0],
                label_text=edge_labels[id(e)][1],
                step=e.step,
                bend=0 if not e.parallel else (18 if e.parallel % 2 else -18) * ((e.parallel + 1) // 2),
            )
            for e in graph.edges
        ],
        width=graph.width,
        xgap=_column_width(graph),
        top=graph.rows[0],
        bottom=graph.rows[1],
    )
    return _row(
        d=d,
        n=n,
        msg=msg,
        lang=lang,
        notation=notation,
        source=d.source,
        program=list(d.program) if len(d.program) > 1 else [],  # the statements, without annotations
        output=d.output,
        output_tex=n.name_latex(d.output),
        output_expr=tex(d.output_expr),
        output_text=f"{d.output} = {text(d.output_expr)}",
        output_shape=n.shape_latex(d.output_shape),
        output_space=n.space_latex(d.output_shape),
        variables=variables,
        wrt=[v for v in variables if v.requires_grad],
        all_wrt=all(v.requires_grad for v in variables),
        forward=forward,
        seed=n.seed_latex(),
        seed_text=n.seed_text(),
        seed_shape=n.shape_latex(d.seed.shape),
        seed_is_one=d.seed.is_one,
        backward=backward,
        # one step too wide for its rule beside it puts every rule under its step (a steady layout)
        rules_below=any(s.rule_below or s.long for s in backward),
        gradients=gradients,
        at=d.at,
        graph=graph_view,
        verification=verification_view(d, msg),
        notes=list(d.notes),
    )


def _column_width(graph) -> str:
    """The distance between columns of the drawn graph, in cm: room for the widest node and an edge.

    A node is as wide as its longest line: the name, the op (small typewriter), the shape (small
    math, `N × 3 × 8 × 6`); these are estimates of their widths at the sizes graph.tex.j2 uses.
    """
    widest = 0.0
    for node in graph.nodes:
        shape = 0.2 * (2 * len(node.shape) - 1) if node.shape else 0.6
        op = 0.14 * len(node.op or "")
        name = 0.22 * len(node.name)
        widest = max(widest, shape, op, name)
    return f"{max(2.15, widest + 0.35 + 1.0):.2f}"


def _value(value: str, shown: str) -> str:
    """A step's number, unless the step already is that number (`v̄ = 1`, not `v̄ = 1 = 1`)."""
    return "" if value == shown else value


def verification_view(d: Derivation, msg) -> Row | None:
    v = d.verification
    if v is None:
        return None
    rows = [
        _row(
            label=f"{c.name}.grad",
            ok=c.ok,
            count="",
            abs=latex_error(c.max_abs_err),
            rel=latex_error(c.max_rel_err),
            abs_text=format_error(c.max_abs_err),
            rel_text=format_error(c.max_rel_err),
        )
        for c in v.gradients
    ]
    summary = []
    for key, checks, errors in (
        ("every_intermediate", v.adjoints, True),
        ("forward_values", v.forward, True),
        ("grad_fn_names", v.grad_fns, False),
    ):
        if not checks:
            continue
        worst_abs = max(c.max_abs_err for c in checks)
        worst_rel = max(c.max_rel_err for c in checks)
        summary.append(
            _row(
                label=msg(key),
                ok=all(c.ok for c in checks),
                count=f"{sum(c.ok for c in checks)}/{len(checks)}",
                abs=latex_error(worst_abs) if errors else "",
                rel=latex_error(worst_rel) if errors else "",
                abs_text=format_error(worst_abs) if errors else "",
                rel_text=format_error(worst_rel) if errors else "",
            )
        )
    failure = v.first_failure
    return _row(
        ok=v.ok,
        status=msg("verified") if v.ok else msg("mismatch"),
        dtype=v.dtype,
        points=v.points,
        sizes=list(v.sizes.items()),
        sizes_tex=[f"{latex_name(k)} = {size}" for k, size in v.sizes.items()],
        sizes_text=" ".join(f"{k}={size}" for k, size in v.sizes.items()),
        rows=rows,
        summary=summary,
        failure=None
        if failure is None
        else _row(
            kind=msg(f"kind_{failure.kind}") if f"kind_{failure.kind}" in msg.table else failure.kind,
            name=failure.name,
            detail=failure.detail,
            error=format_error(failure.max_abs_err),
        ),
        problems=list(v.problems),
    )


def context(D: Row, **extra: Any) -> dict:
    """The names every template sees: the view `D`, its catalogue `msg`, and helpers."""
    return {"D": D, "msg": D.msg, "lang": D.lang, "format_value": format_value, **extra}
