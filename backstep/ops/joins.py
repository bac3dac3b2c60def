"""Building and splitting arrays: cat and stack (of any number of operands), basic slicing
(`x[:, 1:3]` is slice, `x[:, t]` is select), the parts of chunk and split, and pad.

Each one only moves entries, so each gradient moves them back: a part's gradient is ȳ placed
into zeros of the whole's shape (pad), and an operand of cat's is its own slice of ȳ. Where one
array is sliced more than once, the derivation adds the parts' gradients (the multivariable
chain rule) as it does for any variable used twice.

cat and stack take a tuple of operands: their SymPy class counts its operands from its args
(`Variadic`), and their backward rules are one rule per input index (`RulePerInput`), so that the
record keeps its fixed `arity` (the least number of operands) for the table's cross-checks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sympy import Expr

from .. import symbolic as sb
from ..shapes import Shape, ShapeEnv, ShapeMismatch
from ..shapes import fmt_shape_plain as fmt
from .registry import OPS, register
from .rules import unify_or
from .spec import PREC_ATOM, PREC_POSTFIX, ByParams, Ctx, Op, Param, Printing, axis_param

# --- the machinery of an op of any number of operands ---------------------------------------------

VARIADIC_ARITY = 2  # what the record declares: the least number of operands its examples use


class _OperandCount:
    """A Variadic's n_operands: the declared arity on the class, the operands it holds on an instance
    (its args are the operands, the parameters, then one shape per operand)."""

    def __get__(self, obj, owner) -> int:
        if obj is None:
            return VARIADIC_ARITY
        return (len(obj.args) - len(owner.param_names)) // 2


class Variadic(sb.TensorOp):
    n_operands = _OperandCount()


class RulePerInput(Sequence):
    """The backward rules of a variadic op: `rule(ctx, i)` for input i, however many there are."""

    def __init__(self, rule, arity: int = VARIADIC_ARITY):
        self.rule, self.arity = rule, arity

    def __len__(self) -> int:
        return self.arity

    def __getitem__(self, i):
        if not isinstance(i, int) or i < 0:
            raise IndexError(i)
        return lambda c: self.rule(c, i)

    def __iter__(self) -> Iterator:
        return (self[i] for i in range(self.arity))


def is_variadic(op: Op) -> bool:
    """Whether the op takes a tuple of operands, cat((a, b), axis=1)."""
    return isinstance(op.backward, RulePerInput)


# --- shared shape helpers ---------------------------------------------------------------------------


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def axis_of(shape: Shape, axis, op: str, rank: int | None = None) -> int:
    """The axis counted from the start; an axis out of range is refused naming the op."""
    rank = len(shape) if rank is None else rank
    if not is_int(axis):
        raise ShapeMismatch(f"{op} needs axis as an integer; got {axis!r}")
    if not -rank <= axis < rank:
        raise ShapeMismatch(f"{op}: axis {axis} is out of range for {fmt(shape)} (rank {rank})")
    return axis % rank


def known_size(shape: Shape, k: int, op: str) -> int:
    """The size of axis k as a number: slicing it needs one (a dimension name has no value yet)."""
    size = shape[k]
    if not is_int(size):
        raise ShapeMismatch(
            f"{op} along axis {k} of {fmt(shape)} needs the size of that axis as a number (it is {size}): "
            "give the shape with it, x: (N, 3, D)"
        )
    return size


def pad_back(c: Ctx, k: int, before: int) -> Expr:
    """ȳ placed at `before` along axis k of zeros of the input's shape: a part's gradient."""
    after = c.shapes[0][k] - before - c.out_shape[k]
    return Pad.build([c.g], [c.out_shape], widths=(before, after), axis=k)


def python_index(axis: int, item: str) -> str:
    """`x[:, item]` for axis 1, `x[..., item]` for axis -1: the index of one axis as Python writes it."""
    if axis < 0:
        return ", ".join(["...", item] + [":"] * (-axis - 1))
    return ", ".join([":"] * axis + [item])


def slice_text(start, stop) -> str:
    return f"{'' if start is None else start}:{'' if stop is None else stop}"


def subscript_printing(item_of) -> Printing:
    """`x[:, 1:3]` in every target (torch's indexing is Python's); LaTeX writes the colon as an ordinary symbol."""

    def text(o, p) -> str:
        return f"{o[0]}[{python_index(p['axis'], item_of(p))}]"

    def latex(o, p) -> str:
        index = python_index(p["axis"], item_of(p)).replace(":", "{:}").replace("...", r"\ldots")
        return f"{o[0]}[{index}]"

    return Printing(
        text=ByParams(text),
        latex=ByParams(latex),
        lang=ByParams(text),
        torch=ByParams(text),
        prec=PREC_POSTFIX,
        operand_prec=PREC_POSTFIX,
    )


# --- slice ------------------------------------------------------------------------------------------


class Slice(sb.TensorOp):
    param_names = ("axis", "start", "stop")


def slice_bounds(shape: Shape, params: dict) -> tuple[int, int, int]:
    """(axis, start, stop) counted from the start; a bound past the end or an empty slice is refused
    (Python would clip it silently)."""
    k = axis_of(shape, params.get("axis"), "slicing")
    n = known_size(shape, k, "slicing")
    where = f"[{python_index(params['axis'], slice_text(params.get('start'), params.get('stop')))}]"
    bounds = []
    for name, value, default in (("start", params.get("start"), 0), ("stop", params.get("stop"), n)):
        if value is None:
            bounds.append(default)
            continue
        if not -n <= value <= n:
            raise ShapeMismatch(f"{where}: {name} {value} is out of range for axis {k} of {fmt(shape)} (size {n})")
        bounds.append(value % n if value != n else n)
    start, stop = bounds
    if stop <= start:
        raise ShapeMismatch(f"{where} is empty: axis {k} of {fmt(shape)} has size {n}")
    return k, start, stop


def slice_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = env.resolve(shapes[0])
    if len(s) == 0:
        raise ShapeMismatch("a scalar cannot be sliced")
    k, start, stop = slice_bounds(s, params)
    return s[:k] + (stop - start,) + s[k + 1 :]


def slice_torch(torch, args, p):
    k, start, stop = slice_bounds(tuple(args[0].shape), p)
    return args[0].narrow(k, start, stop - start)


register(
    Op(
        name="slice",
        syntax="slice",
        arity=1,
        positive_through=True,
        shape=slice_shape,
        sympy=lambda args, shapes, p: Slice.build(args, shapes, **p),
        backward=(lambda c: pad_back(c, *slice_bounds(c.shapes[0], c.params)[:2]),),
        torch=slice_torch,
        torch_aliases=("torch.narrow", "torch.Tensor.narrow"),  # and x[a:b] (trace/join_adapters.py)
        grad_fn="SliceBackward0",
        summary="x[:, a:b]: the entries a … b − 1 along one axis, y[:, j] = x[:, a + j], as Python slices "
        "(negative bounds count from the end; a bound past the end is refused); x̄ = ȳ placed into zeros of "
        "x's shape, pad(ȳ, (a, n − b), axis)",
        title={"en": "slice", "zh": "切片"},
        example="x: (N, 7, 3)\nx[:, 2:5]",
        parameters=(axis_param(0), Param("start", "axis"), Param("stop", "axis")),
        sympy_class=Slice,
        printing=subscript_printing(lambda p: slice_text(p.get("start"), p.get("stop"))),
    )
)

# --- select -----------------------------------------------------------------------------------------


class Select(sb.TensorOp):
    param_names = ("axis", "index")


def select_index(shape: Shape, params: dict) -> tuple[int, int]:
    """(axis, index) counted from the start; an index out of range is refused."""
    k = axis_of(shape, params.get("axis"), "indexing")
    n = known_size(shape, k, "indexing")
    index = params.get("index")
    if not is_int(index):
        raise ShapeMismatch(f"indexing needs an integer index; got {index!r}")
    if not -n <= index < n:
        where = f"[{python_index(params['axis'], str(index))}]"
        raise ShapeMismatch(f"{where}: index {index} is out of range for axis {k} of {fmt(shape)} (size {n})")
    return k, index % n


def select_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = env.resolve(shapes[0])
    if len(s) == 0:
        raise ShapeMismatch("a scalar cannot be indexed")
    k, _ = select_index(s, params)
    return s[:k] + s[k + 1 :]


def select_grad(c: Ctx) -> Expr:
    k, index = select_index(c.shapes[0], c.params)
    column = sb.UnsqueezeOp.build([c.g], [c.out_shape], axis=k)
    after = c.shapes[0][k] - index - 1
    return Pad.build([column], [c.shapes[0][:k] + (1,) + c.shapes[0][k + 1 :]], widths=(index, after), axis=k)


register(
    Op(
        name="select",
        syntax="select",
        arity=1,
        positive_through=True,
        shape=select_shape,
        sympy=lambda args, shapes, p: Select.build(args, shapes, **p),
        backward=(select_grad,),
        torch=lambda torch, args, p: args[0].select(*select_index(tuple(args[0].shape), p)),
        grad_fn="SelectBackward0",
        summary="x[:, t]: the entries at index t of one axis, which the result no longer has, y[n, d] = x[n, t, d] "
        "(a negative index counts from the end; out of range is refused); x̄ = ȳ placed at t into zeros of x's "
        "shape, pad(unsqueeze(ȳ, axis), (t, n − t − 1), axis)",
        title={"en": "index", "zh": "索引"},
        example="x: (N, 3, 4)\nx[:, 1]",
        parameters=(axis_param(0), Param("index", "axis", required=True)),
        sympy_class=Select,
        printing=subscript_printing(lambda p: str(p["index"])),
    )
)

# --- pad --------------------------------------------------------------------------------------------


class Pad(sb.TensorOp):
    param_names = ("widths", "axis")


def pad_widths(shape: Shape, params: dict) -> tuple[int, int, int]:
    k = axis_of(shape, params.get("axis"), "pad")
    widths = params.get("widths")
    widths = (widths, widths) if is_int(widths) else widths
    if not (isinstance(widths, tuple) and len(widths) == 2 and all(is_int(w) and w >= 0 for w in widths)):
        raise ShapeMismatch(f"pad needs widths as (before, after), two integers of at least 0; got {widths!r}")
    return k, widths[0], widths[1]


def pad_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = env.resolve(shapes[0])
    if len(s) == 0:
        raise ShapeMismatch("pad needs an array, not a scalar")
    k, before, after = pad_widths(s, params)
    return s[:k] + (known_size(s, k, "pad") + before + after,) + s[k + 1 :]


def pad_torch(torch, args, p):
    k, before, after = pad_widths(tuple(args[0].shape), p)
    # torch's pairs start from the last axis: (0, 0) for each axis after k
    return torch.nn.functional.pad(args[0], (0, 0) * (args[0].dim() - 1 - k) + (before, after))


def pad_code(o, p) -> str:
    widths = (p["widths"],) * 2 if is_int(p["widths"]) else p["widths"]
    axis = p["axis"]
    after_k = f"(0, 0) * {-1 - axis} + " if axis < -1 else ""
    if axis >= 0:
        after_k = f"(0, 0) * ({o[0]}.dim() - {axis + 1}) + "
    return f"torch.nn.functional.pad({o[0]}, {after_k}{fmt(widths)})"


def pad_slice_back(c: Ctx) -> Expr:
    k, before, _ = pad_widths(c.shapes[0], c.params)
    return Slice.build([c.g], [c.out_shape], axis=k, start=before, stop=before + c.shapes[0][k])


register(
    Op(
        name="pad",
        syntax="pad",
        arity=1,
        shape=pad_shape,
        sympy=lambda args, shapes, p: Pad.build(args, shapes, **p),
        backward=(pad_slice_back,),
        torch=pad_torch,
        grad_fn="ConstantPadNdBackward0",
        summary="pad(x, (a, b), axis): x with a zeros before and b zeros after along one axis, as np.pad on that "
        "axis (torch.nn.functional.pad counts its pairs from the last axis); x̄ = ȳ[a:a + n] along it",
        title={"en": "zero padding", "zh": "零填充"},
        example="x: (N, 4, 3)\npad(x, (2, 1), axis=1)",
        parameters=(Param("widths", "pair", required=True), axis_param(-1)),
        sympy_class=Pad,
        printing=Printing(
            text="pad({0}, {widths}, axis={axis})",
            latex=r"\operatorname{{pad}}_{{{axis}}}\left({0}, {widths}\right)",
            lang="pad({0}, {widths}, axis={axis})",
            torch=ByParams(pad_code),
        ),
    )
)

# --- chunk and split: one part each -----------------------------------------------------------------


class ChunkPart(sb.TensorOp):
    param_names = ("chunks", "axis", "index")


class SplitPart(sb.TensorOp):
    param_names = ("sizes", "axis", "index")


def part_bounds(name: str, shape: Shape, params: dict) -> tuple[int, int, int]:
    """(axis, start, stop) of part `index` of chunk(x, chunks) or split(x, sizes)."""
    k = axis_of(shape, params.get("axis"), name)
    n = known_size(shape, k, name)
    if name == "chunk":
        chunks = params.get("chunks")
        if not (is_int(chunks) and chunks >= 1):
            raise ShapeMismatch(f"chunk needs the number of chunks as a positive integer; got {chunks!r}")
        if n % chunks:
            raise ShapeMismatch(
                f"chunk: axis {k} of {fmt(shape)} (size {n}) does not split into {chunks} equal parts "
                "(split(x, sizes, axis) takes parts of any sizes)"
            )
        sizes = (n // chunks,) * chunks
    else:
        sizes = params.get("sizes")
        sizes = (sizes,) if is_int(sizes) else sizes
        if not (isinstance(sizes, tuple) and sizes and all(is_int(s) and s >= 1 for s in sizes)):
            raise ShapeMismatch(f"split needs the sizes of its parts as a tuple of positive integers; got {sizes!r}")
        if sum(sizes) != n:
            raise ShapeMismatch(
                f"split: the sizes {fmt(sizes)} add up to {sum(sizes)}, not to the size {n} of axis {k} of {fmt(shape)}"
            )
    index = params.get("index")
    if not (is_int(index) and 0 <= index < len(sizes)):
        raise ShapeMismatch(f"{name} gives {len(sizes)} parts; part {index!r} is not one of them")
    start = sum(sizes[:index])
    return k, start, start + sizes[index]


def part_shape(name: str):
    def shape(env: ShapeEnv, shapes, params) -> Shape:
        s = env.resolve(shapes[0])
        if len(s) == 0:
            raise ShapeMismatch(f"{name} needs an array, not a scalar")
        k, start, stop = part_bounds(name, s, params)
        return s[:k] + (stop - start,) + s[k + 1 :]

    return shape


def part_torch(name: str):
    def run(torch, args, p):
        k, start, stop = part_bounds(name, tuple(args[0].shape), p)
        split = torch.chunk(args[0], p["chunks"], k) if name == "chunk" else torch.split(args[0], p["sizes"], k)
        return split[p["index"]]

    return run


def part_printing(name: str, first: str) -> Printing:
    """chunk(Z, 4, axis=1)[2]: the call as torch and backstep both read it, then the part."""
    return Printing(
        text=f"{name}({{0}}, {{{first}}}, axis={{axis}})[{{index}}]",
        latex=rf"\operatorname{{{{{name}}}}}\left({{0}}, {{{first}}}, {{axis}}\right)_{{{{{{index}}}}}}",
        lang=f"{name}({{0}}, {{{first}}}, axis={{axis}})[{{index}}]",
        torch=f"torch.{name}({{0}}, {{{first}}}, dim={{axis}})[{{index}}]",
        prec=PREC_POSTFIX,
    )


def part_op(name: str, cls, first: Param, summary: str, title: dict, example: str, grad_fn: str) -> Op:
    """chunk or split, one part of it: the tracer reads torch.chunk / torch.split and their methods as it."""
    return register(
        Op(
            name=name,
            syntax=name,
            arity=1,
            positive_through=True,
            shape=part_shape(name),
            sympy=lambda args, shapes, p: cls.build(args, shapes, **p),
            backward=(lambda c: pad_back(c, *part_bounds(name, c.shapes[0], c.params)[:2]),),
            torch=part_torch(name),
            grad_fn=grad_fn,
            torch_aliases=(f"torch.{name}", f"torch.Tensor.{name}"),
            summary=summary,
            title=title,
            example=example,
            parameters=(first, axis_param(0), Param("index", "axis")),
            sympy_class=cls,
            printing=part_printing(name, first.name),
        )
    )


CHUNK = part_op(
    "chunk",
    ChunkPart,
    Param("chunks", "axis", required=True),
    "chunk(x, k, axis)[i]: part i of k equal parts along one axis (i, f, o, g = chunk(Z, 4, axis=1) names "
    "them all), as torch.chunk; the axis's size must divide by k; x̄ = ȳ placed into zeros at the part's place",
    {"en": "chunk", "zh": "等分块"},
    "Z: (N, 8)\nchunk(Z, 4, axis=1)[2]",
    "SplitBackward0",
)

SPLIT = part_op(
    "split",
    SplitPart,
    Param("sizes", "ints", required=True),
    "split(x, (a, b, …), axis)[i]: part i of parts of the given sizes along one axis (a, b = split(Z, (2, 3), "
    "axis=1) names them all), as torch.split with a list of sizes; x̄ = ȳ placed into zeros at the part's place",
    {"en": "split", "zh": "拆分"},
    "Z: (N, 5)\nsplit(Z, (2, 3), axis=1)[1]",
    "SplitWithSizesBackward0",
)

PART_OPS = (CHUNK, SPLIT)
SLICE, SELECT = OPS["slice"], OPS["select"]  # what a subscript is made of (the parser's parse_joins)


def part_count(op: Op, params: dict) -> int | None:
    """How many parts chunk or split gives (None where its parameter is not a valid count)."""
    value = params.get("chunks" if op is CHUNK else "sizes")
    if op is CHUNK:
        return value if is_int(value) and value >= 1 else None
    return 1 if is_int(value) else (len(value) if isinstance(value, tuple) else None)


# --- cat and stack ----------------------------------------------------------------------------------


class Cat(Variadic):
    param_names = ("axis",)


class Stack(Variadic):
    param_names = ("axis",)


def same_except(env: ShapeEnv, shapes: list, skip: int | None, op: str, axis) -> None:
    """Every operand has the first's rank and sizes, except along axis `skip`: else the operand is named."""
    first = shapes[0]
    for i, s in enumerate(shapes[1:], 2):
        if len(s) != len(first):
            raise ShapeMismatch(
                f"{op}: operand {i} {fmt(s)} has rank {len(s)}, operand 1 {fmt(first)} rank {len(first)}"
            )
        for j, (a, b) in enumerate(zip(first, s)):
            if j != skip:
                unify_or(
                    env,
                    a,
                    b,
                    f"{op} along axis {axis}: operand {i} {fmt(s)} differs from operand 1 {fmt(first)} on axis {j}",
                )


