"""The op table, and `register()`: every entry is cross-checked when its module is imported.

A mistake in an entry (a parameter the SymPy class does not know, a missing backward rule, a
target it cannot print to, a domain nobody can draw from, a language it has no title in) fails at
import with a sentence that names the op, instead of surfacing as a wrong derivation later.
"""

from __future__ import annotations

import re

import sympy

from ..languages import LANGS
from ..symbolic import TensorOp, encode_param
from .spec import DOMAINS, PARAM_KINDS, TARGETS, TORCH_ALIAS_ROOTS, Domain, Op

OPS: dict[str, Op] = {}

DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class OpDeclarationError(ValueError):
    """An entry of the op table contradicts itself."""


def register(op: Op, table: dict[str, Op] | None = None) -> Op:
    """Check `op` and add it to `table` (the op table); give its SymPy class its parameters' kinds."""
    table = OPS if table is None else table
    if op.name in table:
        raise OpDeclarationError(f"op {op.name!r} is declared twice")
    if not op.example:
        op.example = default_example(op)
    check(op)
    check_aliases_unclaimed(op, table)
    if isinstance(op.sympy_class, type) and issubclass(op.sympy_class, TensorOp):
        op.sympy_class.param_kinds = tuple(p.kind for p in op.parameters)
    table[op.name] = op
    return op


def check(op: Op) -> None:
    """Every cross-check of an entry; raises OpDeclarationError naming the op."""
    for part in (
        check_arity,
        check_title,
        check_parameters,
        check_sympy_class,
        check_printing,
        check_domains,
        check_example,
        check_torch_aliases,
    ):
        part(op)


def fail(op: Op, sentence: str):
    raise OpDeclarationError(f"op {op.name!r}: {sentence}")


def check_arity(op: Op) -> None:
    n = op.arity
    if len(op.backward) != n:
        fail(op, f"{n} input{'s' * (n != 1)} but {len(op.backward)} backward rule{'s' * (len(op.backward) != 1)}")
    if len(op.arg_names) != n:
        fail(op, f"{n} input{'s' * (n != 1)} but {len(op.arg_names)} arg_names {op.arg_names}")
    names = [*op.arg_names, op.out_name]
    if len(set(names)) != len(names):  # the general rule `y = f(x) ⇒ x̄ = …` would say one name twice
        fail(op, f"arg_names {op.arg_names} and out_name {op.out_name!r} must be distinct letters")
    if op.input_ranks and len(op.input_ranks) != n:
        fail(op, f"input_ranks must give one rank per input ({n}), not {op.input_ranks}")
    if any(not 0 <= i < n for i in op.targets):
        fail(op, f"targets {op.targets} must be positions of its {n} input{'s' * (n != 1)}")
    if op.hand_written is not None and not op.hand_written.made_of:
        fail(op, "hand_written needs the ops such a region is made of (made_of), one at least")


def check_title(op: Op) -> None:
    """The rule beside a backward step names the op in the document's language: every language needs one."""
    missing = [lang for lang in LANGS if not op.title.get(lang)]
    if missing:
        fail(op, f"has no title in {', '.join(missing)} (each language of the catalogue needs one: {', '.join(LANGS)})")
    unknown = sorted(set(op.title) - set(LANGS))
    if unknown:
        fail(op, f"has a title in {', '.join(unknown)}, which is not a language of the catalogue ({', '.join(LANGS)})")


def check_parameters(op: Op) -> None:
    keywords: set[str] = set()
    for p in op.parameters:
        if p.kind not in PARAM_KINDS:
            fail(op, f"parameter {p.name} has the unknown kind {p.kind!r} (known: {', '.join(PARAM_KINDS)})")
        if (p.kind == "choice") != bool(p.choices):
            fail(op, f"parameter {p.name}: a choice lists its allowed values, and only a choice does")
        if p.kind == "choice" and p.default not in p.choices:
            fail(op, f"parameter {p.name}: the default {p.default!r} is not one of {p.choices}")
        for keyword in (p.name, *p.aliases):
            if keyword in keywords:
                fail(op, f"the keyword {keyword} means two parameters")
            keywords.add(keyword)
        try:
            encode_param(p.kind, p.default)
        except TypeError:
            fail(op, f"parameter {p.name}: the default {p.default!r} is not {PARAM_KINDS[p.kind]}")


