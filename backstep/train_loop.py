"""The loop of `backstep train`: the derived gradient compiled, torch's own loop beside it, the run.

``Tape`` is backstep's ``Evaluator`` with the SymPy walk done once: the derivation's forward and
backward steps become a flat list of torch calls over registers (for one set of sizes), so that a
step of training costs a few torch calls, not a walk of SymPy trees; on the first step the tape is
checked against the ``Evaluator`` itself. ``TorchGraph`` is the parsed graph as torch operations
(as the verifier builds it), and ``TorchLoop`` runs the seed's loop on it with autograd.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sympy

from .errors import UsageError
from .numeric import (
    Evaluator,
    concrete_params,
    const_value,
    expression_children,
    is_leaf,
    node_function,
    run_steps,
    torch_module,
)
from .shapes import concrete
from .symbolic import Dim
from .train import RTOL, SMALL, DivergedError, Problem, Settings
from .util import postorder, reachable


def adjoint_symbol(d, name: str) -> str | None:
    found = None
    for s in d.backward:
        if s.of == name and s.partial is None:
            found = s.target
    return found


class Tape:
    """Backstep's Evaluator with the SymPy walk done once: the derivation's steps as a flat list of
    torch calls over registers, for one set of sizes. Each instruction is the function that
    ``Evaluator.apply`` calls for that node (``numeric.node_function``), made once."""

    def __init__(self, d, sizes: dict[str, int], wrt: list[str], upto: str | None = None, backward: bool = True):
        self.torch = torch_module()
        self.sizes = sizes
        self.initial: list = []
        self.inputs: dict[str, int] = {}
        self.program: list[tuple[Callable, tuple[int, ...], int]] = []
        self.names: dict[str, int] = {}
        self.memo: dict[sympy.Expr, int] = {}
        t = self.torch
        if d.seed.name and d.seed.is_one:
            self.names[d.seed.name] = self._const(t.ones((), dtype=t.float64))
        forward = d.forward if upto is None else _steps_for(d, upto)
        for step in forward:
            self.names[step.name] = self._compile(step.expr)
        self.grads: dict[str, int] = {}
        if not backward:
            return
        for step in d.backward:
            shape = concrete(d.symbols.table[step.target].shape, sizes)
            self.names[step.target] = self._emit(_broadcaster(t, shape), (self._compile(step.result),))
        for name in wrt:
            target = adjoint_symbol(d, name)
            if target is not None:
                self.grads[name] = self.names[target]
            else:  # not reached by any step: its gradient is what the derivation says (0)
                g = d.gradients[name]
                shape = concrete(g.shape, sizes)
                self.grads[name] = self._emit(_broadcaster(t, shape), (self._compile(g.expr),))

    def _const(self, value) -> int:
        self.initial.append(value)
        return len(self.initial) - 1

    def _emit(self, fn: Callable, args: tuple[int, ...]) -> int:
        out = self._const(None)
        self.program.append((fn, args, out))
        return out

    def _compile(self, expr) -> int:
        memo = self.memo
        for e in postorder(expr, expression_children, memo.__contains__):
            if is_leaf(e):
                memo[e] = self._atom(e)
            else:
                args = tuple(memo[a] for a in expression_children(e))
                memo[e] = self._emit(node_function(self.torch, e, self.sizes), args)
        return memo[expr]

    def _atom(self, e) -> int:
        if e.is_Symbol and not isinstance(e, Dim):
            if e.name in self.names:
                return self.names[e.name]
            if e.name not in self.inputs:
                self.inputs[e.name] = self._const(None)
            return self.inputs[e.name]
        return self._const(Evaluator({}, self.sizes).atom(e))

    def run(self, env: dict[str, Any]) -> list:
        regs = list(self.initial)
        for name, r in self.inputs.items():
            regs[r] = env[name]
        for fn, args, out in self.program:
            regs[out] = fn(*[regs[i] for i in args])
        return regs


def _steps_for(d, name: str) -> list:
    """The forward steps that `name` needs, in order."""
    by_name = {s.name: s for s in d.forward}
    needed, stack = set(), [name]
    while stack:
        x = stack.pop()
        if x in needed or x not in by_name:
            continue
        needed.add(x)
        stack.extend(str(sym) for sym in by_name[x].expr.free_symbols)
    return [s for s in d.forward if s.name in needed]


def predict(problem: Problem, params: dict[str, Any], torch_leaves: dict[str, Any] | None = None) -> list:
    """The prediction's value for each given sample: by the derived steps, or (torch_leaves) by torch's graph."""
    pred = problem.prediction
    d = problem.derivation
    t = torch_module()
    sizes = dict(problem.sizes)
    if problem.mode == "batch":
        sizes[problem.batch_dim] = pred.count
        envs = [pred.inputs]
    else:
        envs = [{k: v[i] for k, v in pred.inputs.items()} for i in range(pred.count)]
    values = []
    for env in envs:
        full = {**(params if torch_leaves is None else torch_leaves), **env}
        if pred.name in full:
            value = full[pred.name]
        elif torch_leaves is not None:
            with t.no_grad():
                value = TorchGraph(d.graph, sizes, upto=pred.name)(full)
        else:
            tape = Tape(d, sizes, [], upto=pred.name, backward=False)
            value = tape.run(full)[tape.names[pred.name]]
        value = value.detach()
        if problem.mode == "batch" and value.dim() and value.shape[0] == pred.count:
            values.extend(record_full(v) for v in value.unbind(0))
        else:
            values.append(record_full(value))
    return values


def record_full(tensor) -> Any:
    return float(tensor) if tensor.dim() == 0 else tensor.tolist()


def _broadcaster(t, shape):
    return lambda x: t.broadcast_to(x, shape)


def check_tape(d, tape: Tape, env: dict[str, Any], sizes: dict[str, int], wrt: list[str]) -> float:
    """The compiled tape against backstep's Evaluator on one point: the largest difference (0 expected)."""
    t = torch_module()
    regs = tape.run(env)
    values = dict(env)
    if d.seed.is_one:
        values[d.seed.name] = t.ones((), dtype=t.float64)
    steps = run_steps(d, values, sizes)
    worst = 0.0
    for step, value in steps.forward():
        worst = max(worst, _diff(value, regs[tape.names[step.name]]))
    for _ in steps.backward():
        pass
    for name, value in steps.gradients(wrt):
        worst = max(worst, _diff(value, regs[tape.grads[name]]))
    return worst


