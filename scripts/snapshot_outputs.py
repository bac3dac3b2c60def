"""Write every example's derivation in every text format to a folder, to diff before and after a change.

    python scripts/snapshot_outputs.py /tmp/before      # on the old code
    python scripts/snapshot_outputs.py /tmp/after       # on the new code
    diff -r /tmp/before /tmp/after

The examples are those of examples/README.md (with their flags) and every op's example program
from the op table; the formats are the terminal text, JSON, Markdown and LaTeX (fragment and
standalone). Runs in one process through the CLI, so that the outputs are exactly the CLI's.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from typer.testing import CliRunner

from backstep.cli import app

ROOT = Path(__file__).resolve().parents[1]
FORMATS = {"txt": ["--format", "text"], "json": ["--format", "json"], "md": ["--format", "md"]}
FORMATS |= {"tex": ["--format", "latex"], "standalone.tex": ["--format", "latex", "--standalone"]}


def example_commands() -> dict[str, list[str]]:
    commands = {}
    for line in (ROOT / "examples" / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("backstep derive "):
            argv = [str(ROOT / a) if a.startswith("examples/") else a for a in shlex.split(line)[1:]]
            commands["example-" + Path(argv[argv.index("-f") + 1]).stem] = argv
    return commands


def op_commands() -> dict[str, list[str]]:
    from backstep.ops import OPS

    return {f"op-{name}": ["derive", op.example] for name, op in sorted(OPS.items()) if op.example}


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    runner = CliRunner()
    commands = example_commands() | op_commands()
    for name, argv in commands.items():
        for suffix, flags in FORMATS.items():
            result = runner.invoke(app, [*argv, *flags])
            (out / f"{name}.{suffix}").write_text(f"exit {result.exit_code}\n{result.output}", encoding="utf-8")
    print(f"{len(commands)} programs x {len(FORMATS)} formats written to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "snapshot")
