"""The examples of examples/: each runs through the CLI and the API and verifies, and each one's
gradients equal the hand-written formulas of the seed document it comes from."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from helpers import grad_fn_names
from typer.testing import CliRunner

import backstep
from backstep.cli import app
from backstep.numeric import Evaluator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# The API arguments of each example: what its command in examples/README.md passes as flags.
API_ARGS = {
    "square_plus_three": {"at": {"x": 2.0}},
    "mean_of_double": {"at": {"x": [1.0, 2.0, 3.0, 4.0]}},
    "conv_at": {"at": {"x": "data/images.npy", "K": "data/kernels.npy"}},  # (files read by api_args)
    "distillation": {"wrt": ["W"], "at": {"T": 2.0}},
    "linear_model": {"wrt": ["w"], "at": {"x": 1.0, "y": 2.0, "w": 1.0}},
    "two_layer_net": {"wrt": ["W1", "W2"]},
    "linear_layer": {},
    "lenet": {},
    "softmax_stable": {"wrt": ["W", "b"]},
    "word_embedding": {},
    "lstm_step": {},
    "rnn_forward": {},
    "batch_norm": {},
    "layer_norm": {},
    "attention_two_heads": {},
    "transformer_block": {},
    "backprop_ninja": {},
    "spatial_batch_norm_steps": {"wrt": ["x", "gamma", "beta"]},
    "svm_loss": {},
}


# Examples whose gradients are too large to write out in the inputs: the derivation gives them in
# terms of its named steps (verified all the same).
WRITTEN_WITH_NAMED_STEPS = {"transformer_block", "backprop_ninja", "spatial_batch_norm_steps"}


def api_args(name: str) -> dict:
    """API_ARGS[name] with each .npy value read into an array, as --at reads the file."""
    import numpy as np

    args = dict(API_ARGS[name])
    if "at" in args:
        args["at"] = {k: np.load(EXAMPLES / v) if str(v).endswith(".npy") else v for k, v in args["at"].items()}
    return args


def readme_commands() -> dict[str, list[str]]:
    """The `backstep derive -f examples/NAME.bs ...` command of each example in examples/README.md."""
    commands = {}
    for line in (EXAMPLES / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("backstep derive "):
            argv = shlex.split(line)[1:]
            name = Path(argv[argv.index("-f") + 1]).stem
            commands[name] = argv
    return commands


COMMANDS = readme_commands()


def source(name: str) -> str:
    return (EXAMPLES / f"{name}.bs").read_text(encoding="utf-8")


def run_cli(argv: list[str]):
    argv = [str(ROOT / a) if a.startswith("examples/") else a for a in argv]
    argv = [a.replace("=examples/", f"={ROOT}/examples/") for a in argv]  # --at x=examples/data/…
    return CliRunner().invoke(app, argv)


def test_every_example_has_a_command_and_api_arguments():
    files = sorted(p.stem for p in EXAMPLES.glob("*.bs"))
    assert files == sorted(COMMANDS) == sorted(API_ARGS)


# --- through the CLI and the API ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(API_ARGS))
def test_cli_text_verifies(name):
    result = run_cli(COMMANDS[name])
    assert result.exit_code == 0, result.output
    assert "✓ verified with PyTorch autograd" in result.stdout


@pytest.mark.parametrize("name", sorted(API_ARGS))
def test_cli_json_verifies(name):
    result = run_cli(COMMANDS[name] + ["--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["verification"]["ok"] is True
    assert data["verification"]["problems"] == []
    checks = [c for kind in ("gradients", "adjoints", "forward", "grad_fns") for c in data["verification"][kind]]
    assert checks and all(c["ok"] for c in checks)


@pytest.mark.parametrize("name", sorted(API_ARGS))
def test_api_verifies(name):
    d = backstep.derive(source(name), verify=True, points=5, seed=1, **api_args(name))
    assert d.verification.ok, d.verification.first_failure
    assert {c.name for c in d.verification.gradients} == set(d.wrt)
    if name not in WRITTEN_WITH_NAMED_STEPS:
        assert all(g.in_inputs for g in d.gradients.values())


# --- against the seeds' own numbers and formulas ------------------------------------------------

T = torch.float64


def gradient(d, name: str, env: dict, sizes: dict):
    """backstep's final gradient of `name`, evaluated numerically (not by autograd), at its shape."""
    g = d.gradients[name]
    shape = tuple(s if isinstance(s, int) else sizes[s] for s in g.shape)
    return torch.broadcast_to(Evaluator(env, sizes)(g.expr), shape)


