"""`backstep check`: is a hand-derived gradient right — and if not, where and why.

A *claim* is an expression in backstep's input language for the gradient of a formula with
respect to one of its variables (or the adjoint of one of its named intermediates). It is parsed
by backstep's own parser (never evaluated as Python), over the names of the formula: its
variables, its intermediates, the dimension names, and the adjoints (``grad_y``, ``y_bar``,
``dL/dy`` …; see ``adjoint_spellings``).

Deciding. A claim is right only when it matches the true gradient everywhere it is evaluated:
numerically always — float64, at random points inside the domains, at two sets of distinct,
non-square sizes, the truth coming from torch autograd — and, where SymPy can prove the
equality within a time budget, symbolically too. A claim of the wrong shape is wrong.

Diagnosing. When a claim is wrong, candidate mistakes are tried one by one, each by *applying
the fix* and testing the fixed claim against the truth at every point: the claim transposed,
one operand transposed (or one transpose removed), a matrix product's order swapped, a sum over
another axis, the claim summed over a broadcast axis, the claim divided by a constant (a sign, a
factor of 2, a mean's 1/n), A replaced by A + Aᵀ, and — built from the derivation's own steps —
the true gradient with one chain-rule factor left out (or put in twice) or with one term of the
multivariable chain rule left out. Only a fix that makes the claim equal to the truth at every
point is reported; otherwise the answer is "I could not name the mistake".

Derivation files (one ``name = expression`` per line) are checked line by line against the true
adjoint of each named node; every adjoint a line uses is bound to its *true* value, so that a
line is judged as if the lines before it were right.

Circular claims. Since the adjoints a claim uses are bound to their true values, a claim may use
only what the true derivation has before the quantity it claims (see ``Problem.circular``):
otherwise ``grad_W1 = grad_W1``, or two lines that each use the other's adjoint, would be right.

The package, by job: ``problem.py`` (Problem: a formula's names and targets, one claim checked),
``claims.py`` (the claim language: adjoint spellings, terms, their shapes and SymPy meaning),
``records.py`` (Result, Mistake, Target, Scope, Helper), ``points.py`` (sizes, random points, a
claim's values, counterexamples), ``proof.py`` (every name's definition, the normal form, proofs),
``diagnose.py`` and ``chain.py`` (naming the mistake of a wrong claim), ``files.py`` (derivation
files), ``run.py`` (the command: one claim, a file, a batch), and grading a class: ``grade.py``
(the grading), ``submissions.py`` (the key, the students' files), ``grades.py`` (grades.csv, the
table), ``common.py`` (what run.py and grade.py share). This module re-exports the names other code
uses (``from backstep.check import Problem``); it imports none of the command or grading modules.
"""

from .claims import (
    LOSS_NAMES,
    ClaimShapeError,
    Term,
    adjoint_spellings,
    broadcast_sum_axes,
    broadcasts_to,
    infer_shapes,
    term_to_sympy,
)
from .diagnose import Diagnosis
from .files import split_lines, split_text
from .points import MAX_BYTES, MAX_DRAWS, MAX_ELEMENTS, Point
from .problem import Problem
from .proof import DEFAULT_BUDGET, normalize
from .records import MISTAKE_KINDS, Helper, Mistake, Result, Scope, Target

__all__ = [
    "Problem",
    "Result",
    "Mistake",
    "MISTAKE_KINDS",
    "Target",
    "Scope",
    "Term",
    "Point",
    "Helper",
    "Diagnosis",
    "ClaimShapeError",
    "adjoint_spellings",
    "split_lines",
    "split_text",
    "infer_shapes",
    "term_to_sympy",
    "normalize",
    "broadcasts_to",
    "broadcast_sum_axes",
    "DEFAULT_BUDGET",
    "LOSS_NAMES",
    "MAX_BYTES",
    "MAX_DRAWS",
    "MAX_ELEMENTS",
]
