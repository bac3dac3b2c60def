"""Shapes from the data and from arithmetic (issue #12, parts 6 and 7): the arrays of --at fix their
variables' shapes, annotations take `4*H`, reshape takes dimension names, the rule for the shape of
a variable nobody gave one, and intermediates named like functions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import backstep
from backstep.cli import app
from backstep.shapes import ShapeEnv, ShapeMismatch

runner = CliRunner()
T = torch.float64


def ok(*args: str):
    result = runner.invoke(app, ["derive", *args])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def derive_json(*args: str) -> dict:
    """The derivation as JSON; verified against autograd unless --no-verify."""
    data = json.loads(ok(*args, "--format", "json").stdout)
    assert "--no-verify" in args or data["verification"]["ok"] is True
    return data


def bad(*args: str) -> str:
    """Exit code 2, a message on stderr, nothing on stdout, no traceback."""
    result = runner.invoke(app, ["derive", *args])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and result.stdout == ""
    return result.stderr


def shapes_of(data: dict) -> dict:
    return {v["name"]: v["shape"] for v in data["variables"]}


@pytest.fixture
def arrays(tmp_path):
    """Two images (2, 3, 6, 6) and three kernels (3, 3, 3, 3), distinct sizes, as .npy files."""
    gen = np.random.default_rng(5)
    images, kernels, scalar = tmp_path / "img.npy", tmp_path / "k.npy", tmp_path / "t.npy"
    np.save(images, gen.standard_normal((2, 3, 6, 6)))
    np.save(kernels, gen.standard_normal((4, 3, 3, 3)))
    np.save(scalar, np.array(2.5))
    return {"x": str(images), "K": str(kernels), "T": str(scalar)}


# --- --at fixes the shapes ----------------------------------------------------------------------


def test_named_image_shape_runs_conv_pool_reshape_with_the_arrays_sizes(arrays):
    program = "x: (N, C, H, W); K: (F, C, 3, 3)\nz = reshape(max_pool2d(conv2d(x, K), 2), (N, -1))\nsum(z * z)"
    data = derive_json(program, "--at", f"x={arrays['x']}", "--at", f"K={arrays['K']}")
    assert shapes_of(data) == {"x": [2, 3, 6, 6], "K": [4, 3, 3, 3]}
    assert any("N = 2, C = 3, H = 6, W = 6" in note for note in data["notes"])
    # the gradient at the point: against autograd here as well
    x = torch.tensor(np.load(arrays["x"]), dtype=T, requires_grad=True)
    k = torch.tensor(np.load(arrays["K"]), dtype=T, requires_grad=True)
    z = torch.nn.functional.max_pool2d(torch.nn.functional.conv2d(x, k), 2).reshape(2, -1)
    (z * z).sum().backward()
    assert torch.allclose(torch.tensor(data["gradients"]["x"]["value"], dtype=T), x.grad, rtol=1e-10)
    assert torch.allclose(torch.tensor(data["gradients"]["K"]["value"], dtype=T), k.grad, rtol=1e-10)


def test_names_stay_where_no_op_needs_numbers():
    data = derive_json("X: (N, D); W: (D, O)\nsum(X @ W)", "--at", "X=[[1,2,3],[4,5,6]]")
    assert shapes_of(data) == {"X": ["N", "D"], "W": ["D", "O"]}
    assert data["sizes"]["N"] == 2 and data["sizes"]["D"] == 3


def test_an_unannotated_variable_takes_the_arrays_shape():
    data = derive_json("sum(x * x)", "--at", "x=[[1,2,3],[4,5,6]]")
    assert len(shapes_of(data)["x"]) == 2
    assert data["gradients"]["x"]["value"] == [[2, 4, 6], [8, 10, 12]]


def test_a_single_number_makes_a_scalar_where_inference_would_make_a_matrix():
    # W * T feeds @: without --at both are matrices
    plain = derive_json("sum(X @ (W * T))", "--no-verify")
    assert len(shapes_of(plain)["T"]) == 2
    data = derive_json("sum(X @ (W * T))", "--at", "T=2", "--at", "X=[[1,2],[3,4],[5,6]]", "--at", "W=[[1],[2]]")
    assert shapes_of(data)["T"] == []
    assert data["gradients"]["T"]["value"] == pytest.approx(1 * 1 + 2 * 2 + 3 * 1 + 4 * 2 + 5 * 1 + 6 * 2)


def test_a_0d_npy_file_is_a_scalar(arrays):
    data = derive_json("sum(softmax(X @ W / T, axis=1))", "--at", f"T={arrays['T']}")
    assert shapes_of(data)["T"] == []
    assert data["at"]["T"] == 2.5


def test_the_api_fixes_shapes_from_at_values(arrays):
    d = backstep.derive(
        "x: (N, C, H, W); K: (F, C, 3, 3)\nsum(conv2d(x, K))",
        at={"x": np.load(arrays["x"]), "K": torch.tensor(np.load(arrays["K"]))},
        verify=True,
        points=1,
    )
    assert d.verification.ok
    assert [tuple(v.shape) for v in d.variables] == [(2, 3, 6, 6), (4, 3, 3, 3)]


@pytest.mark.parametrize(
    "program, at, fragments",
    [
        pytest.param(
            "x: (N, C, H)\nsum(x)",
            "x=IMG",
            ["--at x is an array of shape (2, 3, 6, 6)", "the annotation x: (N, C, H)", "at 1:1"],
            id="rank",
        ),
        pytest.param(
            "x: (N, 4, H, W)\nsum(x)", "x=IMG", ["(2, 3, 6, 6)", "x: (N, 4, H, W)", "4 != 3", "at 1:1"], id="size"
        ),
        pytest.param(
            "x: (N, D); y: (N, D)\nsum(x * y)",
            "x=[[1,2,3],[4,5,6]]|y=[[1,2],[3,4]]",
            ["--at y is an array of shape (2, 2)", "(N, D)"],
            id="two-arrays",
        ),
        pytest.param("sum(x @ W)", "x=[[1,2]]|W=[[1,2]]", ["shape error at 1:5", "2 != 1"], id="unannotated"),
    ],
)
def test_an_array_that_does_not_fit_is_refused_naming_both(arrays, program, at, fragments):
    args = [program]
    for item in at.split("|"):
        args += ["--at", item.replace("IMG", arrays["x"])]
    message = bad(*args)
    for fragment in fragments:
        assert fragment in message, message


def test_an_array_against_shape_option_is_refused(arrays):
    message = bad("sum(x)", "--shape", "x=2,3,6,5", "--at", f"x={arrays['x']}")
    assert "--at x is an array of shape (2, 3, 6, 6), which does not fit --shape x=(2, 3, 6, 5)" in message


# --- arithmetic in annotations ------------------------------------------------------------------


def test_shape_env_solves_a_multiple_and_refuses_two_names():
    env = ShapeEnv()
    four_h = env.linear_dim(4, "H", 0)
    assert env.unify(four_h, 12) == 12 and env.find("H") == 3 and env.find(four_h) == 12
    plus = env.linear_dim(1, "H", 1)
    assert env.find(plus) == 4
    with pytest.raises(ShapeMismatch, match="no positive whole"):
        env.unify(env.linear_dim(4, "D", 0), 10)
    with pytest.raises(ShapeMismatch, match="does not relate two dimension names"):
        env.unify(env.linear_dim(2, "M", 0), "K")
    fresh = env.fresh()
    assert env.unify(fresh, env.linear_dim(2, "M", 0)) == "2*M"


def test_a_multiple_of_a_name_is_fixed_by_a_number():
    data = derive_json("W: (D, 4*H); X: (N, 12)\nsum(X @ W.T)")
    assert shapes_of(data)["W"] == ["D", 12]


def test_a_multiple_takes_its_names_size_from_at():
    data = derive_json("h: (N, H); W: (D, 4*H); X: (N, D)\nsum(X @ W) + sum(h)", "--at", "h=[[1,2,3],[4,5,6]]")
    assert shapes_of(data)["W"] == ["D", 12]
    assert shapes_of(data)["h"] == ["N", 3]


def test_a_sum_with_a_constant_takes_its_names_size_from_shape():
    data = derive_json("X: (N, H+1); W: (H+1, K)\nsum(X @ W)", "--shape", "X=N,5")
    assert shapes_of(data) == {"X": ["N", 5], "W": [5, "K"]}


@pytest.mark.parametrize(
    "program, fragment",
    [
        ("W: (D, 4*H); X: (N, D)\nsum(X @ W)", "backstep can use the size 4*H only once H has a number"),
        ("W: (D, H*D)\nsum(W)", "multiply a dimension name by an integer (4*H), not by a name"),
        ("W: (D, H+D)\nsum(W)", "one dimension name, not two (H and D)"),
        ("W: (D, 2-H)\nsum(W)", "cannot shrink as H grows"),
        ("W: (D, H/2)\nsum(W)", "one name times or plus integers"),
        ("W: (4*H,); x: (10,)\nsum(W * x)", "4*H cannot be 10"),
        ("W: (D, 2*H - 2*H)\nsum(W)", "a size is at least 1, not 0"),
    ],
)
def test_arithmetic_that_cannot_be_used_is_refused_with_the_place(program, fragment):
    message = bad(program)
    assert fragment in message, message
    assert "at 1:" in message or "at 2:" in message, message


# --- reshape with dimension names ---------------------------------------------------------------


def test_reshape_keeps_a_named_batch_and_fills_the_rest():
    data = derive_json("x: (N, 3, 4, 5); W: (60, O)\nsum(reshape(x, (N, -1)) @ W)")
    assert data["verification"]["ok"]


def test_reshape_cancels_names_on_both_sides():
    data = derive_json("x: (N, M, 6)\ny = reshape(x, (N, M, 2, 3))\nsum(y * y)")
    assert data["verification"]["ok"]


def test_reshape_refuses_what_it_cannot_tell_with_the_place():
    message = bad("x: (N, C, H, W)\ny = reshape(x, (N, C, -1))\nsum(y)")
    assert "shape error at 2:5" in message and "cannot tell H * W" in message


# --- the rule for unannotated variables ---------------------------------------------------------


def test_a_variable_only_combined_elementwise_with_an_array_is_a_scalar_with_a_hint():
    data = derive_json("Z = X @ W\nsum(softmax(Z / T, axis=1) * Z)")
    assert shapes_of(data)["T"] == []
    assert any("T is a scalar" in n and "--shape T=n,h" in n for n in data["notes"]), data["notes"]


def test_an_annotation_overrides_the_rule():
    data = derive_json("T: (n, h)\nZ = X @ W\nsum(softmax(Z / T, axis=1) * Z)")
    assert shapes_of(data)["T"] == ["n", "h"]


def test_mse_makes_its_second_operand_the_shape_of_the_first():
    data = derive_json("mse(X @ W, Y)")
    shapes = shapes_of(data)
    assert shapes["Y"] == [shapes["X"][0], shapes["W"][1]]
    assert any("Y is (n, h), the smallest shape mse accepts" in n for n in data["notes"]), data["notes"]


def test_cross_entropy_makes_its_target_class_indices():
    data = derive_json("cross_entropy(X @ W + b, t)")
    shapes = shapes_of(data)
    assert shapes["t"] == [shapes["X"][0]] and shapes["b"] == []


def test_an_elementwise_combination_of_unshaped_variables_still_becomes_a_matrix():
    data = derive_json("sum((X + b) @ W)")
    assert len(shapes_of(data)["b"]) == 2


# --- intermediates named like functions ---------------------------------------------------------


def test_an_intermediate_may_take_a_functions_name():
    data = derive_json("cos = dot(a, b) / (norm(a) * norm(b))")
    assert data["output"]["name"] == "cos"
    assert shapes_of(data) == {"a": ["n"], "b": ["n"]}


def test_logdet_as_a_name_of_an_intermediate():
    derive_json("A: (n, n)\nlogdet = log(det(A @ A.T + eye(n)))", "--no-verify")


@pytest.mark.parametrize(
    "program, fragment",
    [
        ("sin = x*2\nsin(sin)", "sin is a function this program also calls; give the intermediate another name"),
        ("sum * x", "sum is a function; a variable needs another name (sum_)"),
    ],
)
def test_a_function_name_that_would_mean_two_things_is_refused(program, fragment):
    message = bad(program)
    assert fragment in message and "at 1:1" in message, message


def test_a_dimension_used_as_a_number_takes_the_arrays_size(arrays):
    """`/ (N * H)` with N and H written as numbers (conv2d needs them): 1/12, not two sample sizes."""
    data = derive_json(
        "x: (N, C, H, W); K: (F, C, 3, 3)\nsum(conv2d(x, K)) / (N * H)",
        "--at",
        f"x={arrays['x']}",
        "--at",
        f"K={arrays['K']}",
    )
    x = torch.tensor(np.load(arrays["x"]), dtype=T)
    k = torch.tensor(np.load(arrays["K"]), dtype=T, requires_grad=True)
    (torch.nn.functional.conv2d(x, k).sum() / 12).backward()
    assert torch.allclose(torch.tensor(data["gradients"]["K"]["value"], dtype=T), k.grad, rtol=1e-10)


def test_a_dimension_used_as_a_number_takes_the_size_of_shape_option():
    data = derive_json("x: (N, 3)\nsum(x) / N", "--shape", "x=5,3")
    assert "1/5" in data["gradients"]["x"]["expr"], data["gradients"]["x"]["expr"]