def cat_sizes(shapes, params) -> tuple[int, list[int]]:
    """The axis (from the start) and each operand's size along it, as numbers."""
    k = axis_of(shapes[0], params.get("axis"), "cat")
    sizes = []
    for i, s in enumerate(shapes, 1):
        if not is_int(s[k]):
            raise ShapeMismatch(
                f"cat along axis {k}: operand {i} {fmt(s)} has the size {s[k]} there, not a number; "
                "give it in the shape (h: (N, 4))"
            )
        sizes.append(s[k])
    return k, sizes


def cat_shape(env: ShapeEnv, shapes, params) -> Shape:
    shapes = [env.resolve(s) for s in shapes]
    if any(len(s) == 0 for s in shapes):
        raise ShapeMismatch("cat joins arrays along an axis they have: a scalar has none (stack joins scalars)")
    k = axis_of(shapes[0], params.get("axis"), "cat")
    same_except(env, shapes, k, "cat", params.get("axis"))
    _, sizes = cat_sizes(shapes, params)
    first = env.resolve(shapes[0])
    return first[:k] + (sum(sizes),) + first[k + 1 :]


def cat_grad(c: Ctx, i: int) -> Expr:
    k, sizes = cat_sizes(c.shapes, c.params)
    start = sum(sizes[:i])
    return Slice.build([c.g], [c.out_shape], axis=k, start=start, stop=start + sizes[i])


