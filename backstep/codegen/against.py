"""`backstep codegen --against`: the user's own torch.autograd.Function run beside the derived one
on the same random inputs and upstream gradient, and the report of where their gradients differ.

The inputs are drawn as verification draws them (``numeric.draw_point``: inside every op's
domain); the user's code runs inside ``usercode.user_code``, each call timed, and whatever it
raises is a finding about that input, not a crash.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

from ..errors import CannotPrint, UsageError
from ..model import Derivation
from ..numeric import AGAINST_TOLERANCE, draw, draw_point, point_sizes
from ..printing import to_text, to_torch
from ..shapes import concrete
from .usercode import UserCodeBudget, user_code


@dataclass
class InputComparison:
    name: str  # backstep's name
    param: str  # the name in the user's forward, if known
    requires_grad: bool
    ok: bool = True
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    error: str = ""  # the user's backward raised, or returned a wrong shape


@dataclass
class Comparison:
    user: str
    points: int
    sizes: dict[str, int]
    forward_ok: bool = True
    forward_err: float = 0.0
    forward_error: str = ""
    inputs: list[InputComparison] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.forward_ok and all(i.ok for i in self.inputs)


INDEX_IN_ERROR = re.compile(r"at index (\d+)")


def compare_against(d: Derivation, derived_class, user_class, user_name: str, points: int = 3, seed: int = 0):
    """Run the user's autograd.Function and the derived one on the same random inputs."""
    import torch

    if not (isinstance(user_class, type) and issubclass(user_class, torch.autograd.Function)):
        raise UsageError(f"--against {user_name}: not a torch.autograd.Function subclass")
    names = [v.name for v in d.variables]
    positional = user_inputs(d, user_class, user_name)
    sizes = point_sizes(d)
    report = Comparison(user=user_name, points=points, sizes=sizes)
    report.inputs = [
        InputComparison(v.name, positional[i] if i < len(positional) else "", v.requires_grad)
        for i, v in enumerate(d.variables)
    ]
    requires = {v.name: v.requires_grad for v in d.variables}
    generator = torch.Generator().manual_seed(seed)

    # sys.exit() anywhere in the user's code is an error; each call of it is timed in run()
    with user_code(f"--against {user_name}", "while backstep ran it", seconds=0):
        for point in range(points):
            leaves, _ = draw_point(torch, generator, d, sizes, point)
            base = []
            for v in d.variables:
                t = leaves[v.name].detach()
                base.append(t.long() if v.domain.startswith("class_index") else t)
            upstream = draw(torch, generator, concrete(d.output_shape, sizes), "real")

            def run(cls, base=base, upstream=upstream, only=None):
                xs = [
                    t.clone().requires_grad_(requires[n] and (only is None or n == only)) for n, t in zip(names, base)
                ]
                # a UserCodeTimeout (a BaseException) passes the `except Exception` around the user's runs
                with UserCodeBudget(None if cls is user_class else 0):
                    out = cls.apply(*xs)
                    grads = torch.autograd.grad(
                        out, [x for x in xs if x.requires_grad], upstream, allow_unused=True, materialize_grads=True
                    )
                it = iter(grads)
                return out.detach(), [next(it) if x.requires_grad else None for x in xs]

            out_derived, grads_derived = run(derived_class)
            try:
                out_user, grads_user = run(user_class)
            except Exception as err:  # the user's function: a failure is a finding, not a crash
                blame(report, err, lambda n: run(user_class, only=n), names, requires, grads_derived, torch)
                continue
            diff = forward_diff(out_derived, out_user, torch)
            if diff is None:
                report.forward_ok = False
                report.forward_error = f"shape {tuple(out_user.shape)}, not {tuple(out_derived.shape)}"
            else:
                report.forward_err = max(report.forward_err, diff)
                if not close(out_user, out_derived, torch):
                    report.forward_ok = False
            for i, _n in enumerate(names):
                if grads_derived[i] is None or report.inputs[i].error:
                    continue
                record(report.inputs[i], grads_derived[i], grads_user[i], torch)
    return report


def user_inputs(d: Derivation, user_class, user_name: str) -> list[str]:
    """The names of the user's forward's positional inputs (none known: []); refused when it takes
    fewer than the formula's variables."""
    names = [v.name for v in d.variables]
    try:
        params = list(inspect.signature(user_class.forward).parameters)[1:]
    except (TypeError, ValueError):
        params = []
    positional = [p for p in params if not p.startswith("*")]
    if params and len(positional) < len(names) and not any(p.startswith("*") for p in params):
        raise UsageError(
            f"--against {user_name}: its forward takes {len(positional)} inputs ({', '.join(positional)}), "
            f"but the formula has {len(names)} ({', '.join(names)}), passed in that order"
        )
    return positional


