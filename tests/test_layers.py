"""--compact shows a layer written by hand as one step with its textbook formula (issue #13):
X @ W + b as the affine layer, softmax + log + pick (in any of its spellings) as cross-entropy,
batch and layer norm written out as the norm layers. Each fused step is checked here against
torch autograd computed independently of backstep, and the near misses — a function that only
looks like a layer — keep their steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import backstep
from backstep.cli import app
from backstep.numeric import Evaluator
from backstep.printing import Printer

ROOT = Path(__file__).resolve().parent.parent

# Distinct sizes (N=2 … C=7 as backstep samples them; here fixed so torch can be run beside it).
SIZES = {"N": 4, "D": 3, "C": 5}
HEAD = "X: (N, D); W: (D, C); b: (C,); t: (N,) in range(C)\nz = X @ W + b\n"

CROSS_ENTROPY_SPELLINGS = {
    "softmax, log, pick": "p = softmax(z, axis=1)\nL = -mean(log(p[range(N), t]))",
    "log_softmax, pick": "L = -mean(pick(log_softmax(z, axis=1), t))",
    "onehot": "L = -sum(onehot(t, C) * log(softmax(z, axis=1))) / N",
    "logsumexp": "L = mean(logsumexp(z, axis=1) - pick(z, t))",
    "karpathy": (
        "m = max(z, axis=1, keepdims=True)\nzn = z - m\ncounts = exp(zn)\n"
        "counts_sum = sum(counts, axis=1, keepdims=True)\ncounts_sum_inv = counts_sum**-1\n"
        "probs = counts * counts_sum_inv\nlogprobs = log(probs)\nL = -mean(logprobs[range(N), t])"
    ),
}


def layer_steps(d, op: str):
    return [s for s in d.backward if s.layer is not None and s.op == op]


def autograd_of_z(d, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """dL/dz by torch itself (F.cross_entropy of the same logits), at random X, W, b, t."""
    g = torch.Generator().manual_seed(seed)
    n, dd, c = SIZES["N"], SIZES["D"], SIZES["C"]
    X, W, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in [(n, dd), (dd, c), (c,)])
    t = torch.tensor([0, 3, 3, 1])
    z = (X @ W + b).requires_grad_()
    torch.nn.functional.cross_entropy(z, t).backward()
    return z.detach(), z.grad, {"X": X, "W": W, "b": b, "t": t}


@pytest.mark.parametrize("spelling", sorted(CROSS_ENTROPY_SPELLINGS))
def test_cross_entropy_by_hand_is_one_step_with_the_textbook_gradient(spelling):
    source = HEAD + CROSS_ENTROPY_SPELLINGS[spelling]
    full = backstep.derive(source, verify=False)
    d = backstep.derive(source, compact=True)
    assert d.verification.ok, d.verification.first_failure
    (step,) = layer_steps(d, "cross_entropy")
    assert step.target == "grad_z" and step.of == "z"
    assert step.layer.steps[-1] == "L" and len(step.layer.steps) >= 2
    assert Printer("text", d.symbols)(step.layer.forward) == "cross_entropy(z, t)"
    assert len(d.backward) < len(full.backward)
    # the result is (softmax(z) − onehot(t)) / N, the same numbers as torch's own cross_entropy
    z, want, values = autograd_of_z(d)
    got = Evaluator({"z": z, "t": values["t"].to(torch.float64), "grad_L": torch.ones(())}, SIZES)(step.result)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14)
    assert d.to_text().count("(softmax(z, axis=1) - onehot(t)) / N") >= 1


def test_the_affine_layer_is_one_layer_with_its_three_gradients():
    d = backstep.derive("X: (N, D); W: (D, H); b: (H,)\nz = X @ W + b\nL = sum(tanh(z))", compact=True)
    assert d.verification.ok
    steps = layer_steps(d, "addmm")
    text = Printer("text", d.symbols)
    assert {s.of: text(s.result) for s in steps} == {"W": "Xᵀ z̄", "X": "z̄ Wᵀ", "b": "sum(z̄, axis=0)"}
    assert all(s.layer.steps == ("v1", "z") for s in steps)
    text = d.to_text()
    assert "z = b + X W  (v1, z)" in text and "W̄ = Xᵀ z̄" in text


@pytest.mark.parametrize(
    "written, op",
    [("b + X @ W", "addmm"), ("X @ W + b", "addmm"), ("X @ V.T + b", "linear")],
)
def test_each_spelling_of_the_affine_layer_is_recognised(written, op):
    d = backstep.derive(f"X: (N, D); W: (D, H); V: (H, D); b: (H,)\nL = sum(tanh({written}))", compact=True)
    assert d.verification.ok
    assert layer_steps(d, op)


BATCH_NORM = """x: (N, D); gamma: (D,); beta: (D,); Y: (N, D)
mu = mean(x, axis=0)
xc = x - mu
var = mean(xc ** 2, axis=0)
xhat = xc / sqrt(var + 1e-5)
y = gamma * xhat + beta
L = sum(y * Y)"""


def test_batch_norm_by_hand_is_the_batch_norm_layer():
    d = backstep.derive(BATCH_NORM, compact=True)
    assert d.verification.ok, d.verification.first_failure
    steps = layer_steps(d, "batch_norm")
    assert {s.of for s in steps} == {"x", "gamma", "beta"}
    assert steps[0].layer.steps == ("mu", "xc", "v1", "var", "v2", "v3", "xhat", "v4", "y")
    assert Printer("text", d.symbols)(steps[0].layer.forward) == "batch_norm(x, γ, β)"
    # the autograd of torch's own F.batch_norm, at a point of ours
    g = torch.Generator().manual_seed(1)
    x, gamma, beta, Y = (torch.randn(*s, generator=g, dtype=torch.float64) for s in [(4, 3), (3,), (3,), (4, 3)])
    x.requires_grad_()
    (torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5) * Y).sum().backward()
    y_bar = Y  # ∂L/∂y for L = Σ y ⊙ Y
    step = next(s for s in steps if s.of == "x")
    env = {"x": x.detach(), "gamma": gamma, "beta": beta, "Y": Y, "grad_y": y_bar, "grad_L": torch.ones(())}
    assert torch.allclose(Evaluator(env, {"N": 4, "D": 3})(step.result), x.grad, rtol=1e-10, atol=1e-12)


def test_layer_norm_and_spatial_batch_norm_by_hand():
    layer = BATCH_NORM.replace("axis=0)", "axis=1, keepdims=True)")
    d = backstep.derive(layer, compact=True)
    assert d.verification.ok and {s.of for s in layer_steps(d, "layer_norm")} == {"x", "gamma", "beta"}
    source = (ROOT / "examples" / "spatial_batch_norm_steps.bs").read_text()
    d = backstep.derive(source, wrt=["x", "gamma", "beta"], compact=True)
    assert d.verification.ok
    (step,) = layer_steps(d, "standardize")  # γ (1, 3, 1, 1) is no batch_norm's γ: x̂ is the layer
    assert step.of == "x" and step.node == "xhat"


def test_softmax_by_hand_is_the_softmax_op():
    d = backstep.derive(
        "z: (N, C); Y: (N, C)\ne = exp(z)\np = e / sum(e, axis=1, keepdims=True)\nL = sum(p * Y)", compact=True
    )
    assert d.verification.ok
    (step,) = layer_steps(d, "softmax")
    assert step.of == "z" and step.layer.steps == ("e", "v1", "p")


@pytest.mark.parametrize(
    "source",
    [
        # the softmax over the batch axis: not cross-entropy's
        HEAD + "L = -mean(pick(log(softmax(z, axis=0)), t))",
        # Y any real array: −Σ Y log softmax(z) / N is cross-entropy's value, but its rule needs rows summing to 1
        "z: (N, C); Y: (N, C)\nL = -sum(Y * log(softmax(z, axis=1))) / N",
        # Karpathy's batch norm takes the unbiased variance (1/(n−1)): torch's batch_norm does not
        "x: (N, D)\nmu = mean(x, axis=0)\nxc = x - mu\nvar = sum(xc**2, axis=0) / (N - 1)\n"
        "L = sum(tanh(xc / sqrt(var + 1e-5)))",
    ],
    ids=["softmax-over-batch", "targets-anywhere", "unbiased-variance"],
)
def test_a_near_miss_keeps_its_steps(source):
    d = backstep.derive(source, compact=True)
    assert d.verification.ok, d.verification.first_failure
    assert not [s for s in d.backward if s.layer is not None and s.op in ("cross_entropy", "batch_norm", "standardize")]


def test_probability_targets_declared_so_are_cross_entropy():
    d = backstep.derive(
        "z: (N, C); Y: (N, C)\nL = -sum(Y * log(softmax(z, axis=1))) / N",
        assume={"Y": "probability"},
        wrt="z",
        compact=True,
    )
    assert d.verification.ok
    step = next(s for s in layer_steps(d, "cross_entropy") if s.of == "z")
    assert "Y" in str(step.result)


def test_without_compact_every_forward_step_keeps_its_backward_step():
    d = backstep.derive(HEAD + CROSS_ENTROPY_SPELLINGS["karpathy"], verify=False)
    assert all(s.layer is None for s in d.backward)
    assert {s.node for s in d.backward if s.node} >= {"probs", "logprobs", "counts_sum_inv"}


def test_a_wrong_fused_step_fails_verification():
    """The fused steps are checked against autograd like any other: the check can fail."""
    d = backstep.derive(HEAD + CROSS_ENTROPY_SPELLINGS["softmax, log, pick"], compact=True, verify=False)
    (step,) = layer_steps(d, "cross_entropy")
    step.result = 2 * step.result
    d.verify()
    assert not d.verification.ok
    assert d.verification.first_failure.name == "z"


def test_the_cli_and_documents_name_the_layer(tmp_path):
    source = tmp_path / "net.bs"
    source.write_text(HEAD + CROSS_ENTROPY_SPELLINGS["karpathy"])
    out = CliRunner().invoke(app, ["derive", "-f", str(source), "--compact", "--wrt", "W,b"])
    assert out.exit_code == 0, out.output
    assert "L = cross_entropy(z, t)" in out.output and "counts_sum_inv, probs," in out.output
    assert "✓ verified" in out.output and "compute cross_entropy as written by hand" in out.output
    md = CliRunner().invoke(app, ["derive", "-f", str(source), "--compact", "--format", "md"])
    assert "cross-entropy, as one layer" in md.output and r"\operatorname{CE}\left(z, t\right)" in md.output
    zh = CliRunner().invoke(app, ["derive", "-f", str(source), "--compact", "--format", "md", "--lang", "zh"])
    assert "（合为一层）" in zh.output
    js = CliRunner().invoke(app, ["derive", "-f", str(source), "--compact", "--format", "json", "--no-verify"])
    layers = [s["layer"] for s in json.loads(js.output)["backward"] if s["layer"]]
    assert layers and layers[0]["forward"]["expr"] == "cross_entropy(z, t)"


@pytest.mark.parametrize("b_shape", [("H",), ("N", "H"), (1, "H")])
def test_addmm_is_torch_addmm(b_shape):
    shapes = {"b": b_shape, "x": ("N", "D"), "W": ("D", "H"), "Y": ("N", "H")}
    d = backstep.derive("sum(addmm(b, x, W) * Y)", shapes=shapes)
    assert d.verification.ok, d.verification.first_failure
    g = torch.Generator().manual_seed(2)
    sizes = {"N": 4, "D": 3, "H": 5}
    b, x, W, Y = (
        torch.randn(*[sizes.get(s, s) for s in shapes[k]], generator=g, dtype=torch.float64, requires_grad=k != "Y")
        for k in "bxWY"
    )
    (torch.addmm(b, x, W) * Y).sum().backward()
    env = {"b": b.detach(), "x": x.detach(), "W": W.detach(), "Y": Y, "grad_y": torch.ones(())}
    for name, leaf in {"b": b, "x": x, "W": W}.items():
        got = Evaluator(env, sizes)(d.gradients[name].expr)
        assert torch.allclose(torch.broadcast_to(got, leaf.shape), leaf.grad), name


def test_the_pdf_wraps_the_notes_and_keeps_the_double_hyphen(tmp_path):
    """The notes a compact derivation adds are long: each is a paragraph that wraps at the margin
    (it was one box, running off the page), and `--compact` is not typeset as TeX's en dash."""
    from tex_tools import compile_tex, need_tex, overfull_lines, pdf_text

    need_tex("en")
    d = backstep.derive(HEAD + CROSS_ENTROPY_SPELLINGS["karpathy"], wrt=["W", "b"], compact=True)
    code, log = compile_tex(tmp_path, "net", d.to_latex(standalone=True))
    assert code == 0, log[-2000:]
    assert not overfull_lines(log)
    text = " ".join(pdf_text(tmp_path / "net.pdf").split())
    assert "note: --compact: m, zn, counts" in text


