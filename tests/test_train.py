"""`backstep train`: the derived loop against torch's own, the seed's numbers, bad input, every output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from backstep.train import Settings, setup
from backstep.train_command import train_command
from backstep.train_loop import predict, train
from backstep.train_report import render_document, sparkline

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "train"
SEED = ["(x*w - y)**2", "--data", "x=1,2,3", "--data", "y=2,4,6", "--init", "w=1", "--lr", "0.01", "--epochs", "100"]


def app() -> typer.Typer:
    a = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    a.command("train")(train_command)
    a.command("other")(lambda: None)  # two commands: typer keeps `train` as a sub-command
    return a


def invoke(*args: str):
    return CliRunner().invoke(app(), ["train", *args])


def seed_loop(dtype, zero_grad: bool = True, epochs: int = 100):
    """The seed's program, as written in seed 003 (its dtype aside)."""
    x_data, y_data = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0]
    w = torch.tensor([1.0], dtype=dtype)
    w.requires_grad = True
    grads, progress = [], []
    before = (4 * w).item()
    for _epoch in range(epochs):
        for x, y in zip(x_data, y_data):
            loss = (x * w - y) ** 2
            loss.backward()
            grads.append(w.grad.item())
            w.data = w.data - 0.01 * w.grad.data
            if zero_grad:
                w.grad.data.zero_()
        progress.append(loss.item())
    return grads, progress, before, (4 * w).item()


def seed_run(**settings):
    problem = setup("(x*w - y)**2", [("x", "1,2,3"), ("y", "2,4,6")], [("w", "1")], predict_items=[("x", "4")])
    problem.prediction.before = predict(problem, problem.init)
    run = train(problem, Settings(lr=0.01, epochs=settings.pop("epochs", 100), **settings))
    problem.prediction.after = predict(problem, run.final)
    return run


# --- the seed's numbers ---------------------------------------------------------------------------


def test_seed_program_gives_the_seeds_gradients_and_prediction():
    run = seed_run()
    grads, progress, before, after = seed_loop(torch.float64)
    assert [s.grads["w"] for s in run.steps] == pytest.approx(grads, rel=1e-12, abs=1e-300)
    assert [e.loss for e in run.epochs] == pytest.approx(progress, rel=1e-9, abs=1e-300)
    assert run.problem.prediction.before == [before] == [4.0]
    assert run.problem.prediction.after[0] == pytest.approx(after, rel=1e-14)
    assert run.deviation.ok and run.deviation.params == 0.0
    # the seed's own printout (float32): grad: 1.0 2.0 -2.0, 2.0 4.0 -7.84, 3.0 6.0 -16.2288 ...
    grads32, progress32, _, after32 = seed_loop(torch.float32)
    assert [s.grads["w"] for s in run.steps[:3]] == pytest.approx([-2.0, -7.84, -16.2288], rel=1e-12)
    assert [s.grads["w"] for s in run.steps[:30]] == pytest.approx(grads32[:30], rel=1e-5)
    assert progress32[0] == pytest.approx(7.315943717956543) and run.epochs[0].loss == pytest.approx(7.31594304)
    assert after32 == pytest.approx(7.999998569488525)  # the seed's "predict (after training) 4 7.999998569488525"
    assert run.problem.prediction.after[0] == pytest.approx(after32, rel=1e-6)


def test_cli_prints_the_seed_table():
    result = invoke(*SEED, "--predict", "x=4", "--show", "3")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "-7.84" in out and "-16.2288" in out and "7.31594304" in out
    assert "predict (before training) x=4: 4.0" in out
    assert "predict (after training) x=4: 7.9999999999996945" in out
    assert "prediction: v1 = x w" in out
    assert "294 steps not shown" in out and "94 epochs not shown" in out
    assert "✓ torch autograd runs the same loop" in out


def test_no_zero_grad_accumulates_in_both_loops():
    run = seed_run(zero_grad=False, epochs=5)
    grads, _, _, after = seed_loop(torch.float64, zero_grad=False, epochs=5)
    assert [s.used["w"] for s in run.steps] == pytest.approx(grads, rel=1e-12)
    assert run.steps[1].used["w"] == pytest.approx(run.steps[0].grads["w"] + run.steps[1].grads["w"])
    assert run.problem.prediction.after[0] == pytest.approx(after, rel=1e-12)
    assert run.deviation.ok
    result = invoke(*SEED[:-1], "5", "--no-zero-grad")
    assert result.exit_code == 0, result.output
    assert "w.grad (used)" in result.stdout and "the effect of not zeroing" in result.stdout


