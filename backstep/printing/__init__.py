"""Printing SymPy expressions as text, LaTeX, backstep's own input language, or torch code.

One printer per target over a shared base (``base.Printer``), which dispatches on the
expression's class: SymPy's own algebra (``Add``, ``Mul``, ``Pow``, numbers, symbols) by
structure, and every function by the ``Printing`` rule declared for its op in the op table.
Renderers never build math by hand; they call ``to_text``, ``to_latex``, ``to_lang`` or
``to_torch``, or hold a printer from ``printer_for(target, symbols)`` (``Printer(target,
symbols)``, the call from before the split, builds the same).

Products of two arrays are elementwise (Hadamard) and print as ``⊙``; a scalar factor prints
by juxtaposition. To know which is which the printer asks ``Symbols`` for the shape of each
symbol.
"""

from ..model import SymbolInfo, Symbols  # the derivation's data; re-exported for the printers' callers
from .base import PRINTERS, NotationPrinter, Printer, PythonSyntaxPrinter, printer_for
from .latex import LatexPrinter, to_latex
from .names import GREEK, bar_latex, bar_text, latex_name, text_name, text_names
from .source import SourcePrinter, to_lang
from .text import SUPERSCRIPTS, TextPrinter, to_text
from .torch import TorchPrinter, to_torch

__all__ = [
    "GREEK",
    "PRINTERS",
    "SUPERSCRIPTS",
    "LatexPrinter",
    "NotationPrinter",
    "Printer",
    "PythonSyntaxPrinter",
    "SourcePrinter",
    "SymbolInfo",
    "Symbols",
    "TextPrinter",
    "TorchPrinter",
    "bar_latex",
    "bar_text",
    "latex_name",
    "printer_for",
    "text_name",
    "text_names",
    "to_latex",
    "to_lang",
    "to_text",
    "to_torch",
]
