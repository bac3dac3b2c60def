"""The torch functions and tensor methods the tracer writes with an adapter of their own, as backstep text.

One adapter per torch target, registered with ``@adapts`` / ``@adapts_method`` (registry.py): the
spellings that need more than the op's operands (axes, keyword parameters, another spelling
altogether). Each finds the op it writes through the torch function it is registered for
(torch_ops.op_of) and spells it from the op's record. The torch spellings that are exactly one op
need no adapter here: one_to_one.py gives them their op's. This module imports torch, so the walk
imports it only when it traces.
"""

from __future__ import annotations

import inspect
import operator

import torch
import torch.nn.functional as F

from .reduction_adapters import values_or_indices
from .registry import Alias, SizeOf, Unmapped, adapts, adapts_method, compact, only, pair, spell
from .torch_ops import op_of, ops_by_torch, reduction_op

# --- functions ----------------------------------------------------------------------------------


@adapts(operator.pos)
def positive(w, node, args, kw):
    return Alias(w.arg(node, args[0]))


@adapts(torch.square)
def square(w, node, args, kw):
    return spell(op_of(torch.square), [w.arg(node, args[0]), "2"])


@adapts(F.gelu)
def gelu(w, node, args, kw):
    only(kw, approximate="none")
    return spell(op_of(F.gelu), [w.arg(node, args[0])])


@adapts(F.softplus)
def softplus(w, node, args, kw):
    only(kw, beta=1, threshold=20)
    return spell(op_of(F.softplus), [w.arg(node, args[0])])


@adapts(F.leaky_relu)
def leaky_relu(w, node, args, kw):
    slope = args[1] if len(args) > 1 else kw.get("negative_slope", 0.01)
    return leaky_relu_text(w.arg(node, args[0]), slope)


def leaky_relu_text(x: str, slope) -> str:
    return f"{op_of(F.leaky_relu).syntax}({x}, negative_slope={float(slope)!r})"


@adapts(F.elu)
def elu(w, node, args, kw):
    alpha = args[1] if len(args) > 1 else kw.get("alpha", 1.0)
    return elu_text(w.arg(node, args[0]), alpha)


def elu_text(x: str, alpha) -> str:
    return f"{op_of(F.elu).syntax}({x}, alpha={float(alpha)!r})"


@adapts(torch.clamp, torch.clip)
def clamp(w, node, args, kw) -> str:
    lo = args[1] if len(args) > 1 else kw.get("min")
    hi = args[2] if len(args) > 2 else kw.get("max")
    parts = [w.arg(node, args[0])]
    for key, value in (("min", lo), ("max", hi)):
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise Unmapped(f"with a tensor {key}")
        parts.append(f"{key}={float(value)!r}")
    return spell(op_of(torch.clamp), parts)


@adapts(torch.softmax, F.softmax)
def softmax(w, node, args, kw) -> str:
    return softmax_like(w, node, op_of(torch.softmax), args, kw)


@adapts(torch.log_softmax, F.log_softmax)
def log_softmax(w, node, args, kw) -> str:
    return softmax_like(w, node, op_of(torch.log_softmax), args, kw)


def softmax_like(w, node, op, args, kw) -> str:
    dim = args[1] if len(args) > 1 else kw.get("dim")
    if dim is None:
        raise Unmapped("without dim: give it, e.g. softmax(x, dim=1)")
    if kw.get("dtype") is not None:
        raise Unmapped("with a dtype")
    return f"{op.syntax}({w.arg(node, args[0])}, axis={dim})"


@adapts(F.linear)
def linear(w, node, args, kw) -> str:
    bias = args[2] if len(args) > 2 else kw.get("bias")
    weight = w.arg(node, args[1] if len(args) > 1 else kw["weight"])
    return linear_text(w.arg(node, args[0]), weight, None if bias is None else w.arg(node, bias))


def linear_text(x: str, weight: str, bias: str | None) -> str:
    """x Wᵀ + b is linear(x, W, b); without a bias, x @ W.T."""
    if bias is None:
        return spell(op_of(operator.matmul), [x, spell(op_of(torch.t), [weight])])
    return spell(op_of(F.linear), [x, weight, bias])


