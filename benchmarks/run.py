"""backstep's benchmarks, one command: `python benchmarks/run.py` (add `--quick` for a CI-size run).

(a) cold start of the CLI against `import sympy` and `import torch` (subprocess wall time);
(b) derivation time against graph size, on programs with named intermediates;
(c) backstep against `sympy.diff` (+ `sympy.cse`) on the swell family f_{k+1} = sin(f_k)·f_k + x;
(d) verification at the seed's real sizes against a plain torch forward + backward.

It prints the results as Markdown tables and writes them, with the machine and the date, into
benchmarks/README.md between the result markers (the hand-written text around them is kept).
A full run writes; a `--quick` run only prints unless given `--write`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sympy
import torch

import backstep
from backstep.simplify import expr_size

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

SYMPY_BUDGET_S = 30.0  # skip the sympy side when its predicted time passes this
SEED_SIZES = {"N": 64, "D_in": 1000, "H": 100, "D_out": 10}  # seed 001's two-layer net

INTRO = """# Benchmarks

`python benchmarks/run.py` measures, on the machine it runs on:

- **(a) cold start** — the median wall time of 5 runs of `backstep derive "relu(x@W1)@W2"` as a
  fresh process, with and without `--no-verify`, against `python -c "import sympy"` and
  `python -c "import torch"`. backstep imports SymPy always and torch only to verify (or for `--at`),
  so those two imports are the floor.
- **(b) scaling** — `backstep.derive(..., verify=False)` on two families of programs with named
  intermediates, 3 graph nodes per line, at about 10, 100, 1,000 and 5,000 nodes: a chain
  (`v1 = sin(x)*x + x; v2 = sin(v1)*v1 + x; …`) and an MLP (`h1 = relu(h0 @ W1 + b1); …;
  L = sum((hL @ V - Y)**2)`, a weight and a bias per layer, so the number of gradients grows with
  the depth). Time per node and output size per node (tree nodes of the backward steps' results,
  and of the forward steps) show whether the derivation stays linear.
- **(c) against SymPy** — the same swell family f_{k+1} = sin(f_k)·f_k + x at depth k = 8 … 14, as one
  nested SymPy expression differentiated by `sympy.diff`, then shortened by `sympy.cse`, against
  backstep on the program with k named intermediates. Size is the number of nodes of the expression
  tree (a shared subtree counted each time it appears); backstep's size is the total size of its
  backward steps' results; SymPy's after `cse` is the total of its replacements and reduced
  expression. The SymPy side is skipped when it would take more than ~30 s. Both gradients are
  compared at x = 0.3.
- **(d) verification** — `d.verify()` (torch autograd on the graph plus backstep's own numeric
  evaluation of every forward step, backward step and gradient, float64) for seed 001's two-layer
  net at its real sizes (N=64, D_in=1000, H=100, D_out=10), against a plain torch forward + backward
  of the same net.
- **(e) `--compact`'s layers** — the MLP family of (b) derived with and without `compact=True`: each
  layer's `h @ W + b` is an affine map written by hand, which `--compact` finds by evaluating candidate
  regions of the graph in torch, and shows as one `addmm` step per input.