def _diff(a, b) -> float:
    t = torch_module()
    if not t.is_tensor(a):
        a = t.tensor(float(a), dtype=t.float64)
    d = (a - b).abs()
    if d.numel() == 0:
        return 0.0
    value = float(d.max() / max(1.0, float(b.abs().max())))
    return value if value == value else float("inf")


# --- the same loop in torch ---------------------------------------------------------------------------


class TorchGraph:
    """The parsed graph as torch operations (as the verifier builds it), compiled for one set of sizes."""

    def __init__(self, graph, sizes: dict[str, int], upto: str | None = None):
        torch = torch_module()
        target = graph.output if upto is None else next(n for n in graph.nodes if n.name == upto)
        needed = _ancestor_ids(target)
        self.program = []
        for n in graph.nodes:
            if n.id not in needed:
                continue
            if n.kind == "var":
                self.program.append((n.id, n.name, None, None))
                continue
            args = [("const", const_value(torch, a, sizes)) if a.is_const else ("node", a.id) for a in n.inputs]
            self.program.append((n.id, n.op.torch, args, concrete_params(n.params, sizes)))
        self.output = target.id
        self.torch = torch

    def __call__(self, leaves: dict[str, Any]):
        values = {}
        for node_id, fn, args, params in self.program:
            if args is None:
                values[node_id] = leaves[fn]
                continue
            values[node_id] = fn(self.torch, [v if kind == "const" else values[v] for kind, v in args], params)
        return values[self.output]


def _ancestor_ids(node) -> set[int]:
    return reachable(node, lambda n: n.inputs, key=lambda n: n.id)


# --- the run ------------------------------------------------------------------------------------------


@dataclass
class StepRecord:
    step: int  # 1-based: the number of updates so far
    epoch: int  # 0-based, as the seed prints it
    samples: tuple[int, int] | list[int]  # (first, last) of a contiguous minibatch, or the indices
    loss: float  # the minibatch's loss, before the update
    grads: dict[str, Any]  # this step's derived gradient (small parameters; else {"norm": ...})
    used: dict[str, Any] | None  # the accumulated .grad the update used (--no-zero-grad)
    params: dict[str, Any]  # after the update
    values: dict[str, Any] | None = None  # the sample's data values (one sample per step)


@dataclass
class EpochRecord:
    epoch: int
    loss: float  # the loss of the epoch's last step, as the seed's `progress:` line prints it
    mean_loss: float  # the mean of the epoch's step losses
    params: dict[str, Any]


@dataclass
class Deviation:
    """The largest difference between the derived loop and torch's, relative to max(1, |torch's|)."""

    params: float = 0.0
    grads: float = 0.0
    losses: float = 0.0
    tape: float = 0.0  # the compiled tape against the Evaluator, on the first step
    first_epoch: int | None = None  # the first epoch in which they parted

    @property
    def worst(self) -> float:
        return max(self.params, self.grads, self.losses, self.tape)

    @property
    def ok(self) -> bool:
        return self.worst <= RTOL


