"""The derivation data model: pure data, produced by ``derive`` and only read by renderers.

Expressions are SymPy expressions over the symbols in ``Derivation.symbols`` (variables,
named intermediates, adjoints ``grad_*``, partial adjoints ``grad_*_k``, and the generic
symbols of the general rules, whose names start with ``_``). Renderers print them through
``backstep.printing`` with that table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sympy import Expr

from .printing import Symbols

# A number as a renderer shows it: a float, or nested lists of floats for an array.
Value = Any


@dataclass
class Variable:
    name: str
    shape: tuple
    requires_grad: bool
    domain: str  # where the verifier draws it: real, positive, ...


@dataclass
class ForwardStep:
    name: str
    op: str
    expr: Expr  # the op applied to the names of its inputs
    shape: tuple
    grad_fn: str | None  # the torch grad_fn this node appears as (None: not differentiable)
    line: int | None = None
    col: int | None = None
    value: Value = None  # with --at


@dataclass
class Rule:
    """The general local rule of an op for one input: `y = f(a, b)  ⇒  ā = …`."""

    forward_lhs: Expr
    forward_rhs: Expr
    adjoint_lhs: Expr
    adjoint_rhs: Expr


@dataclass
class BackwardStep:
    index: int  # 1-based, in the order of the reverse sweep
    target: str  # the symbol this step defines: grad_x, or grad_x_2 for a partial
    of: str  # the name whose adjoint this is (x)
    kind: str  # "rule" (one edge of the graph) or "sum" (the multivariable chain rule)
    node: str | None  # the forward node whose rule this is (kind "rule")
    op: str | None
    rule: Rule | None  # the general rule (kind "rule")
    applied: Expr  # the rule with these names, before simplification
    result: Expr  # the simplified result
    partial: int | None = None  # k when this is the k-th contribution to `of`
    value: Value = None  # with --at
    unsimplified: str = ""  # why `result` is shown as built (simplification ran out of time)


@dataclass
class Seed:
    """The upstream gradient of the output: 1 for a scalar, else a symbol of the output's shape."""

    name: str  # the symbol (grad_y), even for a scalar output
    shape: tuple
    is_one: bool


@dataclass
class Gradient:
    name: str  # the variable
    expr: Expr  # in terms of the inputs (and the seed for a non-scalar output)
    shape: tuple
    in_inputs: bool = True  # False: too large to expand, written with named intermediates
    value: Value = None  # with --at
    unsimplified: str = ""  # why `expr` is shown as built (simplification ran out of time)


@dataclass
class Check:
    """One comparison of a symbolic quantity with torch autograd, over all points."""

    name: str  # a variable, or the symbol of an intermediate's adjoint
    ok: bool
    max_abs_err: float
    max_rel_err: float
    kind: str = "gradient"  # gradient, adjoint, forward, grad_fn
    detail: str = ""


@dataclass
class Verification:
    points: int
    dtype: str
    sizes: dict[str, int]  # the sample size of each symbolic dimension
    seed: int
    gradients: list[Check] = field(default_factory=list)
    adjoints: list[Check] = field(default_factory=list)  # every intermediate (retain_grad)
    forward: list[Check] = field(default_factory=list)
    grad_fns: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        checks = self.gradients + self.adjoints + self.forward + self.grad_fns
        return not self.problems and all(c.ok for c in checks)

    @property
    def first_failure(self) -> Check | None:
        for c in self.forward + self.adjoints + self.gradients + self.grad_fns:
            if not c.ok:
                return c
        return None


