"""Numbers: evaluate backstep's SymPy expressions with torch, draw points, fill in `--at` values.

The evaluator is backstep's own (SymPy's ``lambdify`` cannot evaluate elementwise functions of
arrays): it walks the expression, maps each class to the torch counterpart declared in the op
table, and broadcasts the operands of every shape-dependent op to their recorded shapes.
torch is imported only here and in the verifier, so that deriving without numbers stays fast.
"""

from __future__ import annotations

import math
import os
import re
import stat
from typing import Any

import sympy
from sympy import Expr

from .errors import DomainError, ShapeError, UsageError
from .ops import OP_OF_CLASS
from .shapes import concrete, fmt_shape_plain, sample_sizes
from .symbolic import Dim, TensorOp
from .userfiles import file_kind
from .util import postorder

DTYPE_NAME = "float64"

# The most numbers one array may hold when backstep evaluates numbers (verification, --at): 10⁷ float64
# numbers are 80 MB. The arrays of one point together (every variable, forward step and backward
# step) may hold TOTAL_FACTOR times as many: 1.25×10⁸ numbers, 1 GB, at the default. Both are checked
# from the concrete shapes before anything is allocated; `--max-elements N` raises or lowers them.
MAX_ELEMENTS = 10**7
TOTAL_FACTOR = 12.5
# The deepest nesting of a JSON list given to --at (numpy's arrays have at most 64 axes).
MAX_AT_DEPTH = 32


def torch_module():
    """torch, imported only when numbers are needed; its absence is a clear message, not a traceback."""
    try:
        import torch
    except ModuleNotFoundError:
        raise UsageError(
            "PyTorch is not installed: install it (pip install torch; for a CPU-only build follow "
            "PyTorch's install instructions), or use --no-verify"
        ) from None
    return torch


def is_leaf(e: Expr) -> bool:
    """A symbol, a number or a dimension: evaluated by itself (an op with no operand, `eye(n)`, is not)."""
    return not e.args or isinstance(e, Dim)


def expression_children(e: Expr) -> tuple:
    """The operands an evaluation needs first (a TensorOp's parameters are not operands)."""
    if is_leaf(e):
        return ()
    return e.operands if isinstance(e, TensorOp) else e.args


class Evaluator:
    """Evaluates expressions at one point: `env` maps symbol names to tensors."""

    def __init__(self, env: dict[str, Any], sizes: dict[str, int]):
        self.torch = torch_module()
        self.env = env
        self.sizes = sizes
        self.memo: dict[Expr, Any] = {}

    def scalar(self, value: float):
        return self.torch.tensor(value, dtype=self.torch.float64)

    def __call__(self, expr: Expr):
        memo = self.memo
        for e in postorder(expr, expression_children, memo.__contains__):
            memo[e] = self.atom(e) if is_leaf(e) else self.apply(e, [memo[a] for a in expression_children(e)])
        return memo[expr]

    def atom(self, e: Expr):
        if isinstance(e, Dim):
            return self.scalar(float(self.sizes[e.name]))
        if e.is_Symbol:
            try:
                return self.env[e.name]
            except KeyError:
                raise RuntimeError(f"no value for {e.name}") from None
        if e is sympy.E:
            return self.scalar(math.e)
        if e.is_Number or e.is_NumberSymbol:
            return self.scalar(float(e))
        raise TypeError(f"cannot evaluate {e!r}")

    def apply(self, e: Expr, args: list):
        t = self.torch
        if e.is_Add:
            out = args[0]
            for a in args[1:]:
                out = out + a
            return out
        if e.is_Mul:
            out = args[0]
            for a in args[1:]:
                out = out * a
            return out
        if e.is_Pow:
            return t.pow(args[0], args[1])
        op = OP_OF_CLASS.get(type(e))
        if op is None:
            raise TypeError(f"backstep cannot evaluate {type(e).__name__}")
        if isinstance(e, TensorOp):
            # The operand may have lost broadcast axes to SymPy's cancellation: restore them.
            args = [t.broadcast_to(a, concrete(s, self.sizes)) for a, s in zip(args, e.in_shapes)]
            return op.torch(t, args, concrete_params(e.params, self.sizes))
        return op.torch(t, args, {})


def concrete_params(params: dict, sizes: dict[str, int]) -> dict:
    """Parameters naming a dimension (onehot's classes, eye's n) get that dimension's size."""

    def size(v):
        return sizes.get(v, v) if isinstance(v, str) else v

    return {k: tuple(map(size, v)) if isinstance(v, tuple) else size(v) for k, v in params.items()}