def unwrapped(text: str) -> str:
    """An operand without the parentheses the printer put around it: inside a tuple it needs none."""
    if not (text.startswith("(") and text.endswith(")")):
        return text
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return text[1:-1] if i == len(text) - 1 else text
    return text


def operand_list(o) -> str:
    return "(" + ", ".join(unwrapped(x) for x in o) + ("," if len(o) == 1 else "") + ")"


def join_printing(name: str, torch_name: str, latex_name: str) -> Printing:
    return Printing(
        text=ByParams(lambda o, p: f"{name}({operand_list(o)}, axis={p['axis']})"),
        latex=ByParams(lambda o, p: rf"\operatorname{{{latex_name}}}_{{{p['axis']}}}\left({', '.join(o)}\right)"),
        lang=ByParams(lambda o, p: f"{name}({operand_list(o)}, axis={p['axis']})"),
        torch=ByParams(lambda o, p: f"{torch_name}({operand_list(o)}, dim={p['axis']})"),
        prec=PREC_ATOM,
    )


register(
    Op(
        name="cat",
        syntax="cat",
        arity=VARIADIC_ARITY,
        positive_through=True,
        shape=cat_shape,
        sympy=lambda args, shapes, p: Cat.build(args, shapes, **p),
        backward=RulePerInput(cat_grad),
        torch=lambda torch, args, p: torch.cat(tuple(args), dim=p["axis"]),
        torch_aliases=("torch.cat", "torch.concat", "torch.concatenate"),
        grad_fn="CatBackward0",
        summary="cat((a, b, …), axis): the operands joined along an existing axis, y[:, :m] = a, y[:, m:] = b, "
        "as torch.cat and np.concatenate (the other sizes agree; the joined ones are numbers); each operand's "
        "gradient is its own slice of ȳ, ā = ȳ[:, :m], b̄ = ȳ[:, m:]",
        title={"en": "concatenation", "zh": "拼接"},
        example="a: (N, 3); b: (N, 4)\ncat((a, b), axis=1)",
        arg_names=("x0", "x1"),
        parameters=(axis_param(0),),
        sympy_class=Cat,
        printing=join_printing("cat", "torch.cat", "cat"),
    )
)


