"""The tracer's adapters (backstep.trace): the one-to-one table, the registry, and the errors a
model can cause while it is created or traced."""

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
"""


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(textwrap.dedent(MODELS), encoding="utf-8")
    return path


def test_every_one_to_one_entry_is_an_op_of_the_table():
    from backstep.trace.one_to_one import ONE_TO_ONE, ONE_TO_ONE_MODULES

    for target, name in {**ONE_TO_ONE, **ONE_TO_ONE_MODULES}.items():
        assert name in OPS, (target, name)


def test_every_tensor_method_reaches_a_function_adapter():
    from backstep.trace.adapters import TENSOR_METHODS
    from backstep.trace.registry import FUNCTIONS

    assert all(function in FUNCTIONS for function in TENSOR_METHODS.values())


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