# --- how much a point may hold -------------------------------------------------------------------


def total_limit(max_elements: int = MAX_ELEMENTS) -> int:
    """The most numbers the arrays of one point may hold together."""
    return int(max_elements * TOTAL_FACTOR)


def _amount(count: int) -> str:
    """`144,000,000 numbers (1.15 GB of float64)`."""
    size = count * 8
    unit = f"{size / 1e9:.3g} GB" if size >= 1e9 else f"{size / 1e6:.3g} MB"
    return f"{count:,} number{'' if count == 1 else 's'} ({unit} of float64)"


def point_arrays(derivation):
    """(what, shape) of every array one point holds: variables, forward steps, backward steps, the seed."""
    for v in derivation.variables:
        yield v.name, v.shape
    for step in derivation.forward:
        yield f"step {step.name}", step.shape
    yield derivation.seed.name, derivation.seed.shape
    for step in derivation.backward:
        yield step.target, derivation.symbols.table[step.target].shape


def check_point_size(derivation, sizes: dict[str, int], max_elements: int = MAX_ELEMENTS, what: str = "verification"):
    """Refuse (UsageError, exit 2) a point whose arrays would be too large, before allocating any."""
    if what == "verification":
        way_out = "use --no-verify, smaller sizes, or --max-elements N (N numbers per array)"
    else:
        way_out = "give smaller values or sizes, or --max-elements N (N numbers per array)"
    total = 0
    for name, shape in point_arrays(derivation):
        dims = concrete(shape, sizes)
        count = math.prod(dims)
        if count > max_elements:
            raise UsageError(
                f"{what} would hold {name} of shape {fmt_shape_plain(dims)}: {_amount(count)}, over the limit of "
                f"{max_elements:,} numbers per array — {way_out}"
            )
        total += count
    limit = total_limit(max_elements)
    if total > limit:
        raise UsageError(
            f"{what} would hold {_amount(total)} at one point (every variable, forward step and backward step), "
            f"over the limit of {_amount(limit)} — {way_out}"
        )


def check_array_size(label: str, shape: tuple, max_elements: int = MAX_ELEMENTS) -> None:
    count = math.prod(shape)
    if count == 0:
        raise UsageError(f"{label}: an array with no numbers (shape {fmt_shape_plain(tuple(shape))})")
    if count > max_elements:
        raise UsageError(
            f"{label}: an array of shape {fmt_shape_plain(tuple(shape))} holds {_amount(count)}, over the limit of "
            f"{max_elements:,} numbers per array — give a smaller array, or --max-elements N"
        )


# --- drawing points ----------------------------------------------------------------------------


def draw(
    torch, generator, shape: tuple[int, ...], domain: str, sizes: dict[str, int] | None = None, scale: float = 1.0
):
    """A random array inside a domain, in float64; `scale` < 1 narrows the plain domains (real,
    positive, nonnegative, nonzero) towards 0, to find a point where a function does not overflow."""
    value = _draw(torch, generator, shape, domain, sizes)
    if scale != 1.0 and domain in ("real", "positive", "nonnegative", "nonzero"):
        return scale * value
    return value


