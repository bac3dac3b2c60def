"""`--format md`: Markdown with `$…$`/`$$…$$` math (as GitHub renders it) and a Mermaid graph.

The Markdown comes from the template ``derivation.md.j2`` (with ``graph.md.j2``); this module
hands it the view of the derivation.
"""

from __future__ import annotations

from pathlib import Path

from ..model import Derivation
from .documents import Templates, context, view
from .registry import renderer


@renderer("md", choices=("notation", "lang", "template_dir"))
def render_markdown(
    d: Derivation, notation: str = "bar", lang: str = "en", template_dir: Path | str | None = None
) -> str:
    D = view(d, notation, lang)
    return Templates(template_dir).render("derivation.md.j2", **context(D))