def stack_shape(env: ShapeEnv, shapes, params) -> Shape:
    shapes = [env.resolve(s) for s in shapes]
    first = shapes[0]
    k = axis_of(first, params.get("axis"), "stack", rank=len(first) + 1)
    same_except(env, shapes, None, "stack", params.get("axis"))
    first = env.resolve(first)
    return first[:k] + (len(shapes),) + first[k:]


def stack_grad(c: Ctx, i: int) -> Expr:
    return Select.build([c.g], [c.out_shape], axis=axis_of(c.out_shape, c.params.get("axis"), "stack"), index=i)


register(
    Op(
        name="stack",
        syntax="stack",
        arity=VARIADIC_ARITY,
        positive_through=True,
        shape=stack_shape,
        sympy=lambda args, shapes, p: Stack.build(args, shapes, **p),
        backward=RulePerInput(stack_grad),
        torch=lambda torch, args, p: torch.stack(tuple(args), dim=p["axis"]),
        torch_aliases=("torch.stack",),
        grad_fn="StackBackward0",
        summary="stack((a, b, …), axis): the operands, all of one shape, joined along a new axis, y[:, 0] = a, "
        "y[:, 1] = b, as torch.stack and np.stack; each operand's gradient is its own index of ȳ, ā = ȳ[:, 0]",
        title={"en": "stacking", "zh": "堆叠"},
        example="a: (N, 3); b: (N, 3)\nstack((a, b), axis=1)",
        arg_names=("x0", "x1"),
        parameters=(axis_param(0),),
        sympy_class=Stack,
        printing=join_printing("stack", "torch.stack", "stack"),
    )
)
