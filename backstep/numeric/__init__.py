"""backstep's numeric engine: its expressions evaluated with torch, at points drawn inside the
inputs' domains, compared within one tolerance.

- ``evaluate``: the Evaluator, the torch function of each node (``node_function``, which the
  compiled tape of ``backstep train`` uses too), and ``run_steps``, the one loop that evaluates a
  derivation's forward steps, backward steps and gradients at a point;
- ``sampling``: values inside a domain, a point inside every op's domain (``draw_point``), the
  graph run in torch (``run_graph``), the sizes of the dimensions, ``TOLERANCE``;
- ``limits``: how many numbers a point may hold, checked before anything is allocated;
- ``at``: ``--at`` values read and checked, and ``evaluate_at``.
"""

from .at import MAX_AT_DEPTH, at_tensor, evaluate_at, finite, parse_at_value, read_npy, sizes_from_values
from .evaluate import (
    DTYPE_NAME,
    Evaluator,
    StepRun,
    add_all,
    concrete_params,
    const_value,
    expression_children,
    is_leaf,
    multiply_all,
    node_function,
    nonfinite,
    run_steps,
    step_text,
    to_value,
    torch_module,
)
from .limits import MAX_ELEMENTS, TOTAL_FACTOR, check_array_size, check_point_size, point_arrays, total_limit
from .sampling import (
    AGAINST_TOLERANCE,
    DRAW_SCALES,
    MAX_DRAWS,
    SAMPLE_SIZES,
    SECOND_SIZES,
    TOLERANCE,
    Tolerance,
    draw,
    draw_leaves,
    draw_point,
    draw_seed,
    free_sizes,
    in_domain,
    op_input_domain,
    overflow_error,
    point_sizes,
    run_graph,
    sample_sizes,
    size_sets,
)

__all__ = [
    "AGAINST_TOLERANCE",
    "DRAW_SCALES",
    "DTYPE_NAME",
    "MAX_AT_DEPTH",
    "MAX_DRAWS",
    "MAX_ELEMENTS",
    "SAMPLE_SIZES",
    "SECOND_SIZES",
    "TOLERANCE",
    "TOTAL_FACTOR",
    "Evaluator",
    "StepRun",
    "Tolerance",
    "add_all",
    "at_tensor",
    "check_array_size",
    "check_point_size",
    "concrete_params",
    "const_value",
    "draw",
    "draw_leaves",
    "draw_point",
    "draw_seed",
    "evaluate_at",
    "expression_children",
    "finite",
    "free_sizes",
    "in_domain",
    "is_leaf",
    "multiply_all",
    "node_function",
    "nonfinite",
    "op_input_domain",
    "overflow_error",
    "parse_at_value",
    "point_arrays",
    "point_sizes",
    "read_npy",
    "run_graph",
    "run_steps",
    "sample_sizes",
    "size_sets",
    "sizes_from_values",
    "step_text",
    "to_value",
    "torch_module",
    "total_limit",
]
