"""How a name prints: LaTeX and Unicode spellings of variable names and their adjoint bars.

A name a student writes is read as a base letter, an accent and a subscript, where it has that
shape: `W1` -> W₁ (`W_{1}`), `gamma` -> γ, `lam` -> λ (`lambda` is a Python keyword), `y_hat` and
`yhat` -> ŷ, `D_in` -> `D_{\\mathrm{in}}`. Any other name is a word, printed whole (`\\mathit{xc}`),
and its adjoint bar covers the whole word (`\\overline{\\mathit{xc}}`, x̅c̅), never its first letter.
"""

from __future__ import annotations

import re
import unicodedata

GREEK_LETTERS = {
    "alpha": "α",
    "beta": "β",
    "gamma": "γ",
    "delta": "δ",
    "epsilon": "ε",
    "zeta": "ζ",
    "eta": "η",
    "theta": "θ",
    "iota": "ι",
    "kappa": "κ",
    "lambda": "λ",
    "mu": "μ",
    "nu": "ν",
    "xi": "ξ",
    "pi": "π",
    "rho": "ρ",
    "sigma": "σ",
    "tau": "τ",
    "phi": "φ",
    "chi": "χ",
    "psi": "ψ",
    "omega": "ω",
    "Gamma": "Γ",
    "Delta": "Δ",
    "Theta": "Θ",
    "Lambda": "Λ",
    "Xi": "Ξ",
    "Pi": "Π",
    "Sigma": "Σ",
    "Phi": "Φ",
    "Psi": "Ψ",
    "Omega": "Ω",
}
GREEK = set(GREEK_LETTERS)
# Spellings a program uses because the Greek name cannot be one (`lambda` is a keyword).
GREEK_ALIASES = {"lam": "lambda", "lmbda": "lambda", "eps": "epsilon"}
ACCENTS = {"hat": ("\\hat", "\u0302"), "tilde": ("\\tilde", "\u0303")}  # LaTeX, combining character
MACRON, OVERLINE = "\u0304", "\u0305"

_BASES = sorted([*GREEK, *GREEK_ALIASES], key=len, reverse=True)
_NAME = re.compile(
    rf"(?P<base>{'|'.join(_BASES)}|[A-Za-z])"
    rf"(?:_?(?P<accent>{'|'.join(ACCENTS)}))?"
    r"(?:_?(?P<digits>\d+)|_(?P<word>[A-Za-z][A-Za-z0-9]*))?"
)


def _parts(name: str) -> tuple[str, str, str, str, str] | None:
    """(base LaTeX, base text, accent LaTeX, accent text, subscript) of a letter-shaped name, else None.
    The subscript is `digits`, or `_word` for a word."""
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    base = GREEK_ALIASES.get(m.group("base"), m.group("base"))
    base_latex, base_text = ("\\" + base, GREEK_LETTERS[base]) if base in GREEK_LETTERS else (base, base)
    accent_latex, accent_text = ACCENTS.get(m.group("accent") or "", ("", ""))
    sub = m.group("digits") or ("_" + m.group("word") if m.group("word") else "")
    return base_latex, base_text, accent_latex, accent_text, sub


def _sub_latex(sub: str) -> str:
    if not sub:
        return ""
    return f"_{{\\mathrm{{{sub[1:]}}}}}" if sub.startswith("_") else f"_{{{sub}}}"


def _accented(base_latex: str, accent_latex: str) -> str:
    return f"{accent_latex}{{{base_latex}}}" if accent_latex else base_latex


def latex_name(name: str) -> str:
    """`W1` -> `W_{1}`, `y_hat` -> `\\hat{y}`, `alpha` -> `\\alpha`, `12` -> `12` (upright digits),
    `fc1.weight` -> `\\mathit{fc1.weight}`."""
    if name.isdigit():
        return name
    parts = _parts(name)
    if parts is None:
        return r"\mathit{" + name.replace("_", r"\_") + "}"
    base_latex, _, accent_latex, _, sub = parts
    return _accented(base_latex, accent_latex) + _sub_latex(sub)


def text_name(name: str) -> str:
    """A name as the terminal shows it: `gamma` -> `γ`, `y_hat` -> `ŷ`, `W1` -> `W1`, `xc` -> `xc`."""
    parts = _parts(name)
    if parts is None:
        return name
    _, base_text, _, accent_text, sub = parts
    return unicodedata.normalize("NFC", base_text + accent_text) + sub  # ŷ as one character where it is one


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def text_names(text: str) -> str:
    """Every identifier in a symbol's text spelled as `text_name` does (`∂L/∂gamma` -> `∂L/∂γ`)."""
    return _IDENTIFIER.sub(lambda m: text_name(m.group()), text)


def bar_text(name: str) -> str:
    """`W1` -> `W̄1`, `gamma` -> `γ̄`; a word is overlined whole: `xc` -> `x̅c̅`."""
    parts = _parts(name)
    if parts is None:
        return "".join(c + OVERLINE for c in name)
    _, base_text, _, accent_text, sub = parts
    # ŷ composed as one character where it is one; the macron stays a combining one (x̄, as before)
    return unicodedata.normalize("NFC", base_text + accent_text) + MACRON + sub


def bar_latex(name: str) -> str:
    """`W1` -> `\\bar{W}_{1}`, `y_hat` -> `\\bar{\\hat{y}}`; a word: `\\overline{\\mathit{xc}}`."""
    parts = _parts(name)
    if parts is None:
        return rf"\overline{{{latex_name(name)}}}"
    base_latex, _, accent_latex, _, sub = parts
    return rf"\bar{{{_accented(base_latex, accent_latex)}}}" + _sub_latex(sub)
