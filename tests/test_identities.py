"""Matrix Cookbook identities and the closed forms a student recognises.

Each identity: a formula, the variable, and the textbook gradient written in backstep's own
language. backstep's simplified result must equal the textbook form *symbolically* (the same
SymPy expression after backstep's own tidying, or a difference that expands to 0), and the
derivation must verify against torch autograd. Sizes are distinct and non-square wherever the
identity allows.
"""

from __future__ import annotations

import pytest
import sympy

import backstep
from backstep.simplify import tidy
from backstep.symbolic import Sigmoid

# (name, formula, shapes, wrt, textbook gradient)
IDENTITIES = [
    ("d(aᵀx)/dx = a", "dot(a, x)", {"a": (4,), "x": (4,)}, "x", "a"),
    ("d(aᵀXb)/dX = a bᵀ", "a @ X @ b", {"a": (3,), "X": (3, 5), "b": (5,)}, "X", "outer(a, b)"),
    ("d(aᵀXᵀb)/dX = b aᵀ", "a @ X.T @ b", {"a": (3,), "X": (5, 3), "b": (5,)}, "X", "outer(b, a)"),
    ("d(xᵀAx)/dx = (A + Aᵀ)x", "x @ A @ x", {"x": (4,), "A": (4, 4)}, "x", "(A + A.T) @ x"),
    ("d(xᵀAx)/dA = x xᵀ", "x @ A @ x", {"x": (4,), "A": (4, 4)}, "A", "outer(x, x)"),
    ("d(xᵀx)/dx = 2x", "x @ x", {"x": (5,)}, "x", "2 * x"),
    ("d tr(AXB)/dX = Aᵀ Bᵀ", "trace(A @ X @ B)", {"A": (2, 3), "X": (3, 5), "B": (5, 2)}, "X", "A.T @ B.T"),
    ("d tr(X)/dX = I", "trace(X)", {"X": ("n", "n")}, "X", "eye(n)"),
    ("d tr(XᵀA)/dX = A", "trace(X.T @ A)", {"X": (3, 5), "A": (3, 5)}, "X", "A"),
    ("d tr(AX)/dX = Aᵀ", "trace(A @ X)", {"A": (5, 3), "X": (3, 5)}, "X", "A.T"),
    ("d tr(XᵀX)/dX = 2X", "trace(X.T @ X)", {"X": (3, 5)}, "X", "2 * X"),
    ("d tr(XᵀAX)/dX = (A + Aᵀ)X", "trace(X.T @ A @ X)", {"X": (3, 5), "A": (3, 3)}, "X", "(A + A.T) @ X"),
    ("d logdet X/dX = X⁻ᵀ", "logdet(X)", {"X": (4, 4)}, "X", "inv(X).T"),
    ("d det X/dX = det(X) X⁻ᵀ", "det(X)", {"X": (4, 4)}, "X", "det(X) * inv(X).T"),
    ("d tr(X⁻¹)/dX = −X⁻ᵀX⁻ᵀ", "trace(inv(X))", {"X": (4, 4)}, "X", "-(inv(X).T @ inv(X).T)"),
    (
        "d‖Ax − b‖²/dx = 2Aᵀ(Ax − b)",
        "sum((A @ x - b)**2)",
        {"A": (5, 3), "x": (3,), "b": (5,)},
        "x",
        "2 * (A.T @ (A @ x - b))",
    ),
    (
        "d‖Ax − b‖²/dx with norm",
        "norm(A @ x - b)**2",
        {"A": (5, 3), "x": (3,), "b": (5,)},
        "x",
        "2 * (A.T @ (A @ x - b))",
    ),
    ("d‖x‖/dx = x/‖x‖", "norm(x)", {"x": (5,)}, "x", "x / norm(x)"),
    (
        "d(aᵀX⁻¹b)/dX = −X⁻ᵀ a bᵀ X⁻ᵀ",
        "a @ inv(X) @ b",
        {"a": (4,), "X": (4, 4), "b": (4,)},
        "X",
        "-(inv(X).T @ outer(a, b) @ inv(X).T)",
    ),
    ("d tr(AXᵀ)/dX = A", "trace(A @ X.T)", {"A": (3, 5), "X": (3, 5)}, "X", "A"),
]

