"""How many numbers backstep may hold when it evaluates at a point (verification, --at): checked
from the concrete shapes before anything is allocated, and said in numbers and bytes."""

from __future__ import annotations

import math

from ..errors import UsageError
from ..shapes import concrete, fmt_shape_plain

# The most numbers one array may hold when backstep evaluates numbers (verification, --at): 10⁷ float64
# numbers are 80 MB. The arrays of one point together (every variable, forward step and backward
# step) may hold TOTAL_FACTOR times as many: 1.25×10⁸ numbers, 1 GB, at the default. Both are checked
# from the concrete shapes before anything is allocated; `--max-elements N` raises or lowers them.
MAX_ELEMENTS = 10**7
TOTAL_FACTOR = 12.5


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
