"""Derivation files: one `name = expression` per line, checked line by line in the student's own
order against the true adjoint (or value) of each named node, every adjoint a line uses bound to
its true value, so that a line is judged as if the lines before it were right. A line that defines
a new name whose values equal a node's names that node (an alias); any other new name is a helper."""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterator

from ..budget import BudgetExpired
from ..errors import BackstepError, CannotEvaluate, ParseError
from ..lookalike import lookalike_note, unknown_name_message
from .claims import (
    _ADJOINT_LIKE,
    _FRACTION,
    _IDENTIFIER,
    ClaimShapeError,
    adjoint_spellings,
    infer_shapes,
    term_to_sympy,
)
from .points import _close, _torch
from .records import Helper, Result, Scope, Target


def check_lines(problem, text: str, deadline: float | None = None, timeout: float | None = None) -> list[Result]:
    """Check a derivation file: one `name = expression` per line, in the student's own order.

    First the student's own names for forward values are identified (a line `Z = X @ W1`
    whose values equal a node's names that node, so that `dL/dZ` means its adjoint); then
    every line is checked in order against the true adjoint (or value) of its node, with
    every adjoint it uses bound to the true value.

    `deadline` (a time.monotonic() value; `timeout` the seconds it stands for, for the
    message): once it passes — or a TimeBudget around this call expires — the lines not yet
    checked are not checked, and one result with `timed_out` set says so."""
    lines = list(split_lines(text))
    scope = problem.scope()
    results: list[Result] = []
    try:
        _identify_aliases(problem, lines, scope, deadline)
    except BudgetExpired:
        return [_timed_out(lines, 0, timeout)]
    for k, (number, lhs, rhs, raw) in enumerate(lines):
        if deadline is not None and time.monotonic() > deadline:
            results.append(_timed_out(lines, k, timeout))
            break
        try:
            if lhs is None:
                raise ParseError("write one `name = expression` per line")
            try:
                kind, node = resolve_lhs(problem, lhs, scope)
            except ParseError:
                _keep_as_helper(problem, lhs, rhs, scope)  # so that later lines using it can be checked
                raise
            name = unicodedata.normalize("NFKC", lhs.strip())
            if kind == "alias":
                r = Result("defined", f"{name} names {problem.truth.node_text(node)}", claim=rhs.strip(), step=name)
            elif kind == "helper":
                term = problem.parse_claim(rhs, scope)
                try:
                    shapes = infer_shapes(term, scope.shape_of)
                except ClaimShapeError as err:
                    raise ParseError(f"{name} does not type-check: {err.message}") from None
                scope.add_helper(Helper(name, term_to_sympy(term, shapes, scope.name_of), shapes[term]))
                # a look-alike letter makes grаd_W1 (Cyrillic а) a name of the student's own: say so
                what = f"defines {name}{lookalike_note(name)} (a name of your own, not checked)"
                r = Result("defined", what, claim=rhs.strip())
                r.step = name
            else:
                if kind == "adjoint":
                    target = problem.target(node)
                else:
                    target = Target(node, "forward", problem.node_shape[node], node, node)
                r = problem.check(target, rhs, scope, local=True)
                r.node = node if kind == "adjoint" else None
                r.step = node if kind == "forward" else problem.label(node, ascii_only=True)
        except BackstepError as err:
            r = Result("error", err.message, claim=(rhs or "").strip())
        except RecursionError:
            r = Result("error", "the expression is nested too deeply", claim=(rhs or "").strip())
        except BudgetExpired:  # the submission's budget (SymPy's own is caught inside prove)
            results.append(_timed_out(lines, k, timeout))
            break
        r.line, r.written = number, raw.strip()
        results.append(r)
    return results


def _keep_as_helper(problem, lhs: str, rhs: str, scope: Scope) -> None:
    name = unicodedata.normalize("NFKC", lhs.strip())
    if not name.isidentifier() or name in scope.name_of:
        return
    try:
        term = problem.parse_claim(rhs, scope)
        shapes = infer_shapes(term, scope.shape_of)
    except (BackstepError, ClaimShapeError, RecursionError):
        return
    scope.add_helper(Helper(name, term_to_sympy(term, shapes, scope.name_of), shapes[term]))


def _identify_aliases(problem, lines: list, scope: Scope, deadline: float | None = None) -> None:
    """Lines that define a new name: when its value is a node's value everywhere, it names that node.

    One pass, in dependency order: a line is looked at once, after the lines defining the new
    names it uses (whatever their order in the file), so a file of n lines costs n parses, not
    the n² of retrying every unresolved line until nothing changes. Names that depend on each
    other in a cycle are taken in the file's order (they cannot name a node anyway)."""
    from ..numeric import Evaluator

    torch = _torch()
    pending = []
    for _number, lhs, rhs, _ in lines:
        if lhs is None:
            continue
        name = unicodedata.normalize("NFKC", lhs.strip())
        if name.isidentifier() and name not in scope.name_of and name not in problem.derivation.dims:
            if not _ADJOINT_LIKE.fullmatch(name):
                pending.append((name, rhs))
    for name, rhs in _dependency_order(pending, problem.derivation.output):
        if deadline is not None and time.monotonic() > deadline:
            return  # the lines left are checked as they are (check_lines reports the time-out)
        try:
            term = problem.parse_claim(rhs, scope)
            shapes = infer_shapes(term, scope.shape_of)
        except (BackstepError, ClaimShapeError, RecursionError):
            continue
        expr = term_to_sympy(term, shapes, scope.name_of)
        shape = shapes[term]
        candidates = [n for n in problem.graph.nodes if n.kind != "const" and tuple(n.shape) == tuple(shape)]
        if not candidates:
            continue
        points, env_with = problem.sampler.points, problem.sampler.env_with
        try:
            values = [Evaluator(env_with(p, scope.helpers, scope.env_cache), p.sizes)(expr) for p in points]
        except (CannotEvaluate, RuntimeError, TypeError, ValueError, KeyError, ArithmeticError):
            continue
        for node in candidates:
            if all(_close(torch, v, p.env[node.name]) for v, p in zip(values, points)):
                problem.alias(scope, name, node.name)
                break


