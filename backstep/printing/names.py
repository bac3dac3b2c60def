"""How a name prints: LaTeX spellings of variable names (`W1` -> `W_{1}`) and adjoint bars."""

from __future__ import annotations

import re

GREEK = {
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "pi",
    "rho",
    "sigma",
    "tau",
    "phi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Pi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
}


def latex_name(name: str) -> str:
    """`W1` -> `W_{1}`, `x_hat` -> `x_{hat}`, `alpha` -> `\\alpha`, `fc1.weight` -> `\\mathit{fc1.weight}`."""
    m = re.fullmatch(r"([A-Za-z]+?)_?(\d+)", name)
    if m and (len(m.group(1)) == 1 or m.group(1) in GREEK):
        return f"{latex_name(m.group(1))}_{{{m.group(2)}}}"
    if name in GREEK:
        return "\\" + name
    if len(name) == 1:
        return name
    m = re.fullmatch(r"([A-Za-z])_([A-Za-z0-9]+)", name)
    if m:
        return f"{m.group(1)}_{{\\mathrm{{{m.group(2)}}}}}"
    return r"\mathit{" + name.replace("_", r"\_") + "}"


def bar_text(name: str) -> str:
    """`W1` -> `W̄1`: the macron over the first letter, as a hand-written adjoint."""
    return name[0] + "\u0304" + name[1:]


def bar_latex(name: str) -> str:
    latex = latex_name(name)
    m = re.fullmatch(r"(\\?[A-Za-z]+)(_\{.*\})?", latex)
    if m and (len(m.group(1)) == 1 or m.group(1).startswith("\\")):
        return rf"\bar{{{m.group(1)}}}{m.group(2) or ''}"
    return rf"\overline{{{latex}}}"