@dataclass(repr=False)
class Derivation:
    """The backpropagation of one function, produced by ``backstep.derive``.

    ``repr(d)`` is one line (the output, the sizes of the passes, the gradients, the verification),
    ``str(d)`` a few (the formula and shapes, each gradient, the verification); ``to_text()`` is the
    full terminal view, ``to_json()`` the ``backstep.derivation/1`` document.
    """

    source: str
    output: str
    output_shape: tuple
    output_expr: Expr  # the output in terms of the inputs
    variables: list[Variable]
    dims: list[str]
    forward: list[ForwardStep]
    seed: Seed
    backward: list[BackwardStep]
    gradients: dict[str, Gradient]
    symbols: Symbols
    edges: list[tuple[str, str]]  # (input name, node name) of the computational graph
    program: list[str] = field(default_factory=list)  # the statements as written (no annotations)
    at: dict[str, Value] | None = None  # the point of --at, with drawn values filled in
    sizes: dict[str, int] = field(default_factory=dict)  # sizes used for --at values
    verification: Verification | None = None
    notes: list[str] = field(default_factory=list)
    graph: Any = field(default=None, repr=False, compare=False)  # the parse it came from (for the verifier)

    @property
    def wrt(self) -> list[str]:
        """The variables that get gradients, in order."""
        return [v.name for v in self.variables if v.requires_grad]

    # Renderers, for the Python API and notebooks (imported lazily: rendering is optional).
    def to_dict(self) -> dict:
        """The ``backstep.derivation/1`` document (README, "JSON schema") as Python data."""
        from .render.json import to_dict

        return to_dict(self)

    def to_json(self) -> str:
        """The ``backstep.derivation/1`` document as JSON text: what ``backstep derive --format json`` writes."""
        from .render import render

        return render(self, "json")

    def to_text(self, notation: str = "bar", lang: str = "en") -> str:
        """The terminal view, as plain text: forward pass, backward steps, gradients, verification.

        notation: how adjoints are written, ``bar`` (W̄), ``partial`` (∂L/∂W) or ``delta`` (δ_W);
        lang: the language of the prose, ``en`` or ``zh``."""
        from .render import render

        return render(self, "text", notation=notation, lang=lang)

    def to_markdown(self, notation: str = "bar", lang: str = "en", template_dir=None) -> str:
        """Markdown with $…$ math and a Mermaid graph (the template derivation.md.j2)."""
        from .render import render

        return render(self, "md", notation=notation, lang=lang, template_dir=template_dir)

    def to_latex(self, standalone: bool = False, notation: str = "bar", lang: str = "en", template_dir=None) -> str:
        """A LaTeX fragment to paste, or with `standalone` a complete document."""
        from .render import render

        return render(self, "latex", standalone=standalone, notation=notation, lang=lang, template_dir=template_dir)

    def to_pdf(self, path, notation: str = "bar", lang: str = "en", template_dir=None) -> None:
        """Compile the complete LaTeX document to the PDF file `path` (needs latexmk and xelatex)."""
        from .render.pdf import write_pdf

        write_pdf(self, path, notation=notation, lang=lang, template_dir=template_dir)

    # Jupyter shows a derivation as math: the Markdown view (with its graph), or the LaTeX math alone.
    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _repr_latex_(self) -> str:
        from .render import render

        return render(self, "latex", math_only=True)

    def verify(self, points: int = 3, seed: int = 0, max_elements: int | None = None) -> Verification:
        """Check every forward value, every step's adjoint, every gradient and every grad_fn name against
        torch autograd at `points` random points (float64); store the result in ``self.verification``
        and return it (``.ok`` says whether all agree)."""
        from .verify import verify

        limit = {} if max_elements is None else {"max_elements": max_elements}
        self.verification = verify(self, points=points, seed=seed, **limit)
        return self.verification

    # Short and readable: the dataclass repr would print every field (kilobytes of SymPy trees).
    def __repr__(self) -> str:
        try:
            forward = _count(len(self.forward), "forward step")
            backward = _count(len(self.backward), "backward step")
            grads = f"gradients for {', '.join(self.wrt)}" if self.wrt else "no gradients"
            return f"<Derivation {_clip(self._formula_text())}: {forward}, {backward}, {grads}; {self._verified()}>"
        except Exception:  # a repr must not fail, whatever state the object is in
            return f"<Derivation of {_clip(str(self.source))!r}>"

    def __str__(self) -> str:
        """The formula and its shapes, each gradient, and the verification line."""
        try:
            from .render.common import Notation, format_value
            from .shapes import format_shape

            n = Notation(self)
            lines = list(self.program) if len(self.program) > 1 else [self._formula_text(n)]
            lines.append(
                "   ".join(f"{v.name}: {format_shape(v.shape)}" for v in self.variables)
                + f"   →   {self.output}: {format_shape(self.output_shape)}"
            )
            for name in self.wrt:
                g = self.gradients[name]
                value = "" if g.value is None else f" = {format_value(g.value)}"
                lines.append(f"{n.partial(name)} = {n.text(g.expr)}{value}   ({format_shape(g.shape)})")
            lines.append(self._verified(long=True))
            return "\n".join(lines)
        except Exception:
            return repr(self)

    def _formula_text(self, n=None) -> str:
        if n is None:
            from .render.common import Notation

            n = Notation(self)
        return f"{self.output} = {n.text(self.output_expr)}"

    def _verified(self, long: bool = False) -> str:
        v = self.verification
        if v is None:
            return "not verified (d.verify() checks it against PyTorch autograd)" if long else "not verified"
        if not v.ok:
            failure = v.first_failure
            where = f": {failure.kind} of {failure.name}" if failure else ""
            return f"✗ verification failed{where}"
        if not long:
            return "verified ✓"
        sizes = " ".join(f"{k}={s}" for k, s in v.sizes.items())
        return f"✓ verified with PyTorch autograd ({v.dtype}, {_count(v.points, 'random point')}" + (
            f", {sizes})" if sizes else ")"
        )


def _count(k: int, what: str) -> str:
    return f"{k} {what}{'' if k == 1 else 's'}"


def _clip(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
