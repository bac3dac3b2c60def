"""The command line: `backstep derive`, `backstep sheet`, `backstep ops`.

Bad input of any kind is a BackstepError: it is printed as one clear message with its place
(and a caret under it) on stderr, with exit code 2 and no traceback.
"""

# No `from __future__ import annotations` here: typer would then eval() every annotation at start-up.
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .cli_io import (
    STDIO,
    FormulaCommand,
    fail,
    number,
    output_format,
    parse_pairs,
    print_rich,
    read_program,
    stderr,
    stdout_or_file,
)
from .errors import BackstepError, UsageError
from .train_command import train_command
from .userfiles import check_output_path, write_output

app = typer.Typer(
    name="backstep",
    epilog='[bold]Examples[/bold]\n\n  [cyan]backstep derive "relu(x@W1)@W2"[/cyan]\n\n'
    '  [cyan]backstep check "x**2" --wrt x --claim "2*x"[/cyan]\n\n  [cyan]backstep COMMAND --help[/cyan]',
    help="Backpropagation derived step by step, the way a careful student writes it, verified by PyTorch.",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

SEED_MAX = 2**63 - 1
BUDGET_MAX = 86_400.0  # a day: --simplify-budget, check's --timeout


def examples(*lines: str) -> str:
    """A command's --help epilog: one example a line (typer joins single newlines)."""
    return "[bold]Examples[/bold]\n\n" + "\n\n".join(f"  [cyan]{line}[/cyan]" for line in lines)


def show_version(value: bool) -> None:
    if value:
        from . import __version__

        sys.stdout.write(f"backstep {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=show_version, help="Print backstep's version and exit."),
    ] = False,
) -> None:
    """Backpropagation derived step by step, the way a careful student writes it, verified by PyTorch."""


FORMATS = ("text", "json")


def input_files(file: Path | None, *models_and_values) -> list[Path]:
    """The files a command reads (-f, --torch/--against FILE.py:NAME, --at X=file.npy): never an output."""
    found = [file] if file is not None and str(file) != STDIO else []
    for item in models_and_values:
        for text in item if isinstance(item, list) else [item]:
            if not text:
                continue
            candidate = text.split("=", 1)[1] if "=" in text else text.rsplit(":", 1)[0]
            found.append(Path(candidate.strip()))
    return found


def parse_shapes(items: list[str]) -> dict[str, tuple]:
    from .shapes import parse_shape_text

    shapes = {}
    for name, text in parse_pairs(items, "--shape"):
        try:
            shapes[name] = parse_shape_text(text)
        except ValueError as err:
            raise UsageError(f"--shape {name}={text}: {err}") from None
    return shapes


def joined(items: list[str]) -> Optional[str]:
    """A list option that also takes commas (--wrt W1 --wrt W2, --wrt W1,W2) as one comma list."""
    names = [part.strip() for item in items for part in item.split(",") if part.strip()]
    return ",".join(names) or None


def check_shape_names(shapes: dict, names: list[str]) -> None:
    """--shape for a name that is not a variable is refused, as --assume and --at are."""
    unknown = [name for name in shapes if name not in names]
    if unknown:
        raise UsageError(
            f"--shape names {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} not a variable "
            f"of the formula (its variables: {', '.join(names)})"
        )


FILE_HELP = "Read the formula or program from FILE (- reads stdin)."
OUTPUT_HELP = "Write to FILE instead of stdout (- is stdout); its extension (.json .md .tex .pdf) picks the format."
WRT_HELP = "The variables that need gradients: W1,W2 or --wrt W1 --wrt W2 (default: all)."


COMPACT_HELP = (
    "Drop the pass-through backward steps (a result that is just another adjoint, as through an add) and "
    "show a layer written by hand (X @ W + b; softmax, log and pick; batch or layer norm written out) as "
    "one step per input with its textbook rule; the steps kept are the ones verified."
)
EXPAND_HELP = (
    "Write the final gradients out in the inputs, instead of in terms of the program's named intermediates "
    "and their adjoints (the named form, as a textbook writes them)."
)


