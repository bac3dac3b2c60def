"""`backstep train`: the lesson's training loop, driven by the derived gradient, beside torch's.

Registered in backstep/cli.py as ``app.command("train")(train_command)``. Bad input is a
BackstepError: one clean message on stderr, exit 2. Exit 1 when torch's loop parts from the derived one.
"""

# No `from __future__ import annotations` here: typer would then eval() every annotation at start-up.
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .errors import BackstepError, UsageError

FORMATS = ("text", "json", "md", "latex", "pdf")
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(err: BackstepError, source: Optional[str] = None) -> None:
    """Print a clean error and exit 2 (as backstep.cli.fail does)."""
    if source is not None:
        err.with_source(source)
    stderr.print(err.render(), markup=False)
    raise typer.Exit(2)


def pairs(items: list[str], option: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if "=" not in item:
            raise UsageError(f"{option} {item}: write NAME=VALUE")
        name, value = item.split("=", 1)
        name = name.strip()
        if not name.isidentifier():
            raise UsageError(f"{option} {item}: {name!r} is not a variable name")
        out.append((name, value.strip()))
    return out


def read_source(expr: Optional[str], file: Optional[Path]) -> str:
    if expr is not None and file is not None:
        raise UsageError("give the formula as an argument or with -f FILE, not both")
    if file is not None:
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"cannot read {file}: {err}") from None
    if expr is None:
        raise UsageError('give a formula, e.g. backstep train "(x*w - y)**2" --data x=1,2,3 --data y=2,4,6 --init w=1')
    return expr


def input_files(file: Optional[Path], *lists: list[str]) -> list[Path]:
    """The files this command reads (-f, data and init files): an output may not be one of them."""
    found = [file] if file is not None else []
    for items in lists:
        for item in items:
            text = item.split("=", 1)[-1].strip()
            if text.lower().endswith(".npy"):
                found.append(Path(text))
            elif ".csv:" in text.lower():
                found.append(Path(text[: text.lower().rindex(".csv:") + 4]))
    return found