@pytest.mark.parametrize(
    "source",
    [
        # a guard on the log: where p < 1e-12 the gradient is 0, not cross-entropy's
        HEAD + "p = softmax(z, axis=1)\nL = -mean(log(clamp(p[range(N), t], min=1e-12)))",
        # clamped logits: where |z| > 10 the gradient is 0, not softmax's (of z; softmax of the clamped
        # values, with clamp's own step after it, is right and is what the test below finds)
        "z: (N, C); Y: (N, C)\ne = exp(clamp(z, -10, 10))\nL = sum(e / sum(e, axis=1, keepdims=True) * Y)",
    ],
    ids=["guarded-log", "clamped-logits"],
)
def test_a_threshold_inside_the_region_is_no_layer(source):
    """Such a region equals its layer at points near 0, where the threshold never acts: it is not
    taken for the layer, whose rule would be wrong where it does (points stretched far out find it)."""
    d = backstep.derive(source, compact=True)
    assert d.verification.ok
    layers = [s for s in d.backward if s.layer is not None and s.op in ("cross_entropy", "softmax", "log_softmax")]
    assert all(s.of != "z" for s in layers), [(s.op, s.of) for s in layers]
    assert any(s.op == "clamp" for s in d.backward)  # the threshold keeps its own step


def test_the_textbook_unstable_softmax_is_still_recognised():
    """exp(z) / Σ exp(z) overflows where z is stretched far out: those points are skipped, not failed."""
    d = backstep.derive(
        "z: (N, C); Y: (N, C)\ne = exp(z)\nL = sum(e / sum(e, axis=1, keepdims=True) * Y)", compact=True
    )
    assert d.verification.ok and layer_steps(d, "softmax")