@app.command(
    cls=FormulaCommand,
    epilog=examples(
        'backstep derive "relu(x@W1)@W2"',
        'backstep derive "x**2 + 3" --at x=2',
        'backstep derive "-sum(Y * log_softmax(S, axis=-1))" --wrt S',
        "backstep derive -f net.bs -o net.pdf",
        'echo "sin(x)*y" | backstep derive -f - --format json -o -',
    ),
)
def derive(
    expr: Annotated[
        Optional[str], typer.Argument(help='The function, e.g. "relu(x@W1)@W2" or a program with ;')
    ] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help=FILE_HELP)] = None,
    shape: Annotated[
        list[str], typer.Option("--shape", "-s", help="A shape: X=n,d or X=64x1000 or b=5 (repeat for more).")
    ] = [],  # noqa: B006 (typer reads the default)
    wrt: Annotated[list[str], typer.Option(help=WRT_HELP)] = [],  # noqa: B006
    assume: Annotated[
        list[str],
        typer.Option(
            help="Where to draw a variable: x=positive (real, positive, nonnegative, nonzero …); ix=index:V for "
            "integer indices 0 … V−1 (V a dimension name or a number)."
        ),
    ] = [],  # noqa: B006
    at: Annotated[
        list[str],
        typer.Option(help="Numbers for a hand calculation: x=2, v=[1,2,3], X=file.npy; the rest drawn at random."),
    ] = [],  # noqa: B006
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the check against PyTorch autograd.")] = False,
    expand: Annotated[bool, typer.Option("--expand", help=EXPAND_HELP)] = False,
    compact: Annotated[bool, typer.Option("--compact", help=COMPACT_HELP)] = False,
    points: Annotated[int, typer.Option(help="How many random points the verification uses.", min=1, max=100)] = 3,
    seed: Annotated[
        int, typer.Option(help="Random seed for the verification and the drawn --at values.", min=0, max=SEED_MAX)
    ] = 0,
    fmt: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            help="Output format: text, json, md (Markdown), latex, or pdf (needs -o FILE). "
            "Default: from -o FILE's extension, else text.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help=OUTPUT_HELP)] = None,
    standalone: Annotated[
        bool, typer.Option("--standalone", help="With --format latex: a complete document, not a fragment.")
    ] = False,
    notation: Annotated[
        str, typer.Option(help="How adjoints are written: bar (W̄), partial (∂L/∂W) or delta (δ_W).")
    ] = "bar",
    lang: Annotated[str, typer.Option("--lang", help="Language of the prose: en or zh.")] = "en",
    template: Annotated[
        Optional[Path], typer.Option("--template", help="A folder of jinja2 templates that replace the default ones.")
    ] = None,
    max_chars: Annotated[
        int, typer.Option(help="Longest formula accepted, in characters.", min=1, max=100_000_000)
    ] = 100_000,
    max_depth: Annotated[int, typer.Option(help="Deepest nesting accepted.", min=1, max=100_000)] = 500,
    max_nodes: Annotated[
        int, typer.Option(help="Most operations accepted in one formula.", min=1, max=10_000_000)
    ] = 20_000,
    max_exponent: Annotated[
        int, typer.Option(help="Largest constant exponent accepted.", min=0, max=1_000_000)
    ] = 1_000,
    max_elements: Annotated[
        int,
        typer.Option(
            help="Most numbers one array may hold when backstep computes numbers (verification, --at); "
            "the arrays of one point together may hold 12.5 times as many.",
            min=1,
            max=10**12,
        ),
    ] = 10_000_000,
    simplify_budget: Annotated[
        float,
        typer.Option(
            callback=number(0, BUDGET_MAX),
            help="Seconds SymPy may spend simplifying one step or one gradient; past it, the step is shown "
            "as built and says so. 0: no limit; at most 86400.",
        ),
    ] = 5.0,
    torch_model: Annotated[
        Optional[str],
        typer.Option(
            "--torch",
            help="Derive a torch model instead: FILE.py:NAME, an nn.Module (instance or class) or a function of "
            "tensors, traced with torch.fx; give its inputs' shapes with --shape. This imports and runs FILE.py as "
            "Python code, with your rights: use it only on files you trust.",
        ),
    ] = None,
) -> None:
    """Derive the backpropagation of a function: forward pass, every backward step, the gradients."""
    from .render import FORMAT_MODULES

    source = traced = None
    derive_inputs = input_files(file, torch_model, at)  # an -o that names one of these is refused
    wrt_names = joined(wrt)
    try:
        fmt, output = output_format(fmt, output, tuple(FORMAT_MODULES))
        document = check_document_options(fmt, output, standalone, notation, lang)
        if output is not None:
            check_output_path(output, derive_inputs)  # before the work, not after it
        shapes = parse_shapes(shape)
        if torch_model is not None:
            from .trace import trace_from_cli

            traced = trace_from_cli(torch_model, expr, file, shapes)
            source, shapes, wrt_names = traced.source, {}, wrt_names or ",".join(traced.wrt)
        else:
            source = read_program(expr, file, max_chars, 'backstep derive "relu(x@W1)@W2"')
        limits = derive_limits(max_chars, max_depth, max_nodes, max_exponent, simplify_budget, max_elements)
        derivation = derive_numbers_and_verify(
            source, shapes, wrt_names, assume, at, limits, None if no_verify else points, seed, (expand, compact)
        )
        if traced is not None:
            traced.decorate(derivation)
    except BackstepError as err:
        fail(err, source)
    except RecursionError:
        fail(UsageError("the formula is nested too deeply to derive (lower its depth, or name intermediates)"))
    choices = document.chosen(notation=notation, lang=lang, template_dir=template, standalone=standalone)
    write_derivation(derivation, document, output, choices, derive_inputs)
    if derivation.verification is not None and not derivation.verification.ok:
        failure = derivation.verification.first_failure
        where = f": {failure.kind} of {failure.name}" if failure else ""
        stderr.print(f"[bold red]verification failed{where}[/] — this is a bug in backstep; please report it")
        raise typer.Exit(1)


