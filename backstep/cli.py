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

from .errors import BackstepError, UsageError
from .train_command import train_command
from .userfiles import check_output_path, write_output

app = typer.Typer(
    name="backstep",
    help="Backpropagation derived step by step, the way a careful student writes it, verified by PyTorch.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

FORMATS = ("text", "json")
DERIVE_FORMATS = ("text", "json", "md", "latex", "pdf")


def fail(err: BackstepError, source: str | None = None) -> None:
    """Print a clean error and exit 2: the one way bad input leaves the CLI."""
    if source is not None:
        err.with_source(source)
    stderr.print(err.render(), markup=False)
    raise typer.Exit(2)


def input_files(file: Path | None, *models_and_values) -> list[Path]:
    """The files a command reads (-f, --torch/--against FILE.py:NAME, --at X=file.npy): never an output."""
    found = [file] if file is not None else []
    for item in models_and_values:
        for text in item if isinstance(item, list) else [item]:
            if not text:
                continue
            candidate = text.split("=", 1)[1] if "=" in text else text.rsplit(":", 1)[0]
            found.append(Path(candidate.strip()))
    return found


def parse_pairs(items: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        for part in [item] if option == "--at" else item.split(";"):
            if "=" not in part:
                raise UsageError(f"{option} {part}: write NAME=VALUE")
            name, value = part.split("=", 1)
            name = name.strip()
            if not name.isidentifier():
                raise UsageError(f"{option} {part}: {name!r} is not a variable name")
            pairs.append((name, value.strip()))
    return pairs


def parse_shapes(items: list[str]) -> dict[str, tuple]:
    from .shapes import parse_shape_text

    shapes = {}
    for name, text in parse_pairs(items, "--shape"):
        try:
            shapes[name] = parse_shape_text(text)
        except ValueError as err:
            raise UsageError(f"--shape {name}={text}: {err}") from None
    return shapes


def read_source(expr: str | None, file: Path | None) -> str:
    if expr is not None and file is not None:
        raise UsageError("give the formula as an argument or with -f FILE, not both")
    if file is not None:
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"cannot read {file}: {err}") from None
    if expr is None:
        raise UsageError('give a formula, e.g. backstep derive "relu(x@W1)@W2", or -f FILE')
    return expr


@app.command()
def derive(
    expr: Annotated[
        Optional[str], typer.Argument(help='The function, e.g. "relu(x@W1)@W2" or a program with ;')
    ] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the formula or program from FILE.")] = None,
    shape: Annotated[
        list[str], typer.Option("--shape", "-s", help="A shape: X=n,d or X=64x1000 or b=5 (repeat for more).")
    ] = [],  # noqa: B006 (typer reads the default)
    wrt: Annotated[Optional[str], typer.Option(help="The variables that need gradients: W1,W2 (default: all).")] = None,
    assume: Annotated[
        list[str], typer.Option(help="Where to draw a variable: x=positive (real, positive, nonnegative, nonzero).")
    ] = [],  # noqa: B006
    at: Annotated[
        list[str],
        typer.Option(help="Numbers for a hand calculation: x=2, v=[1,2,3], X=file.npy; the rest drawn at random."),
    ] = [],  # noqa: B006
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the check against PyTorch autograd.")] = False,
    points: Annotated[int, typer.Option(help="How many random points the verification uses.", min=1, max=100)] = 3,
    seed: Annotated[
        int, typer.Option(help="Random seed for the verification and the drawn --at values.", min=0, max=2**63 - 1)
    ] = 0,
    fmt: Annotated[
        str, typer.Option("--format", help="Output format: text, json, md (Markdown), latex, or pdf (needs -o FILE).")
    ] = "text",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
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
    max_chars: Annotated[int, typer.Option(help="Longest formula accepted, in characters.")] = 100_000,
    max_depth: Annotated[int, typer.Option(help="Deepest nesting accepted.")] = 500,
    max_nodes: Annotated[int, typer.Option(help="Most operations accepted in one formula.")] = 20_000,
    max_exponent: Annotated[int, typer.Option(help="Largest constant exponent accepted.")] = 1_000,
    simplify_budget: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds SymPy may spend simplifying one step or one gradient; past it, the step is shown "
            "as built and says so. 0: no limit.",
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
    source = None
    traced = None
    derive_inputs = input_files(file, torch_model, at)  # an -o that names one of these is refused
    try:
        check_document_options(fmt, output, standalone, notation, lang)
        if output is not None:
            check_output_path(output, derive_inputs)  # before the work, not after it
        shapes = parse_shapes(shape)
        if torch_model is not None:
            from .trace import trace_from_cli

            traced = trace_from_cli(torch_model, expr, file, shapes)
            source, shapes, wrt = traced.source, {}, wrt or ",".join(traced.wrt)
        else:
            source = read_source(expr, file)
        from .derive import derive as run_derive
        from .parser import Limits

        limits = Limits(
            max_chars=max_chars,
            max_depth=max_depth,
            max_nodes=max_nodes,
            max_exponent=max_exponent,
            simplify_seconds=simplify_budget,
        )
        values = None
        if at:
            from .numeric import parse_at_value

            values = {name: parse_at_value(name, text) for name, text in parse_pairs(at, "--at")}
        derivation = run_derive(
            source,
            shapes=shapes,
            wrt=wrt,
            assume=dict(parse_pairs(assume, "--assume")),
            limits=limits,
            verify=not no_verify,
            points=points,
            seed=seed,
            at=values,
        )
        if traced is not None:
            traced.decorate(derivation)
    except BackstepError as err:
        fail(err, source)
    except RecursionError:
        fail(UsageError("the formula is nested too deeply to derive (lower its depth, or name intermediates)"))
    from .parser import deep_recursion
    from .render import render

    if fmt == "text" and output is None:
        from .render.terminal import build

        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=140)
        with deep_recursion():
            console.print(build(derivation, notation=notation, lang=lang))
    elif fmt == "pdf":
        from .render.pdf import write_pdf

        try:
            check_output_path(output, derive_inputs)
            with deep_recursion():
                write_pdf(derivation, output, notation=notation, lang=lang, template_dir=template, inputs=derive_inputs)
        except BackstepError as err:
            fail(err)
    else:
        options = {} if fmt == "json" else {"notation": notation, "lang": lang}
        if fmt in ("md", "latex"):
            options["template_dir"] = template
        if fmt == "latex":
            options["standalone"] = standalone
        try:
            with deep_recursion():
                text = render(derivation, fmt, **options)
        except BackstepError as err:
            fail(err)
        if output is not None:
            try:
                write_output(output, text, inputs=derive_inputs)
            except BackstepError as err:
                fail(err)
        else:
            sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    if derivation.verification is not None and not derivation.verification.ok:
        failure = derivation.verification.first_failure
        where = f": {failure.kind} of {failure.name}" if failure else ""
        stderr.print(f"[bold red]verification failed{where}[/] — this is a bug in backstep; please report it")
        raise typer.Exit(1)


def check_document_options(fmt: str, output: Path | None, standalone: bool, notation: str, lang: str) -> None:
    from .render.common import NOTATIONS
    from .render.i18n import LANGS

    if fmt not in DERIVE_FORMATS:
        raise UsageError(f"--format {fmt}: choose one of {', '.join(DERIVE_FORMATS)}")
    if fmt == "pdf" and output is None:
        raise UsageError("--format pdf writes a file: add -o FILE.pdf")
    if fmt == "pdf" and lang in LANGS:
        from .render.pdf import PdfError, missing_engine

        problem = missing_engine(lang)
        if problem:
            raise PdfError(problem)
    if standalone and fmt != "latex":
        raise UsageError("--standalone goes with --format latex (a PDF is always a complete document)")
    if notation not in NOTATIONS:
        raise UsageError(f"--notation {notation}: choose one of {', '.join(NOTATIONS)}")
    if lang not in LANGS:
        raise UsageError(f"--lang {lang}: choose one of {', '.join(LANGS)}")


@app.command()
def sheet(
    problems: Annotated[Path, typer.Argument(help="The problem file (TOML): a title and a table per problem.")],
    output_dir: Annotated[
        Optional[Path],
        typer.Option("--output-dir", "-d", help="Where to write the two sheets (default: beside the problem file)."),
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
    seed: Annotated[int, typer.Option(help="Random seed for the verification.")] = 0,
) -> None:
    """Write an exercise sheet and a solution sheet (PDF) from a problem file."""
    try:
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


@app.command()
def ops(
    fmt: Annotated[str, typer.Option("--format", help="text, or md (the docs/ops.md page).")] = "text",
) -> None:
    """List every operation backstep knows, with its meaning and backward rules."""
    from rich.table import Table
    from rich.text import Text

    from .catalog import entries, markdown

    if fmt == "md":
        sys.stdout.write(markdown())
        return
    if fmt != "text":
        fail(UsageError(f"--format {fmt}: choose text or md"))
    table = Table(box=None, pad_edge=False, show_lines=False)
    table.add_column("spelling", style="bold")
    table.add_column("meaning")
    table.add_column("backward", style="cyan")
    table.add_column("torch", style="magenta")
    for e in entries():
        table.add_row(
            Text(e.spelling), Text(e.summary), Text("\n".join(e.rules_text) or "no gradient"), Text(e.grad_fn)
        )
    Console(highlight=False, width=None if sys.stdout.isatty() else 200).print(table)


@app.command()
def check(
    expr: Annotated[Optional[str], typer.Argument(help='The function, e.g. "sin(x**2)*exp(y)".')] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the formula or program from FILE.")] = None,
    wrt: Annotated[Optional[str], typer.Option(help="The variable (or named intermediate) the claim is about.")] = None,
    claim: Annotated[Optional[str], typer.Option(help='The claimed gradient, e.g. "2*x*cos(x**2)*exp(y)".')] = None,
    derivation: Annotated[
        Optional[Path], typer.Option("--derivation", "-d", help="A derivation file: one `name = expression` a line.")
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
    assume: Annotated[list[str], typer.Option(help="Where to draw a variable: x=positive.")] = [],  # noqa: B006
    points: Annotated[int, typer.Option(help="Random points at the first set of sizes.", min=1, max=100)] = 3,
    seed: Annotated[int, typer.Option(help="Random seed of the points.", min=0, max=2**63 - 1)] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds SymPy may spend proving one claim.", min=0.0)] = 2.0,
    jobs: Annotated[Optional[int], typer.Option(help="Processes for --grade (default: every core).", min=1)] = None,
    fmt: Annotated[str, typer.Option("--format", help="Output format: text or json.")] = "text",
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write to FILE (--grade: the CSV, default grades.csv).")
    ] = None,
) -> None:
    """Check a hand-derived gradient: right (exit 0) or wrong (exit 1), with the likely mistake.

    One claim (--wrt, --claim), a derivation file (--derivation), a batch (--batch), or a class (--grade).
    """
    from .check_run import run_check_command

    source = None
    try:
        if fmt not in FORMATS:
            raise UsageError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
        if grade is None and batch is None:
            if expr is None and file is None:
                raise UsageError('give a formula, e.g. backstep check "sin(x**2)*exp(y)" --wrt x --claim "..."')
            source = read_source(expr, file)
        code = run_check_command(
            source=source,
            wrt=wrt,
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
            fmt=fmt,
            output=output,
            source_file=file,
        )
    except BackstepError as err:
        if fmt == "json" and grade is None and batch is None:
            import json

            sys.stdout.write(json.dumps({"verdict": "error", "reason": err.render().splitlines()[0]}) + "\n")
        fail(err, source)
    except RecursionError:
        fail(UsageError("the formula or the claim is nested too deeply"))
    raise typer.Exit(code)


@app.command()
def codegen(
    expr: Annotated[Optional[str], typer.Argument(help='The function, e.g. "X @ W.T + b".')] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the formula or program from FILE.")] = None,
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
    wrt: Annotated[Optional[str], typer.Option(help="The inputs that get gradients: W,b (others get None).")] = None,
    assume: Annotated[list[str], typer.Option(help="Where gradcheck draws a variable: x=positive.")] = [],  # noqa: B006
    name: Annotated[
        Optional[str], typer.Option("--name", help="The class name (default: from -o FILE, else DerivedFunction).")
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the module to FILE.py.")] = None,
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
    seed: Annotated[int, typer.Option(help="Random seed for --against.", min=0, max=2**63 - 1)] = 0,
) -> None:
    """Write the derivation as a torch.autograd.Function: the backward is the derived formula, with a gradcheck."""
    from . import codegen as cg

    source = None
    try:
        shapes = parse_shapes(shape)
        if torch_model is not None:
            from .trace import trace_from_cli

            traced = trace_from_cli(torch_model, expr, file, shapes)
            source, shapes, wrt_list = traced.source, {}, wrt or ",".join(traced.wrt)
        else:
            source, wrt_list = read_source(expr, file), wrt
        from .derive import derive as run_derive

        derivation = run_derive(source, shapes=shapes, wrt=wrt_list, assume=dict(parse_pairs(assume, "--assume")))
        class_name = name or cg.class_name_for(output)
        command = cg.regenerate_command(expr, file, torch_model, shape, wrt, assume, name, output)
        generated = cg.generate(derivation, class_name, command=command)
        if output is not None:
            write_output(output, generated.code, inputs=input_files(file, torch_model, [], against))
        elif against is None:
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


app.command("train")(train_command)


def main() -> None:
    app()