def train_command(
    expr: Annotated[
        Optional[str], typer.Argument(help='The loss, e.g. "(x*w - y)**2", or a program with ; and a last line.')
    ] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the formula or program from FILE.")] = None,
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            help="Data, one row per sample: x=1,2,3, X=[[1,2],[3,4]], X=file.npy, y=file.csv:COLUMN, X=file.csv:A,B.",
        ),
    ] = [],  # noqa: B006 (typer reads the default)
    init: Annotated[
        list[str],
        typer.Option(
            "--init",
            help="A parameter's first value: w=1, w=[1,2], W=file.npy, or random, random(3,5), random(3,5)*0.01.",
        ),
    ] = [],  # noqa: B006
    wrt: Annotated[
        Optional[str], typer.Option(help="The parameters to train: w,b (default: every --init; the rest stay fixed).")
    ] = None,
    lr: Annotated[float, typer.Option("--lr", help="The learning rate (> 0).")] = 0.01,
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 100,
    batch: Annotated[int, typer.Option(help="Samples per step (default 1, as the seed: one sample at a time).")] = 1,
    full_batch: Annotated[bool, typer.Option("--full-batch", help="Every sample in every step.")] = False,
    momentum: Annotated[float, typer.Option(help="SGD momentum, as torch.optim.SGD (0: plain SGD).")] = 0.0,
    no_zero_grad: Annotated[
        bool,
        typer.Option(
            "--no-zero-grad", help="Never zero the gradients: they accumulate (the seed's warning), in both loops."
        ),
    ] = False,
    shuffle: Annotated[bool, typer.Option("--shuffle", help="A new order of the samples each epoch (--seed).")] = False,
    seed: Annotated[int, typer.Option(help="Random seed of random --init values and --shuffle.", min=0)] = 0,
    predict: Annotated[
        list[str], typer.Option(help="Predict before and after training at x=4 (the inputs, not the target).")
    ] = [],  # noqa: B006
    predict_with: Annotated[
        Optional[str],
        typer.Option(help="The value that predicts (a name of the program); default: the one the target meets."),
    ] = None,
    show: Annotated[int, typer.Option(help="Steps (and epochs) shown at each end of the table.", min=1)] = 5,
    plot: Annotated[Optional[Path], typer.Option(help="Draw the loss curve as a PNG file.")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="text, json, md (Markdown), latex, or pdf (needs -o FILE).")
    ] = "text",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
    notation: Annotated[str, typer.Option(help="How adjoints are written: bar, partial or delta.")] = "bar",
    template: Annotated[
        Optional[Path], typer.Option("--template", help="A folder of jinja2 templates replacing train.md.j2 etc.")
    ] = None,
) -> None:
    """Train with the derived gradient (SGD), beside the same loop in torch; show the table and the loss curve."""
    from .train import Settings, setup
    from .train_loop import predict as run_predict
    from .train_loop import train, train_contrast
    from .train_report import write_plot
    from .userfiles import check_output_path

    source = None
    inputs = input_files(file, data, init, predict)
    try:
        if fmt not in FORMATS:
            raise UsageError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
        if fmt == "pdf" and output is None:
            raise UsageError("--format pdf writes a file: add -o FILE.pdf")
        if notation not in ("bar", "partial", "delta"):
            raise UsageError(f"--notation {notation}: choose bar, partial or delta")
        if full_batch and batch != 1:
            raise UsageError("--batch and --full-batch: choose one")
        for path in (output, plot):
            if path is not None:
                check_output_path(path, inputs)
        if plot is not None and plot.suffix.lower() != ".png":
            raise UsageError(f"--plot {plot}: the picture is a PNG file (FILE.png)")
        settings = Settings(
            lr=lr,
            epochs=epochs,
            batch=None if full_batch else batch,
            momentum=momentum,
            zero_grad=not no_zero_grad,
            shuffle=shuffle,
            seed=seed,
        )
        settings.check()
        source = read_source(expr, file)
        problem = setup(
            source,
            pairs(data, "--data"),
            pairs(init, "--init"),
            wrt=[w.strip() for w in wrt.split(",") if w.strip()] if wrt else None,
            predict_items=pairs(predict, "--predict"),
            predict_with=predict_with,
            seed=seed,
        )
        pred = problem.prediction
        if pred is not None:
            pred.before = run_predict(problem, problem.init)
        run = _run_with_progress(problem, settings, train)
        if pred is not None:
            pred.after = run_predict(problem, run.final)
            pred.torch_after = run_predict(problem, run.final, torch_leaves=run.torch_final)
        if no_zero_grad:
            run.contrast = train_contrast(problem, settings)
        if plot is not None:
            write_plot(run, plot, inputs=inputs)
        if fmt in ("md", "latex", "pdf"):
            problem.derivation.verify()
        _emit(run, fmt, output, show, notation, template, inputs)
    except BackstepError as err:
        fail(err, source)
    except RecursionError:
        fail(UsageError("the formula is nested too deeply (name intermediates in a program)"))
    if not run.deviation.ok:
        stderr.print(
            "[bold red]torch's loop parted from the derived one[/] — this is a bug in backstep; please report it"
        )
        raise typer.Exit(1)


def _emit(run, fmt: str, output: Optional[Path], show: int, notation: str, template: Optional[Path], inputs) -> None:
    """The run in its format, on stdout or in -o FILE."""
    from .train_report import render_document, terminal, to_json
    from .userfiles import check_output_path, write_output

    if fmt == "text" and output is None:
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=160)
        for part in terminal(run, show, notation):
            console.print(part)
    elif fmt == "pdf":
        from .render.pdf import compile_pdf

        check_output_path(output, inputs)
        tex = render_document(run, "latex", show, notation, template)
        compile_pdf(tex, output, name=output.stem)
    else:
        if fmt == "json":
            text = to_json(run, notation)
        elif fmt == "text":
            text = _plain(run, show, notation)
        else:
            text = render_document(run, fmt, show, notation, template)
        if output is not None:
            write_output(output, text, inputs=inputs)
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _run_with_progress(problem, settings, train):
    """A progress bar on stderr, only when it is a terminal and the run is long."""
    if not stderr.is_terminal:
        return train(problem, settings)
    from rich.progress import Progress

    with Progress(console=stderr, transient=True) as bar:
        task = bar.add_task("training", total=None)

        def progress(step: int, total: int) -> None:
            if step % 200 == 0 or step == total:
                bar.update(task, completed=step, total=total)

        return train(problem, settings, progress=progress)


def _plain(run, show: int, notation: str) -> str:
    """The terminal view as plain text, for -o FILE."""
    from .train_report import terminal

    console = Console(width=160, record=True, file=open_devnull(), highlight=False)
    for part in terminal(run, show, notation):
        console.print(part)
    return console.export_text()


def open_devnull():
    import io

    return io.StringIO()