def _draw(torch, generator, shape, domain, sizes):
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    if domain.startswith("class_index"):
        classes = domain.split(":", 1)[1]
        count = int(classes) if classes.isdigit() else (sizes or {})[classes]
        return torch.floor(u * count).clamp(max=count - 1)
    if domain in ("spd", "invertible", "symmetric", "orthogonal") and (len(shape) != 2 or shape[0] != shape[1]):
        raise DomainError(f"a {domain} matrix must be square, not of shape {shape}")
    if domain == "spd":
        m = 2.0 * u - 1.0
        return m @ m.T / shape[0] + torch.eye(shape[0], dtype=torch.float64)
    if domain == "invertible":  # general and non-symmetric, but well conditioned
        return 2.0 * u - 1.0 + (1.0 + shape[0] ** 0.5) * torch.eye(shape[0], dtype=torch.float64)
    if domain == "symmetric":
        m = 2.0 * u - 1.0
        return (m + m.T) / 2
    if domain == "orthogonal":
        q, r = torch.linalg.qr(2.0 * u - 1.0)
        return q * torch.sign(torch.diagonal(r))
    if domain == "probability":
        return torch.softmax(4.0 * u - 2.0, dim=-1)
    if domain == "onehot":
        index = torch.argmax(u, dim=-1, keepdim=True)
        return torch.zeros(shape, dtype=torch.float64).scatter_(-1, index, 1.0)
    if domain == "positive":
        return 0.5 + 1.5 * u
    if domain == "nonnegative":
        return 2.0 * u
    if domain == "nonzero":
        sign = torch.where(torch.rand(shape, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
        return sign * (0.5 + 1.5 * u)
    return 4.0 * u - 2.0


def in_domain(torch, domain: str | None, value) -> bool:
    """Is an op's input value inside the op's declared domain (away from kinks and poles)?"""
    if domain is None or not torch.is_tensor(value):
        return True
    if domain == "positive":
        return bool((value > 1e-6).all())
    if domain in ("nonzero", "off_kink"):
        return bool((value.abs() > 1e-6).all())
    if domain == "off_pole":
        return bool((torch.cos(value).abs() > 1e-3).all())
    if domain == "spd":
        return bool(torch.linalg.det(value.detach()) > 1e-8)
    if domain == "invertible":
        return bool(torch.linalg.cond(value.detach()) < 1e8)
    return True


def op_input_domain(node, i: int) -> str | None:
    """The domain an op asks of its i-th input, at this node (pow's base depends on its exponent)."""
    declared = node.op.domain[i] if node.op.domain else None
    if declared == "pow_base":
        exponent = node.inputs[1]
        if exponent.is_const and exponent.value.is_integer:
            return "nonzero" if exponent.value.is_negative else None
        return "positive"
    return declared


def to_value(tensor) -> float | list:
    """A tensor as plain Python numbers, for the data model and JSON."""
    if tensor.dim() == 0:
        return float(tensor)
    return tensor.detach().tolist()


# --- --at ----------------------------------------------------------------------------------------


def _label(name: str, text: str) -> str:
    """`--at X=...` as the messages write it; a long value is cut short (a file's name never)."""
    return f"--at {name}={text if len(text) <= 60 or text.endswith('.npy') else text[:57] + '...'}"


def parse_at_value(name: str, text: str, max_elements: int = MAX_ELEMENTS):
    """`2`, `-1.5`, `[1, 2, 3]`, `[[1, 2], [3, 4]]` or `file.npy` -> a float64 tensor.

    At most `max_elements` numbers; a .npy file is checked (a regular file, a numeric dtype, its
    header's shape against the limit and the file's length) before its data is read."""
    import json

    text = text.strip()
    label = _label(name, text)
    if text.endswith(".npy"):
        return finite(name, text, read_npy(label, text, max_elements))
    if text.startswith("["):
        depth = deepest = 0
        for c in re.sub(r"[^\[\]]+", "", text):
            if c == "[":
                depth += 1
                deepest = max(deepest, depth)
            elif c == "]":
                depth -= 1
        if deepest > MAX_AT_DEPTH:
            raise UsageError(f"{label}: a list nested {deepest} deep; an array has at most {MAX_AT_DEPTH} axes")
        if text.count(",") >= max_elements:
            raise UsageError(
                f"{label}: a list of {text.count(',') + 1:,} or more numbers, over the limit of {max_elements:,} "
                "numbers per array — give a smaller array, or --max-elements N"
            )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise UsageError(f"{label}: not a number, a [list] of numbers, or a .npy file") from None
    return finite(name, text, _float_tensor(label, data, max_elements))


def _float_tensor(label: str, data, max_elements: int):
    """Nested lists or an array-like as a float64 tensor within the size cap, or a UsageError."""
    torch = torch_module()
    try:
        value = torch.tensor(data, dtype=torch.float64)
    except (TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise UsageError(f"{label}: not a rectangular array of numbers ({err})") from None
    if value.dim():
        check_array_size(label, tuple(value.shape), max_elements)
    return value


def _refuse_special(label: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise UsageError(f"{label}: {file_kind(mode)}, not a regular .npy file")


def read_npy(label: str, path: str, max_elements: int = MAX_ELEMENTS):
    """A .npy file as a float64 tensor, or a UsageError naming the file and what is wrong with it.

    Refused: special files (a FIFO would block), what is not a .npy file (an .npz archive, other
    data, an empty or truncated file), arrays of Python objects (never unpickled), strings, dates,
    records, complex numbers (the imaginary part would be lost) and arrays over the limit, which is
    checked from the header before the data is read. Integers, booleans and big-endian floats are
    converted to float64."""
    import numpy as np

    fmt = np.lib.format
    try:
        _refuse_special(label, os.stat(path).st_mode)  # before opening: opening a FIFO blocks
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise UsageError(f"{label}: cannot read the array (no such file)") from None
    except OSError as err:
        raise UsageError(f"{label}: cannot read the array ({err.strerror or err})") from None
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        _refuse_special(label, os.fstat(fd).st_mode)  # (it may have changed since the stat)
        if size == 0:
            raise UsageError(f"{label}: the file is empty, not a .npy array")
        head = f.read(len(fmt.MAGIC_PREFIX))
        if head != fmt.MAGIC_PREFIX:
            if head.startswith(b"PK"):
                raise UsageError(
                    f"{label}: an .npz archive (a zip of arrays), not a .npy file — save one array with numpy.save"
                )
            raise UsageError(f"{label}: not a .npy file (it does not start with numpy's \\x93NUMPY)")
        f.seek(0)
        try:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran_order, dtype = fmt.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran_order, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"format version {version[0]}.{version[1]}, which numpy does not write")
        except (ValueError, EOFError, SyntaxError) as err:
            raise UsageError(f"{label}: a damaged .npy header ({err})") from None
        problem = _dtype_problem(dtype)
        if problem:
            raise UsageError(f"{label}: {problem}; backstep reads arrays of real numbers")
        if shape:
            check_array_size(label, shape, max_elements)
        data = math.prod(shape) * dtype.itemsize
        left = size - f.tell()
        if left < data:
            raise UsageError(
                f"{label}: truncated — its header promises shape {fmt_shape_plain(tuple(shape))} of {dtype.name}, "
                f"{data:,} bytes of data, but {left:,} bytes follow it"
            )
        if left > data:
            raise UsageError(
                f"{label}: {left - data:,} bytes after the array's data — not a single array written by numpy.save"
            )
        f.seek(0)
        try:
            array = fmt.read_array(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise UsageError(f"{label}: cannot read the array ({err})") from None
    torch = torch_module()
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))


def _dtype_problem(dtype) -> str | None:
    """Why an array of this numpy dtype cannot be a value; None when it can."""
    if dtype.hasobject:
        return "an array of Python objects (backstep never unpickles a file)"
    if dtype.fields is not None or dtype.subdtype is not None:
        return f"a structured array (fields of dtype {dtype}), not an array of numbers"
    kind = {"U": "strings", "S": "bytes", "M": "dates and times", "m": "time spans", "V": "raw bytes"}.get(dtype.kind)
    if kind:
        return f"an array of {kind} (dtype {dtype.str})"
    if dtype.kind == "c":
        return f"an array of complex numbers (dtype {dtype.name}): the imaginary part would be lost"
    if dtype.kind not in "fiub":
        return f"an array of dtype {dtype}"
    return None


def at_tensor(name: str, raw, max_elements: int = MAX_ELEMENTS):
    """A value given to derive(at=...) (a number, nested lists, a numpy array or a tensor) as float64."""
    torch = torch_module()
    label = f"--at {name}"
    if torch.is_tensor(raw):
        if raw.is_complex():
            raise UsageError(f"{label}: a complex tensor: the imaginary part would be lost")
        value = raw.detach().to(torch.float64)
    elif type(raw).__module__ == "numpy" and hasattr(raw, "dtype"):
        import numpy as np

        problem = _dtype_problem(raw.dtype)
        if problem:
            raise UsageError(f"{label}: {problem}; backstep reads arrays of real numbers")
        if raw.shape:
            check_array_size(label, raw.shape, max_elements)
        value = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float64))
    else:
        value = _float_tensor(label, raw, max_elements)
    if value.dim():
        check_array_size(label, tuple(value.shape), max_elements)
    return finite(name, str(raw) if not value.dim() else f"an array of shape {tuple(value.shape)}", value)