def resolve_lhs(problem, lhs: str, scope: Scope) -> tuple[str, str | None]:
    """A derivation line's left side -> ("adjoint", node), ("forward", node), ("alias", node)
    (a student's own name for a node) or ("helper", None)."""
    text = unicodedata.normalize("NFKC", lhs.strip())
    text = problem.rewrite(text, scope).strip()
    if text in scope.spelled_node:
        return "adjoint", scope.spelled_node[text]
    if text in problem.forward_names:
        return "forward", text
    if text in scope.node_of and text not in problem.node_shape:
        return "alias", scope.node_of[text]
    m = _FRACTION.fullmatch(text) or _ADJOINT_LIKE.fullmatch(text)
    if m:
        then = " is not a node of the formula (use the formula's names, or define it first, e.g. Z = X @ W1)"
        raise ParseError(unknown_name_message(f"{lhs.strip()}:", m.group(m.lastindex), scope.node_of, then=then))
    if text.isidentifier() and text not in scope.name_of and text not in problem.derivation.dims:
        return "helper", None
    if text in scope.name_of:
        raise ParseError(f"{lhs.strip()} is an input of the formula; a line cannot redefine it")
    raise ParseError(f"{lhs.strip()} is not a name this line can define (write dL/dH = ..., grad_W1 = ...)")


def _dependency_order(pending: list[tuple[str, str]], output: str) -> list[tuple[str, str]]:
    """`pending` (name, right side) reordered so that each comes after the items defining the names
    its right side uses (as written, or as an adjoint spelling such as grad_Z); otherwise in the
    file's order. Linear in the total length of the lines: one depth-first search, no retries."""
    defines: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(pending):
        for spelling in (name, *adjoint_spellings(name, output)):
            defines.setdefault(spelling, []).append(i)
    uses = []
    for i, (_, rhs) in enumerate(pending):
        tokens = dict.fromkeys(_IDENTIFIER.findall(unicodedata.normalize("NFKC", rhs or "")))
        uses.append([j for t in tokens for j in defines.get(t, ()) if j != i])
    order: list[int] = []
    state = [0] * len(pending)  # 0 not seen, 1 on the stack, 2 done
    for start in range(len(pending)):
        if state[start]:
            continue
        state[start] = 1
        stack = [(start, iter(uses[start]))]
        while stack:  # iterative: a chain of 10,000 lines must not reach the recursion limit
            i, children = stack[-1]
            for j in children:
                if state[j] == 0:
                    state[j] = 1
                    stack.append((j, iter(uses[j])))
                    break
            else:
                stack.pop()
                state[i] = 2
                order.append(i)
    return [pending[i] for i in order]


def _timed_out(lines: list, k: int, timeout: float | None) -> Result:
    """The result standing for lines[k:], not checked: the submission's time ran out."""
    budget = f"the {timeout:g} s budget" if timeout else "the time budget"
    if k >= len(lines):
        r = Result("error", f"timed out: {budget} for this submission ran out")
        r.timed_out = True
        return r
    first, last = lines[k][0], lines[-1][0]
    which = f"line {first}" if first == last else f"lines {first}–{last}"
    r = Result("error", f"timed out: {budget} for this submission ran out; {which} not checked")
    r.line, r.written, r.timed_out = first, lines[k][3].strip(), True
    return r


def split_text(text: str) -> list[str]:
    """A derivation file's lines: ended by \\n, \\r\\n or \\r only (not by U+2028, U+0085 or a form
    feed, as str.splitlines would), a byte-order mark at the start dropped."""
    return _LINE_END.split(text.removeprefix("\ufeff"))


_LINE_END = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> Iterator[tuple[int, str | None, str | None, str]]:
    """(line number, left side, right side, the line) for each line that is not blank or a comment.

    Lines end at \\n (and \\r\\n, \\r) only: str.splitlines would also end one at U+2028, U+0085 or
    a form feed inside a student's line. A byte-order mark at the start is not part of line 1."""
    for number, raw in enumerate(split_text(text), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^(.*?)(?<![<>=!])=(?!=)(.*)$", line)
        if not m or not m.group(1).strip() or not m.group(2).strip():
            yield number, None, None, raw
            continue
        yield number, m.group(1), m.group(2), raw
