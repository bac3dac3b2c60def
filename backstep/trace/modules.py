"""The nn.Module classes the tracer knows (a `call_module` node), each as backstep text.

A module matches its adapter by isinstance, in the order of this file; the classes that are
exactly their op (nn.ReLU, whose op's torch_aliases name it) need none here: one_to_one.py gives
them their op's, for that very class only. An adapter finds its op through the module's class
(torch_ops.op_of_module). Each gets the program text `x` of the module's first argument (None
when it is a log_softmax that an NLLLoss fuses into cross_entropy). This module imports torch:
the walk imports it only when it traces.
"""

from __future__ import annotations

import torch.nn as nn

from .adapters import conv2d, cross_entropy, elu_text, flatten, leaky_relu_text, linear_text, mse, nll, pool
from .registry import Alias, Unmapped, adapts, spell
from .torch_ops import op_of_module


@adapts(nn.Linear)
def linear(w, node, mod, x):
    weight = w.parameter(f"{node.target}.weight", mod.weight, node)
    b = None if mod.bias is None else w.parameter(f"{node.target}.bias", mod.bias, node)
    return linear_text(x, weight, b)


@adapts(nn.Identity)
def identity(w, node, mod, x):
    return Alias(x)


@adapts(nn.Dropout)
def dropout(w, node, mod, x):
    if mod.training and mod.p:
        raise Unmapped("is random while training: call model.eval() in the file, or remove it")
    return Alias(x)


@adapts(nn.Softmax, nn.LogSoftmax)
def softmax(w, node, mod, x):
    if mod.dim is None:
        raise Unmapped("without dim: give it, e.g. nn.Softmax(dim=1)")
    return f"{op_of_module(mod).syntax}({x}, axis={mod.dim})"


@adapts(nn.LeakyReLU)
def leaky_relu(w, node, mod, x):
    return leaky_relu_text(x, mod.negative_slope)


@adapts(nn.ELU)
def elu(w, node, mod, x):
    return elu_text(x, mod.alpha)


@adapts(nn.GELU)
def gelu(w, node, mod, x):
    if mod.approximate != "none":
        raise Unmapped("with approximate='tanh'; backstep's gelu is the exact (erf) one")
    return spell(op_of_module(mod), [x])


@adapts(nn.Softplus)
def softplus(w, node, mod, x):
    if mod.beta != 1:
        raise Unmapped("with beta ≠ 1")
    return spell(op_of_module(mod), [x])


@adapts(nn.Flatten)
def flatten_module(w, node, mod, x):
    return flatten(w, node, x, mod.start_dim, mod.end_dim)


@adapts(nn.Conv2d)
def conv2d_module(w, node, mod, x):
    if mod.padding_mode != "zeros":
        raise Unmapped(f"with padding_mode={mod.padding_mode!r}")
    p = {"input": node.args[0], "stride": mod.stride, "padding": mod.padding}
    p.update(dilation=mod.dilation, groups=mod.groups)
    p["weight"] = ("param", f"{node.target}.weight", mod.weight)
    p["bias"] = ("param", f"{node.target}.bias", mod.bias) if mod.bias is not None else None
    return conv2d(w, node, p)


@adapts(nn.MaxPool2d, nn.AvgPool2d)
def pool_module(w, node, mod, x):
    p = {"input": node.args[0], "kernel_size": mod.kernel_size, "stride": mod.stride, "padding": mod.padding}
    if isinstance(mod, nn.MaxPool2d):
        p.update(dilation=mod.dilation, return_indices=mod.return_indices)
    p["ceil_mode"] = mod.ceil_mode
    if isinstance(mod, nn.AvgPool2d):
        p["divisor_override"] = mod.divisor_override
    return pool(w, node, op_of_module(mod), p)


@adapts(nn.MSELoss)
def mse_module(w, node, mod, x):
    return mse(x, w.arg(node, node.args[1]), mod.reduction)


@adapts(nn.NLLLoss)
def nll_module(w, node, mod, x):
    if mod.weight is not None:
        raise Unmapped("with class weights")
    return nll(w, node, list(node.args), {"reduction": mod.reduction})


@adapts(nn.CrossEntropyLoss)
def cross_entropy_module(w, node, mod, x):
    if mod.weight is not None or mod.label_smoothing:
        raise Unmapped("with class weights or label smoothing")
    return cross_entropy(w, node, list(node.args), {"reduction": mod.reduction})