def test_momentum_is_torch_optim_sgd():
    run = seed_run(momentum=0.9, epochs=4)
    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.01, momentum=0.9)
    for _ in range(4):
        for x, y in zip([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]):
            opt.zero_grad()
            ((x * w - y) ** 2).backward()
            opt.step()
    assert run.final["w"].item() == pytest.approx(w.item(), rel=1e-12)
    assert run.deviation.ok


def test_per_sample_minibatch_is_the_mean():
    problem = setup("(x*w - y)**2", [("x", "1,2,3,4"), ("y", "2,4,6,9")], [("w", "0.5")])
    run = train(problem, Settings(lr=0.01, epochs=3, batch=2))
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    xs, ys = torch.tensor([1.0, 2, 3, 4], dtype=torch.float64), torch.tensor([2.0, 4, 6, 9], dtype=torch.float64)
    for _ in range(3):
        for i in (0, 2):
            loss = ((xs[i : i + 2] * w - ys[i : i + 2]) ** 2).mean()
            loss.backward()
            w.data -= 0.01 * w.grad
            w.grad.zero_()
    assert problem.mode == "sample" and len(run.steps) == 6
    assert run.final["w"].item() == pytest.approx(w.item(), rel=1e-12)


# --- beyond the linear model --------------------------------------------------------------------------


def test_logistic_regression_on_a_csv():
    csv = DATA / "logistic.csv"
    problem = setup(
        (DATA / "logistic.bs").read_text(),
        [("X", f"{csv}:x1,x2"), ("y", f"{csv}:y")],
        [("w", "[0,0]"), ("b", "0")],
        predict_items=[("X", "[1,-1]")],
    )
    run = train(problem, Settings(lr=0.5, epochs=20, batch=8))
    assert problem.mode == "batch" and problem.prediction.name == "p"
    X = problem.data["X"]
    y = problem.data["y"]
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    for _ in range(20):
        for i in range(0, 40, 8):
            p = torch.sigmoid(X[i : i + 8] @ w + b)
            loss = (-(y[i : i + 8] * torch.log(p) + (1 - y[i : i + 8]) * torch.log(1 - p))).mean()
            loss.backward()
            for t in (w, b):
                t.data -= 0.5 * t.grad
                t.grad.zero_()
    assert run.final["w"].tolist() == pytest.approx(w.tolist(), rel=1e-10)
    assert run.final["b"].item() == pytest.approx(b.item(), rel=1e-10)
    assert run.losses[-1] < run.losses[0]


def test_two_layer_net_on_npy_minibatches():
    problem = setup(
        (ROOT / "examples" / "two_layer_net.bs").read_text(),
        [("X", str(DATA / "X.npy")), ("y", str(DATA / "Y.npy"))],
        [("W1", "random(5,8)*0.5"), ("W2", "random(8,2)*0.5")],
    )
    run = train(problem, Settings(lr=0.002, epochs=10, batch=8, shuffle=True, seed=1))
    assert problem.mode == "batch" and run.steps_per_epoch == 4
    assert run.deviation.ok and run.deviation.tape == 0.0
    assert run.losses[-1] < run.losses[0]


# --- outputs ----------------------------------------------------------------------------------------