class Tracker:
    """Running maxima kept as tensors (no sync per step), read once an epoch."""

    def __init__(self):
        self.t = torch_module()
        self.zero = self.t.zeros((), dtype=self.t.float64)
        self.params = self.grads = self.losses = self.zero

    def add(self, loss, torch_loss, params: dict, torch_params: dict, used: dict, torch_grads: dict) -> None:
        t = self.t
        for k, p in params.items():
            self.params = t.maximum(self.params, _rel(t, p, torch_params[k]))
            self.grads = t.maximum(self.grads, _rel(t, used[k], torch_grads[k]))
        self.losses = t.maximum(self.losses, _rel(t, loss, torch_loss))

    def read(self, dev: Deviation, epoch: int) -> None:
        for name in ("params", "grads", "losses"):
            value = float(getattr(self, name))
            setattr(dev, name, value if value == value else math.inf)
        if dev.first_epoch is None and not dev.ok:
            dev.first_epoch = epoch


def _rel(t, a, b):
    diff = (a - b).abs()
    if diff.numel() == 0:
        return t.zeros((), dtype=t.float64)
    return (diff / t.clamp(b.abs(), min=1.0)).max().nan_to_num(nan=math.inf)


@dataclass
class Run:
    problem: Problem
    settings: Settings
    steps: list[StepRecord]
    epochs: list[EpochRecord]
    final: dict[str, Any]  # tensors
    deviation: Deviation
    steps_per_epoch: int
    batch: int
    seconds: float
    contrast: dict | None = None  # with --no-zero-grad: the same run with zeroed gradients
    torch_final: dict[str, Any] | None = None  # torch's parameters at the end (every --init)

    @property
    def losses(self) -> list[float]:
        return [s.loss for s in self.steps]


def record_value(tensor) -> Any:
    if tensor.numel() <= SMALL:
        return float(tensor) if tensor.dim() == 0 else tensor.tolist()
    return {"norm": float(tensor.norm())}