@adapts(F.conv2d)
def conv2d_function(w, node, args, kw) -> str:
    names = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
    p = dict(zip(names, args))
    p.update(kw)
    return conv2d(w, node, p)


@adapts(F.max_pool2d)
def max_pool2d_function(w, node, args, kw) -> str:
    return pool(w, node, op_of(F.max_pool2d), pool_arguments(args, kw))


@adapts(F.avg_pool2d)
def avg_pool2d_function(w, node, args, kw) -> str:
    return pool(w, node, op_of(F.avg_pool2d), pool_arguments(args, kw))


def pool_arguments(args, kw) -> dict:
    names = ["input", "kernel_size", "stride", "padding"]
    p = dict(zip(names, args))
    p.update(kw)
    return p


@adapts(torch.flatten)
def flatten_function(w, node, args, kw) -> str:
    start = args[1] if len(args) > 1 else kw.get("start_dim", 0)
    end = args[2] if len(args) > 2 else kw.get("end_dim", -1)
    return flatten(w, node, w.arg(node, args[0]), start, end)


@adapts(torch.reshape)
def reshape_function(w, node, args, kw) -> str:
    return reshape(w, node, args[0], args[1] if len(args) > 1 else kw.get("shape"))


@adapts(torch.t)
def t(w, node, args, kw) -> str:
    return transpose(w, node, w.arg(node, args[0]))


@adapts(torch.transpose)
def transpose_function(w, node, args, kw) -> str:
    return transpose(w, node, w.arg(node, args[0]), args[1:3])


@adapts(torch.unsqueeze)
def unsqueeze(w, node, args, kw) -> str:
    dim = args[1] if len(args) > 1 else kw.get("dim")
    return f"{op_of(torch.unsqueeze).syntax}({w.arg(node, args[0])}, axis={dim})"


@adapts(F.cross_entropy)
def cross_entropy_function(w, node, args, kw) -> str:
    return cross_entropy(w, node, args, kw)


@adapts(F.nll_loss)
def nll_function(w, node, args, kw) -> str:
    return nll(w, node, args, kw)


@adapts(F.mse_loss)
def mse_function(w, node, args, kw) -> str:
    # torch's third and fourth positions are the deprecated size_average and reduce, not reduction
    if len(args) > 2 or kw.get("size_average") is not None or kw.get("reduce") is not None:
        raise Unmapped("with size_average or reduce (deprecated in torch): give reduction= instead")
    reduction = kw.get("reduction", torch_default(F.mse_loss, "reduction"))
    x = w.arg(node, args[0])
    return mse(x, w.arg(node, args[1] if len(args) > 1 else kw["target"]), reduction)


@adapts(F.dropout)
def dropout(w, node, args, kw):
    p = args[1] if len(args) > 1 else kw.get("p", 0.5)
    training = args[2] if len(args) > 2 else kw.get("training", True)
    if training and p:
        raise Unmapped("is random while training: call model.eval() in the file, or remove it")
    return Alias(w.arg(node, args[0]))


@adapts(getattr)
def attribute(w, node, args, kw):
    """x.T, x.shape, and the .values / .indices of torch.max(x, dim) (reduction_adapters.py's)."""
    picked = values_or_indices(w, args)
    if picked is not None:
        return picked
    base, attr = args[0], args[1]
    if attr == "T":
        return transpose(w, node, w.arg(node, base))
    if attr == "shape":
        return SizeOf(base, None)
    raise Unmapped(f"(the attribute .{attr}) is not in backstep's op table")


def size_index(w, node, args, kw):
    """x.shape[k]: the last of the readings of a subscript (join_adapters.getitem asks the others first)."""
    base = w.value.get(args[0]) if isinstance(args[0], torch.fx.Node) else None
    if isinstance(base, SizeOf) and base.axis is None and isinstance(args[1], int):
        return SizeOf(base.node, args[1])
    raise Unmapped("(indexing) is not in backstep's op table")