def finite(name: str, text: str, value):
    torch = torch_module()
    if not bool(torch.isfinite(value).all()):
        raise UsageError(f"{_label(name, text)}: every number must be finite (no inf or nan)")
    return value


def sizes_from_values(derivation, values: dict[str, Any]) -> dict[str, int]:
    """Bind each symbolic dimension to the size the given values have; check fixed sizes."""
    sizes: dict[str, int] = {}
    for v in derivation.variables:
        if v.name not in values:
            continue
        got = tuple(values[v.name].shape)
        if len(got) != len(v.shape):
            raise ShapeError(f"--at {v.name}: a value of shape {got}, but {v.name} has shape {tuple(v.shape)}")
        for want, have in zip(v.shape, got):
            if isinstance(want, int):
                if want != have:
                    raise ShapeError(f"--at {v.name}: shape {got}, but {v.name} has shape {tuple(v.shape)}")
            elif sizes.setdefault(want, have) != have:
                raise ShapeError(f"--at {v.name}: dimension {want} is {have} here but {sizes[want]} elsewhere")
    return sample_sizes(derivation.dims, sizes)


# Where a drawn point overflows, it is drawn again, nearer 0 (the plain domains only): these scales.
DRAW_SCALES = (1.0, 1.0, 0.1, 0.01, 0.001)


