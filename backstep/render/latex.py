"""`--format latex`: the derivation as a LaTeX fragment, or (`standalone`) a complete document.

The LaTeX comes from the templates ``fragment.tex.j2`` / ``document.tex.j2`` (and the macros of
``derivation.tex.j2`` and ``graph.tex.j2`` they call); this module only picks the template and
hands it the view of the derivation. ``math_only`` is the math alone (no tables, no TikZ), for
MathJax: what a Jupyter notebook shows.
"""

from __future__ import annotations

from pathlib import Path

from ..model import Derivation
from .documents import Templates, context, view
from .registry import renderer


@renderer("latex", choices=("notation", "lang", "template_dir", "standalone"))
def render_latex(
    d: Derivation,
    standalone: bool = False,
    notation: str = "bar",
    lang: str = "en",
    template_dir: Path | str | None = None,
    math_only: bool = False,
) -> str:
    D = view(d, notation, lang)
    if math_only:
        name = "math.tex.j2"
    else:
        name = "document.tex.j2" if standalone else "fragment.tex.j2"
    return Templates(template_dir).render(name, **context(D, level="subsection"))