def train(
    problem: Problem,
    settings: Settings,
    progress: Callable[[int, int], None] | None = None,
    with_torch: bool = True,
) -> Run:
    """Run the derived loop and, beside it, torch's; compare them after every step."""
    settings.check()
    t = torch_module()
    n = problem.n
    batch = n if settings.batch is None else settings.batch
    if batch > n:
        raise UsageError(f"--batch {batch}: there are only {n} samples (--full-batch uses them all)")
    per_epoch = -(-n // batch)
    total = per_epoch * settings.epochs
    d, wrt = problem.derivation, problem.wrt
    params = {k: v.clone() for k, v in problem.init.items()}
    loop = TorchLoop(problem, settings) if with_torch else None
    buffers = {k: t.zeros_like(params[k]) for k in wrt}
    used = {k: t.zeros_like(params[k]) for k in wrt}
    tapes: dict[int, tuple[Tape, TorchGraph]] = {}
    samples = {k: list(v.unbind(0)) for k, v in problem.data.items()} if problem.mode == "sample" else {}
    show_values = problem.mode == "sample" and batch == 1 and all(v.dim() == 1 for v in problem.data.values())
    generator = t.Generator().manual_seed(settings.seed)
    dev, tracker = Deviation(), Tracker()
    steps: list[StepRecord] = []
    epochs: list[EpochRecord] = []
    started = time.perf_counter()
    lr, momentum, zero_grad = settings.lr, settings.momentum, settings.zero_grad

    def compiled(size: int) -> tuple[Tape, TorchGraph]:
        if size not in tapes:
            sizes = dict(problem.sizes)
            if problem.batch_dim:
                sizes[problem.batch_dim] = size
            tapes[size] = (Tape(d, sizes, wrt), TorchGraph(d.graph, sizes))
        return tapes[size]

    step = 0
    for epoch in range(settings.epochs):
        order = t.randperm(n, generator=generator) if settings.shuffle else None
        first = len(steps)
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            index = list(range(start, stop)) if order is None else order[start:stop].tolist()
            step += 1
            # the derived gradient, evaluated by backstep's compiled evaluator
            if problem.mode == "batch":
                tape, graph = compiled(stop - start)
                rows = slice(start, stop) if order is None else order[start:stop]
                envs = [{**params, **{k: v[rows] for k, v in problem.data.items()}}]
            else:
                tape, graph = compiled(1)
                envs = [{**params, **{k: samples[k][i] for k in samples}} for i in index]
            loss, grads = _evaluate(tape, envs, d.output, wrt)
            if step == 1:
                dev.tape = check_tape(d, tape, envs[0], tape.sizes, wrt)
            loss_value = float(loss)
            grad_values = {k: record_value(grads[k]) for k in wrt}
            _check_finite({"the loss": loss_value, **{f"the gradient of {k}": v for k, v in grad_values.items()}},
                          epoch, step, index, settings)  # fmt: skip
            for k in wrt:
                used[k] = grads[k] if zero_grad else used[k] + grads[k]
                buffers[k] = momentum * buffers[k] + used[k] if momentum else used[k]
                params[k] = params[k] - lr * buffers[k]
            param_values = {k: record_value(params[k]) for k in wrt}
            _check_finite({f"{k} after the update": v for k, v in param_values.items()}, epoch, step, index, settings)
            if loop is not None:
                torch_loss, torch_grads = loop.step(graph, envs)
                torch_params = {k: loop.leaves[k].detach() for k in wrt}
                tracker.add(loss, torch_loss, {k: params[k] for k in wrt}, torch_params, used, torch_grads)
            steps.append(
                StepRecord(
                    step=step,
                    epoch=epoch,
                    samples=(start, stop - 1) if order is None else index,
                    loss=loss_value,
                    grads=grad_values,
                    used=None if zero_grad else {k: record_value(used[k]) for k in wrt},
                    params=param_values,
                    values={k: float(samples[k][index[0]]) for k in samples} if show_values else None,
                )
            )
            if progress is not None:
                progress(step, total)
        losses = [s.loss for s in steps[first:]]
        epochs.append(EpochRecord(epoch, losses[-1], sum(losses) / len(losses), steps[-1].params))
        if loop is not None:
            tracker.read(dev, epoch)
    seconds = time.perf_counter() - started
    run = Run(problem, settings, steps, epochs, params, dev, per_epoch, batch, seconds)
    if loop is not None:
        run.torch_final = {k: v.detach() for k, v in loop.leaves.items()}
    return run


def _evaluate(tape: Tape, envs: list[dict], output: str, wrt: list[str]):
    """The loss and derived gradient of one minibatch (the mean over samples, per-sample mode)."""
    loss, grads = None, {}
    for env in envs:
        regs = tape.run(env)
        value = regs[tape.names[output]]
        loss = value if loss is None else loss + value
        for k in wrt:
            g = regs[tape.grads[k]]
            grads[k] = g if k not in grads else grads[k] + g
    if len(envs) > 1:
        loss = loss / len(envs)
        grads = {k: g / len(envs) for k, g in grads.items()}
    return loss, grads


class TorchLoop:
    """The seed's loop in torch: loss, ``loss.backward()``, ``w.data = w.data - lr * w.grad`` (with momentum:
    ``buf = momentum * buf + w.grad`` first), ``w.grad.zero_()`` (unless --no-zero-grad)."""

    def __init__(self, problem: Problem, settings: Settings):
        t = torch_module()
        self.settings = settings
        self.wrt = problem.wrt
        self.leaves = {k: v.clone().requires_grad_(k in problem.wrt) for k, v in problem.init.items()}
        self.buffers: dict[str, Any] = {}
        self.torch = t

    def step(self, graph: TorchGraph, envs: list[dict]):
        t, s = self.torch, self.settings
        loss = None
        for env in envs:
            value = graph({**env, **self.leaves})
            loss = value if loss is None else loss + value
        if len(envs) > 1:
            loss = loss / len(envs)
        loss.backward()
        grads = {}
        with t.no_grad():
            for k in self.wrt:
                p = self.leaves[k]
                grad = p.grad.clone() if p.grad is not None else t.zeros_like(p)
                grads[k] = grad
                if s.momentum:
                    buf = self.buffers.get(k)
                    self.buffers[k] = grad.clone() if buf is None else s.momentum * buf + grad
                    grad = self.buffers[k]
                p.data = p.data - s.lr * grad
                if s.zero_grad and p.grad is not None:
                    p.grad.zero_()
        return loss.detach(), grads


def _check_finite(values: dict[str, Any], epoch: int, step: int, index: list[int], s: Settings) -> None:
    """NaN or inf anywhere (a recorded value: a number, a list, or a big array's norm): stop, say where."""
    bad = next((what for what, v in values.items() if not _all_finite(v)), None)
    if bad is None:
        return
    where = f"sample {index[0]}" if len(index) == 1 else f"samples {index[0]}–{index[-1]}"
    raise DivergedError(
        f"the run diverged at epoch {epoch}, step {step} ({where}): {bad} is not finite (NaN or inf); "
        f"the learning rate {s.lr:g} is too large for these data: try --lr {s.lr / 10:g}"
        + (" or a smaller --momentum" if s.momentum else "")
    )


def _all_finite(value) -> bool:
    if isinstance(value, dict):
        return _all_finite(value["norm"])
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    return math.isfinite(value)


def train_contrast(problem: Problem, settings: Settings) -> dict:
    """With --no-zero-grad: the same run with gradients zeroed (derived loop only), for comparison."""
    from dataclasses import replace

    try:
        run = train(problem, replace(settings, zero_grad=True), with_torch=False)
    except DivergedError as err:
        return {"diverged": err.message}
    return {"final_loss": run.steps[-1].loss, "params": {k: record_value(v) for k, v in run.final.items()}}