def test_square_plus_three_at_two_is_four():
    """Seed 001: z = x**2 + 3 at x = 2 gives x.grad = tensor(4.)."""
    result = run_cli(COMMANDS["square_plus_three"])
    assert result.exit_code == 0, result.output
    assert re.search(r"∂z/∂x = 2 x = 4\b", result.stdout), result.stdout
    d = backstep.derive(source("square_plus_three"), at={"x": 2.0})
    assert d.gradients["x"].value == 4.0
    x = torch.tensor(2.0, dtype=T, requires_grad=True)
    (torch.pow(x, 2) + 3).backward()
    assert float(x.grad) == d.gradients["x"].value


def test_mean_of_double_grad_fns_and_value():
    """Seed 001: y = x * 2 is a MulBackward0, z = y.mean() a MeanBackward0; x.grad = 2/len(x)."""
    d = backstep.derive(source("mean_of_double"), at={"x": [1.0, 2.0, 3.0, 4.0]})
    mul = grad_fn_names("MulBackward0", lambda x: x * 2, (4,))
    mean = grad_fn_names("MeanBackward0", lambda x: x.mean(), (4,))
    assert [s.grad_fn in names for s, names in zip(d.forward, (mul, mean))] == [True, True], d.forward
    assert d.gradients["x"].value == [0.5, 0.5, 0.5, 0.5]
    assert [s.value for s in d.forward] == [[2.0, 4.0, 6.0, 8.0], 5.0]


def test_linear_model_matches_d2l_grad():
    """Seed 003: l = (x*w - y)**2; the hand derivative 2 x (x w - y); the seed's first grad is -2."""
    d = backstep.derive(source("linear_model"), wrt=["w"])
    assert d.wrt == ["w"]
    assert set(d.gradients) == {"w"}
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        x, y, w = (torch.randn((), generator=gen, dtype=T) for _ in range(3))
        expected = 2 * x * (x * w - y)
        assert torch.allclose(gradient(d, "w", {"x": x, "y": y, "w": w}, {}), expected, rtol=1e-12, atol=1e-12)
    # The seed's training data, with its starting weight w = 1: grads -2, -8, -18 (printed as `grad:`).
    for x, y, expected in [(1.0, 2.0, -2.0), (2.0, 4.0, -8.0), (3.0, 6.0, -18.0)]:
        env = {"x": torch.tensor(x, dtype=T), "y": torch.tensor(y, dtype=T), "w": torch.tensor(1.0, dtype=T)}
        assert float(gradient(d, "w", env, {})) == expected


# Distinct, non-square sizes: a missing or extra transpose cannot hide.
TWO_LAYER_SIZES = {"N": 7, "D_in": 11, "H": 5, "D_out": 3}


def test_two_layer_net_matches_seed_manual_backprop():
    """Seed 001's hand-written torch backprop, line by line, against backstep's gradients."""
    d = backstep.derive(source("two_layer_net"), wrt=["W1", "W2"])
    assert set(d.gradients) == {"W1", "W2"}
    assert d.dims == ["N", "D_in", "H", "D_out"]
    s = TWO_LAYER_SIZES
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(s["N"], s["D_in"], generator=gen, dtype=T)
        y = torch.randn(s["N"], s["D_out"], generator=gen, dtype=T)
        w1 = torch.randn(s["D_in"], s["H"], generator=gen, dtype=T)
        w2 = torch.randn(s["H"], s["D_out"], generator=gen, dtype=T)
        # The seed ("pytorch手动实现"), verbatim but for the names.
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        grad_h = grad_h_relu.clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)

        env = {"X": x, "y": y, "W1": w1, "W2": w2}
        got_w1 = gradient(d, "W1", env, s)
        got_w2 = gradient(d, "W2", env, s)
        assert got_w1.shape == (s["D_in"], s["H"]) and got_w2.shape == (s["H"], s["D_out"])
        assert torch.allclose(got_w1, grad_w1, rtol=1e-10, atol=1e-10)
        assert torch.allclose(got_w2, grad_w2, rtol=1e-10, atol=1e-10)