def derive_limits(max_chars, max_depth, max_nodes, max_exponent, simplify_seconds, max_elements):
    """The limits of --max-* and --simplify-budget."""
    from .parser import Limits

    return Limits(
        max_chars=max_chars,
        max_depth=max_depth,
        max_nodes=max_nodes,
        max_exponent=max_exponent,
        simplify_seconds=simplify_seconds,
        max_elements=max_elements,
    )


def derive_numbers_and_verify(source, shapes, wrt_names, assume, at, limits, points, seed, shown=(False, False)):
    """The derivation, its --at numbers, and (unless `points` is None) its check against torch; `shown`:
    (--expand, --compact)."""
    from .derive import derive as run_derive
    from .parser import deep_recursion

    values = None
    if at:
        from .numeric import parse_at_value

        values = {name: parse_at_value(name, text, limits.max_elements) for name, text in parse_pairs(at, "--at")}
    # The --at arrays fix their variables' shapes (so derive parses with them) and give the numbers.
    derivation = run_derive(
        source,
        shapes=shapes,
        wrt=wrt_names,
        assume=dict(parse_pairs(assume, "--assume")),
        limits=limits,
        at=values,
        seed=seed,
        verify=False,
        expand=shown[0],
        compact=shown[1],
    )
    check_shape_names(shapes, [v.name for v in derivation.variables])
    with deep_recursion():  # as backstep.derive does: the numbers, then the check against torch
        if points is not None:
            derivation.verify(points=points, seed=seed, max_elements=limits.max_elements)
    return derivation


def write_derivation(derivation, document, output: Optional[Path], choices: dict, inputs: list[Path]) -> None:
    """The derivation in its format: a terminal's view, a file the format writes itself, or text on
    stdout or in -o FILE. A BackstepError on the way (a template's, LaTeX's) ends the command."""
    from .parser import deep_recursion

    if output is None and document.show is not None:
        with deep_recursion():
            print_rich([document.show(derivation, **choices)], 140)
        return
    try:
        with deep_recursion():
            if document.write is not None:
                document.write(derivation, output, inputs=inputs, **choices)
                return
            text = document.render(derivation, **choices)
    except BackstepError as err:
        fail(err)
    if output is not None:
        try:
            write_output(output, text, inputs=inputs)
        except BackstepError as err:
            fail(err)
    else:
        sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))


