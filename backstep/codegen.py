"""`backstep codegen`: a derivation written out as a `torch.autograd.Function`.

The generated module holds one ``torch.autograd.Function`` subclass (and, if asked, an
``nn.Module`` that applies it). ``forward`` computes the forward steps and saves the inputs (and
the output) the backward reads; ``backward`` recomputes from them the intermediates it needs and
computes the derivation's backward steps one line each, in the derivation's order, in plain torch
operations (never autograd), each beside a comment with the step as backstep prints it: a
backward that autograd can differentiate in turn (double backward, gradient penalties). A step is
computed only when an input that needs its gradient (``ctx.needs_input_grad``) depends on it.
Every adjoint has its symbol's exact shape (a step that relies on broadcasting is expanded), so
each input's gradient has that input's shape, a broadcast bias included. Constants (``eye``,
``onehot``, a number laid out to a shape) take the dtype and device of a tensor in scope: the
module runs in float32 or float64, on any device. A ``gradcheck()`` function checks the module
against finite differences in float64.

The work is split by job: ``codegen_printer`` (expressions as torch code), ``codegen_text``
(names, comments, the docstring and the regenerate command: all the user text that reaches the
module), ``codegen_module`` (the module laid out through the jinja2 template
``backstep/templates/codegen/function.py.j2``) and this module (running the generated code and
the user's: ``--check`` and ``--against``).

``--check`` and ``--against`` run code: the generated module (backstep's own text) and, for
``--against``, the user's file, which is imported as Python (that is what the user asks for).
No user text ever becomes code in the module (see ``codegen_text``); ``generate`` parses the
module it made and checks its docstring and its top level before handing it out. The user's own
code runs only inside ``user_code``: sys.exit() in it, or a run over ``USER_CODE_SECONDS``, is a
UsageError (exit 2), never backstep's exit (exit 0 from ``--against`` says that every gradient
agrees).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from .budget import TimeBudget
from .codegen_module import (  # noqa: F401 (the codegen API: cg.generate, cg.template_dir, ...)
    STYLES,
    Generated,
    check_module_text,
    generate,
    render_template,
    template_dir,
)
from .codegen_printer import LINE, RESERVED, CodegenError, CodePrinter, Fit  # noqa: F401
from .codegen_text import (  # noqa: F401
    check_class_name,
    class_name_for,
    comment,
    escape_char,
    literal_text,
    python_name,
    regenerate_command,
    safe_names,
    shell_lines,
    shell_quote,
    visible,
)
from .errors import UsageError
from .model import Derivation
from .printing import to_text

# --- running generated and user code ---------------------------------------------------------------


def load_generated(code: str, name: str = "backstep_generated") -> ModuleType:
    """The generated module, executed from its text (backstep's own code, not the user's)."""
    module = ModuleType(name)
    module.__file__ = f"<{name}>"
    exec(compile(code, module.__file__, "exec"), module.__dict__)  # noqa: S102 (our generated code)
    return module


# How long the user's code may run at a time (importing the file, tracing, one call of a backward):
# a file that loops or waits at import must not hang backstep. Tests lower it.
USER_CODE_SECONDS = 60.0


class UserCodeTimeout(BaseException):
    """Raised inside the user's code when its time is up: a BaseException, so that an `except
    Exception` in the user's code cannot swallow it."""

    def __init__(self, budget: TimeBudget):
        super().__init__(f"over {budget.seconds:g} s")
        self.budget = budget


class UserCodeBudget(TimeBudget):
    """A TimeBudget (SIGALRM, restored afterwards) whose expiry is a UserCodeTimeout."""

    def _expire(self, signum, frame):
        raise UserCodeTimeout(self)


@contextmanager
def user_code(where: str, doing: str, seconds: float | None = None) -> Iterator[None]:
    """Run the user's code for at most `seconds` (USER_CODE_SECONDS; 0: no limit here, each call
    timed by a UserCodeBudget inside). sys.exit() in it, or running out of time, is a UsageError
    (exit 2) that says `where` (`--torch model.py:Net`) and `doing` (`while backstep imported
    model.py`): never backstep's own exit, whose 0 would say that all went well."""
    try:
        with UserCodeBudget(USER_CODE_SECONDS if seconds is None else seconds):
            yield
    except SystemExit as err:
        raise UsageError(
            f"{where}: its code called sys.exit({err.code!r}) {doing}; that is an error here, "
            "never backstep's own exit status"
        ) from None
    except UserCodeTimeout as err:
        raise UsageError(
            f"{where}: its code was still running after {err.budget.seconds:g} s {doing} "
            "(an endless loop, or waiting for input?); backstep stopped it"
        ) from None


def load_user_object(spec: str, option: str):
    """`path.py:Name` -> the object. This imports (runs) the user's file, as the option asks,
    within user_code's limits."""
    path_text, sep, attr = spec.rpartition(":")
    if not sep or not path_text or not attr:
        raise UsageError(f"{option} {spec}: write FILE.py:NAME (e.g. my_function.py:MyFunction)")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"{option} {spec}: no such file {path}")
    module_name = "backstep_user_" + re.sub(r"\W", "_", path.stem)
    spec_obj = importlib.util.spec_from_file_location(module_name, path)
    if spec_obj is None or spec_obj.loader is None:
        raise UsageError(f"{option} {spec}: cannot import {path}")
    module = importlib.util.module_from_spec(spec_obj)
    import torch  # noqa: F401 (before the clock starts: torch's first import takes seconds that are not the file's)

    sys.modules[module_name] = module
    directory = str(path.resolve().parent)
    sys.path.insert(0, directory)  # the file may import its neighbours
    try:
        with user_code(f"{option} {spec}", f"while backstep imported {path}"):
            try:
                spec_obj.loader.exec_module(module)
            except Exception as err:  # the user's code: any failure is theirs to see, as one line
                raise UsageError(f"{option} {spec}: importing {path} failed: {type(err).__name__}: {err}") from None
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        if sys.path and sys.path[0] == directory:
            sys.path.pop(0)
    obj = module
    with user_code(f"{option} {spec}", f"while backstep looked up {attr} in {path}"):  # a module __getattr__ may run
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise UsageError(f"{option} {spec}: {path} has no {attr}")
            obj = getattr(obj, part)
    return obj, path


def run_gradcheck(module: ModuleType) -> tuple[bool, str]:
    """Call the module's own gradcheck(); (passed, message)."""
    try:
        module.gradcheck()
    except Exception as err:  # gradcheck raises GradcheckError with the numbers that differ
        return False, f"{type(err).__name__}: {err}"
    return True, "gradcheck passed (float64, finite differences)"


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
    import inspect

    import torch

    from .verify import _draw_point, sample_sizes

    if not (isinstance(user_class, type) and issubclass(user_class, torch.autograd.Function)):
        raise UsageError(f"--against {user_name}: not a torch.autograd.Function subclass")
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
    sizes = d.sizes or sample_sizes(d.dims)
    report = Comparison(user=user_name, points=points, sizes=sizes)
    report.inputs = [
        InputComparison(v.name, positional[i] if i < len(positional) else "", v.requires_grad)
        for i, v in enumerate(d.variables)
    ]
    requires = {v.name: v.requires_grad for v in d.variables}
    domains = {v.name: v.domain for v in d.variables}
    generator = torch.Generator().manual_seed(seed)
    from .numeric import draw
    from .shapes import concrete

    # sys.exit() anywhere in the user's code is an error; each call of it is timed in run()
    with user_code(f"--against {user_name}", "while backstep ran it", seconds=0):
        for point in range(points):
            leaves, _ = _draw_point(torch, generator, d.graph, d, sizes, domains, requires, point)
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
                with UserCodeBudget(USER_CODE_SECONDS if cls is user_class else 0):
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
                grads_user = None
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
                            run(user_class, only=n)
                        except Exception as err_i:  # noqa: BLE001
                            report.inputs[i].ok = False
                            report.inputs[i].error = f"{type(err_i).__name__}: {first_line(err_i)}"
                            blamed = True
                    if not blamed:
                        report.error = message
                # compare what can be compared: each input alone
                for i, n in enumerate(names):
                    if not requires[n] or report.inputs[i].error:
                        continue
                    try:
                        out_user, g_i = run(user_class, only=n)
                    except Exception:  # noqa: BLE001
                        continue
                    record(report.inputs[i], grads_derived[i], g_i[i], torch)
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


def first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""


def close(a, b, torch) -> bool:
    scale = max(1.0, float(b.abs().max()) if b.numel() else 0.0)
    return bool(torch.allclose(a.to(b.dtype), b, rtol=1e-6, atol=1e-8 * scale))


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
    from .printing import to_torch

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
            except TypeError:
                pass
    out.append("")
    if report.ok:
        out.append(f"✓ {report.user}'s backward agrees with the derivation")
    else:
        out.append(f"✗ {report.user}'s backward disagrees with the derivation; {derived_name}")
    return "\n".join(out)


# --- the command ----------------------------------------------------------------------------------------


def check_text(generated: Generated, passed: bool, message: str) -> str:
    sizes = " ".join(f"{k}={v}" for k, v in generated.sizes.items())
    where = f" ({sizes})" if sizes else ""
    if passed:
        return f"✓ gradcheck passed: {generated.class_name}'s backward matches finite differences in float64{where}"
    return f"✗ gradcheck failed for {generated.class_name}{where}: {message}"