# Closed forms of neural-network layers.
CLOSED_FORMS = [
    (
        "softmax + cross-entropy = (softmax(z) − onehot(y))/N",
        "cross_entropy(Z, t)",
        {"Z": ("n", "c"), "t": ("n",)},
        "Z",
        "(softmax(Z, axis=1) - onehot(t, c)) / n",
    ),
    (
        "cross-entropy with one-hot targets",
        "cross_entropy(Z, T)",
        {"Z": ("n", "c"), "T": ("n", "c")},
        "Z",
        "(softmax(Z, axis=1) - T) / n",
    ),
    (
        "log-sum-exp gives softmax",
        "logsumexp(Z, axis=1)",
        {"Z": (3, 5)},
        "Z",
        "unsqueeze(grad_y, axis=1) * softmax(Z, axis=1)",
    ),
    ("σ′ = σ(1 − σ)", "sum(sigmoid(x))", {"x": (3, 4)}, "x", "sigmoid(x) * (1 - sigmoid(x))"),
    ("tanh′ = 1 − tanh²", "sum(tanh(x))", {"x": (3, 4)}, "x", "1 - tanh(x)**2"),
    (
        "bias gradient = sum over the batch",
        "X @ W.T + b",
        {"X": ("n", "d"), "W": ("h", "d"), "b": ("h",)},
        "b",
        "sum(grad_y, axis=0)",
    ),
    ("linear layer input gradient", "X @ W.T + b", {"X": ("n", "d"), "W": ("h", "d"), "b": ("h",)}, "X", "grad_y @ W"),
    (
        "linear layer weight gradient",
        "X @ W.T + b",
        {"X": ("n", "d"), "W": ("h", "d"), "b": ("h",)},
        "W",
        "grad_y.T @ X",
    ),
    ("mse", "mse(a, b)", {"a": ("n", "d"), "b": ("n", "d")}, "a", "2 * (a - b) / (n * d)"),
]


def textbook(form: str, shapes: dict, seed_shape: tuple | None) -> sympy.Expr:
    """The textbook form, parsed by backstep's own parser, as a SymPy expression of the inputs."""
    shapes = dict(shapes)
    if seed_shape is not None:
        shapes["grad_y"] = seed_shape
    program = "\n".join(f"{k}: {tuple(v)!r}".replace("'", "") for k, v in shapes.items()) + "\n" + form
    try:
        d = backstep.derive(program, verify=False)
    except backstep.ParseError:
        # A constant form (eye(n)) needs a variable for backstep to accept it: 0·X leaves it as it is.
        d = backstep.derive(program + f" + 0 * {next(iter(shapes))}", verify=False)
    return tidy(d.output_expr)


@pytest.mark.parametrize(
    "name, formula, shapes, wrt, form", IDENTITIES + CLOSED_FORMS, ids=[i[0] for i in IDENTITIES + CLOSED_FORMS]
)
def test_identity_in_closed_form(name, formula, shapes, wrt, form):
    d = backstep.derive(formula, shapes=shapes, wrt=[wrt], verify=True, points=3)
    assert d.verification.ok, d.verification.first_failure
    got = d.gradients[wrt].expr
    seed_shape = None if d.seed.is_one else d.output_shape
    expected = textbook(form, shapes, seed_shape)
    same = got == expected or sympy.expand(got - expected) == 0
    assert same, f"{name}: backstep gives {got}, the textbook {expected}"


def test_at_least_fifteen_cookbook_identities():
    assert len(IDENTITIES) >= 15


def test_steps_reuse_forward_names():
    """σ′ is written with the forward value (y(1 − y)), not re-expanded."""
    d = backstep.derive("h = sigmoid(x)\nL = sum(h)", shapes={"x": (3, 4)}, verify=False)
    step = next(s for s in d.backward if s.op == "sigmoid")
    h, grad_h = sympy.Symbol("h", real=True), sympy.Symbol("grad_h", real=True)
    assert sympy.expand(step.result - grad_h * h * (1 - h)) == 0, step.result
    assert not step.result.has(Sigmoid)