def check_document_options(fmt: str, output: Path | None, standalone: bool, notation: str, lang: str):
    """The format --format names (a ``render.Format``), once the choices that go with it are
    checked: before any work."""
    from .render import FORMAT_MODULES, format_of
    from .render.common import NOTATIONS
    from .render.i18n import LANGS

    if fmt not in FORMAT_MODULES:
        raise UsageError(f"--format {fmt}: choose one of {', '.join(FORMAT_MODULES)}")
    document = format_of(fmt)
    if document.write is not None and output is None:
        raise UsageError(f"--format {fmt} writes a file: add -o FILE.{fmt}")
    if document.preflight is not None and lang in LANGS:
        document.preflight(lang)
    if standalone and "standalone" not in document.choices:
        raise UsageError("--standalone goes with --format latex (a PDF is always a complete document)")
    if notation not in NOTATIONS:
        raise UsageError(f"--notation {notation}: choose one of {', '.join(NOTATIONS)}")
    if lang not in LANGS:
        raise UsageError(f"--lang {lang}: choose one of {', '.join(LANGS)}")
    return document


@app.command(
    epilog=examples(
        "backstep sheet week3.toml",
        "backstep sheet week3.toml -o handouts/ --lang zh",
        "backstep sheet week3.toml --format latex -o tex/",
    )
)
def sheet(
    problems: Annotated[Path, typer.Argument(help="The problem file (TOML): a title and a table per problem.")],
    output_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--output-dir", "-o", help="The folder to write the two sheets into (default: beside the problem file)."
        ),
    ] = None,
    old_output_dir: Annotated[
        Optional[Path], typer.Option("-d", hidden=True, help="Deprecated: the old spelling of -o/--output-dir.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="pdf, or latex for the .tex sources.")] = "pdf",
    date: Annotated[
        Optional[str], typer.Option(help="The date printed on the sheets (default: the file's date, else today).")
    ] = None,
    notation: Annotated[
        str, typer.Option(help="How adjoints are written: bar (W̄), partial (∂L/∂W) or delta (δ_W).")
    ] = "bar",
    lang: Annotated[str, typer.Option("--lang", help="Language of the sheets: en or zh.")] = "en",
    template: Annotated[
        Optional[Path],
        typer.Option("--template", help="A folder of jinja2 templates (exercises.tex.j2, ...) replacing the defaults."),
    ] = None,
    points: Annotated[int, typer.Option(help="How many random points the verification uses.", min=1, max=100)] = 3,
    seed: Annotated[int, typer.Option(help="Random seed for the verification.", min=0, max=SEED_MAX)] = 0,
) -> None:
    """Write an exercise sheet and a solution sheet (PDF) from a problem file."""
    try:
        if old_output_dir is not None:
            if output_dir is not None:
                raise UsageError("-d is the old spelling of -o/--output-dir: give one of them")
            stderr.print("backstep sheet: -d is deprecated, write -o/--output-dir", markup=False)
            output_dir = old_output_dir
        if output_dir is not None and str(output_dir) == STDIO:
            raise UsageError("-o names the folder for the two sheets: a sheet cannot go to stdout (-)")
        if fmt not in ("pdf", "latex"):
            raise UsageError(f"--format {fmt}: a sheet is pdf or latex")
        check_document_options("latex", None, False, notation, lang)
        from .sheet import write_sheets

        written, derivations = write_sheets(
            problems,
            output_dir,
            fmt=fmt,
            lang=lang,
            notation=notation,
            template_dir=template,
            date=date,
            points=points,
            seed=seed,
        )
    except BackstepError as err:
        fail(err)
    for path in written:
        sys.stdout.write(f"{path}\n")
    failed = [i for i, d in enumerate(derivations, 1) if d.verification is not None and not d.verification.ok]
    if failed:
        stderr.print(
            f"[bold red]verification failed for problem {', '.join(map(str, failed))}[/] — "
            "this is a bug in backstep; please report it"
        )
        raise typer.Exit(1)


@app.command(epilog=examples("backstep ops", "backstep ops --format md -o docs/ops.md"))
def ops(
    fmt: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            help="text, or md (the docs/ops.md page). Default: from -o's extension, else text.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help=OUTPUT_HELP)] = None,
) -> None:
    """List every operation backstep knows, with its meaning and backward rules."""
    from rich.table import Table
    from rich.text import Text

    from .catalog import entries, markdown

    try:
        fmt, output = output_format(fmt, output, ("text", "md"))
        if fmt not in ("text", "md"):
            raise UsageError(f"--format {fmt}: choose text or md")
        if output is not None:
            check_output_path(output)
    except BackstepError as err:
        fail(err)
    table = Table(box=None, pad_edge=False, show_lines=False)
    table.add_column("spelling", style="bold")
    table.add_column("meaning")
    table.add_column("backward", style="cyan")
    table.add_column("torch", style="magenta")
    for e in entries():
        table.add_row(
            Text(e.spelling), Text(e.summary), Text("\n".join(e.rules_text) or "no gradient"), Text(e.grad_fn)
        )
    if output is None and fmt == "text":
        print_rich([table], 200)
        return
    if fmt == "md":
        text = markdown()
    else:
        import io

        buffer = io.StringIO()
        Console(emoji=False, highlight=False, width=200, file=buffer, color_system=None).print(table)
        text = "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())
    if output is None:
        sys.stdout.write(text)
        return
    try:
        write_output(output, text)
    except BackstepError as err:
        fail(err)


@app.command(
    cls=FormulaCommand,
    epilog=examples(
        'backstep check "sin(x**2)*exp(y)" --wrt x --claim "2*x*cos(x**2)*exp(y)"',
        "backstep check -f mlp.bs -d bob.txt",
        "backstep check --batch claims.jsonl -o verdicts.jsonl",
        "backstep check --grade submissions/ --key key.toml -o grades.csv",
    ),
)
def check(
    expr: Annotated[Optional[str], typer.Argument(help='The function, e.g. "sin(x**2)*exp(y)".')] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help=FILE_HELP)] = None,
    wrt: Annotated[list[str], typer.Option(help="The variable (or named intermediate) the claim is about.")] = [],  # noqa: B006
    claim: Annotated[Optional[str], typer.Option(help='The claimed gradient, e.g. "2*x*cos(x**2)*exp(y)".')] = None,
    derivation: Annotated[
        Optional[Path],
        typer.Option("--derivation", "-d", help="A derivation file: one `name = expression` a line (- reads stdin)."),
    ] = None,
    batch: Annotated[
        Optional[Path], typer.Option(help="Check every claim of a JSONL file (- for stdin); one JSON line each.")
    ] = None,
    grade: Annotated[
        Optional[Path], typer.Option(help="Grade a folder of submissions against --key (a table and a CSV).")
    ] = None,
    key: Annotated[
        Optional[Path], typer.Option(help="The key for --grade: a TOML file of problem tables (function, wrt).")
    ] = None,
    shape: Annotated[
        list[str], typer.Option("--shape", "-s", help="A shape: X=n,d or X=64x1000 or b=5 (repeat for more).")
    ] = [],  # noqa: B006
    assume: Annotated[list[str], typer.Option(help="Where to draw a variable: x=positive, ix=index:V.")] = [],  # noqa: B006
    points: Annotated[int, typer.Option(help="Random points at the first set of sizes.", min=1, max=100)] = 3,
    seed: Annotated[int, typer.Option(help="Random seed of the points.", min=0, max=SEED_MAX)] = 0,
    timeout: Annotated[
        float,
        typer.Option(
            "--simplify-budget",
            "--timeout",
            callback=number(0, BUDGET_MAX),
            help="Seconds SymPy may spend proving one claim (at most 86400).",
        ),
    ] = 2.0,
    jobs: Annotated[
        Optional[int], typer.Option(help="Processes for --grade (default: every core).", min=1, max=1024)
    ] = None,
    student_timeout: Annotated[
        float,
        typer.Option(
            "--student-timeout",
            callback=number(0, BUDGET_MAX),
            help="--grade: seconds for one student's derivation of one problem (0: no limit).",
        ),
    ] = 120.0,
    max_elements: Annotated[
        int,
        typer.Option(
            "--max-elements", help="The most numbers one array may have at the sizes a claim is checked at.", min=1
        ),
    ] = 10**7,
    fmt: Annotated[
        Optional[str],
        typer.Option(
            "--format", help="Output format: text or json. Default: from -o's extension, else text.", show_default=False
        ),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help="Write to FILE (- is stdout; .json means --format json; --grade: the CSV, default grades.csv).",
        ),
    ] = None,
) -> None:
    """Check a hand-derived gradient: right (exit 0) or wrong (exit 1), with the likely mistake.

    One claim (--wrt, --claim), a derivation file (--derivation), a batch (--batch), or a class (--grade).
    """
    from .check.run import run_check_command

    source = None
    try:
        if grade is not None and output is not None and str(output) == STDIO:
            raise UsageError("--grade writes its table as a CSV file: -o FILE.csv, not -o - (--format json prints it)")
        if grade is not None or batch is not None:  # -o is the CSV, or JSON lines
            fmt, output = fmt or "text", output if grade is not None else stdout_or_file(output)
        else:
            fmt, output = output_format(fmt, output, FORMATS)
        if fmt not in FORMATS:
            raise UsageError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
        given = (("-f", file), ("--derivation", derivation), ("--batch", batch))
        readers = [name for name, path in given if path is not None and str(path) == STDIO]
        if len(readers) > 1:
            raise UsageError(f"{' and '.join(readers)} both read stdin (-): give one of them a file")
        if grade is None and batch is None:
            if expr is None and file is None:
                raise UsageError('give a formula, e.g. backstep check "sin(x**2)*exp(y)" --wrt x --claim "..."')
            source = read_program(expr, file)
        code = run_check_command(
            source=source,
            wrt=joined(wrt),
            claim=claim,
            derivation=derivation,
            batch=batch,
            grade=grade,
            key=key,
            shapes=parse_shapes(shape),
            assume=dict(parse_pairs(assume, "--assume")),
            points=points,
            seed=seed,
            budget=timeout,
            jobs=jobs,
            student_timeout=student_timeout,
            max_elements=max_elements,
            fmt=fmt,
            output=output,
            source_file=file if file is not None and str(file) != STDIO else None,
        )
    except BackstepError as err:
        if fmt == "json" and grade is None and batch is None:
            import json

            sys.stdout.write(json.dumps({"verdict": "error", "reason": err.render().splitlines()[0]}) + "\n")
        fail(err, source)
    except RecursionError:
        fail(UsageError("the formula or the claim is nested too deeply"))
    raise typer.Exit(code)


