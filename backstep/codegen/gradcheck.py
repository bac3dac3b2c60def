"""The module's ``gradcheck()``: its inputs drawn inside their domains (as ``numeric.draw`` draws
them, written as code), checked by ``torch.autograd.gradcheck`` in float64; and running it for
``backstep codegen --check``."""

from __future__ import annotations

from types import ModuleType

from ..model import Derivation
from ..ops import ONE_HOT_ROWS, OPS
from .layout import bracketed, unpack_lines
from .printer import INDENT, LINE, CodegenError

# How a variable is drawn for the gradcheck, by its domain (backstep.numeric.draw, in code).
DRAW = {
    "real": "4 * draw({shape}) - 2",
    "positive": "0.5 + 1.5 * draw({shape})",
    "nonnegative": "2 * draw({shape})",
    "nonzero": "(0.5 + 1.5 * draw({shape})) * torch.sign(draw({shape}) - 0.5)",
    "probability": "torch.softmax(4 * draw({shape}) - 2, dim=-1)",
    "symmetric": "(lambda m: (m + m.T) / 2)(2 * draw({shape}) - 1)",
    "orthogonal": "torch.linalg.qr(2 * draw({shape}) - 1)[0]",
}


def may_be_undefined(op_name: str) -> bool:
    """Can a draw make this op's value infinite or undefined (log 0, tan's pole, a singular matrix)?
    Then the gradcheck draws again until the forward value is finite."""
    return any(d is not None and d.undefined_outside for d in OPS[op_name].domains)


def gradcheck_context(d: Derivation, class_name: str, rename: dict[str, str], sizes: dict[str, int]) -> dict:
    """The lines of gradcheck(): sizes, inputs drawn inside their domains, the check itself."""
    retry = any(may_be_undefined(f.op) for f in d.forward)
    indent = 2 * INDENT if retry else INDENT
    lines = []
    for v in d.variables:
        name = rename[v.name]
        dims = [rename.get(dm, dm) if isinstance(dm, str) else str(dm) for dm in v.shape]
        shape = ", ".join(dims)
        shape_t = "(" + shape + ("," if len(dims) == 1 else "") + ")"
        domain = v.domain
        steps = []  # statements that make the value; the last one gives it
        if domain.startswith("class_index"):
            classes = domain.split(":", 1)[1]
            if not (classes.isdigit() or classes in rename):  # a count or a dimension, never other text
                raise CodegenError(f"internal: the number of classes {classes!r} is neither a number nor a size")
            steps.append(f"torch.randint({rename.get(classes, classes)}, {shape_t}, generator=generator)")
        elif domain == ONE_HOT_ROWS:
            lead = dims[:-1]
            lead_t = "(" + ", ".join(lead) + ("," if len(lead) == 1 else "") + ")"
            steps.append(f"torch.randint({dims[-1]}, {lead_t}, generator=generator)")
            steps.append(f"torch.nn.functional.one_hot({name}, {dims[-1]}).double()")
        elif domain in ("spd", "invertible"):
            k = dims[0]
            eye = f"torch.eye({k}, dtype=torch.float64)"
            steps.append(f"2 * draw({shape}) - 1")
            steps.append(f"{name} @ {name}.T / {k} + {eye}" if domain == "spd" else f"{name} + (1 + {k}**0.5) * {eye}")
        elif domain == "symmetric":
            steps += [f"2 * draw({shape}) - 1", f"({name} + {name}.T) / 2"]
        else:
            steps.append(DRAW.get(domain, DRAW["real"]).format(shape=shape))
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            if last and v.requires_grad:
                line = f"{name} = ({step}).requires_grad_()"
                if indent + len(line) > LINE:
                    lines += [f"{name} = {step}", f"{name}.requires_grad_()"]
                    continue
            else:
                line = f"{name} = {step}"
            lines.append(line)
    numel = 0
    for v in d.variables:
        count = 1
        for dm in v.shape:
            count *= dm if isinstance(dm, int) else sizes[dm]
        numel += count
    names = [rename[v.name] for v in d.variables]
    check = f"torch.autograd.gradcheck({class_name}.apply, inputs" + (", fast_mode=True" if numel > 2000 else "") + ")"
    return {
        "sizes": unpack_lines([rename.get(dm, dm) for dm in d.dims], ", ".join(str(sizes[dm]) for dm in d.dims), INDENT)
        if len(d.dims) > 1
        else [f"{rename.get(dm, dm)} = {sizes[dm]}" for dm in d.dims],
        "draws": lines + bracketed("inputs = (", names, ")", indent, one_tuple=True),
        "retry": retry,
        "finite": f"if torch.isfinite({class_name}.apply(*inputs)).all():",
        "returns": bracketed("return ", [check], "", INDENT)
        if INDENT + 7 + len(check) <= LINE
        else [
            "return " + check  # a class name this long is the user's choice
        ],
    }


def run_gradcheck(module: ModuleType) -> tuple[bool, str]:
    """Call the module's own gradcheck(); (passed, message)."""
    try:
        module.gradcheck()
    except Exception as err:  # gradcheck raises GradcheckError with the numbers that differ
        return False, f"{type(err).__name__}: {err}"
    return True, "gradcheck passed (float64, finite differences)"


def check_text(generated, passed: bool, message: str) -> str:
    """The line `--check` prints: passed, or failed and why."""
    sizes = " ".join(f"{k}={v}" for k, v in generated.sizes.items())
    where = f" ({sizes})" if sizes else ""
    if passed:
        return f"✓ gradcheck passed: {generated.class_name}'s backward matches finite differences in float64{where}"
    return f"✗ gradcheck failed for {generated.class_name}{where}: {message}"
