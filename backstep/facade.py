"""The Derivation users get: the data of ``backstep.model`` with its renderings and its check as methods.

``backstep.derive`` returns this subclass; renderers and the verifier read only the model's
fields. The methods import the renderers and the verifier when they are called, so that
``import backstep`` pays for neither, and so that the model never depends on them.
"""

from __future__ import annotations

from . import model
from .model import Verification


class Derivation(model.Derivation):
    """The backpropagation of one function, produced by ``backstep.derive``.

    ``repr(d)`` is one line (the output, the sizes of the passes, the gradients, the verification),
    ``str(d)`` a few (the formula and shapes, each gradient, the verification); ``to_text()`` is the
    full terminal view, ``to_json()`` the ``backstep.derivation/1`` document.
    """

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
        and return it (``.ok`` says whether all agree). A grad_fn that the installed torch names
        otherwise than the op table is shown as torch names it, with a note: not a failure."""
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
                lines.append(
                    f"{n.partial(name)} = {n.text(self.shown_gradient(name))}{value}   ({format_shape(g.shape)})"
                )
            for a in self.shown_adjoints:
                lines.append(f"  where {n.text(n.sym(a.symbol))} = {n.text(a.expr)}   ({format_shape(a.shape)})")
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
