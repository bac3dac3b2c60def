"""`--at`: values given for the variables (numbers, JSON lists, .npy files, arrays), checked and
turned into float64 tensors, and every step of the derivation evaluated at that point.

A value is refused (UsageError, exit 2) before it is allocated when it is too large, nested too
deep, not an array of real numbers, or not finite; a .npy file is read without unpickling anything.
"""

from __future__ import annotations

import math
import os
import re
import stat
from typing import Any

from ..errors import DomainError, ShapeError, UsageError
from ..shapes import concrete, fmt_shape_plain, sample_sizes
from ..userfiles import file_kind
from .evaluate import nonfinite, run_steps, step_text, to_value, torch_module
from .limits import MAX_ELEMENTS, check_array_size, check_point_size
from .sampling import DRAW_SCALES, draw

# The deepest nesting of a JSON list given to --at (numpy's arrays have at most 64 axes).
MAX_AT_DEPTH = 32


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
    # (np.ascontiguousarray makes a 0-d array 1-d: a scalar given as a .npy file would become a vector)
    return torch.from_numpy(np.array(array, dtype=np.float64, order="C"))


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
        value = torch.from_numpy(np.array(raw, dtype=np.float64, order="C"))  # (0-d stays 0-d)
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


def value_shapes(at: dict, max_elements: int = MAX_ELEMENTS) -> dict[str, tuple[int, ...]]:
    """The shape of each value given with --at (or derive(at=...)): they fix their variables' shapes
    before the program is parsed (`x: (N, C, H, W)` with an image runs conv2d; a 0-d value is a scalar)."""
    return {name: tuple(at_tensor(name, raw, max_elements).shape) for name, raw in at.items()}


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
        steps = run_steps(derivation, env, sizes)
        bad = None
        for step, value in steps.forward():
            if nonfinite(torch, value) is not None:
                bad = step, nonfinite(torch, value)
                break
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
    for step, value in steps.backward():
        step.value = to_value(value)
    for name, value in steps.gradients():
        derivation.gradients[name].value = to_value(value)
    derivation.at = {name: to_value(t) for name, t in values.items()}
    derivation.sizes = sizes