# --- tensor methods -----------------------------------------------------------------------------


@adapts_method(torch.Tensor.view, torch.Tensor.reshape)
def view(w, node, args, kw) -> str:
    shape = args[1:] if len(args) > 2 or (len(args) == 2 and not isinstance(args[1], (tuple, list))) else None
    if shape is None:
        shape = args[1] if len(args) == 2 else kw.get("shape", kw.get("size"))
    return reshape(w, node, args[0], shape)


@adapts(torch.permute)
def permute_function(w, node, args, kw) -> str:
    return permute(w, node, args, kw)


@adapts_method(torch.Tensor.permute)
def permute(w, node, args, kw) -> str:
    dims = args[1:] if len(args) > 2 else (args[1] if len(args) > 1 else kw.get("dims"))
    dims = [dims] if isinstance(dims, int) else list(dims or ())
    if not dims or not all(isinstance(d, int) for d in dims):
        raise Unmapped("without its axes as integers")
    if dims == [1, 0]:
        return transpose(w, node, w.arg(node, args[0]))  # a matrix's .T (checked: it acts on one)
    return f"{op_of(torch.permute).syntax}({w.arg(node, args[0])}, {tuple(dims)})"


@adapts_method(torch.Tensor.contiguous, torch.Tensor.float, torch.Tensor.double, torch.Tensor.clone)
def unchanged(w, node, args, kw):
    return Alias(w.arg(node, args[0]))


@adapts_method(torch.Tensor.size)
def size(w, node, args, kw):
    axis = args[1] if len(args) > 1 else kw.get("dim")
    return SizeOf(args[0], axis)


# --- what several adapters write (functions and modules alike) ----------------------------------


def transpose(w, node, x: str, dims=None) -> str:
    if dims is not None and {int(d) for d in dims} != {0, 1}:
        # any other pair of axes (attention's k.transpose(-2, -1) on a batch): swapaxes, of any rank
        d0, d1 = (int(d) for d in dims)
        return f"{op_of(torch.swapaxes).syntax}({x}, {d0}, {d1})"
    w.transposes.add(node)
    return spell(op_of(torch.t), [x])


def flatten(w, node, x: str, start: int, end: int) -> str:
    op = op_of(torch.flatten)
    params = ""
    if start != 1:
        params += f", start_dim={start}"
    if end != -1:
        params += f", end_dim={end}"
    return f"{op.syntax}({x}{params})"


def reshape(w, node, base, shape) -> str:
    op = op_of(torch.reshape)
    x = w.arg(node, base)
    if shape is None:
        raise Unmapped("without a shape")
    items = list(shape) if isinstance(shape, (tuple, list)) else [shape]
    sizes = [w.value.get(i) if isinstance(i, torch.fx.Node) else i for i in items]
    batch = [i for i, s in enumerate(sizes) if isinstance(s, SizeOf)]
    if batch:
        s = sizes[batch[0]]
        if batch != [0] or s.node is not base or s.axis not in (0, None):
            raise Unmapped("with sizes computed from tensors other than x.size(0)")
        rest = sizes[1:]
        if rest == [-1]:
            flat = ops_by_torch().functions.get(torch.flatten)
            return spell(flat, [x]) if flat is not None else spell(op, [x, "(-1,)"])
        if -1 in rest:
            raise Unmapped("with both x.size(0) and -1; write the sizes")
        sizes = [-1] + rest
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise Unmapped("with sizes that are not integers")
    return spell(op, [x, f"({', '.join(str(s) for s in sizes)}{',' if len(sizes) == 1 else ''})"])


def tensor_or_param(w, node, item) -> str | None:
    if item is None:
        return None
    if isinstance(item, tuple) and len(item) == 3 and item[0] == "param":
        return w.parameter(item[1], item[2], node)
    return w.arg(node, item)


