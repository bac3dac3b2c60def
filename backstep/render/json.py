"""`--format json`: a stable schema for other tools (documented in README.md, "JSON schema").

Every expression is given three ways: `expr` in backstep's own input language (parseable by
backstep: the gradients are in terms of the inputs, the seed `grad_<output>` and dimension
names), `latex`, and `text` (as the terminal shows it). A gradient's `named` form (what the documents
show) is in terms of the named intermediates and the `named_adjoints`.
"""

from __future__ import annotations

import json

from ..model import Check, Derivation, Verification
from .common import Notation
from .registry import renderer

SCHEMA = "backstep.derivation/1"


def expression(n: Notation, expr) -> dict:
    return {"expr": n.lang(expr), "latex": n.latex(expr), "text": n.text(expr)}


def to_dict(d: Derivation) -> dict:
    n = Notation(d)
    out = {
        "schema": SCHEMA,
        "input": d.source,
        "output": {"name": d.output, "shape": list(d.output_shape), **expression(n, d.output_expr)},
        "variables": [
            {"name": v.name, "shape": list(v.shape), "requires_grad": v.requires_grad, "domain": v.domain}
            for v in d.variables
        ],
        "dims": list(d.dims),
        "forward": [
            {
                "name": s.name,
                "op": s.op,
                **expression(n, s.expr),
                "shape": list(s.shape),
                "grad_fn": d.grad_fn_of(s),
                "line": s.line,
                "col": s.col,
                **({"value": s.value} if d.at else {}),
            }
            for s in d.forward
        ],
        "seed": {"name": d.seed.name, "shape": list(d.seed.shape), "is_one": d.seed.is_one},
        "backward": [
            {
                "index": s.index,
                "target": s.target,
                "of": s.of,
                "kind": s.kind,
                "node": s.node,
                "op": s.op,
                "partial": s.partial,
                "rule": None
                if s.rule is None
                else {
                    "text": f"{n.text(s.rule.forward_lhs)} = {n.text(s.rule.forward_rhs)} ⇒ "
                    f"{n.text(s.rule.adjoint_lhs)} = {n.text(s.rule.adjoint_rhs)}",
                    "latex": rf"{n.latex(s.rule.forward_lhs)} = {n.latex(s.rule.forward_rhs)} \Rightarrow "
                    rf"{n.latex(s.rule.adjoint_lhs)} = {n.latex(s.rule.adjoint_rhs)}",
                },
                "applied": expression(n, s.applied),
                "result": expression(n, s.result),
                "unsimplified": s.unsimplified or None,
                "layer": None
                if s.layer is None
                else {"steps": list(s.layer.steps), "forward": expression(n, s.layer.forward)},
                **({"value": s.value} if d.at else {}),
            }
            for s in d.backward
        ],
        "gradients": {
            name: {
                **expression(n, g.expr),
                "shape": list(g.shape),
                "in_terms_of_inputs": g.in_inputs,
                "unsimplified": g.unsimplified or None,
                "named": None if g.named is None else expression(n, g.named),
                **({"value": g.value} if g.value is not None else {}),
            }
            for name, g in d.gradients.items()
        },
        "named_adjoints": [
            {"symbol": a.symbol, "of": a.of, "shape": list(a.shape), **expression(n, a.expr)} for a in d.named_adjoints
        ],
        "at": d.at,
        "sizes": d.sizes or None,
        "verification": verification_dict(d.verification),
        "notes": d.all_notes,
    }
    return out


def check_dict(c: Check) -> dict:
    return {"name": c.name, "ok": c.ok, "max_abs_err": c.max_abs_err, "max_rel_err": c.max_rel_err, "detail": c.detail}


def verification_dict(v: Verification | None) -> dict | None:
    if v is None:
        return None
    return {
        "ok": v.ok,
        "points": v.points,
        "dtype": v.dtype,
        "sizes": v.sizes,
        "seed": v.seed,
        "gradients": [check_dict(c) for c in v.gradients],
        "adjoints": [check_dict(c) for c in v.adjoints],
        "forward": [check_dict(c) for c in v.forward],
        "grad_fns": [check_dict(c) for c in v.grad_fns],
        "problems": v.problems,
    }


@renderer("json")
def render_json(d: Derivation) -> str:
    return json.dumps(to_dict(d), indent=2, ensure_ascii=False)