`python benchmarks/run.py --quick` is a CI-size run (fewer repeats, smaller sizes); it prints and
does not touch this file unless given `--write`. Everything between the markers below is written by
the script; the rest of this file is kept as it is.
"""


# --- helpers -------------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        sympy.core.cache.clear_cache()
        t, result = timed(fn)
        times.append(t)
    return statistics.median(times), result


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_x(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio:.3g}×"


def swell_program(k: int) -> str:
    """f_1 = sin(x)·x + x, f_{j+1} = sin(f_j)·f_j + x, each f_j a named intermediate v_j."""
    lines = ["v1 = sin(x)*x + x"] + [f"v{j} = sin(v{j - 1})*v{j - 1} + x" for j in range(2, k + 1)]
    return "\n".join(lines)


def swell_sympy(k: int, x: sympy.Symbol) -> sympy.Expr:
    f = x
    for _ in range(k):
        f = sympy.sin(f) * f + x
    return f


# --- (a) cold start ------------------------------------------------------------------------------


def cold_start(runs: int) -> tuple[str, dict]:
    # The entry point beside this interpreter (a version manager's shim on PATH adds its own start-up).
    beside = Path(sys.executable).parent / "backstep"
    exe = str(beside) if beside.exists() else shutil.which("backstep")
    cli = [exe] if exe else [sys.executable, "-m", "backstep"]
    formula = "relu(x@W1)@W2"
    commands = {
        f'backstep derive "{formula}"': cli + ["derive", formula],
        f'backstep derive "{formula}" --no-verify': cli + ["derive", formula, "--no-verify"],
        'python -c "import sympy"': [sys.executable, "-c", "import sympy"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():  # one untimed run each: the file cache is warm for all
        subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
    for _ in range(runs):  # interleaved, so that drift in the machine's load hits every command alike
        for name, argv in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    sym, tor = med['python -c "import sympy"'], med['python -c "import torch"']
    rows = [
        [f"`{name}`", fmt_s(med[name]), fmt_s(min(ts)), fmt_s(max(ts)), fmt_x(med[name] / sym), fmt_x(med[name] / tor)]
        for name, ts in times.items()
    ]
    text = table(["command", f"median of {runs}", "min", "max", "÷ import sympy", "÷ import torch"], rows)
    return text, med


# --- (b) scaling ---------------------------------------------------------------------------------


def mlp_program(layers: int) -> str:
    """An MLP with a squared loss, one line per layer: h_i = relu(h_{i-1} @ W_i + b_i), 3 nodes each."""
    lines = ["h0 = X"] + [f"h{i} = relu(h{i - 1} @ W{i} + b{i})" for i in range(1, layers + 1)]
    return "\n".join(lines + [f"L = sum((h{layers} @ V - Y)**2)"])


FAMILIES = {
    # name: (program of about `nodes` graph nodes, what it is)
    "chain": (lambda nodes: swell_program(max(1, round(nodes / 3))), "swell chain v_{j+1} = sin(v_j)·v_j + x"),
    "mlp": (lambda nodes: mlp_program(max(1, round((nodes - 4) / 3))), "MLP relu(h @ W + b), squared loss"),
}


def scaling(targets: list[int], repeats: int) -> tuple[str, list]:
    rows, data = [], []
    backstep.derive(swell_program(34), verify=False)  # warm-up: the first derivations in a process are slower
    for family, (program, _) in FAMILIES.items():
        for target in targets:
            src = program(target)
            reps = repeats if target <= 1000 else 1
            t, d = median_time(lambda src=src: backstep.derive(src, verify=False), reps)
            nodes = len(d.forward)
            size_bwd = sum(expr_size(s.result) for s in d.backward)
            size_fwd = sum(expr_size(s.expr) for s in d.forward)
            expanded = sum(g.in_inputs for g in d.gradients.values())
            data.append({"family": family, "nodes": nodes, "seconds": t, "size_per_node": size_bwd / nodes})
            rows.append(
                [
                    family,
                    nodes,
                    len(d.backward),
                    len(d.gradients),
                    fmt_s(t),
                    f"{t / nodes * 1e3:.3f} ms",
                    f"{size_bwd / nodes:.1f}",
                    f"{size_fwd / nodes:.1f}",
                    f"{expanded} of {len(d.gradients)}",
                ]
            )
    headers = [
        "family",
        "graph nodes",
        "backward steps",
        "gradients",
        f"derive (median of {repeats}; 1 above 1000 nodes)",
        "per node",
        "backward size per node",
        "forward size per node",
        "gradients in terms of the inputs",
    ]
    text = table(headers, rows)
    for family in FAMILIES:  # how the time per node grows from the smallest run above 100 nodes to the largest
        runs = [r for r in data if r["family"] == family and r["nodes"] >= 100]
        if len(runs) >= 2:
            a, b = runs[0], runs[-1]
            growth = (b["seconds"] / b["nodes"]) / (a["seconds"] / a["nodes"])
            text += (
                f"\n\n{family}: time per node ×{growth:.2f} from {a['nodes']} to {b['nodes']} nodes "
                f"(1 would be exactly linear)"
            )
    return text, data


# --- (e) --compact's layers ----------------------------------------------------------------------


def compact_layers(targets: list[int], repeats: int) -> tuple[str, list]:
    """derive(compact=True) against derive() on the MLP family: each layer relu(h @ W + b) holds an
    affine map written by hand, which --compact finds (by evaluating candidate regions in torch) and
    shows as one addmm step per input."""
    rows, data = [], []
    backstep.derive(mlp_program(3), verify=False, compact=True)  # warm-up: imports torch
    for target in targets:
        src = mlp_program(max(1, round((target - 4) / 3)))
        reps = repeats if target <= 1000 else 1
        plain_t, plain = median_time(lambda src=src: backstep.derive(src, verify=False), reps)
        compact_t, compact = median_time(lambda src=src: backstep.derive(src, verify=False, compact=True), reps)
        layers = len({s.node for s in compact.backward if s.layer is not None})
        nodes = len(plain.forward)
        data.append({"nodes": nodes, "plain": plain_t, "compact": compact_t, "layers": layers})
        rows.append(
            [
                nodes,
                layers,
                f"{len(plain.backward)} → {len(compact.backward)}",
                fmt_s(plain_t),
                fmt_s(compact_t),
                fmt_x(compact_t / plain_t),
            ]
        )
    headers = ["graph nodes", "layers found", "backward steps", "derive", "derive --compact", "ratio"]
    return table(headers, rows), data


# --- (c) against sympy.diff ----------------------------------------------------------------------


def against_sympy(depths: list[int], repeats: int) -> tuple[str, list]:
    x = sympy.Symbol("x")
    point = 0.3
    rows, data = [], []
    history: list[tuple[int, float]] = []  # (depth, diff+cse time) of the sympy runs done
    for k in depths:
        src = swell_program(k)
        t_bs, d = median_time(lambda src=src: backstep.derive(src, verify=False), repeats)
        size_bs = sum(expr_size(s.result) for s in d.backward)
        size_fwd = sum(expr_size(s.expr) for s in d.forward)
        value_bs = backstep.derive(src, at={"x": point}).gradients["x"].value

        predicted = None
        if len(history) >= 2:
            (k1, t1), (k2, t2) = history[-2], history[-1]
            growth = (t2 / t1) ** (1 / (k2 - k1))
            predicted = t2 * growth ** (k - k2)
        elif history:
            predicted = history[-1][1] * 2.2 ** (k - history[-1][0])  # about SymPy's growth per level
        if predicted is not None and predicted > SYMPY_BUDGET_S:
            rows.append([k, fmt_s(t_bs), size_bs, size_fwd, f"skipped (≈ {predicted:.0f} s predicted)"] + ["—"] * 7)
            data.append({"depth": k, "backstep_s": t_bs, "skipped": True})
            continue

        f = swell_sympy(k, x)
        reps = repeats if not history or history[-1][1] < 1.0 else 1
        t_diff, g = median_time(lambda f=f: sympy.diff(f, x), reps)
        t_cse, (replacements, reduced) = median_time(lambda g=g: sympy.cse(g), reps)
        history.append((k, t_diff + t_cse))
        size_diff = expr_size(g)
        size_cse = sum(expr_size(e) for _, e in replacements) + sum(expr_size(e) for e in reduced)
        values = {x: sympy.Float(point, 30)}
        for sym, e in replacements:
            values[sym] = e.xreplace(values).evalf(30)
        value_sp = float(reduced[0].xreplace(values).evalf(30))
        agree = abs(value_sp - value_bs) <= 1e-9 * max(1.0, abs(value_sp))
        rows.append(
            [
                k,
                fmt_s(t_bs),
                size_bs,
                size_fwd,
                fmt_s(t_diff),
                fmt_s(t_diff + t_cse),
                fmt_x(t_diff / t_bs),
                fmt_x((t_diff + t_cse) / t_bs),
                size_diff,
                size_cse,
                f"{fmt_x(size_diff / size_bs)} / {fmt_x(size_cse / size_bs)}",
                "✓" if agree else f"✗ {value_bs} vs {value_sp}",
            ]
        )
        data.append(
            {
                "depth": k,
                "backstep_s": t_bs,
                "diff_s": t_diff,
                "cse_s": t_cse,
                "size_bs": size_bs,
                "size_diff": size_diff,
                "size_cse": size_cse,
                "agree": agree,
            }
        )
    headers = [
        "depth k",
        "backstep",
        "backstep size (backward steps)",
        "its forward steps' size",
        "sympy.diff",
        "diff + cse",
        "diff ÷ backstep",
        "(diff+cse) ÷ backstep",
        "diff size",
        "cse size",
        "size ÷ backstep (diff / cse)",
        "same ∂f/∂x at 0.3",
    ]
    return table(headers, rows), data


# --- (d) verification at the seed's sizes --------------------------------------------------------


def verification(repeats: int) -> tuple[str, dict]:
    src = (ROOT / "examples" / "two_layer_net.bs").read_text(encoding="utf-8")
    s = SEED_SIZES
    gen = torch.Generator().manual_seed(0)
    T = torch.float64
    values = {
        "X": torch.randn(s["N"], s["D_in"], generator=gen, dtype=T),
        "y": torch.randn(s["N"], s["D_out"], generator=gen, dtype=T),
        "W1": torch.randn(s["D_in"], s["H"], generator=gen, dtype=T),
        "W2": torch.randn(s["H"], s["D_out"], generator=gen, dtype=T),
    }
    t_derive, d = timed(lambda: backstep.derive(src, wrt=["W1", "W2"], at=values))
    assert d.sizes == s, d.sizes
    t_first, report = timed(lambda: d.verify(points=1))
    ok = report.ok
    results = {}
    for points in (1, 3):
        times = []
        for _ in range(repeats):
            t, report = timed(lambda points=points: d.verify(points=points))
            ok = ok and report.ok
            times.append(t)
        results[points] = statistics.median(times)

    def plain(dtype) -> Callable[[], None]:
        X, y = values["X"].to(dtype), values["y"].to(dtype)
        w1, w2 = values["W1"].to(dtype), values["W2"].to(dtype)

        def run() -> None:
            W1, W2 = w1.clone().requires_grad_(), w2.clone().requires_grad_()
            loss = (X.mm(W1).clamp(min=0).mm(W2) - y).pow(2).sum()
            loss.backward()

        return run

    plain_times = {}
    for dtype in (torch.float64, torch.float32):
        run = plain(dtype)
        for _ in range(3):
            run()
        plain_times[dtype] = statistics.median(timed(run)[0] for _ in range(max(20, 4 * repeats)))
    base = plain_times[torch.float64]
    rows = [
        [
            "`backstep.derive(..., at=values)` (derivation + every step's number)",
            fmt_s(t_derive),
            fmt_x(t_derive / base),
        ],
        ["`d.verify(points=1)`, first call", fmt_s(t_first), fmt_x(t_first / base)],
        [f"`d.verify(points=1)`, median of {repeats}", fmt_s(results[1]), fmt_x(results[1] / base)],
        [f"`d.verify(points=3)` (the default), median of {repeats}", fmt_s(results[3]), fmt_x(results[3] / base)],
        ["plain torch forward + backward, float64", fmt_s(base), "1×"],
        [
            "plain torch forward + backward, float32",
            fmt_s(plain_times[torch.float32]),
            fmt_x(plain_times[torch.float32] / base),
        ],
    ]
    text = table(["what", "time", "÷ plain float64"], rows)
    text += f"\n\nVerification {'passed' if ok else 'FAILED'} at every run (N=64, D_in=1000, H=100, D_out=10)."
    return text, {"verify_1": results[1], "verify_3": results[3], "plain64": base, "ok": ok}


# --- the report ----------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return (
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- machine: {cpu}; {os.cpu_count()} CPUs ({usable} usable); {platform.system()} {platform.release()}\n"
        f"- python {platform.python_version()}, torch {torch.__version__} "
        f"(threads: {torch.get_num_threads()}), sympy {sympy.__version__}, backstep {backstep.__version__} "
        f"(commit {commit})"
    )


def write_readme(section: str) -> None:
    block = f"{START}\n{section.rstrip()}\n{END}\n"
    if README.exists():
        text = README.read_text(encoding="utf-8")
        if START in text and END in text:
            head, rest = text.split(START, 1)
            tail = rest.split(END, 1)[1].lstrip("\n")
            text = head + block + (("\n" + tail) if tail else "")
        else:
            text = text.rstrip() + "\n\n" + block
    else:
        text = INTRO + "\n" + block
    README.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CI-size run: fewer repeats, smaller sizes")
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write benchmarks/README.md (default: yes for a full run, no for --quick)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    write = (not quick) if args.write is None else args.write

    sections = [("Machine", machine())]
    print(sections[0][1], flush=True)
    steps = [
        ("(a) Cold start", lambda: cold_start(runs=2 if quick else 5)),
        ("(b) Scaling", lambda: scaling([10, 100] if quick else [10, 100, 1000, 5000], repeats=1 if quick else 3)),
        (
            "(c) Against sympy.diff and sympy.cse",
            lambda: against_sympy([8, 10] if quick else [8, 10, 12, 14], repeats=1 if quick else 3),
        ),
        ("(d) Verification at the seed's sizes", lambda: verification(repeats=2 if quick else 7)),
        (
            "(e) --compact's layers",
            lambda: compact_layers([10, 100] if quick else [10, 100, 1000], repeats=1 if quick else 3),
        ),
    ]
    for title, step in steps:
        print(f"\n## {title}\n", flush=True)
        text, _ = step()
        print(text, flush=True)
        sections.append((title, text))
    mode = "quick run (`--quick`)" if quick else "full run"
    parts = [sections[0][1]] + [f"### {title}\n\n{text}" for title, text in sections[1:]]
    section = f"## Results ({mode})\n\n" + "\n\n".join(parts)
    if write:
        write_readme(section)
        print(f"\nwritten to {README.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