def nonfinite(torch, value) -> str | None:
    """`inf`, `-inf` or `nan`: the first number of `value` that is not finite; None if all are."""
    if not torch.is_tensor(value) or value.is_floating_point() is False:
        return None
    bad = ~torch.isfinite(value.detach())
    if not bool(bad.any()):
        return None
    return str(float(value.detach()[bad].flatten()[0]))


def overflow_error(what: str, at_given: bool = False) -> DomainError:
    """The refusal when no point drawn has finite values: the input's range, not a bug in backstep."""
    if at_given:
        return DomainError(f"the function is not finite at the --at point ({what}); verification needs finite values")
    verb = "overflows" if "inf" in what else "is not finite"
    return DomainError(
        f"the function {verb} at every point drawn ({what}); verification needs finite values "
        "— use --no-verify or rescale"
    )


def step_text(derivation, step) -> str:
    from .printing import to_text

    text = to_text(step.expr, derivation.symbols)
    return f"{step.name} = {text if len(text) <= 80 else text[:77] + '...'}"


def evaluate_at(derivation, at: dict, seed: int = 0, max_elements: int = MAX_ELEMENTS) -> None:
    """Fill in the number of every forward step, backward step and gradient at one point."""
    torch = torch_module()
    names = {v.name for v in derivation.variables}
    given = {}
    for name, raw in at.items():
        if name not in names:
            raise UsageError(f"--at names {name}, which is not a variable (its variables: {', '.join(sorted(names))})")
        given[name] = at_tensor(name, raw, max_elements)
    sizes = sizes_from_values(derivation, given)
    check_point_size(derivation, sizes, max_elements, "the --at point")
    generator = torch.Generator().manual_seed(seed)
    drawn = [v for v in derivation.variables if v.name not in given]
    for scale in DRAW_SCALES:
        values = dict(given)
        for v in drawn:
            values[v.name] = draw(torch, generator, concrete(v.shape, sizes), v.domain, sizes, scale)
        env = dict(values)
        env[derivation.seed.name] = torch.ones(concrete(derivation.seed.shape, sizes), dtype=torch.float64)
        evaluator = Evaluator(env, sizes)
        bad = None
        for step in derivation.forward:
            value = evaluator(step.expr)
            if nonfinite(torch, value) is not None:
                bad = step, nonfinite(torch, value)
                break
            env[step.name] = value
            step.value = to_value(value)
        if bad is None:
            break
        if not drawn:
            step, number = bad
            raise DomainError(
                f"{step.name} is not finite at this point (value {number} at step {step_text(derivation, step)}: "
                f"a value outside the domain of {step.op}, or too large for float64)"
            )
    else:
        step, number = bad
        raise DomainError(
            f"{step.name} is not finite at this point, nor at the points drawn for "
            f"{', '.join(v.name for v in drawn)} (value {number} at step {step_text(derivation, step)}: a value "
            f"outside the domain of {step.op}, or too large for float64) — give every variable with --at, or rescale"
        )
    for step in derivation.backward:
        shape = concrete(derivation.symbols.table[step.target].shape, sizes)
        value = torch.broadcast_to(evaluator(step.result), shape)
        env[step.target] = value
        step.value = to_value(value)
    for grad in derivation.gradients.values():
        value = torch.broadcast_to(evaluator(grad.expr), concrete(grad.shape, sizes))
        grad.value = to_value(value)
    derivation.at = {name: to_value(t) for name, t in values.items()}
    derivation.sizes = sizes
