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

from .cli_io import STDIO, fail, output_format, parse_pairs, print_rich, read_program, stderr
from .errors import BackstepError, UsageError

FORMATS = ("text", "json", "md", "latex", "pdf")


def input_files(file: Optional[Path], *lists: list[str]) -> list[Path]:
    """The files this command reads (-f, data and init files): an output may not be one of them."""
    found = [file] if file is not None and str(file) != STDIO else []
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
    file: Annotated[
        Optional[Path], typer.Option("--file", "-f", help="Read the formula or program from FILE (- reads stdin).")
    ] = None,
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
        list[str],
        typer.Option(help="The parameters to train: w,b or --wrt w --wrt b (default: every --init; the rest fixed)."),
    ] = [],  # noqa: B006
    lr: Annotated[
        float, typer.Option("--lr", help="The learning rate (a finite number > 0; checked with the other settings).")
    ] = 0.01,
    epochs: Annotated[int, typer.Option(help="Passes over the data.", min=1, max=1_000_000)] = 100,
    batch: Annotated[
        int,
        typer.Option(help="Samples per step (default 1, as the seed: one sample at a time).", min=1, max=10**9),
    ] = 1,
    full_batch: Annotated[bool, typer.Option("--full-batch", help="Every sample in every step.")] = False,
    momentum: Annotated[
        float, typer.Option(help="SGD momentum, as torch.optim.SGD (0: plain SGD; from 0 to 1, 1 excluded).")
    ] = 0.0,
    no_zero_grad: Annotated[
        bool,
        typer.Option(
            "--no-zero-grad", help="Never zero the gradients: they accumulate (the seed's warning), in both loops."
        ),
    ] = False,
    shuffle: Annotated[bool, typer.Option("--shuffle", help="A new order of the samples each epoch (--seed).")] = False,
    seed: Annotated[
        int, typer.Option(help="Random seed of random --init values and --shuffle.", min=0, max=2**63 - 1)
    ] = 0,
    predict: Annotated[
        list[str], typer.Option(help="Predict before and after training at x=4 (the inputs, not the target).")
    ] = [],  # noqa: B006
    predict_with: Annotated[
        Optional[str],
        typer.Option(help="The value that predicts (a name of the program); default: the one the target meets."),
    ] = None,
    show: Annotated[
        int, typer.Option(help="Steps (and epochs) shown at each end of the table.", min=1, max=1_000_000)
    ] = 5,
    plot: Annotated[Optional[Path], typer.Option(help="Draw the loss curve as a PNG file.")] = None,
    fmt: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            help="text, json, md (Markdown), latex, or pdf (needs -o FILE). Default: from -o's extension, else text.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help="Write to FILE instead of stdout (- is stdout); its extension (.json .md .tex .pdf) picks the format.",
        ),
    ] = None,
    notation: Annotated[str, typer.Option(help="How adjoints are written: bar, partial or delta.")] = "bar",
    template: Annotated[
        Optional[Path], typer.Option("--template", help="A folder of jinja2 templates replacing train.md.j2 etc.")
    ] = None,
) -> None:
    """Train with the derived gradient (SGD), beside the same loop in torch; show the table and the loss curve."""
    from .train import Settings, setup

    source = None
    inputs = input_files(file, data, init, predict)
    try:
        fmt, output = _check_options(fmt, output, notation, full_batch and batch != 1, plot, inputs)
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
        source = read_program(
            expr, file, example='backstep train "(x*w - y)**2" --data x=1,2,3 --data y=2,4,6 --init w=1'
        )
        problem = setup(
            source,
            parse_pairs(data, "--data"),
            parse_pairs(init, "--init"),
            wrt=[w.strip() for item in wrt for w in item.split(",") if w.strip()] or None,
            predict_items=parse_pairs(predict, "--predict"),
            predict_with=predict_with,
            seed=seed,
        )
        run = _train(problem, settings, no_zero_grad, plot, inputs)
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


def _check_options(
    fmt: Optional[str], output: Optional[Path], notation: str, two_batches: bool, plot: Optional[Path], inputs
) -> tuple[str, Optional[Path]]:
    """The format and the output file (None: stdout), once the options are checked: before any work."""
    from .userfiles import check_output_path

    fmt, output = output_format(fmt, output, FORMATS)
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if notation not in ("bar", "partial", "delta"):
        raise UsageError(f"--notation {notation}: choose bar, partial or delta")
    if two_batches:
        raise UsageError("--batch and --full-batch: choose one")
    for path in (output, plot):
        if path is not None:
            check_output_path(path, inputs)
    if plot is not None and plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: the picture is a PNG file (FILE.png)")
    return fmt, output


def _train(problem, settings, no_zero_grad: bool, plot: Optional[Path], inputs):
    """The run (with a progress bar on a terminal), its predictions before and after, with
    --no-zero-grad the same run with zero_grad to contrast, and its --plot."""
    from .train_loop import predict as run_predict
    from .train_loop import train, train_contrast

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
        from .train_report import write_plot

        write_plot(run, plot, inputs=inputs)
    return run


def _emit(run, fmt: str, output: Optional[Path], show: int, notation: str, template: Optional[Path], inputs) -> None:
    """The run in its format, on stdout or in -o FILE; a document also shows the derivation, verified."""
    from .train_report import render_document, terminal, to_json
    from .userfiles import check_output_path, write_output

    if fmt in ("md", "latex", "pdf"):
        run.problem.derivation.verify()
    if fmt == "text" and output is None:
        print_rich(terminal(run, show, notation), 160)
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

    console = Console(emoji=False, width=160, record=True, file=open_devnull(), highlight=False)
    for part in terminal(run, show, notation):
        console.print(part)
    return console.export_text()


def open_devnull():
    import io

    return io.StringIO()