@app.command(
    cls=FormulaCommand,
    epilog=examples(
        'backstep codegen "X @ W.T + b" -o linear.py --check',
        'backstep codegen "-sum(log(sigmoid(x @ w)))" --wrt w -o - | less',
        'backstep codegen "X @ W.T + b" --against mine.py:MyLinear',
    ),
)
def codegen(
    expr: Annotated[Optional[str], typer.Argument(help='The function, e.g. "X @ W.T + b".')] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help=FILE_HELP)] = None,
    torch_model: Annotated[
        Optional[str],
        typer.Option(
            "--torch",
            help="A torch model FILE.py:NAME instead of a formula (imports and runs FILE.py: only files you trust).",
        ),
    ] = None,
    shape: Annotated[
        list[str], typer.Option("--shape", "-s", help="A shape: X=n,d or X=64x1000 or b=5 (repeat for more).")
    ] = [],  # noqa: B006
    wrt: Annotated[
        list[str], typer.Option(help="The inputs that get gradients: W,b or --wrt W --wrt b (others get None).")
    ] = [],  # noqa: B006
    assume: Annotated[list[str], typer.Option(help="Where gradcheck draws a variable: x=positive, ix=index:V.")] = [],  # noqa: B006
    name: Annotated[
        Optional[str], typer.Option("--name", help="The class name (default: from -o FILE, else DerivedFunction).")
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write the module to FILE.py (- is stdout).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Run the module's gradcheck in float64; exit 1 if it fails.")
    ] = False,
    against: Annotated[
        Optional[str],
        typer.Option(
            "--against",
            help="Compare your own autograd.Function FILE.py:NAME (same inputs, same order) with the derived one; "
            "exit 1 where a gradient differs (imports and runs FILE.py: only files you trust).",
        ),
    ] = None,
    points: Annotated[int, typer.Option(help="Random points for --against.", min=1, max=100)] = 3,
    seed: Annotated[int, typer.Option(help="Random seed for --against.", min=0, max=SEED_MAX)] = 0,
    style: Annotated[
        str,
        typer.Option(
            "--style",
            help="ctx: forward(ctx, ...); setup_context: forward(...) and setup_context(ctx, inputs, output), "
            "the form torch.func (grad, vmap) takes.",
        ),
    ] = "ctx",
    module: Annotated[
        bool, typer.Option("--module", help="Also write an nn.Module NAMEModule whose forward applies the Function.")
    ] = False,
) -> None:
    """Write the derivation as a torch.autograd.Function: the backward is the derived formula, with a gradcheck."""
    from . import codegen as cg

    source = None
    to_stdout = output is not None and str(output) == STDIO
    output = stdout_or_file(output)
    wrt_names = joined(wrt)
    try:
        shapes = parse_shapes(shape)
        if torch_model is not None:
            from .trace import trace_from_cli

            traced = trace_from_cli(torch_model, expr, file, shapes)
            source, shapes, wrt_list = traced.source, {}, wrt_names or ",".join(traced.wrt)
        else:
            source, wrt_list = read_program(expr, file, example='backstep codegen "X @ W.T + b"'), wrt_names
        from .derive import derive as run_derive

        derivation = run_derive(
            source, shapes=shapes, wrt=wrt_list, assume=dict(parse_pairs(assume, "--assume")), verify=False
        )
        if torch_model is None:
            check_shape_names(shapes, [v.name for v in derivation.variables])
        class_name = name or cg.class_name_for(output)
        command = cg.regenerate_command(
            expr, file, torch_model, shape, wrt_names, assume, name, output, style=style, module=module
        )
        generated = cg.generate(derivation, class_name, command=command, style=style, module=module)
        if output is not None:
            write_output(output, generated.code, inputs=input_files(file, torch_model, [], against))
        elif against is None or to_stdout:
            sys.stdout.write(generated.code)
        module = cg.load_generated(generated.code) if (check or against) else None
        user = cg.load_user_object(against, "--against")[0] if against else None
    except BackstepError as err:
        fail(err, source)
    code = 0
    if check:
        passed, message = cg.run_gradcheck(module)
        stderr.print(cg.check_text(generated, passed, message), markup=False)
        code = 0 if passed else 1
    if against:
        try:
            report = cg.compare_against(
                derivation, getattr(module, class_name), user, against, points=points, seed=seed
            )
        except BackstepError as err:
            fail(err)
        shown = (
            f"the derived backward, step by step, is in {output}"
            if output is not None
            else "-o FILE.py writes the derived backward, step by step"
        )
        sys.stdout.write(cg.comparison_text(derivation, report, shown) + "\n")
        code = code or (0 if report.ok else 1)
    raise typer.Exit(code)


