"""Throughput of `backstep check --batch`: claims per second, measured.

    python benchmarks/check_throughput.py [--claims 300] [--cli]

Writes a JSONL file of claims about a handful of formulas — right claims written in several ways
and wrong ones of every mistake kind backstep diagnoses — then checks them all in one process
(`run_batch`, what `--batch` runs) and prints claims per second: by the wall clock, and per CPU
second (which a busy machine does not distort); overall, and for right and wrong claims apart.
With --cli it also times the real command, start-up included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MLP = "relu(x@W1)@W2"
LSQ = "sum((X@W - Y)**2)"
LIN = "x@W + b"
QUAD = "x@A@x"
SCALAR = "sin(x**2)*exp(y)"

CLAIMS = [
    # (expr, wrt, claim, shapes, expected verdict)
    (SCALAR, "x", "2*x*cos(x**2)*exp(y)", None, "right"),
    (SCALAR, "x", "exp(y)*(2*x)*cos(x**2)", None, "right"),
    (SCALAR, "x", "cos(x**2)*exp(y)", None, "wrong"),
    (SCALAR, "x", "x*cos(x**2)*exp(y)", None, "wrong"),
    (SCALAR, "x", "-2*x*cos(x**2)*exp(y)", None, "wrong"),
    (MLP, "W1", "x.T @ ((grad_y @ W2.T) * step(x @ W1))", None, "right"),
    (MLP, "W1", "(((grad_y @ W2.T) * step(x @ W1)).T @ x).T", None, "right"),
    (MLP, "W1", "x @ ((grad_y @ W2.T) * step(x @ W1))", None, "wrong"),
    (MLP, "W1", "x.T @ (grad_y @ W2.T)", None, "wrong"),
    (MLP, "W1", "x.T @ ((W2.T @ grad_y) * step(x @ W1))", None, "wrong"),
    (MLP, "W2", "relu(x @ W1).T @ grad_y", None, "right"),
    (MLP, "W2", "grad_y.T @ relu(x @ W1)", None, "wrong"),
    (LSQ, "W", "2*X.T@(X@W - Y)", {"Y": ["n", "h"]}, "right"),
    (LSQ, "W", "2*(X.T@X@W - X.T@Y)", {"Y": ["n", "h"]}, "right"),
    (LSQ, "W", "X.T@(X@W - Y)", {"Y": ["n", "h"]}, "wrong"),
    (LIN, "b", "sum(grad_y, axis=0)", {"b": ["h"]}, "right"),
    (LIN, "b", "grad_y", {"b": ["h"]}, "wrong"),
    (LIN, "b", "mean(grad_y, axis=0)", {"b": ["h"]}, "wrong"),
    (QUAD, "x", "(A + A.T) @ x", {"x": ["n"]}, "right"),
    (QUAD, "x", "2*A@x", {"x": ["n"]}, "wrong"),
]


def write_claims(path: Path, count: int, distinct: bool = False) -> None:
    """`distinct`: every claim about a formula of its own (a constant added: the gradients stay)."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            expr, wrt, claim, shapes, _ = CLAIMS[i % len(CLAIMS)]
            if distinct:
                expr = f"{expr} + {i + 1}"
            line = {"id": i, "expr": expr, "wrt": wrt, "claim": claim}
            if shapes:
                line["shapes"] = shapes
            f.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--cli", action="store_true", help="also time `backstep check --batch` as a command")
    args = parser.parse_args()

    from backstep.check.run import run_batch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "claims.jsonl"
        write_claims(path, args.claims)
        lines = path.read_text().splitlines()

        # Warm up the imports (torch, SymPy) so that the measurement is the checking itself.
        list(run_batch(lines[:1]))

        start, cpu = time.perf_counter(), time.process_time()
        out = list(run_batch(lines))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        expected = [CLAIMS[i % len(CLAIMS)][4] for i in range(len(lines))]
        agree = sum(o["verdict"] == e for o, e in zip(out, expected))
        named = sum(o["mistake"] is not None for o in out if o["verdict"] == "wrong")
        wrong = sum(o["verdict"] == "wrong" for o in out)
        print(f"{len(out)} claims ({len(CLAIMS)} kinds, {len({c[0] for c in CLAIMS})} formulas) in {elapsed:.2f} s")
        print(f"throughput: {len(out) / elapsed:.1f} claims/s (one process, after start-up)")
        print(f"            {len(out) / cpu:.1f} claims per CPU second (what one idle core gives)")
        print(f"verdicts as expected: {agree}/{len(out)}; wrong claims with a named mistake: {named}/{wrong}")

        for verdict in ("right", "wrong"):
            subset = [line for line, e in zip(lines, expected) if e == verdict]
            start = time.perf_counter()
            list(run_batch(subset))
            t = time.perf_counter() - start
            print(f"  {verdict} claims only: {len(subset) / t:.1f} claims/s")

        distinct = Path(tmp) / "distinct.jsonl"
        write_claims(distinct, min(args.claims, 100), distinct=True)
        dlines = distinct.read_text().splitlines()
        start, cpu = time.perf_counter(), time.process_time()
        dout = list(run_batch(dlines))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        dagree = sum(o["verdict"] == CLAIMS[i % len(CLAIMS)][4] for i, o in enumerate(dout))
        print(
            f"every claim with a formula of its own (derived each time): {len(dout) / elapsed:.1f} claims/s, "
            f"{len(dout) / cpu:.1f} per CPU second; as expected: {dagree}/{len(dout)}"
        )

        if args.cli:
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "backstep", "check", "--batch", str(path)],
                check=False,
                stdout=subprocess.DEVNULL,
            )
            t = time.perf_counter() - start
            print(f"backstep check --batch (a fresh process, start-up included): {len(lines) / t:.1f} claims/s")


if __name__ == "__main__":
    main()
