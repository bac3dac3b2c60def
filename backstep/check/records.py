"""The records of a check: what a claim is about (Target), the names it may use (Scope, Helper),
and what a check returns (Result, and the Mistake it names, one of MISTAKE_KINDS)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sympy import Expr

MISTAKE_KINDS = {
    "transposed": "the whole result is transposed",
    "missing_transpose": "a missing transpose on one operand",
    "extra_transpose": "an extra transpose",
    "swapped_product": "a matrix product in the wrong order",
    "wrong_axis": "a sum or mean over the wrong axis",
    "missing_broadcast_sum": "a forgotten sum over a broadcast axis",
    "sign": "a sign error",
    "constant_factor": "a constant factor (e.g. the 2 of a square)",
    "mean_instead_of_sum": "a mean where the gradient sums (an extra 1/n)",
    "sum_instead_of_mean": "a missing 1/n of a mean",
    "missing_chain_factor": "a missing chain-rule factor (an inner derivative)",
    "extra_chain_factor": "a chain-rule factor applied twice",
    "missing_chain_term": "a missing term of the multivariable chain rule",
    "symmetric_part": "A where A + Aᵀ belongs",
}


@dataclass
class Mistake:
    kind: str
    message: str
    fix: str | None = None  # the corrected claim, in the input language


@dataclass
class Result:
    verdict: str  # right, wrong, error
    reason: str
    target: str = ""  # ∂L/∂W1
    claim: str = ""
    mistake: Mistake | None = None
    expected: str | None = None  # the true gradient, input language
    expected_text: str | None = None  # … as the terminal prints it
    claim_shape: tuple | None = None
    expected_shape: tuple | None = None
    proof: str | None = None  # symbolic or numeric (right claims)
    points: int = 0
    sizes: list = field(default_factory=list)
    counterexample: dict | None = None
    # derivation files
    line: int | None = None
    written: str | None = None
    step: str | None = None
    node: str | None = None  # the node whose adjoint (or value) the line gives
    timed_out: bool = False  # stands for the lines not checked when a submission's time ran out

    @property
    def exit_code(self) -> int:
        return {"right": 0, "wrong": 1}.get(self.verdict, 2)

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "mistake": self.mistake.message if self.mistake else None,
            "mistake_kind": self.mistake.kind if self.mistake else None,
            "fix": self.mistake.fix if self.mistake else None,
            "target": self.target,
            "claim": self.claim,
            "expected": self.expected,
            "expected_text": self.expected_text,
            "claim_shape": list(self.claim_shape) if self.claim_shape is not None else None,
            "expected_shape": list(self.expected_shape) if self.expected_shape is not None else None,
            "proof": self.proof,
            "points": self.points,
            "sizes": self.sizes,
            "counterexample": self.counterexample,
        }


@dataclass
class Target:
    """What a claim is about: the adjoint of a node (a variable or an intermediate), or its value."""

    node: str
    kind: str  # adjoint, forward
    shape: tuple
    symbol: str  # the canonical symbol whose value is the truth
    label: str  # ∂L/∂W1, or H for a forward line


@dataclass
class Helper:
    """A name a student defines in a derivation file that is not an adjoint (mask = step(Z))."""

    name: str
    expr: Expr
    shape: tuple


@dataclass
class Scope:
    """The names a claim may use: the formula's, and those a derivation file adds."""

    name_of: dict[str, str]  # a written name -> its canonical symbol
    shape_of: dict[str, tuple]  # a written name -> its shape
    spelled_node: dict[str, str]  # a spelling of an adjoint (grad_H, H_bar, …) -> the node
    node_of: dict[str, str]  # a plain name (for dL/dH) -> the node
    helpers: list[Helper] = field(default_factory=list)
    # per point, the values of the helpers evaluated so far (helpers are only ever appended)
    env_cache: dict = field(default_factory=dict, repr=False, compare=False)
    _ascii_seen: int = field(default=0, repr=False, compare=False)
    _non_ascii: bool = field(default=False, repr=False, compare=False)

    def copy(self) -> Scope:
        return Scope(
            dict(self.name_of), dict(self.shape_of), dict(self.spelled_node), dict(self.node_of), list(self.helpers)
        )

    def add_helper(self, helper: Helper) -> None:
        self.name_of[helper.name] = helper.name
        self.shape_of[helper.name] = helper.shape
        self.helpers.append(helper)

    def has_non_ascii_name(self) -> bool:
        """Whether a name here is not ASCII (a look-alike hint is possible); each name looked at once."""
        if not self._non_ascii and self._ascii_seen < len(self.shape_of):
            names = list(self.shape_of)[self._ascii_seen :]
            self._non_ascii = not all(name.isascii() for name in names)
            self._ascii_seen = len(self.shape_of)
        return self._non_ascii
