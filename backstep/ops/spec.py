"""The op record and its typed parts: what one entry of the op table declares.

An ``Op`` says everything about one operation:

- how a user spells it (``syntax``: an operator token, a function name or ``.T``) and which
  keyword parameters it takes (``parameters``: one typed ``Param`` each);
- its shape rule;
- its SymPy meaning (``sympy``), built from the operands' symbols;
- one backward (vector-Jacobian) rule per input, in matrix notation, as a function of the
  upstream gradient ``g``, the inputs, the op's own output ``y`` (so that a step can reuse the
  forward value, ``σ(1-σ)``) and the shapes;
- how it prints (text, LaTeX, backstep's own input language, torch code) when it is a SymPy function;
- its name in prose in each language (``title``), for the rule beside a backward step;
- its torch counterpart and the ``grad_fn`` name torch gives it;
- the torch spellings that mean it (``torch_aliases``), which the tracer reads as this op;
- the ``Domain`` each input is drawn from when backstep picks numbers.

The record only grows by fields with defaults, so that an op that does not need a new fact keeps
its entry unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sympy import Expr

from ..shapes import Shape

# Printing precedences (higher binds tighter).
PREC_ADD, PREC_MUL, PREC_MATMUL, PREC_UNARY, PREC_POW, PREC_POSTFIX, PREC_ATOM = 10, 20, 22, 25, 30, 40, 100

# The targets an op with a SymPy class of its own must print to (the fields of Printing).
TARGETS = ("text", "latex", "lang", "torch")

# Where an op's torch_aliases start: torch itself, or Python's operator module (`x + y` is
# operator.add in a traced graph). A tensor method is named through torch.Tensor.
TORCH_ALIAS_ROOTS = ("torch", "operator")
TENSOR_METHOD_PREFIX = "torch.Tensor."


@dataclass
class Ctx:
    """What a backward rule sees: upstream gradient g, inputs, output y, shapes, params."""

    g: Expr
    args: tuple
    y: Expr
    shapes: tuple
    out_shape: Shape
    params: dict

    @property
    def a(self) -> Expr:
        return self.args[0]

    @property
    def b(self) -> Expr:
        return self.args[1]


@dataclass
class Printing:
    """How a SymPy function of this op prints. `{0}`, `{1}` are operands, `{axis}` a param."""

    text: str
    latex: str
    lang: str
    torch: str = ""  # torch code, for generated modules (backstep codegen)
    prec: int = PREC_ATOM  # precedence of the printed result
    operand_prec: int = 0  # operands below this precedence get parentheses
    # Python's math function for a number operand (torch code): torch.sqrt(2) fails, math.sqrt(2) does not
    math_function: str = ""
    # In Python syntax (lang, torch) it is an operator of `*`'s precedence, left-associative (`@`):
    # a right operand of its own precedence and a product operand get parentheses.
    python_operator: bool = False
    # Generated modules' code (backstep codegen) where the `torch` template, written for backstep's
    # float64 checks on the CPU, will not do: {dtype} and {device} are those of a tensor in scope,
    # {to} what `.to()` takes to match it.
    code: str = ""
    # Generated code where one operand is a number ({x} the other operand, {c} the number), where
    # torch's function takes tensors only: maximum(x, c) is torch.clamp(x, min=c).
    code_with_number: str = ""


class ByParams:
    """A printing template chosen by the op's parameters: `format(*operands, **params)` as a
    template string has, so that the printer uses it as one."""

    def __init__(self, fn: Callable[..., str]):
        self.fn = fn

    def format(self, *operands: str, **params) -> str:
        return self.fn(operands, {k: (None if v == "" else v) for k, v in params.items()})

    def __contains__(self, item: str) -> bool:
        return True  # an operand may be followed by `.attr` (torch code): compound ones get parentheses


# --- parameters ----------------------------------------------------------------------------------

# What a keyword parameter holds, by kind: how the parser reads it, how a SymPy class stores it
# (symbolic.encode_param) and how it prints. Each kind's phrase is what an error message says.
PARAM_KINDS = {
    "axis": "an integer",  # an axis; negative counts from the end
    "bool": "True or False",
    "number": "a number",  # a real number: an integer literal is read as a float
    "choice": "one of its allowed values",
    "size": "a positive integer or a dimension name",  # onehot's classes, eye's n
    "pair": "an integer or a pair of integers (h, w)",  # stride, padding, kernel_size, size
    "ints": "an integer or a tuple of integers",  # unflatten's sizes
    "shape": "a tuple of integers or dimension names",  # reshape's and broadcast_to's shape
    "subscripts": 'a string of index letters such as "nij,njk->nik"',  # einsum's equation
}
TUPLE_KINDS = ("pair", "ints", "shape")  # kinds that may be written as a literal tuple


@dataclass(frozen=True)
class Param:
    """One keyword parameter of an op: its name, kind (a key of PARAM_KINDS), default, the values
    a "choice" allows, other keywords that mean it (torch's dim=, keepdim=), whether a call
    must give it (eye's n), whether it comes before the operands (einsum's subscripts), and why it
    may not be given by position (keyword_only)."""

    name: str
    kind: str
    default: Any = None
    choices: tuple = ()
    aliases: tuple[str, ...] = ()
    required: bool = False
    # Given by position before the operands, as einsum's subscripts: einsum("ij,jk->ik", a, b).
    leading: bool = False
    # Where a value given by position would read as something else (max(x, 0) is Python's max, an
    # elementwise maximum, to many): the parser refuses it by position with this sentence.
    keyword_only: str = ""


def axis_param(default: int | None = None) -> Param:
    """`axis`, as torch also spells it (dim=)."""
    return Param("axis", "axis", default, aliases=("dim",))


KEEPDIMS = Param("keepdims", "bool", False, aliases=("keepdim",))


@dataclass(frozen=True)
class HandWritten:
    """How --compact recognises the op written out by hand (backstep/layers.py): `X @ W + b` is
    addmm, softmax then log then pick is cross_entropy. A region of the graph containing one of
    `made_of` (a cheap test before anything is evaluated) is this op when it computes the same
    values at random points, for some order of its inputs and one of the parameter values
    `params(ranks, constants)` yields (the operands' ranks; the region's small positive constants,
    where eps may be among them)."""

    made_of: frozenset[str]
    params: Callable[[tuple[int, ...], list[float]], Iterable[dict]] = lambda ranks, constants: ({},)


# --- domains -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Domain:
    """Where an op's input must lie for its derivative to exist (and to match torch's).

    `draws` is the domain (an --assume name) a variable used as this input is drawn from, or None
    where it is drawn on the whole line and a point is drawn again until `contains` holds; `at`,
    where the demand depends on the node (pow's exponent, the logits' shape, onehot's classes),
    gives it from the node and the input's index. `contains(torch, value)` says whether a value
    is inside (away from kinks and poles, with the tolerance numeric checks use)."""

    name: str
    summary: str
    draws: str | None = None
    contains: Callable[[Any, Any], bool] | None = None
    at: Callable[[Any, int], str | None] | None = None
    # Outside it the op's value or derivative is infinite or undefined (a pole, log 0, a singular
    # matrix), not merely kinked: generated gradchecks draw again until the forward value is finite.
    undefined_outside: bool = False

    def demand(self, node, i: int) -> str | None:
        """The domain a variable used as input i of `node` is drawn from (None: anywhere)."""
        return self.at(node, i) if self.at is not None else self.draws

    def __repr__(self) -> str:
        return f"Domain({self.name!r})"


def _pow_base(node, i: int) -> str | None:
    exponent = node.inputs[1]
    if exponent.is_const and exponent.value.is_integer:
        return "nonzero" if exponent.value.is_negative else None
    return "positive"


def _targets(node, i: int) -> str:
    logits = node.inputs[0].shape
    return f"class_index:{logits[-1]}" if len(node.inputs[i].shape) == len(logits) - 1 else "probability"


def _tensor_check(test: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    """A check of tensors only: a number (a constant operand) is taken as inside."""
    return lambda torch, value: not torch.is_tensor(value) or bool(test(torch, value))


POSITIVE = Domain(
    "positive", "positive", "positive", _tensor_check(lambda torch, v: (v > 1e-6).all()), undefined_outside=True
)
NONZERO = Domain(
    "nonzero", "away from 0", "nonzero", _tensor_check(lambda torch, v: (v.abs() > 1e-6).all()), undefined_outside=True
)
OFF_KINK = Domain("off_kink", "away from the kink at 0", None, _tensor_check(lambda torch, v: (v.abs() > 1e-6).all()))
OFF_POLE = Domain(
    "off_pole",
    "away from tan's poles",
    None,
    _tensor_check(lambda torch, v: (torch.cos(v).abs() > 1e-3).all()),
    undefined_outside=True,
)
OFF_BOUNDS = Domain("off_bounds", "away from clamp's bounds")
OFF_TIE = Domain("off_tie", "the two operands unequal (a comparison's kink)")
SPD = Domain(
    "spd",
    "symmetric positive definite",
    "spd",
    _tensor_check(lambda torch, v: torch.linalg.det(v.detach()) > 1e-8),
    undefined_outside=True,
)
INVERTIBLE = Domain(
    "invertible",
    "well-conditioned invertible",
    "invertible",
    _tensor_check(lambda torch, v: torch.linalg.cond(v.detach()) < 1e8),
    undefined_outside=True,
)
POW_BASE = Domain(
    "pow_base", "a power's base: positive unless the exponent is an integer", at=_pow_base, undefined_outside=True
)
CLASS_INDEX = Domain(
    "class_index",
    "integer class indices below onehot's classes",
    at=lambda node, i: f"class_index:{node.params.get('classes')}",
)
TARGETS_DOMAIN = Domain("targets", "cross_entropy's targets: class indices or probabilities", at=_targets)

# The --assume name (a draw domain, not an op input's) of a tensor whose rows are one-hot, as the
# onehot op makes them.
ONE_HOT_ROWS = "onehot"

DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        POSITIVE,
        NONZERO,
        OFF_KINK,
        OFF_POLE,
        OFF_BOUNDS,
        OFF_TIE,
        SPD,
        INVERTIBLE,
        POW_BASE,
        CLASS_INDEX,
        TARGETS_DOMAIN,
    )
}


# --- the record ----------------------------------------------------------------------------------


@dataclass
class Op:
    name: str
    syntax: str  # "+" … for operators, a function name, or ".T"
    arity: int
    # Positive inputs where its value must be positive (log(a + b) draws a and b positive).
    positive_through: bool = field(default=False, kw_only=True)
    # Its value is positive by construction at this node, given which of its inputs are (`positive`,
    # a predicate on nodes): exp always, a product when its factors are, maximum with a positive
    # number, clamp with min > 0. An op that needs a positive or nonzero input takes such a value as
    # inside even where it is tiny: a guard (1 / maximum(q, 1e-12)), a softmax's small probability.
    positive_when: Callable[[Any, Callable[[Any], bool]], bool] | None = field(default=None, kw_only=True)
    # An unshaped variable's rank passes through it to its inputs, as through an elementwise op
    # (the parser's rank inference: X in X.T @ W is a matrix).
    shape_passes_rank: bool = field(default=False, kw_only=True)
    shape: Callable[..., Shape]  # (env, in_shapes, params) -> out shape
    sympy: Callable[..., Expr]  # (args, in_shapes, params) -> SymPy expression
    backward: tuple[Callable[[Ctx], Expr], ...]
    torch: Callable[..., Any]  # (torch, args, params) -> tensor
    grad_fn: str | Callable[..., str] | None  # or (ranks, constant flags, params) -> name; None: no grad
    summary: str  # one line for `backstep ops`
    # its name in prose, by language ("matrix product": the rule beside a backward step says it);
    # register() requires one in every language of the message catalogue (backstep.languages.LANGS)
    title: dict[str, str] = field(default_factory=dict)
    example: str = ""  # a small program using the op (shapes included): docs, `backstep ops`, tests
    arg_names: tuple[str, ...] = ("x",)  # for the general rule: y = f(x) ⇒ x̄ = …; one per input
    out_name: str = "y"
    parameters: tuple[Param, ...] = ()  # keyword parameters, in the order they may be given by position
    elementwise: bool = False  # broadcasting op: backward sums over broadcast axes
    domains: tuple[Domain | None, ...] = ()  # one per input (None: anywhere), or () for none at all
    sympy_class: type | None = None  # the SymPy class that means this op, if it has its own
    printing: Printing | None = None
    input_ranks: tuple[int, ...] = ()  # the rank an unannotated variable used as each input gets (4: NCHW, 2: @)
    # The torch spellings that mean this op, as dotted names the tracer resolves when it traces (so
    # that importing backstep imports no torch): a function ("torch.relu", "torch.nn.functional.relu",
    # "operator.add"), a tensor method ("torch.Tensor.relu") or an nn.Module class ("torch.nn.ReLU").
    torch_aliases: tuple[str, ...] = ()
    # The inputs that are a loss's targets or class labels (mse's second, cross_entropy's t, onehot's
    # indices): a variable used only there is a constant unless --wrt names it, as PyTorch's targets.
    targets: tuple[int, ...] = ()
    # Its value switches between formulas at a threshold that random points near 0 may never cross
    # (maximum(q, 1e-12), where(…)); ops with a kink, a bound or a tie in their domains are so too
    # (has_thresholds): --compact takes no region containing one for a smooth layer.
    piecewise: bool = False
    # How --compact recognises the op written out by hand, as one layer (None: it is not looked for).
    hand_written: HandWritten | None = None
    # The --assume domain every value of the op lies in, where a rule may rely on it (onehot's rows
    # are one-hot, softmax's are probabilities: either can be cross_entropy's targets).
    makes: str | None = None

    def grad_fn_name(self, ranks: tuple[int, ...], consts: tuple[bool, ...], params: dict) -> str | None:
        if self.grad_fn is None or isinstance(self.grad_fn, str):
            return self.grad_fn
        return self.grad_fn(ranks, consts, params)

    @property
    def has_thresholds(self) -> bool:
        """Whether its value switches between formulas at some threshold (see `piecewise`)."""
        return self.piecewise or any(d in (OFF_KINK, OFF_BOUNDS, OFF_TIE) for d in self.domains)

    # Views for the consumers that predate the typed fields.

    @property
    def params(self) -> dict[str, Any]:
        """Each parameter's default, by name, in order."""
        return {p.name: p.default for p in self.parameters}

    @property
    def choices(self) -> dict[str, tuple]:
        """The allowed values of each "choice" parameter, by name."""
        return {p.name: p.choices for p in self.parameters if p.choices}

    @property
    def domain(self) -> tuple[str | None, ...]:
        """Each input's domain by name (None: anywhere); () where the op declares none."""
        return tuple(d.name if d is not None else None for d in self.domains)

    def param(self, keyword: str) -> Param | None:
        """The parameter a keyword means (its name or one of its aliases), or None."""
        return next((p for p in self.parameters if keyword == p.name or keyword in p.aliases), None)