app.command(
    "train",
    cls=FormulaCommand,
    epilog=examples(
        'backstep train "(x*w - y)**2" --data x=1,2,3 --data y=2,4,6 --init w=1 --lr 0.05 --epochs 20',
        'backstep train "(x*w - y)**2" --data x=data.csv:a --data y=data.csv:y --init w=1 --full-batch',
        'backstep train "(x*w + b - y)**2" --data x=1,2,3 --data y=3,5,7 --init w=0 --init b=0 -o run.md',
    ),
)(train_command)


def main() -> None:
    """The `backstep` program: the app, with Ctrl-C, a closed pipe and a full disk handled (no traceback)."""
    import errno

    from .cli_io import finish, setup_streams

    setup_streams()
    try:
        app(prog_name="backstep")
        code = 0
    except SystemExit as exit_:
        code = exit_.code
        cause = exit_.__context__
        if isinstance(cause, OSError) and cause.errno == errno.EPIPE:
            code = 141  # click's own handler of a closed pipe exits 1: 1 means "a mismatch" here
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 141
    except OSError as err:
        sys.stderr.write(f"backstep: cannot write the output: {err.strerror or err}\n")
        code = 2
    if code == 130:
        sys.stderr.write("backstep: interrupted\n")
    code = finish(code)
    if code == 141:
        code = finish(code)  # nothing more to write: stdout now points at /dev/null
    sys.exit(code)
