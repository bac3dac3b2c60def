"""`backstep train`: gradient descent driven by the derived gradient, with torch's own loop beside it.

The lesson of seed 003 (d2l 2.5) derives ∂l/∂w for ``l = (x*w - y)**2`` and then trains ``w`` by
stochastic gradient descent. Here the update of every step uses the gradient *backstep derived*:
the derivation's forward and backward steps, compiled once (for each set of sizes) into a flat
list of torch calls — backstep's ``Evaluator`` with the SymPy walk done ahead of time, checked
against the ``Evaluator`` itself on the first step. Beside it the same loop runs in plain torch:
the parsed graph built as torch operations, ``loss.backward()``, ``w.data -= lr * w.grad``,
``w.grad.zero_()``. After every step the two are compared; the largest difference of parameters,
gradients and losses over the whole run is the proof that the derived loop is the loop torch runs.

Two ways to read a formula against data (rows of every data array are samples):

* *batched*: the formula takes a minibatch, its data variables having a leading batch axis
  (``sum((X@w - y)**2)`` with X: (N, d)); the loss is reduced as the formula says.
* *per sample*: the formula is one sample's loss (``(x*w - y)**2`` with scalar x, y); a minibatch
  of B samples has the mean of the B losses as its loss (and of the B gradients as its gradient).

The formula is tried batched first; when that does not give a scalar loss, per sample.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BackstepError, UsageError
from .numeric import torch_module

RTOL = 1e-7  # float64: the two loops must agree to this, relative to max(1, |torch's value|)
SMALL = 8  # a parameter with at most this many entries is recorded entry by entry, else by its norm
RANDOM = re.compile(r"random(?:\(\s*([^)]*)\))?(?:\s*\*\s*(.+))?")


class DivergedError(BackstepError):
    """The run left the numbers: a loss, gradient or parameter became NaN or infinite."""

    kind = "diverged"


@dataclass
class Settings:
    lr: float = 0.01
    epochs: int = 100
    batch: int | None = 1  # None: the full batch
    momentum: float = 0.0
    zero_grad: bool = True
    shuffle: bool = False
    seed: int = 0

    def check(self) -> None:
        if not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            raise UsageError(f"--lr {self.lr}: the learning rate must be a finite number > 0")
        if self.epochs < 1:
            raise UsageError(f"--epochs {self.epochs}: at least 1")
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"--batch {self.batch}: at least 1 sample per step")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"--momentum {self.momentum}: between 0 (plain SGD) and 1 (excluded)")


# --- reading data and initial values ---------------------------------------------------------------


def load_array(option: str, name: str, text: str):
    """`1,2,3`, `4`, `[[1,2],[3,4]]` (JSON), `file.npy`, `file.csv:col` or `file.csv:a,b` -> float64."""
    torch = torch_module()
    text = text.strip()
    label = f"{option} {name}={text}"
    csv_match = re.fullmatch(r"(.+\.csv):(.*)", text, re.IGNORECASE)
    if csv_match:
        columns = [c.strip() for c in csv_match.group(2).split(",") if c.strip()]
        if not columns:
            raise UsageError(f"{label}: name the column(s) after the colon: {csv_match.group(1)}:x1,x2")
        return _finite(label, read_csv_columns(label, Path(csv_match.group(1)), columns))
    if text.lower().endswith(".csv"):
        raise UsageError(f"{label}: name the column(s) of the CSV file: {name}={text}:COLUMN (or :A,B for several)")
    if text.endswith(".npy"):
        import numpy as np

        try:
            array = np.load(text, allow_pickle=False)
            value = torch.tensor(array.astype(np.float64), dtype=torch.float64)
        except (OSError, ValueError, TypeError) as err:
            raise UsageError(f"{label}: cannot read the array ({err})") from None
        return _finite(label, value)
    if text.startswith("["):
        try:
            data = json.loads(text)
        except ValueError:
            raise UsageError(f"{label}: not a JSON [list] of numbers") from None
    else:
        try:
            data = [float(part) for part in text.split(",")] if "," in text else float(text)
        except ValueError:
            raise UsageError(
                f"{label}: not a number, a list 1,2,3, a JSON [list], a .npy file or a CSV column file.csv:NAME"
            ) from None
    try:
        value = torch.tensor(data, dtype=torch.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise UsageError(f"{label}: not a rectangular array of numbers ({err})") from None
    return _finite(label, value)


def read_csv_columns(label: str, path: Path, columns: list[str]):
    torch = torch_module()
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise UsageError(
                    f"{label}: no column {', '.join(missing)} in {path} (its columns: {', '.join(header)})"
                )
            rows = []
            for line, row in enumerate(reader, 2):
                try:
                    rows.append([float(row[c]) for c in columns])
                except (TypeError, ValueError):
                    bad = next(c for c in columns if not _is_number(row.get(c)))
                    message = f"{label}: {path} line {line}, column {bad}: {row.get(bad)!r} is not a number"
                    raise UsageError(message) from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UsageError(f"{label}: cannot read {path} ({err})") from None
    if not rows:
        raise UsageError(f"{label}: {path} has no rows")
    value = torch.tensor(rows, dtype=torch.float64)
    return value[:, 0] if len(columns) == 1 else value


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _finite(label: str, value):
    if not bool(torch_module().isfinite(value).all()):
        raise UsageError(f"{label}: every number must be finite (no inf or nan)")
    return value


@dataclass
class RandomInit:
    """`--init W=random`, `random(3,5)`, `random(3,5)*0.01`: normal(0, scale²), drawn with --seed."""

    shape: tuple[int, ...] | None
    scale: float


def parse_init(name: str, text: str):
    m = RANDOM.fullmatch(text.strip())
    if not m:
        return load_array("--init", name, text)
    shape = None
    if m.group(1) is not None:
        try:
            shape = tuple(int(p) for p in m.group(1).replace("x", ",").split(",") if p.strip())
        except ValueError:
            raise UsageError(f"--init {name}={text}: write the shape as random(3,5)") from None
        if any(s < 1 for s in shape):
            raise UsageError(f"--init {name}={text}: every size must be at least 1")
    try:
        scale = float(m.group(2)) if m.group(2) else 1.0
    except ValueError:
        raise UsageError(f"--init {name}={text}: the scale after * must be a number (random(3,5)*0.01)") from None
    return RandomInit(shape, scale)


# --- the problem: which variables are data, which are parameters, how the formula reads a batch -----


@dataclass
class Prediction:
    """What `--predict` evaluates: a forward value that does not involve the target."""

    name: str  # a forward step or a variable
    why: str  # how it was chosen, for the output
    inputs: dict[str, Any]  # the given samples, each with a leading axis of k samples
    count: int  # k
    before: list | None = None  # k values (each a float or a nested list)
    after: list | None = None
    torch_after: list | None = None


@dataclass
class Problem:
    source: str
    derivation: Any
    mode: str  # "batch" or "sample"
    batch_dim: str | None  # the symbolic batch axis (mode "batch")
    data: dict[str, Any]  # name -> (N, ...) float64 tensor
    init: dict[str, Any]  # name -> initial value (every parameter, trained or not)
    wrt: list[str]  # the trained parameters
    n: int  # samples (1 when there is no data)
    sizes: dict[str, int]  # the non-batch symbolic dimensions
    prediction: Prediction | None = None
    notes: list[str] = field(default_factory=list)


def setup(
    source: str,
    data_items: list[tuple[str, str]],
    init_items: list[tuple[str, str]],
    wrt: list[str] | None = None,
    predict_items: list[tuple[str, str]] | None = None,
    predict_with: str | None = None,
    seed: int = 0,
    limits=None,
) -> Problem:
    """Read the data and initial values, derive the gradient with the shapes they give, check it all."""
    from .parser import parse

    torch = torch_module()
    data = _unique("--data", data_items, lambda n, t: load_array("--data", n, t))
    raw_init = _unique("--init", init_items, parse_init)
    for name in data:
        if name in raw_init:
            raise UsageError(f"{name} is given both --data and --init: data is fixed, a parameter is trained")
    for name, value in data.items():
        if value.dim() == 0:
            raise UsageError(f"--data {name}: one number is not a data set; give one value per sample: {name}=1,2,3")
    lengths = {name: int(v.shape[0]) for name, v in data.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} has {v}" for k, v in lengths.items())
        raise UsageError(f"the data arrays have different numbers of samples ({listed}): one row per sample in each")
    n = next(iter(lengths.values())) if lengths else 1
    discovered = parse(source, limits=limits)
    names = [v.name for v in discovered.variables]
    for option, given in (("--data", data), ("--init", raw_init)):
        for name in given:
            if name not in names:
                raise UsageError(
                    f"{option} {name}: the formula has no variable {name} (its variables: {', '.join(names)})"
                )
    for name in names:
        if name not in data and name not in raw_init:
            raise UsageError(
                f"{name} has no value: give --init {name}=VALUE for a parameter (or =random), "
                f"or --data {name}=... for data"
            )
    wrt = list(raw_init) if wrt is None else wrt
    for name in wrt:
        if name not in raw_init:
            what = "is data (--data)" if name in data else "has no --init"
            raise UsageError(f"--wrt {name}: {name} {what}; only parameters given with --init are trained")
    if not wrt:
        raise UsageError("nothing to train: give at least one parameter with --init NAME=VALUE")
    declared = {v.name: v.shape for v in discovered.variables}
    init = _initial_values(raw_init, declared, data, torch, seed)
    problem = _derive(source, data, init, wrt, declared, n, limits)
    if predict_items:
        problem.prediction = find_prediction(problem, dict(predict_items), predict_with)
    elif predict_with:
        raise UsageError("--predict-with NAME goes with --predict: give the inputs, e.g. --predict x=4")
    return problem


def _unique(option: str, items, read) -> dict:
    out = {}
    for name, text in items:
        if name in out:
            raise UsageError(f"{option} {name} is given twice")
        out[name] = read(name, text)
    return out


def _initial_values(raw: dict, declared: dict, data: dict, torch, seed: int) -> dict:
    """Random initial values get their shape from random(3,5), else from the program's declaration,
    its dimensions sized by the data."""
    sizes: dict[str, int] = {}
    for name, value in data.items():
        shape, actual = declared.get(name, ()), tuple(value.shape)
        if len(shape) == len(actual):  # declared with its batch axis: skip that axis
            shape, actual = shape[1:], actual[1:]
        elif len(shape) == len(actual) - 1:  # declared as one sample
            actual = actual[1:]
        else:
            continue
        for dim, size in zip(shape, actual):
            if isinstance(dim, str):
                sizes.setdefault(dim, size)
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in raw.items():
        if not isinstance(value, RandomInit):
            out[name] = value
            continue
        shape = value.shape
        if shape is None:
            wanted = declared.get(name, ())
            unknown = [d for d in wanted if isinstance(d, str) and d not in sizes]
            if unknown:
                raise UsageError(
                    f"--init {name}=random: the size of {', '.join(unknown)} is not known from the data; "
                    f"give the shape, e.g. --init {name}=random({','.join('3' for _ in wanted)})"
                )
            shape = tuple(d if isinstance(d, int) else sizes[d] for d in wanted)
        out[name] = value.scale * torch.randn(shape, generator=generator, dtype=torch.float64)
    return out


def _derive(source: str, data: dict, init: dict, wrt: list[str], declared: dict, n: int, limits) -> Problem:
    from .derive import derive

    batch_dim = _batch_dim(data, declared)
    params = {name: tuple(v.shape) for name, v in init.items()}
    attempts = []
    if data:
        attempts.append(("batch", {**params, **{k: (batch_dim, *v.shape[1:]) for k, v in data.items()}}))
    attempts.append(("sample", {**params, **{k: tuple(v.shape[1:]) for k, v in data.items()}}))
    first_error, shape_note = None, None
    for mode, shapes in attempts:
        try:
            d = derive(source, shapes=shapes, wrt=wrt, verify=False, limits=limits)
        except BackstepError as err:
            first_error = first_error or err
            continue
        if d.output_shape != ():
            shape_note = shape_note or (mode, d.output_shape)
            continue
        sizes = {dim: None for dim in d.dims if dim != batch_dim}
        if any(v is None for v in sizes.values()):
            raise UsageError(f"the size of {', '.join(sizes)} is not known: declare it in the program")
        problem = Problem(source, d, mode, batch_dim if mode == "batch" else None, data, init, wrt, n, {})
        return problem
    if shape_note is not None and first_error is None:
        mode, shape = shape_note
        raise UsageError(
            f"the loss must be a number, but the formula gives an array of shape {shape}; reduce it with sum(...) "
            "or mean(...), or write one sample's loss"
        )
    raise first_error


def _batch_dim(data: dict, declared: dict) -> str:
    """The name of the batch axis: the first dimension a program declares for its data, else N."""
    for name, value in data.items():
        shape = declared.get(name, ())
        if len(shape) == value.dim() and shape and isinstance(shape[0], str):
            return shape[0]
    return "N" if "N" not in declared else "N_batch"


# --- prediction -------------------------------------------------------------------------------------


def find_prediction(problem: Problem, given: dict[str, str], predict_with: str | None) -> Prediction:
    """The value `--predict` shows: `--predict-with NAME`, else the forward value the target enters through.

    Targets are the data variables that `--predict` does not give (y for `--predict x=4`). The
    candidates are the values that do not depend on a target but feed a step that does (the
    frontier); with one, it is the prediction (`x*w` in `(x*w - y)**2`); with several, the latest
    value that every one of them depends on (`p` in `sum(-(y*log(p) + (1-y)*log(1-p)))`).
    """
    d = problem.derivation
    for name in given:
        if name not in problem.data:
            raise UsageError(f"--predict {name}: not a data variable (data: {', '.join(problem.data) or 'none'})")
    targets = set(problem.data) - set(given)
    steps = [s.name for s in d.forward]
    inputs_of = {s.name: {str(x) for x in s.expr.free_symbols} for s in d.forward}
    depends: dict[str, set[str]] = {v.name: {v.name} for v in d.variables}
    for s in steps:
        depends[s] = {s}.union(*(depends[x] for x in inputs_of[s] if x in depends))
    params = set(problem.init)
    order = [v.name for v in d.variables] + steps
    if predict_with is not None:
        if predict_with not in depends:
            raise UsageError(
                f"--predict-with {predict_with}: no value of that name (the named ones: {', '.join(order)})"
            )
        name, why = predict_with, "--predict-with"
    elif not targets:
        name, why = d.output, "the formula itself (every data variable is given)"
    else:
        frontier = [
            x
            for x in order
            if not depends[x] & targets
            and depends[x] & params
            and any(x in inputs_of[s] and depends[s] & targets for s in steps)
        ]
        common = [x for x in order if depends[x] & params and not depends[x] & targets]
        common = [x for x in common if all(x in depends[f] for f in frontier)]
        if not frontier or not common:
            raise UsageError(
                f"no value to predict with: name the prediction in a program (p = ...) and give --predict-with p "
                f"(it must not involve {', '.join(sorted(targets))})"
            )
        name = common[-1]
        why = f"the value {', '.join(sorted(targets))} is compared with"
    if depends[name] & targets:
        raise UsageError(f"--predict-with {name}: it involves {', '.join(sorted(depends[name] & targets))}, a target")
    needed = depends[name] & set(problem.data)
    missing = needed - set(given)
    if missing:
        raise UsageError(f"--predict: {name} needs a value for {', '.join(sorted(missing))}")
    values = {}
    count = None
    for key in sorted(needed):
        value = load_array("--predict", key, given[key])
        sample = tuple(problem.data[key].shape[1:])
        if tuple(value.shape) == sample:
            value = value.unsqueeze(0)
        if tuple(value.shape[1:]) != sample:
            raise UsageError(f"--predict {key}: a sample of {key} has shape {sample}, not {tuple(value.shape)}")
        if count is not None and value.shape[0] != count:
            raise UsageError("--predict: every input needs the same number of samples")
        count = int(value.shape[0])
        values[key] = value
    return Prediction(name, why, values, count or 1)


# --- the derived gradient, compiled -----------------------------------------------------------------