def conv2d(w, node, p: dict) -> str:
    op = op_of(F.conv2d)
    if p.get("groups", 1) != 1:
        raise Unmapped(f"with groups={p['groups']}")
    if pair(p.get("dilation", 1)) != (1, 1):
        raise Unmapped(f"with dilation={p['dilation']}")
    padding = p.get("padding", 0)
    if isinstance(padding, str):
        if padding != "valid":
            raise Unmapped(f"with padding={padding!r}; give the padding as numbers")
        padding = 0
    x = tensor_or_param(w, node, p["input"])
    weight = tensor_or_param(w, node, p["weight"])
    b = tensor_or_param(w, node, p.get("bias"))
    extra = ""
    if pair(p.get("stride", 1)) != (1, 1):
        extra += f", stride={compact(p['stride'])}"
    if pair(padding) != (0, 0):
        extra += f", padding={compact(padding)}"
    conv = f"{op.syntax}({x}, {weight}{extra})"
    if b is None:
        return conv
    channels = w.annotations.get(b, (None,))[0]
    if not isinstance(channels, int):
        raise Unmapped("with a bias whose size is not known")
    return spell(op_of(operator.add), [conv, spell(op_of(torch.reshape), [b, f"({channels}, 1, 1)"])])


def pool(w, node, op, p: dict) -> str:
    if pair(p.get("padding", 0)) != (0, 0):
        raise Unmapped(f"with padding={p['padding']}")
    if pair(p.get("dilation", 1)) != (1, 1):
        raise Unmapped(f"with dilation={p['dilation']}")
    if p.get("ceil_mode") or p.get("return_indices") or p.get("divisor_override"):
        raise Unmapped("with ceil_mode, return_indices or divisor_override")
    x = tensor_or_param(w, node, p["input"])
    k = p["kernel_size"]
    stride = p.get("stride")
    extra = ""
    if stride not in (None, (), []) and pair(stride) != pair(k):
        extra = f", stride={compact(stride)}"
    return f"{op.syntax}({x}, {compact(k)}{extra})"


def cross_entropy(w, node, args, kw) -> str:
    op = op_of(F.cross_entropy)
    z = w.arg(node, args[0])
    t = w.arg(node, args[1] if len(args) > 1 else kw["target"])
    for key in ("weight",):
        if kw.get(key) is not None:
            raise Unmapped(f"with {key}")
    if kw.get("label_smoothing"):
        raise Unmapped("with label smoothing")
    reductions = op.param("reduction")  # backstep's cross_entropy takes torch's values and default
    reduction = kw.get("reduction", reductions.default)
    if reduction not in reductions.choices:
        raise Unmapped(f"with reduction={reduction!r}")
    if reduction == reductions.default:
        return spell(op, [z, t])
    return f'{op.syntax}({z}, {t}, reduction="{reduction}")'


def nll(w, node, args, kw) -> str:
    """nll_loss of a log_softmax over the classes is the cross-entropy of the logits."""
    logp = args[0]
    if logp not in w.fused:
        raise Unmapped("except as nll_loss(log_softmax(z, dim=1), t), which backstep writes cross_entropy(z, t)")
    if kw.get("weight") is not None:
        raise Unmapped("with class weights")
    reduction = {"reduction": kw["reduction"]} if "reduction" in kw else {}
    return cross_entropy(w, node, [w.fused[logp], *args[1:]], reduction)


def mse(a: str, b: str, reduction: str) -> str:
    """The mean of the squares is mse(a, b); their sum, or the squares themselves, are written out."""
    squares = spell(op_of(operator.pow), [f"({spell(op_of(operator.sub), [a, b])})", "2"])
    if reduction == "none":
        return squares
    reducer = reduction_op(reduction)
    if reducer is op_of(torch.mean):
        return spell(op_of(F.mse_loss), [a, b])
    if reducer is op_of(torch.sum):
        return spell(reducer, [squares])
    raise Unmapped(f"with reduction={reduction!r}")


def torch_default(function, parameter: str):
    """The default torch's own signature gives a parameter (F.mse_loss's reduction)."""
    return inspect.signature(function).parameters[parameter].default
