"""The command line: `backstep derive`, `backstep ops`.

Bad input of any kind is a BackstepError: it is printed as one clear message with its place
(and a caret under it) on stderr, with exit code 2 and no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .errors import BackstepError, UsageError

app = typer.Typer(
    name="backstep",
    help="Backpropagation derived step by step, the way a careful student writes it, verified by PyTorch.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

FORMATS = ("text", "json")


def fail(err: BackstepError, source: str | None = None) -> None:
    """Print a clean error and exit 2: the one way bad input leaves the CLI."""
    if source is not None:
        err.with_source(source)
    stderr.print(err.render(), markup=False)
    raise typer.Exit(2)


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
    seed: Annotated[int, typer.Option(help="Random seed for the verification and the drawn --at values.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="Output format: text or json.")] = "text",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
    max_chars: Annotated[int, typer.Option(help="Longest formula accepted, in characters.")] = 100_000,
    max_depth: Annotated[int, typer.Option(help="Deepest nesting accepted.")] = 500,
    max_nodes: Annotated[int, typer.Option(help="Most operations accepted in one formula.")] = 20_000,
    max_exponent: Annotated[int, typer.Option(help="Largest constant exponent accepted.")] = 1_000,
) -> None:
    """Derive the backpropagation of a function: forward pass, every backward step, the gradients."""
    source = None
    try:
        if fmt not in FORMATS:
            raise UsageError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
        source = read_source(expr, file)
        from .derive import derive as run_derive
        from .parser import Limits

        limits = Limits(max_chars=max_chars, max_depth=max_depth, max_nodes=max_nodes, max_exponent=max_exponent)
        values = None
        if at:
            from .numeric import parse_at_value

            values = {name: parse_at_value(name, text) for name, text in parse_pairs(at, "--at")}
        derivation = run_derive(
            source,
            shapes=parse_shapes(shape),
            wrt=wrt,
            assume=dict(parse_pairs(assume, "--assume")),
            limits=limits,
            verify=not no_verify,
            points=points,
            seed=seed,
            at=values,
        )
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
            console.print(build(derivation))
    else:
        with deep_recursion():
            text = render(derivation, fmt)
        if output is not None:
            output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    if derivation.verification is not None and not derivation.verification.ok:
        failure = derivation.verification.first_failure
        where = f": {failure.kind} of {failure.name}" if failure else ""
        stderr.print(f"[bold red]verification failed{where}[/] — this is a bug in backstep; please report it")
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


def main() -> None:
    app()