def test_json_output(tmp_path):
    result = invoke(*SEED, "--predict", "x=4", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["mode"] == "sample" and data["parameters"] == ["w"]
    assert len(data["history"]) == 300 and data["settings"]["steps"] == 300
    assert data["history"][1]["grad"]["w"] == pytest.approx(-7.84)
    assert data["history"][0]["values"] == {"x": 1.0, "y": 2.0}
    assert data["epochs"][0]["loss"] == pytest.approx(7.31594304)
    assert data["prediction"]["before"] == [4.0]
    assert data["prediction"]["after"][0] == pytest.approx(8.0, rel=1e-12)
    assert data["deviation"]["ok"] is True and data["deviation"]["tolerance"] == 1e-7
    assert data["final"]["w"] == pytest.approx(2.0)


def test_markdown_and_latex(tmp_path):
    md = tmp_path / "seed.md"
    result = invoke(*SEED, "--predict", "x=4", "--format", "md", "-o", str(md))
    assert result.exit_code == 0, result.output
    text = md.read_text()
    assert "## Training" in text and "xychart-beta" in text and "| 2 | 0 | 1 | 2 | 4 | 3.8416 | -7.84 |" in text
    assert "## Gradients" in text  # the derivation comes first
    run = seed_run(epochs=3)
    tex = render_document(run, "latex")
    assert (
        tex.startswith("\\documentclass") and "\\begin{tikzpicture}" in tex and tex.rstrip().endswith("\\end{document}")
    )
    assert "\\section*{Training}" in tex


@pytest.mark.skipif(shutil.which("latexmk") is None or shutil.which("xelatex") is None, reason="no LaTeX engine")
def test_pdf(tmp_path):
    pdf = tmp_path / "seed.pdf"
    result = invoke(*SEED[:-1], "3", "--predict", "x=4", "--format", "pdf", "-o", str(pdf))
    assert result.exit_code == 0, result.output
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_png_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "loss.png"
    result = invoke(*SEED, "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sparkline_log_scale():
    line, log = sparkline([1.0, 0.1, 0.01, 0.001], width=10)
    assert log and line == "█▆▃▁"


# --- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["(x*w - y)**2", "--data", "x=1,2,3", "--data", "y=2,4", "--init", "w=1"], "different numbers of samples"),
        (["(x*w - y)**2", "--data", "x=1,2,3", "--data", "y=2,4,6"], "w has no value: give --init w="),
        (["(x*w - y)**2", "--data", "x=1,2,3", "--data", "y=2,4,6", "--init", "w=1", "--lr", "0"], "--lr 0"),
        (["(x*w - y)**2", "--data", "x=1,2,3", "--data", "y=2,4,6", "--init", "w=1", "--lr", "-1"], "must be"),
        (
            ["(x*w - y)**2", "--data", "x=1,2,3", "--data", "y=2,4,6", "--init", "w=1", "--lr", "10"],
            "diverged at epoch",
        ),
        (["(x*w - y)**2", "--data", "x=1,a", "--data", "y=2,4", "--init", "w=1"], "--data x=1,a"),
        (["(x*w - y)**2", "--data", "x=1,2", "--data", "y=2,4", "--init", "w=1", "--init", "z=1"], "no variable z"),
        (["(x*w - y)**2", "--data", "x=1,2", "--data", "y=2,4", "--init", "w=1", "--batch", "5"], "only 2 samples"),
        (["(x*w - y)**2", "--data", "x=f.csv:a", "--data", "y=2,4", "--init", "w=1"], "cannot read"),
        (["(x*w - y)**2", "--data", "x=1,2", "--data", "y=2,4", "--init", "w=1", "--wrt", "x"], "x is data"),
        (["x*w - y", "--data", "x=1,2", "--data", "y=2,4", "--init", "w=[1,1]"], "the loss must be a number"),
        (["(x*w - y)**2", "--data", "x=1,2", "--data", "y=2,4", "--init", "w=1", "--format", "pdf"], "-o FILE.pdf"),
        (["(x*w - y)**2", "--data", "x=1,2", "--data", "y=2,4", "--init", "w=1", "--predict", "q=1"], "--predict q"),
        (["(x*w +", "--data", "x=1,2", "--init", "w=1"], "syntax error"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_divergence_names_epoch_and_step():
    result = invoke(*SEED[:-4], "--lr", "10", "--epochs", "1000")
    assert result.exit_code == 2
    assert "diverged at epoch" in result.stderr and "step" in result.stderr and "try --lr 1" in result.stderr


def test_bad_csv_column(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("a,b\n1,2\n3,oops\n")
    result = invoke("(x*w - y)**2", "--data", f"x={csv}:a", "--data", f"y={csv}:c", "--init", "w=1")
    assert result.exit_code == 2 and "no column c" in result.stderr
    result = invoke("(x*w - y)**2", "--data", f"x={csv}:a", "--data", f"y={csv}:b", "--init", "w=1")
    assert result.exit_code == 2 and "line 3, column b" in result.stderr


def test_exit_1_when_the_loops_part(monkeypatch):
    import backstep.train_loop as loop

    real = loop.TorchLoop.step

    def perturbed(self, graph, envs):
        loss, grads = real(self, graph, envs)
        return loss + 1e-3, grads

    monkeypatch.setattr(loop.TorchLoop, "step", perturbed)
    result = invoke(*SEED[:-1], "2")
    assert result.exit_code == 1
    assert "PARTS" in result.stdout and "parted" in result.stderr