def blame(report: Comparison, err: Exception, run_only, names, requires, grads_derived, torch) -> None:
    """The user's function failed with all inputs at once: the input it names (`at index i`), or
    each input whose gradient alone fails; then compare what can be compared, each input alone."""
    message = f"{type(err).__name__}: {first_line(err)}"
    m = INDEX_IN_ERROR.search(str(err))
    if m and int(m.group(1)) < len(names):
        report.inputs[int(m.group(1))].ok = False
        report.inputs[int(m.group(1))].error = message
    else:
        blamed = False
        for i, n in enumerate(names):
            if not requires[n]:
                continue
            try:
                run_only(n)
            except Exception as err_i:  # noqa: BLE001
                report.inputs[i].ok = False
                report.inputs[i].error = f"{type(err_i).__name__}: {first_line(err_i)}"
                blamed = True
        if not blamed:
            report.error = message
    for i, n in enumerate(names):
        if not requires[n] or report.inputs[i].error:
            continue
        try:
            _, g_i = run_only(n)
        except Exception:  # noqa: BLE001
            continue
        record(report.inputs[i], grads_derived[i], g_i[i], torch)


def first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""


def close(a, b, torch) -> bool:
    return AGAINST_TOLERANCE.close(torch, a.to(b.dtype), b)


def forward_diff(a, b, torch) -> float | None:
    if tuple(a.shape) != tuple(b.shape):
        return None
    return float((a.to(torch.float64) - b.to(torch.float64)).abs().max()) if a.numel() else 0.0


def record(item: InputComparison, derived, user, torch) -> None:
    if user is None:
        item.ok = False
        item.error = "the backward returned None for it"
        return
    if tuple(user.shape) != tuple(derived.shape):
        item.ok = False
        item.error = f"the backward returned shape {tuple(user.shape)}, not {tuple(derived.shape)}"
        return
    diff = float((user.to(torch.float64) - derived).abs().max()) if derived.numel() else 0.0
    scale = float(derived.abs().max()) if derived.numel() else 0.0
    item.max_abs_err = max(item.max_abs_err, diff)
    item.max_rel_err = max(item.max_rel_err, diff / scale if scale else diff)
    if not close(user, derived, torch):
        item.ok = False


def comparison_text(d: Derivation, report: Comparison, derived_name: str) -> str:
    """The report of --against, for the terminal."""
    sizes = " ".join(f"{k}={v}" for k, v in report.sizes.items())
    out = [
        f"{report.user} against backstep's derivation of {d.output} = {to_text(d.output_expr, d.symbols)}",
        f"{report.points} random points, float64{', ' + sizes if sizes else ''}; the same inputs and upstream "
        "gradient for both",
        "",
    ]
    if report.error:
        out.append(f"✗ {report.user} failed: {report.error}")
    if report.forward_error:
        out.append(f"✗ forward: {report.forward_error}")
    elif not report.forward_ok:
        out.append(f"✗ forward values differ (max abs err {report.forward_err:.3g})")
    else:
        out.append(f"✓ forward values agree (max abs err {report.forward_err:.1g})")
    loss = d.output if d.seed.is_one else "L"
    for i, item in enumerate(report.inputs):
        label = f"input {i + 1} {item.name}" + (f" ({item.param})" if item.param and item.param != item.name else "")
        if not item.requires_grad:
            out.append(f"· {label}: no gradient (not in --wrt, or integer class indices)")
            continue
        if item.ok:
            out.append(f"✓ {label}: gradients agree (max abs err {item.max_abs_err:.1g})")
            continue
        why = item.error or f"max abs err {item.max_abs_err:.3g}, max rel err {item.max_rel_err:.3g}"
        out.append(f"✗ {label}: the gradient differs: {why}")
        g = d.gradients.get(item.name)
        if g is not None:
            out.append(f"    derived: ∂{loss}/∂{item.name} = {to_text(g.expr, d.symbols)}")
            try:
                out.append(f"    as code: {to_torch(g.expr, d.symbols)}")
            except CannotPrint:
                pass
    out.append("")
    if report.ok:
        out.append(f"✓ {report.user}'s backward agrees with the derivation")
    else:
        out.append(f"✗ {report.user}'s backward disagrees with the derivation; {derived_name}")
    return "\n".join(out)