def test_two_layer_net_at_the_seeds_sizes():
    """The seed's real sizes (64, 1000, 100, 10), one point, through the CLI's --at path (the API)."""
    gen = torch.Generator().manual_seed(1)
    values = {
        "X": torch.randn(64, 1000, generator=gen, dtype=T),
        "y": torch.randn(64, 10, generator=gen, dtype=T),
        "W1": torch.randn(1000, 100, generator=gen, dtype=T),
        "W2": torch.randn(100, 10, generator=gen, dtype=T),
    }
    d = backstep.derive(source("two_layer_net"), wrt=["W1", "W2"], at=values, verify=True, points=1)
    assert d.sizes == {"N": 64, "D_in": 1000, "H": 100, "D_out": 10}
    assert d.verification.ok, d.verification.first_failure
    h = values["X"] @ values["W1"]
    grad_h = 2.0 * (h.clamp(min=0) @ values["W2"] - values["y"]) @ values["W2"].T
    grad_h[h < 0] = 0
    assert torch.allclose(torch.tensor(d.gradients["W1"].value, dtype=T), values["X"].T @ grad_h, rtol=1e-10)


def test_linear_layer_matches_seed_linear_function():
    """Seed 004's LinearFunction.backward: grad_output @ W, grad_output.T @ X, grad_output.sum(0)."""
    d = backstep.derive(source("linear_layer"))
    assert d.seed.name == "grad_output" and not d.seed.is_one
    assert set(d.gradients) == {"X", "W", "b"}
    sizes = {"batch": 7, "in_features": 4, "out_features": 3}
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.randn(sizes["batch"], sizes["in_features"], generator=gen, dtype=T)
        w = torch.randn(sizes["out_features"], sizes["in_features"], generator=gen, dtype=T)
        b = torch.randn(sizes["out_features"], generator=gen, dtype=T)
        g = torch.randn(sizes["batch"], sizes["out_features"], generator=gen, dtype=T)
        env = {"X": x, "W": w, "b": b, d.seed.name: g}
        assert torch.allclose(gradient(d, "X", env, sizes), g.mm(w), rtol=1e-12, atol=1e-12)
        assert torch.allclose(gradient(d, "W", env, sizes), g.t().mm(x), rtol=1e-12, atol=1e-12)
        assert torch.allclose(gradient(d, "b", env, sizes), g.sum(0).squeeze(0), rtol=1e-12, atol=1e-12)
        # The seed's forward: input.mm(weight.t()) + bias.unsqueeze(0).expand_as(output).
        out = x.mm(w.t())
        out += b.unsqueeze(0).expand_as(out)
        forward = Evaluator(env, sizes)
        for step in d.forward:
            env[step.name] = forward(step.expr)
        assert torch.allclose(env["output"], out, rtol=1e-12, atol=1e-12)


def test_softmax_stable_is_the_textbook_gradient():
    """The max-subtracted softmax loss: W̄ = Xᵀ (softmax(z) − onehot(t)) / N, and the shift's own
    gradient v̄2 (into the max) is 0."""
    d = backstep.derive(source("softmax_stable"), wrt=["W", "b"])
    sizes = {"N": 4, "D": 3, "C": 5}
    gen = torch.Generator().manual_seed(3)
    X, W, b = (torch.randn(*s, dtype=T, generator=gen) for s in ((4, 3), (3, 5), (5,)))
    t = torch.tensor([0, 3, 1, 3])
    env = {"X": X, "W": W, "b": b, "t": t.to(T)}
    delta = (torch.softmax(X @ W + b, dim=1) - torch.nn.functional.one_hot(t, 5).to(T)) / 4
    assert torch.allclose(gradient(d, "W", env, sizes), X.T @ delta, atol=1e-12)
    assert torch.allclose(gradient(d, "b", env, sizes), delta.sum(0), atol=1e-12)
    assert "1[z = v2]" in d.to_text()