def test_a_region_that_is_the_layer_at_one_size_only_is_not_it():
    """At N = 2, sum(…) / 2 is the mean over the rows: compared at a second set of sizes it is not, so
    cross-entropy is the sum up to there, and the / 2 keeps its own step."""
    d = backstep.derive(HEAD + "p = softmax(z, axis=1)\nL = -sum(log(p[range(N), t])) / 2", compact=True)
    assert d.verification.ok
    (step,) = layer_steps(d, "cross_entropy")
    assert step.layer.forward.params["reduction"] == "sum" and step.layer.steps[-1] != "L"
    # max equals mean over two rows of squares of deviations from their mean: not a variance at N = 3
    src = BATCH_NORM.replace("var = mean(xc ** 2, axis=0)", "var = max(xc ** 2, axis=0)")
    assert not backstep.derive(src, compact=True, verify=False).backward[-1].layer
    assert not [s for s in backstep.derive(src, compact=True).backward if s.layer is not None and s.op != "addmm"]


def test_a_guard_anywhere_in_the_region_keeps_its_steps():
    """clamp(var, min=1e-3) acts only where the variance is small, never at points drawn near 1: a
    region with a threshold (clamp, maximum, where, relu, abs …: Op.has_thresholds) is no layer."""
    src = BATCH_NORM.replace("sqrt(var + 1e-5)", "sqrt(clamp(var, min=1e-3) + 1e-5)")
    d = backstep.derive(src, compact=True)
    assert d.verification.ok and not [s for s in d.backward if s.layer is not None]


def test_targets_that_need_a_gradient_are_no_cross_entropy():
    """Equal values on the simplex (rows summing to 1) are not equal gradients for the targets."""
    src = "z: (N, C); Y: (N, C)\nL = mean(logsumexp(z, axis=1) - sum(Y * z, axis=1))"
    d = backstep.derive(src, assume={"Y": "probability"}, compact=True)
    assert d.verification.ok and not layer_steps(d, "cross_entropy")
    d = backstep.derive(src, assume={"Y": "probability"}, compact=True, wrt="z")
    assert d.verification.ok and [s.of for s in layer_steps(d, "cross_entropy")] == ["z"]
