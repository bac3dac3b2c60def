"""How `backstep check` scales: peak memory of a batch, and the time of a long derivation file.

    python benchmarks/check_scale.py [--quick] [--claims 1000 10000] [--lines 100 1000]

(a) `check --batch`: the peak resident memory (ru_maxrss) of a fresh process that checks N claims
    (those of check_throughput.py, 20 kinds over 5 formulas) and writes their results, for each N,
    next to the same process after its imports and one claim: what the claims themselves add.
(b) `check -d`: the time of a derivation file of N lines that each name the value the next line
    defines (`a1 = a2`, `a2 = a3`, …, `aN = X @ W1`, then one gradient), the file that was cubic
    (alias resolution retried every pending line on every pass), with the number of times the
    claim parser ran: about 2 per line when the pass is linear.

--quick: 100 and 1,000 claims, 100 and 400 lines (a CI-size run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MLP = "H = relu(X @ W1)\nL = sum((H @ W2 - Y)**2)"
MLP_SHAPES = {"X": ("n", "d"), "W1": ("d", "h"), "W2": ("h", "o"), "Y": ("n", "o")}
GRAD_W1 = "grad_W1 = X.T @ ((2*(H @ W2 - Y) @ W2.T) * step(X @ W1))"


def _peak_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def _child_memory(claims: int) -> None:
    """In a fresh process: the peak RSS after the imports and one claim, then after `claims`."""
    from check_throughput import write_claims

    from backstep.check.run import run_batch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "claims.jsonl"
        write_claims(path, claims)
        with path.open(encoding="utf-8") as f:
            first = f.readline()
        list(run_batch([first]))
        base = _peak_kib()
        start = time.perf_counter()
        verdicts: dict[str, int] = {}
        with path.open(encoding="utf-8") as f, open(os.devnull, "w") as out:
            for obj in run_batch(f):  # streamed, as `check --batch FILE -o out.jsonl` runs it
                verdicts[obj["verdict"]] = verdicts.get(obj["verdict"], 0) + 1
                out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        elapsed = time.perf_counter() - start
        print(json.dumps({"claims": claims, "base_kib": base, "peak_kib": _peak_kib(), "s": elapsed, **verdicts}))


def batch_memory(sizes: list[int]) -> tuple[str, list[dict]]:
    rows = []
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--child-memory", str(n)],
            capture_output=True,
            text=True,
            check=True,
            cwd=HERE.parent,
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    lines = [
        "| claims | peak RSS | after imports + 1 claim | added by the claims | time | claims/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        added = r["peak_kib"] - r["base_kib"]
        lines.append(
            f"| {r['claims']:,} | {r['peak_kib'] / 1024:.0f} MiB | {r['base_kib'] / 1024:.0f} MiB | "
            f"{added / 1024:.0f} MiB | {r['s']:.1f} s | {r['claims'] / r['s']:.0f} |"
        )
    return "\n".join(lines), rows


def chain_file(n: int) -> str:
    lines = [f"a{k} = a{k + 1}" for k in range(1, n)] + [f"a{n} = X @ W1", GRAD_W1]
    return "\n".join(lines) + "\n"


def derivation_time(sizes: list[int], repeats: int = 1) -> tuple[str, list[dict]]:
    import backstep.check.problem as check_module
    from backstep.check import Problem

    problem = Problem(MLP, MLP_SHAPES)
    problem.check_lines(chain_file(2))  # the points, drawn once (torch's import and the truth)
    real = check_module.parse_expression
    rows = []
    for n in sizes:
        calls = 0

        def counting(*args, **kwargs):
            nonlocal calls
            calls += 1
            return real(*args, **kwargs)

        text = chain_file(n)
        best = float("inf")
        check_module.parse_expression = counting
        try:
            for _ in range(repeats):
                calls = 0
                start = time.perf_counter()
                results = problem.check_lines(text)
                best = min(best, time.perf_counter() - start)
        finally:
            check_module.parse_expression = real
        ok = results[-1].verdict == "right" and all(r.verdict == "defined" for r in results[:-1])
        rows.append({"lines": n + 1, "s": best, "parses": calls, "ok": ok})
    lines = [
        "| lines | time | per line | parses | parses per line | verdicts as expected |",
        "| ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['lines']:,} | {r['s']:.2f} s | {1000 * r['s'] / r['lines']:.2f} ms | {r['parses']:,} | "
            f"{r['parses'] / r['lines']:.1f} | {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI sizes: 100 and 1,000 claims, 100 and 400 lines")
    parser.add_argument("--claims", type=int, nargs="+", help="batch sizes (default 1,000 and 10,000)")
    parser.add_argument("--lines", type=int, nargs="+", help="derivation file lengths (default 100 and 1,000)")
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory is not None:
        _child_memory(args.child_memory)
        return
    claims = args.claims or ([100, 1000] if args.quick else [1000, 10000])
    lines = args.lines or ([100, 400] if args.quick else [100, 1000])
    print("## check --batch: peak memory\n")
    print(batch_memory(claims)[0])
    print("\n## check -d: a derivation file whose lines each name the next\n")
    print(derivation_time(lines, repeats=1 if args.quick else 3)[0])


if __name__ == "__main__":
    main()
