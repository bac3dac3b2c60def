"""What `backstep train` shows: the seed's table, the loss curve, JSON, Markdown, LaTeX, a PNG.

Long runs are shortened the same way everywhere: the first and last `show` steps, and the first
and last `show` epochs' `progress:` lines, with a line saying how many are left out. The loss curve
is drawn on a log scale when the losses span more than two decades (a loss that reaches 0 is then
drawn at the smallest positive loss of the run).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from types import SimpleNamespace as Row
from typing import Any

from .safetext import printable
from .train_loop import RTOL, Run

BLOCKS = "▁▂▃▄▅▆▇█"


# --- numbers and the curve ------------------------------------------------------------------------


def number(x: float) -> str:
    """A number as the table shows it: 10 significant digits (the seed's -7.84, -16.2288)."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    return f"{x:.10g}"


def value_text(v: Any) -> str:
    if isinstance(v, dict):
        return f"‖·‖={number(v['norm'])}"
    if isinstance(v, list):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    return number(v)


def full_text(v: Any) -> str:
    """Every digit (a prediction, as the seed prints it: 7.999998569488525)."""
    if isinstance(v, list):
        return "[" + ", ".join(full_text(x) for x in v) + "]"
    return repr(float(v))


def value_latex(v: Any) -> str:
    if isinstance(v, dict):
        return r"\lVert\cdot\rVert = " + latex_number(v["norm"])
    if isinstance(v, list):
        return "[" + ",\\ ".join(value_latex(x) for x in v) + "]"
    return latex_number(v)


def latex_number(x: float) -> str:
    s = f"{x:.6g}" if x != 0 else "0"
    if "e" in s:
        mantissa, exponent = s.split("e")
        return rf"{mantissa} \cdot 10^{{{int(exponent)}}}"
    return s


def curve(losses: list[float], points: int) -> tuple[list[tuple[int, float]], bool]:
    """At most `points` (step, loss) pairs, bucket means of the curve; log scale when it spans > 2 decades."""
    finite = [x for x in losses if math.isfinite(x)]
    positive = [x for x in finite if x > 0]
    log = bool(positive) and len(positive) == len(finite) and max(positive) / min(positive) > 100
    if not log and positive and min(finite) >= 0 and max(positive) / min(positive) > 100:
        log = True
    floor = min(positive) if positive else 1.0
    values = [math.log10(max(x, floor)) if log else x for x in losses]
    n = len(values)
    if n <= points:
        return list(zip(range(1, n + 1), values)), log
    out = []
    for i in range(points):
        lo, hi = i * n // points, max((i + 1) * n // points, i * n // points + 1)
        chunk = values[lo:hi]
        out.append((hi, sum(chunk) / len(chunk)))
    return out, log


def sparkline(losses: list[float], width: int = 60) -> tuple[str, bool]:
    pts, log = curve(losses, width)
    ys = [y for _, y in pts]
    lo, hi = min(ys), max(ys)
    span = hi - lo or 1.0
    return "".join(BLOCKS[min(7, int((y - lo) / span * 7.999))] for y in ys), log


# --- which rows are shown -------------------------------------------------------------------------


def shown(items: list, show: int) -> tuple[list, list, int]:
    """(head, tail, left out): every item when there are at most 2·show, else both ends."""
    if len(items) <= 2 * show:
        return items, [], 0
    return items[:show], items[-show:], len(items) - 2 * show


def samples_text(record) -> str:
    s = record.samples
    if isinstance(s, tuple):
        return str(s[0]) if s[0] == s[1] else f"{s[0]}–{s[1]}"
    return ",".join(map(str, s)) if len(s) <= 4 else f"{len(s)} shuffled"


# --- the view every output reads ------------------------------------------------------------------


def view(run: Run, show: int = 5, notation: str = "bar") -> Row:
    """The run, printed: headers, rows of strings (text and LaTeX), the settings sentence, the curve."""
    from .render.common import Notation

    p, s = run.problem, run.settings
    d = p.derivation
    n = Notation(d, notation)
    grads = [
        Row(
            name=k,
            header=n.partial(k),
            header_tex=n.partial_latex(k),
            text=f"{n.partial(k)} = {n.text(d.gradients[k].expr)}",
            tex=f"{n.partial_latex(k)} = {n.latex(d.gradients[k].expr)}",
        )
        for k in p.wrt
    ]
    value_columns = list(run.steps[0].values) if run.steps and run.steps[0].values else []

    def step_row(r) -> Row:
        cells = [str(r.step), str(r.epoch), samples_text(r)] + [number(r.values[k]) for k in value_columns]
        tex = [str(r.step), str(r.epoch), r"\text{" + samples_text(r).replace("–", "--") + "}"]
        tex += [latex_number(r.values[k]) for k in value_columns]
        cells.append(number(r.loss))
        tex.append(latex_number(r.loss))
        for k in p.wrt:
            cells.append(value_text(r.grads[k]))
            tex.append(value_latex(r.grads[k]))
            if r.used is not None:
                cells.append(value_text(r.used[k]))
                tex.append(value_latex(r.used[k]))
            cells.append(value_text(r.params[k]))
            tex.append(value_latex(r.params[k]))
        return Row(cells=cells, tex=tex)

    headers = ["step", "epoch", "sample" if run.batch == 1 else "samples"] + value_columns + ["loss"]
    headers_tex = ["step", "epoch", headers[2]] + [n.name_latex(k) for k in value_columns] + ["loss"]
    for g in grads:
        headers.append(g.header + (" (this step)" if not s.zero_grad else ""))
        headers_tex.append(g.header_tex)
        if not s.zero_grad:
            headers.append(f"{g.name}.grad (used)")
            headers_tex.append(rf"\texttt{{{g.name}.grad}}")
        headers.append(f"{g.name} (after)")
        headers_tex.append(n.name_latex(g.name) + r"\ \text{after}")
    head, tail, left = shown(run.steps, show)
    e_head, e_tail, e_left = shown(run.epochs, show)

    def epoch_row(e) -> Row:
        cells = [str(e.epoch), number(e.loss), number(e.mean_loss)] + [value_text(e.params[k]) for k in p.wrt]
        tex = [str(e.epoch), latex_number(e.loss), latex_number(e.mean_loss)]
        return Row(cells=cells, tex=tex + [value_latex(e.params[k]) for k in p.wrt])

    spark, log = sparkline(run.losses)
    pts, _ = curve(run.losses, 60)
    dev = run.deviation
    pred = p.prediction
    return Row(
        run=run,
        source=p.source,
        source_lines=[line for line in p.source.splitlines() if line.strip()],
        output=d.output,
        mode=p.mode,
        wrt=p.wrt,
        grads=grads,
        settings=settings_sentence(run),
        reduction=reduction_sentence(run),
        headers=headers,
        headers_tex=headers_tex,
        head=[step_row(r) for r in head],
        tail=[step_row(r) for r in tail],
        left=left,
        epoch_headers=["epoch", "loss (last step)", "mean loss"] + [f"{k}" for k in p.wrt],
        epoch_headers_tex=["epoch", "loss (last step)", "mean loss"] + [n.name_latex(k) for k in p.wrt],
        epoch_head=[epoch_row(e) for e in e_head],
        epoch_tail=[epoch_row(e) for e in e_tail],
        epoch_left=e_left,
        spark=spark,
        log=log,
        curve=pts,
        curve_tikz=tikz_curve(curve(run.losses, 300)[0], log, len(run.losses)),
        first_loss=number(run.losses[0]),
        last_loss=number(run.losses[-1]),
        steps=len(run.steps),
        deviation=dev,
        ok=dev.ok,
        comparison=comparison_sentence(run),
        prediction=None if pred is None else prediction_view(run, n),
        contrast=contrast_sentence(run),
        notes=list(p.notes),
    )


def settings_sentence(run: Run) -> str:
    s, p = run.settings, run.problem
    per = "one sample per step" if run.batch == 1 else f"minibatches of {run.batch}"
    if run.batch == p.n and p.n > 1:
        per = f"the full batch of {p.n}"
    data = f"{p.n} samples, {per}" if p.data else "no data"
    rule = f"SGD with momentum {s.momentum:g}" if s.momentum else "plain SGD"
    zero = "gradients zeroed after every step" if s.zero_grad else "gradients NOT zeroed (they accumulate)"
    order = f", shuffled each epoch (seed {s.seed})" if s.shuffle else ""
    return (
        f"{rule}, learning rate {s.lr:g}, {s.epochs} epochs × {run.steps_per_epoch} steps = {len(run.steps)} "
        f"updates; {data}{order}; {zero}"
    )


def reduction_sentence(run: Run) -> str:
    p = run.problem
    if not p.data:
        return "the formula has no data: each step is one update on the whole formula"
    if p.mode == "sample":
        if run.batch == 1:
            return "the formula is one sample's loss; each step uses one sample"
        return f"the formula is one sample's loss; a minibatch's loss (and gradient) is the mean over its {run.batch}"
    return "the formula takes a whole minibatch (its data have a batch axis) and reduces it as it says"


def comparison_sentence(run: Run) -> str:
    dev = run.deviation
    z = "w.grad.zero_()" if run.settings.zero_grad else "no zero_()"
    head = "✓ torch autograd runs the same loop" if dev.ok else "✗ torch autograd's loop PARTS from the derived one"
    where = "" if dev.ok or dev.first_epoch is None else f" (first in epoch {dev.first_epoch})"
    return (
        f"{head} (loss.backward(), w.data -= lr·w.grad, {z}): largest difference over {len(run.steps)} steps — "
        f"parameters {err(dev.params)}, gradients {err(dev.grads)}, losses {err(dev.losses)}; compiled steps vs "
        f"backstep's evaluator {err(dev.tape)} (relative, float64, tolerance {RTOL:g}){where}"
    )


def err(x: float) -> str:
    return "0" if not x else f"{x:.1g}"


def prediction_view(run: Run, n) -> Row:
    p = run.problem
    pred = p.prediction
    d = p.derivation
    step = next((s for s in d.forward if s.name == pred.name), None)
    expr_text = n.text(step.expr) if step is not None else pred.name
    inputs = ", ".join(
        f"{k}={value_text(v[0].tolist() if v.shape[0] == 1 else v.tolist())}" for k, v in pred.inputs.items()
    )

    def shown_values(values):
        if values is None:
            return ""
        return full_text(values[0] if len(values) == 1 else values)

    expr_tex = n.latex(step.expr) if step is not None else n.name_latex(pred.name)
    return Row(
        name=pred.name,
        expr=expr_text,
        expr_tex=expr_tex,
        name_tex=n.name_latex(pred.name),
        why=pred.why,
        inputs=inputs,
        before=shown_values(pred.before),
        after=shown_values(pred.after),
        torch_after=shown_values(pred.torch_after),
    )


def contrast_sentence(run: Run) -> str | None:
    c = run.contrast
    if c is None:
        return None
    last = run.steps[-1]
    now = ", ".join(f"{k} = {value_text(v)}" for k, v in last.params.items())
    if "diverged" in c:
        return f"without zeroing: final loss {number(last.loss)}, {now}; with zeroing the run diverges: {c['diverged']}"
    then = ", ".join(f"{k} = {value_text(v)}" for k, v in c["params"].items() if k in run.problem.wrt)
    return (
        f"the effect of not zeroing: this run ends at loss {number(last.loss)}, {now}; the same run with "
        f"w.grad.zero_() after every step ends at loss {number(c['final_loss'])}, {then}"
    )


def tikz_curve(pts: list[tuple[int, float]], log: bool, steps: int) -> Row:
    """The curve in TikZ coordinates on a 12 cm × 5 cm frame, with ticks (decades on a log scale)."""
    ys = [y for _, y in pts if math.isfinite(y)]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if log:
        lo, hi = math.floor(lo), math.ceil(hi)
    if hi == lo:
        hi = lo + 1
    width, height = 12.0, 5.0

    def x_of(step: int) -> float:
        return width * (step - 1) / max(1, steps - 1)

    def y_of(y: float) -> float:
        return height * (y - lo) / (hi - lo)

    coords = " ".join(f"({x_of(s):.3f},{y_of(y):.3f})" for s, y in pts if math.isfinite(y))
    if log:
        stride = max(1, math.ceil((hi - lo) / 6))
        yticks = [(y_of(e), f"$10^{{{e}}}$") for e in range(int(lo), int(hi) + 1, stride)]
    else:
        yticks = [(y_of(lo + (hi - lo) * i / 4), f"${latex_number(lo + (hi - lo) * i / 4)}$") for i in range(5)]
    xticks = sorted({1, steps} | {round(1 + (steps - 1) * i / 4) for i in range(5)})
    return Row(
        coords=coords,
        width=width,
        height=height,
        yticks=[Row(y=f"{y:.3f}", label=label) for y, label in yticks],
        xticks=[Row(x=f"{x_of(s):.3f}", label=str(s)) for s in xticks],
        ylabel="loss (log scale)" if log else "loss",
    )


# --- the terminal -------------------------------------------------------------------------------------


def terminal(run: Run, show: int = 5, notation: str = "bar") -> list:
    """Rich renderables: everything user-written goes through `printable` and Text (no markup)."""
    from rich.text import Text

    v = view(run, show, notation)
    out: list = []
    out.append(Text("backstep train   " + "; ".join(printable(line) for line in v.source_lines), style="bold"))
    out.append(Text(printable(v.settings)))
    out.append(Text(printable(v.reduction)))
    for g in v.grads:
        out.append(Text(f"the update uses the derived gradient {printable(g.text)}"))
    out.append(Text("  (evaluated by backstep's own evaluator from the derivation's steps, not by autograd)"))
    if v.prediction is not None:
        pr = v.prediction
        out.append(Text(f"prediction: {printable(pr.name)} = {printable(pr.expr)}  ({printable(pr.why)})"))
        out.append(Text(f"predict (before training) {printable(pr.inputs)}: {pr.before}"))
    out.append(Text(""))
    out.append(_shortened(v.headers, v.head, v.left, v.tail, "steps"))
    out.append(Text(""))
    out.append(Text("progress (as the seed prints it: the epoch's last loss)", style="bold"))
    out.append(_shortened(v.epoch_headers, v.epoch_head, v.epoch_left, v.epoch_tail, "epochs"))
    out.append(Text(""))
    scale = "log scale" if v.log else "linear scale"
    out.append(Text(f"loss {v.spark}  {v.first_loss} → {v.last_loss}  ({scale}, {v.steps} steps)"))
    if v.contrast:
        out.append(Text(printable(v.contrast)))
    if v.prediction is not None:
        pr = v.prediction
        out.append(Text(f"predict (after training) {printable(pr.inputs)}: {pr.after}   (torch: {pr.torch_after})"))
    out.append(Text(v.comparison, style="green" if v.ok else "bold red"))
    for note in v.notes:
        out.append(Text(f"note: {printable(note)}"))
    return out


# --- JSON -----------------------------------------------------------------------------------------------


def to_json(run: Run, notation: str = "bar") -> str:
    """The whole run; the schema is in docs/train.md."""
    p, s, dev = run.problem, run.settings, run.deviation
    v = view(run, 1, notation)
    pred = p.prediction
    data = {
        "formula": p.source,
        "output": p.derivation.output,
        "mode": p.mode,
        "reduction": v.reduction,
        "data": {k: list(t.shape) for k, t in p.data.items()},
        "parameters": p.wrt,
        "fixed": [k for k in p.init if k not in p.wrt],
        "gradients": {g.name: {"text": g.text, "latex": g.tex} for g in v.grads},
        "settings": {
            "lr": s.lr,
            "epochs": s.epochs,
            "batch": run.batch,
            "steps_per_epoch": run.steps_per_epoch,
            "steps": len(run.steps),
            "momentum": s.momentum,
            "zero_grad": s.zero_grad,
            "shuffle": s.shuffle,
            "seed": s.seed,
            "dtype": "float64",
        },
        "initial": {k: t.tolist() for k, t in p.init.items()},
        "history": [
            {
                "step": r.step,
                "epoch": r.epoch,
                "samples": list(r.samples) if isinstance(r.samples, tuple) else r.samples,
                "contiguous": isinstance(r.samples, tuple),
                "loss": r.loss,
                "grad": r.grads,
                "used": r.used,
                "params": r.params,
                **({"values": r.values} if r.values else {}),
            }
            for r in run.steps
        ],
        "epochs": [
            {"epoch": e.epoch, "loss": e.loss, "mean_loss": e.mean_loss, "params": e.params} for e in run.epochs
        ],
        "final": {k: t.tolist() for k, t in run.final.items()},
        "prediction": None
        if pred is None
        else {
            "name": pred.name,
            "why": pred.why,
            "inputs": {k: t.tolist() for k, t in pred.inputs.items()},
            "before": pred.before,
            "after": pred.after,
            "torch_after": pred.torch_after,
        },
        "deviation": {
            "params": dev.params,
            "grads": dev.grads,
            "losses": dev.losses,
            "tape": dev.tape,
            "tolerance": RTOL,
            "ok": dev.ok,
            "first_epoch": dev.first_epoch,
        },
        "contrast": run.contrast,
        "notes": p.notes,
    }
    return json.dumps(data, indent=1, allow_nan=True) + "\n"


# --- documents and the picture ------------------------------------------------------------------------


def render_document(run: Run, fmt: str, show: int = 5, notation: str = "bar", template_dir=None) -> str:
    """`md` or `latex` (a complete document: the derivation, then the training)."""
    from .render.documents import Templates, context
    from .render.documents import view as derivation_view

    D = derivation_view(run.problem.derivation, notation, "en")
    T = view(run, show, notation)
    name = "train.md.j2" if fmt == "md" else "train.tex.j2"
    return Templates(template_dir).render(name, **context(D, T=T, level="section"))


def write_plot(run: Run, path: Path, inputs=()) -> None:
    """The loss of every step as a PNG (matplotlib, Agg; imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from .userfiles import write_output

    losses = run.losses
    _, log = curve(losses, 2)
    fig = Figure(figsize=(7, 3.6), dpi=110)
    ax = fig.add_subplot()
    steps = range(1, len(losses) + 1)
    if log:
        floor = min((x for x in losses if x > 0), default=1.0)
        ax.semilogy(steps, [max(x, floor) for x in losses], linewidth=1.2, color="#1f5fa8", label="loss of the step")
    else:
        ax.plot(steps, losses, linewidth=1.2, color="#1f5fa8", label="loss of the step")
    ends = [run.steps_per_epoch * (e.epoch + 1) for e in run.epochs]
    if len(ends) <= 400:
        ys = [max(e.loss, floor) if log else e.loss for e in run.epochs]
        ax.plot(ends, ys, "o", markersize=2.5, color="#c0392b", label="progress: the epoch's last loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (log scale)" if log else "loss")
    title = "; ".join(line.strip() for line in run.problem.source.splitlines() if line.strip()).replace("$", r"\$")
    ax.set_title(title if len(title) <= 70 else title[:67] + "...", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_output(path, buffer.getvalue(), inputs=inputs)


def _shortened(headers, head, left: int, tail, what: str):
    """A table of the first and last rows, with a ⋮ row and a caption for the `left` rows between."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for h in headers:
        table.add_column(Text(printable(h)), justify="right")
    for r in head:
        table.add_row(*[Text(c) for c in r.cells])
    if left:
        table.add_row(*[Text("⋮") for _ in headers])
        table.caption = Text(f"({left} {what} not shown)")
    for r in tail:
        table.add_row(*[Text(c) for c in r.cells])
    return table