def check_sympy_class(op: Op) -> None:
    """A TensorOp carries the op's parameters among its args: the names must be the same, in order."""
    cls, names = op.sympy_class, tuple(p.name for p in op.parameters)
    if cls is None:
        return
    if isinstance(cls, type) and issubclass(cls, TensorOp):
        if cls.param_names != names:
            fail(op, f"its parameters {names} differ from its SymPy class {cls.__name__}'s {cls.param_names}")
        if cls.n_operands != op.arity:
            fail(op, f"{op.arity} inputs but its SymPy class {cls.__name__} takes {cls.n_operands} operands")
        return
    if names:
        fail(op, f"has parameters {names}, which a SymPy function such as {cls.__name__} cannot carry")
    nargs = getattr(cls, "nargs", None)
    if isinstance(nargs, sympy.FiniteSet) and op.arity not in nargs:
        fail(op, f"{op.arity} inputs but its SymPy class {cls.__name__} takes {set(nargs)}")


def check_printing(op: Op) -> None:
    if op.sympy_class is not None and op.printing is None:
        fail(op, "a SymPy class of its own needs a printing rule")
    if op.printing is None:
        return
    missing = [t for t in TARGETS if not getattr(op.printing, t)]
    if missing:
        fail(op, f"its printing has no template for {', '.join(missing)}")


def check_domains(op: Op) -> None:
    if op.domains and len(op.domains) != op.arity:
        fail(op, f"domains must name one entry per input ({op.arity}), not {len(op.domains)}")
    for d in op.domains:
        if d is not None and not (isinstance(d, Domain) and DOMAINS.get(d.name) is d):
            fail(op, f"the domain {d!r} is not one of the known domains ({', '.join(DOMAINS)})")


def check_example(op: Op) -> None:
    if not op.example.strip():
        fail(op, "declares no example program")


def check_torch_aliases(op: Op) -> None:
    """Each alias a dotted name from torch or operator (resolved only when a model is traced), once."""
    if isinstance(op.torch_aliases, str):
        fail(op, f"torch_aliases must be a tuple of dotted names, not the string {op.torch_aliases!r}")
    for alias in op.torch_aliases:
        if not isinstance(alias, str) or not DOTTED_NAME.fullmatch(alias):
            fail(op, f"the torch alias {alias!r} is not a dotted name such as torch.nn.functional.relu")
        if alias.split(".")[0] not in TORCH_ALIAS_ROOTS:
            fail(op, f"the torch alias {alias!r} does not start from {' or '.join(TORCH_ALIAS_ROOTS)}")
    repeated = sorted({a for a in op.torch_aliases if op.torch_aliases.count(a) > 1})
    if repeated:
        fail(op, f"lists the torch alias {', '.join(repeated)} twice")


def check_aliases_unclaimed(op: Op, table: dict[str, Op]) -> None:
    """A torch spelling means one op: no other op of the table may claim it."""
    for other in table.values():
        shared = [a for a in op.torch_aliases if a in other.torch_aliases]
        if shared:
            fail(op, f"the torch alias {shared[0]} already means the op {other.name!r}")


def default_example(op: Op) -> str:
    """An elementwise op on two distinct non-square shapes; anything else must declare one."""
    if not op.elementwise:
        raise OpDeclarationError(f"op {op.name!r} is not elementwise: declare an example program")
    if op.syntax == "-x":
        return "x: (n, d)\n-x"
    if not op.syntax.isidentifier():
        return f"a: (n, d); b: (n, d)\na {op.syntax} b"
    names = ", ".join(op.arg_names) if op.arity > 1 else "x"
    shapes = "; ".join(f"{a}: (n, d)" for a in (op.arg_names if op.arity > 1 else ("x",)))
    return f"{shapes}\n{op.syntax}({names})"
