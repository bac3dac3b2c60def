"""The tracer's adapters (backstep.trace): the torch tables read from the op records' torch_aliases,
the registry, and the errors a model can cause while it is created or traced."""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("torch")

from backstep.errors import UnsupportedError, UsageError  # noqa: E402
from backstep.ops import OPS  # noqa: E402
from backstep.trace import trace_model  # noqa: E402

MODELS = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class BuggyInit(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear("four", 2)


class FailingInit(nn.Module):
    def __init__(self, n=3):
        super().__init__()
        raise ValueError("no weights here")


class NeedsArgs(nn.Module):
    def __init__(self, n):
        super().__init__()


def deprecated_add(x, y):
    return torch.add(x, 2, y).sum()


def where_of_one(x):
    return torch.where(x > 0)


def ops(x, y):
    return (torch.where(x > y, -x, torch.relu(y)) + torch.maximum(x, y) + x.mul(y)).sum()


def mse_sum_by_position(x, y):
    return F.mse_loss(x, y, None, None, "sum")


def mse_size_average(x, y):
    return F.mse_loss(x, y, size_average=False)


def with_constant(x):
    return (x * torch.ones(4)).sum()
"""


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(textwrap.dedent(MODELS), encoding="utf-8")
    return path


def test_the_torch_tables_are_read_from_the_op_records():
    import operator

    import torch
    import torch.nn.functional as F

    from backstep.trace.torch_ops import ops_by_torch

    found = ops_by_torch()
    assert found.functions[torch.relu] is found.functions[F.relu] is OPS["relu"]
    assert found.functions[operator.add] is found.functions[torch.add] is OPS["add"]
    assert found.methods["sum"] is OPS["sum"] and found.methods["view"] is OPS["reshape"]
    assert found.modules[torch.nn.ReLU] is OPS["relu"] and found.modules[torch.nn.Linear] is OPS["linear"]
    tables = {id(op): set() for op in OPS.values()}
    for table in (found.functions, found.methods, found.modules):
        for key, op in table.items():
            tables[id(op)].add(key)
    for op in OPS.values():  # every alias lands in one table, as the op's; nothing else does
        assert len(tables[id(op)]) == len(op.torch_aliases), op.name


def test_every_torch_alias_reaches_an_adapter():
    from backstep.trace import one_to_one  # noqa: F401 (registers every adapter)
    from backstep.trace.registry import FUNCTIONS, METHODS, MODULES
    from backstep.trace.torch_ops import ops_by_torch

    found = ops_by_torch()
    assert all(function in FUNCTIONS for function in found.functions)
    assert all(name in METHODS for name in found.methods)
    assert all(any(issubclass(cls, known) for known, _, _ in MODULES) for cls in found.modules)


def test_an_adapter_finds_its_op_through_the_torch_function():
    import torch

    from backstep.errors import InternalSignal
    from backstep.trace.torch_ops import op_of, op_of_module, reduction_op

    class MySoftmax(torch.nn.Softmax):
        pass

    assert op_of(torch.sum) is OPS["sum"]
    assert op_of_module(MySoftmax(dim=1)) is OPS["softmax"]  # through its base class
    assert reduction_op("sum") is OPS["sum"] and reduction_op("mean") is OPS["mean"]
    assert reduction_op("none") is None and reduction_op(None) is None
    with pytest.raises(InternalSignal):
        op_of(torch.cumsum)


def test_a_dotted_name_resolves_lazily():
    import torch

    from backstep.trace.torch_ops import resolve

    assert resolve("torch.nn.functional.relu") is torch.nn.functional.relu
    assert resolve("torch.Tensor.view") is torch.Tensor.view
    assert resolve("torch.nn.ReLU") is torch.nn.ReLU
    assert resolve("torch.no_such_function") is None
    assert resolve("no_such_module_here.relu") is None


def test_an_alias_of_two_ops_is_refused_when_the_tables_are_built(monkeypatch):
    from dataclasses import replace

    from backstep.trace import torch_ops

    twice = {**OPS, "relu_again": replace(OPS["relu"], name="relu_again")}
    monkeypatch.setattr(torch_ops, "OPS", twice)
    with pytest.raises(RuntimeError, match="means both relu and relu_again"):
        torch_ops.ops_by_torch.__wrapped__()


def test_importing_the_tracer_imports_no_torch():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = "import sys, backstep.trace, backstep.ops; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_one_to_one_calls_are_spelled_from_the_op(models):
    source = trace_model(f"{models}:ops", {"x": ("N", 3), "y": ("N", 3)}).source
    for text in ("gt = x > y", "neg = -x", "relu(y)", "where(gt, neg, relu_out)", "maximum(x, y)", "x * y"):
        assert text in source, source


@pytest.mark.parametrize(
    "name, words",
    [
        ("BuggyInit", ["BuggyInit() failed: TypeError"]),
        ("FailingInit", ["FailingInit() failed: ValueError: no weights here"]),
        ("NeedsArgs", ["NeedsArgs() needs arguments", "missing 1 required positional argument: 'n'"]),
    ],
)
def test_a_model_that_cannot_be_created_is_one_message(models, name, words):
    with pytest.raises(UsageError) as err:
        trace_model(f"{models}:{name}", {"x": ("N", 3)})
    for word in words:
        assert word in err.value.message
    if name != "NeedsArgs":
        assert "needs arguments" not in err.value.message


@pytest.mark.filterwarnings("ignore:This overload of add is deprecated")
@pytest.mark.parametrize(
    "name, shapes, words",
    [
        ("deprecated_add", {"x": ("N", 3), "y": ("N", 3)}, "torch.add takes 3 arguments; backstep's add takes two"),
        ("where_of_one", {"x": ("N", 3)}, "torch.where takes 1 arguments; backstep's where takes three"),
    ],
)
def test_a_one_to_one_call_with_other_arguments_is_unsupported(models, name, shapes, words):
    with pytest.raises(UnsupportedError) as err:
        trace_model(f"{models}:{name}", shapes)
    assert words in err.value.message


def test_a_tensor_made_inside_a_plain_function_is_read_from_the_tracer(models):
    # fx stores the constant on the tracer's root; reading it from an empty Module was an AttributeError
    traced = trace_model(f"{models}:with_constant", {"x": (3, 4)})
    assert "x * tensor_constant0" in traced.source, traced.source
    assert "tensor_constant0: (4,)" in traced.source or "tensor_constant0: (4)" in traced.source, traced.source


def test_mse_loss_reads_reduction_not_the_deprecated_positions(models):
    # torch's third position is size_average: read as the reduction, size_average=False was a mean
    traced = trace_model(f"{models}:mse_sum_by_position", {"x": (3, 4), "y": (3, 4)})
    assert "sum((x - y)**2)" in traced.source.replace(" ** ", "**"), traced.source
    with pytest.raises(UnsupportedError, match="size_average or reduce"):
        trace_model(f"{models}:mse_size_average", {"x": (3, 4), "y": (3, 4)})
