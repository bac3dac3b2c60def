"""`backstep derive --torch model.py:Net`: a torch model, traced into backstep's language.

The model is traced with ``torch.fx.symbolic_trace`` (a ``Tracer`` that records each node's
place in the model's source). Each node becomes one statement of a backstep program, written
in backstep's input language with shape annotations, which the ordinary safe parser then reads:
the traced program is what the derivation shows, and nothing but backstep's own parser turns
text into a graph. Parameters become variables (``fc1.weight`` is ``fc1_weight`` in the program
and is shown as ``fc1.weight``); the forward's arguments are variables whose shapes come from
``--shape``. An operation outside the op table is an UnsupportedError naming the operation and
the model's line.

Loading ``model.py`` runs it: that is what ``--torch`` asks for (the file is the user's own code).
Importing it, creating the model and tracing it run inside ``codegen.user_code``: a sys.exit() in
the model's code, or code that never returns, is an error (exit 2), not backstep's exit or a hang.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BackstepError, Place, UnsupportedError, UsageError
from .ops import FUNCTION_OPS, OPS
from .printing import bar_latex, bar_text, latex_name

FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<fn>\S+)\n(?P<code>[^\n]*)')
RESERVED_NAMES = {"True", "False", "None"}


@dataclass
class Statement:
    name: str
    expr: str
    where: str  # "model.py:14" (the model's line), or ""


@dataclass
class Traced:
    """A traced model: the backstep program, and how its names map back to the model's."""

    spec: str
    source: str
    display: dict[str, str] = field(default_factory=dict)  # program name -> the model's (fc1.weight)
    wrt: list[str] = field(default_factory=list)  # parameters and inputs (not buffers, frozen parameters)
    parameters: list[str] = field(default_factory=list)
    root: object = None  # the traced module (or function), for tests and the Python API
    inputs: list[str] = field(default_factory=list)  # the program names of the forward's arguments

    def decorate(self, derivation) -> None:
        """Show the model's own names (fc1.weight) in the derivation's text and LaTeX."""
        table = derivation.symbols.table
        pairs = sorted(self.display.items(), key=lambda kv: -len(kv[0]))
        for info in table.values():
            for name, shown in pairs:
                info.text = info.text.replace(bar_text(name), bar_text(shown)).replace(name, shown)
                info.latex = info.latex.replace(bar_latex(name), bar_latex(shown))
                info.latex = info.latex.replace(latex_name(name), latex_name(shown))
        if self.display:
            pairs_text = ", ".join(f"{name} = {shown}" for name, shown in self.display.items() if name != shown)
            derivation.notes.append(f"traced from {self.spec}; the model's names: {pairs_text}")
        else:
            derivation.notes.append(f"traced from {self.spec}")


class Unmapped(Exception):
    """An operation the op table has no counterpart for (turned into an UnsupportedError)."""


@dataclass
class SizeOf:
    """`x.size(k)` / `x.shape[k]`: a number, usable only where a reshape asks for the batch size."""

    node: object
    axis: int | None  # None: the whole x.shape


def trace_model(spec: str, shapes: dict[str, tuple]) -> Traced:
    """Trace `path.py:name` (an nn.Module instance or class, or a function of tensors)."""
    from .codegen import load_user_object, user_code

    obj, path = load_user_object(spec, "--torch")
    import torch
    import torch.fx

    if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        with user_code(f"--torch {spec}", f"while backstep created {obj.__name__}()"):
            try:
                obj = obj()
            except TypeError as err:
                raise UsageError(
                    f"--torch {spec}: {obj.__name__}() needs arguments ({err}); create the model in the file, "
                    f"e.g. model = {obj.__name__}(...), and give --torch {path}:model"
                ) from None
    if not (isinstance(obj, torch.nn.Module) or callable(obj)):
        raise UsageError(f"--torch {spec}: neither an nn.Module nor a function")
    tracer = torch.fx.Tracer()
    tracer.record_stack_traces = True
    with user_code(f"--torch {spec}", "while torch.fx traced it"):
        try:
            graph = tracer.trace(obj)
        except Exception as err:  # the model's own code, run by fx: any failure is a message
            raise UnsupportedError(
                f"--torch {spec}: torch.fx cannot trace it ({type(err).__name__}: {first_line(err)}); "
                "backstep needs a forward without data-dependent control flow"
            ) from None
    root = obj if isinstance(obj, torch.nn.Module) else torch.nn.Module()
    builder = _Builder(spec, Path(path), root, shapes)
    builder.traced = obj
    return builder.build(graph)


def first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


class _Builder:
    def __init__(self, spec: str, path: Path, root, shapes: dict[str, tuple]):
        import torch

        self.torch = torch
        self.spec = spec
        self.path = path.resolve()
        self.root = root
        self.shapes = dict(shapes)
        self.text = path.read_text(encoding="utf-8", errors="replace")
        self.value: dict[object, object] = {}  # fx node -> a backstep name, or a SizeOf
        self.statements: list[Statement] = []
        self.annotations: dict[str, tuple] = {}  # variable -> shape, in order of first use
        self.display: dict[str, str] = {}
        self.wrt: list[str] = []
        self.parameters: list[str] = []
        self.taken: set[str] = set()
        self.dims = {d for s in shapes.values() for d in s if isinstance(d, str)}
        self.used_shapes: set[str] = set()
        self.transposes: set = set()  # fx nodes written as .T (checked: they act on a matrix)
        self.rank2: dict[str, object] = {}  # their names in the program

    # --- names ---------------------------------------------------------------------------------

    def fresh(self, wanted: str) -> str:
        name = re.sub(r"\W", "_", wanted)
        if not name or name[0].isdigit():
            name = "v_" + name
        name = name.lstrip("_") or "v"
        if name in FUNCTION_OPS or name in RESERVED_NAMES or name in self.dims:
            name += "_out"
        base, k = name, 1
        while name in self.taken or name in self.dims:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    # --- the walk ------------------------------------------------------------------------------

    def build(self, graph) -> Traced:
        nodes = list(graph.nodes)
        output = next((n for n in nodes if n.op == "output"), None)
        if output is None:
            raise UnsupportedError(f"--torch {self.spec}: the traced graph has no output")
        result = output.args[0]
        if not isinstance(result, self.torch.fx.Node):
            raise UnsupportedError(
                f"--torch {self.spec}: the forward must return one tensor, not {type(result).__name__}",
                *self.place(output),
            )
        live = ancestors(result)
        self.fused = {n.args[0]: n.args[0].args[0] for n in nodes if self.log_softmax_into_nll(n)}
        for node in nodes:
            if node.op == "placeholder" and node.users and node in live:
                self.placeholder(node)
        for node in nodes:
            if node in live and node.op not in ("placeholder", "output"):
                self.visit(node)
        unknown = [n for n in self.shapes if n not in self.used_shapes]
        if unknown:
            inputs = [n.target for n in nodes if n.op == "placeholder"]
            raise UsageError(
                f"--shape names {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} not an input "
                f"of {self.spec} (its inputs: {', '.join(inputs) or 'none'})"
            )
        out = self.value.get(result)
        if not isinstance(out, str) or out not in {s.name for s in self.statements}:
            raise UnsupportedError(f"--torch {self.spec}: the output does not depend on any parameter or input")
        source = self.program(out)
        self.check(source)
        inputs = [self.value[n] for n in nodes if n.op == "placeholder" and n in self.value]
        return Traced(self.spec, source, self.display, self.wrt, self.parameters, root=self.traced, inputs=inputs)

    def program(self, out: str) -> str:
        lines = []
        for name, shape in self.annotations.items():
            lines.append(f"{name}: ({', '.join(str(d) for d in shape)}{',' if len(shape) == 1 else ''})")
        body = [s for s in self.statements]
        # the output's statement last: it is the program's output
        last = next(i for i, s in enumerate(body) if s.name == out)
        body.append(body.pop(last))
        for s in body:
            lines.append(f"{s.name} = {s.expr}" + (f"  # {s.where}" if s.where else ""))
        return "\n".join(lines) + "\n"

    def check(self, source: str) -> None:
        """Parse the program once: a shape error is reported at the model's line, and each `.T`
        must act on a matrix (torch's transpose(0, 1) is backstep's .T only there)."""
        from .parser import parse

        try:
            graph = parse(source)
        except BackstepError as err:
            if err.place is not None:
                line = source.splitlines()[err.place.line - 1]
                where = line.split("  # ")[-1] if "  # " in line else ""
                stmt = line.split("  # ")[0]
                raise type(err)(
                    f"{err.message} — in the traced statement `{stmt}`" + (f" (model line {where})" if where else ""),
                ) from None
            raise
        by_name = {n.name: n for n in graph.nodes}
        for name, fx_node in self.rank2.items():
            node = by_name.get(name)
            if node is not None and node.inputs and len(node.inputs[0].shape) != 2:
                raise UnsupportedError(
                    f"{self.describe(fx_node)} swaps two axes of an array of rank {len(node.inputs[0].shape)}; "
                    "backstep's .T reverses all the axes, which is the same only for a matrix",
                    *self.place(fx_node),
                )

    # --- places --------------------------------------------------------------------------------

    def frame(self, node) -> tuple[int, str] | None:
        """(line, code) of the model's line that made this node."""
        trace = node.stack_trace or node.meta.get("stack_trace") or ""
        frames = [m for m in FRAME.finditer(trace)]
        mine = [m for m in frames if Path(m.group("file")).resolve() == self.path]
        if mine:
            m = mine[-1]
            return int(m.group("line")), m.group("code").strip()
        return None

    def where(self, node) -> str:
        f = self.frame(node)
        return f"{self.path.name}:{f[0]}" if f else ""

    def place(self, node, word: str | None = None) -> tuple:
        """(place, source) for an error, so that the CLI shows the model's line with a caret."""
        f = self.frame(node)
        if f is None:
            return ()
        line_no = f[0]
        lines = self.text.splitlines()
        if not 1 <= line_no <= len(lines):
            return ()
        text = lines[line_no - 1]
        col = text.find(word) + 1 if word and word in text else len(text) - len(text.lstrip()) + 1
        end = col + len(word) if word and word in text else len(text.rstrip()) + 1
        return Place(line_no, col, end), self.text

    def describe(self, node) -> str:
        import torch.fx.node as fx_node

        if node.op == "call_function":
            name = fx_node._get_qualified_name(node.target)
            return name.replace("_operator.", "operator.")
        if node.op == "call_method":
            return f"Tensor.{node.target}()"
        if node.op == "call_module":
            cls = type(self.root.get_submodule(node.target))
            prefix = "nn." if cls.__module__.startswith("torch.nn.") else cls.__module__ + "."
            return f"{prefix}{cls.__qualname__} (self.{node.target})"
        return f"{node.op} {node.target}"

    def unsupported(self, node, why: str = "") -> UnsupportedError:
        what = self.describe(node)
        word = getattr(node.target, "__name__", None) or str(node.target).split(".")[-1]
        where = self.where(node)
        msg = (
            f"{what}{' (' + where + ')' if where else ''} "
            + (why or "is not in backstep's op table (`backstep ops` lists what is)")
            + f"; tracing {self.spec}"
        )
        return UnsupportedError(msg, *self.place(node, word))

    # --- leaves --------------------------------------------------------------------------------

    def placeholder(self, node) -> None:
        arg = str(node.target).lstrip("*")
        if arg not in self.shapes:
            raise UsageError(
                f"give the shape of {self.spec}'s input {arg}: --shape {arg}=N,… (dimension names or sizes)"
            )
        self.used_shapes.add(arg)
        name = self.fresh(arg)
        if name != arg:
            self.display[name] = arg
        self.value[node] = name
        self.annotations[name] = tuple(self.shapes[arg])
        self.wrt.append(name)

    def tensor_attr(self, target: str):
        obj = self.root
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def parameter(self, target: str, tensor, node) -> str:
        """A parameter (or buffer) of the model as a variable; the same one each time."""
        key = ("param", target)
        if key in self.value:
            return self.value[key]
        if not isinstance(tensor, self.torch.Tensor):
            raise self.unsupported(node, f"reads {target}, which is not a tensor")
        name = self.fresh(target)
        self.display[name] = target
        self.value[key] = name
        self.annotations[name] = tuple(int(s) for s in tensor.shape)
        is_param = isinstance(tensor, self.torch.nn.Parameter)
        if is_param and tensor.requires_grad:
            self.wrt.append(name)
        if is_param:
            self.parameters.append(name)
        return name

    # --- nodes ---------------------------------------------------------------------------------

    def emit(self, node, expr: str, name: str | None = None) -> str:
        name = self.fresh(name or node.name)
        self.statements.append(Statement(name, expr, self.where(node)))
        self.value[node] = name
        return name

    def arg(self, node, a) -> str:
        """An argument as backstep text: a name, or a number."""
        if isinstance(a, self.torch.fx.Node):
            v = self.value.get(a)
            if isinstance(v, str):
                return v
            if isinstance(v, SizeOf):
                raise self.unsupported(node, "uses a tensor's size as a number; backstep uses it only to reshape")
            raise self.unsupported(node)
        if isinstance(a, bool) or a is None:
            raise self.unsupported(node, f"takes {a!r} where backstep needs a tensor or a number")
        if isinstance(a, int):
            return str(a)
        if isinstance(a, float):
            if a != a or a in (float("inf"), float("-inf")):
                raise self.unsupported(node, f"takes the number {a}, which is not finite")
            return repr(a)
        raise self.unsupported(node, f"takes {type(a).__name__} {a!r} where backstep needs a tensor or a number")

    def log_softmax_into_nll(self, node) -> bool:
        """nll_loss(log_softmax(z, dim=1), t), log_softmax used nowhere else: cross_entropy(z, t)."""
        F = self.torch.nn.functional
        is_nll = (node.op == "call_function" and node.target is F.nll_loss) or (
            node.op == "call_module" and isinstance(self.root.get_submodule(node.target), self.torch.nn.NLLLoss)
        )
        if not is_nll or not node.args or not isinstance(node.args[0], self.torch.fx.Node):
            return False
        inner = node.args[0]
        if len(inner.users) != 1 or not inner.args:
            return False
        if inner.op == "call_function" and inner.target in (F.log_softmax, self.torch.log_softmax):
            pass
        elif not (inner.op == "call_method" and inner.target == "log_softmax"):
            return False
        dim = inner.args[1] if len(inner.args) > 1 else inner.kwargs.get("dim")
        return dim in (1, -1) and inner.kwargs.get("dtype") is None

    def visit(self, node) -> None:
        if node in self.fused:
            return  # written with the nll_loss that reads it, as cross_entropy
        if node.op == "get_attr":
            tensor = self.tensor_attr(node.target)
            self.value[node] = self.parameter(node.target, tensor, node)
            return
        try:
            if node.op == "call_module":
                result = self.module(node, self.root.get_submodule(node.target))
            elif node.op == "call_function":
                result = self.function(node, node.target, list(node.args), dict(node.kwargs))
            elif node.op == "call_method":
                result = self.method(node, node.target, list(node.args), dict(node.kwargs))
            else:
                raise self.unsupported(node)
        except Unmapped as err:
            raise self.unsupported(node, str(err) or "") from None
        if isinstance(result, Alias):
            self.value[node] = result.name
        elif isinstance(result, SizeOf):
            self.value[node] = result
        else:
            name = self.emit(node, result, name="loss" if self.is_loss(node) else node.name)
            if node in self.transposes:
                self.rank2[name] = node

    def is_loss(self, node) -> bool:
        """A loss function's node is called `loss` in the program (when that name is free)."""
        F = self.torch.nn.functional
        if "loss" in self.taken:
            return False
        if node.op == "call_function":
            return node.target in (F.cross_entropy, F.mse_loss, F.nll_loss)
        if node.op == "call_module":
            return isinstance(self.root.get_submodule(node.target), self.torch.nn.modules.loss._Loss)
        return False

    # --- the mapping ---------------------------------------------------------------------------

    def function(self, node, target, args: list, kw: dict):
        torch = self.torch
        F = torch.nn.functional
        a = lambda i: self.arg(node, args[i])  # noqa: E731 (a short local reader)
        binary = {
            operator.add: "+",
            operator.sub: "-",
            operator.mul: "*",
            operator.truediv: "/",
            operator.pow: "**",
            operator.matmul: "@",
            torch.add: "+",
            torch.sub: "-",
            torch.subtract: "-",
            torch.mul: "*",
            torch.multiply: "*",
            torch.div: "/",
            torch.divide: "/",
            torch.true_divide: "/",
            torch.matmul: "@",
            torch.mm: "@",
            torch.pow: "**",
        }
        if target in binary:
            self.only(kw, alpha=1, rounding_mode=None)
            return f"{a(0)} {binary[target]} {a(1)}"
        compare = {operator.gt: ">", operator.ge: ">=", operator.lt: "<", operator.le: "<="}
        compare.update({torch.gt: ">", torch.ge: ">=", torch.lt: "<", torch.le: "<="})
        if target in compare:
            return f"{a(0)} {compare[target]} {a(1)}"
        if target in (operator.neg, torch.neg, torch.negative):
            return f"-{a(0)}"
        if target is operator.pos:
            return Alias(a(0))
        unary = {
            torch.relu: "relu",
            F.relu: "relu",
            torch.tanh: "tanh",
            F.tanh: "tanh",
            torch.sigmoid: "sigmoid",
            F.sigmoid: "sigmoid",
            torch.exp: "exp",
            torch.log: "log",
            torch.sin: "sin",
            torch.cos: "cos",
            torch.tan: "tan",
            torch.sqrt: "sqrt",
            torch.abs: "abs",
            torch.erf: "erf",
            torch.trace: "trace",
            torch.det: "det",
            torch.linalg.det: "det",
            torch.logdet: "logdet",
            torch.inverse: "inv",
            torch.linalg.inv: "inv",
            torch.diag: "diag",
            torch.sign: "sign",
        }
        if target in unary:
            self.only(kw, inplace=False)
            if len(args) != 1:
                raise Unmapped(f"takes {len(args)} arguments; backstep's {unary[target]} takes one")
            return f"{unary[target]}({a(0)})"
        if target is torch.square:
            return f"{a(0)} ** 2"
        if target in (torch.outer, torch.dot, torch.maximum, torch.minimum):
            return f"{target.__name__}({a(0)}, {a(1)})"
        if target in (torch.linalg.norm, torch.norm):
            self.only(kw, ord=None, dim=None, p="fro", keepdim=False)
            if len(args) > 1:
                raise Unmapped("with an order or axes; backstep's norm is the 2-norm (Frobenius) of everything")
            return f"norm({a(0)})"
        if target is F.gelu:
            self.only(kw, approximate="none")
            return f"gelu({a(0)})"
        if target is F.softplus:
            self.only(kw, beta=1, threshold=20)
            return f"softplus({a(0)})"
        if target is F.leaky_relu:
            slope = args[1] if len(args) > 1 else kw.get("negative_slope", 0.01)
            return f"leaky_relu({a(0)}, negative_slope={float(slope)!r})"
        if target is F.elu:
            alpha = args[1] if len(args) > 1 else kw.get("alpha", 1.0)
            return f"elu({a(0)}, alpha={float(alpha)!r})"
        if target in (torch.clamp, torch.clip):
            return self.clamp(node, args, kw)
        if target in (torch.sum, torch.mean):
            return self.reduce(node, target.__name__, args, kw)
        if target in (torch.softmax, F.softmax, torch.log_softmax, F.log_softmax):
            return self.softmax(node, target.__name__, args, kw)
        if target is torch.logsumexp:
            dim = args[1] if len(args) > 1 else kw.get("dim")
            if kw.get("keepdim"):
                raise Unmapped("with keepdim=True")
            if isinstance(dim, (tuple, list)):
                raise Unmapped("over several axes")
            return f"logsumexp({a(0)}, axis={dim})"
        if target is F.linear:
            bias = args[2] if len(args) > 2 else kw.get("bias")
            w = self.arg(node, args[1] if len(args) > 1 else kw["weight"])
            if bias is None:
                return f"{a(0)} @ {w}.T"
            return f"linear({a(0)}, {w}, {self.arg(node, bias)})"
        if target is F.conv2d:
            names = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
            p = dict(zip(names, args))
            p.update(kw)
            return self.conv2d(node, p)
        if target in (F.max_pool2d, F.avg_pool2d):
            kind = "max_pool2d" if target is F.max_pool2d else "avg_pool2d"
            names = ["input", "kernel_size", "stride", "padding"]
            p = dict(zip(names, args))
            p.update(kw)
            return self.pool(node, kind, p)
        if target is torch.flatten:
            start = args[1] if len(args) > 1 else kw.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kw.get("end_dim", -1)
            return self.flatten(node, a(0), start, end)
        if target is torch.reshape:
            return self.reshape(node, args[0], args[1] if len(args) > 1 else kw.get("shape"))
        if target in (torch.t,):
            return self.transpose(node, a(0))
        if target is torch.transpose:
            return self.transpose(node, a(0), args[1:3])
        if target is torch.unsqueeze:
            dim = args[1] if len(args) > 1 else kw.get("dim")
            return f"unsqueeze({a(0)}, axis={dim})"
        if target is F.cross_entropy:
            return self.cross_entropy(node, args, kw)
        if target is F.nll_loss:
            return self.nll(node, args, kw)
        if target is F.mse_loss:
            reduction = args[2] if len(args) > 2 else kw.get("reduction", "mean")
            return self.mse(node, a(0), self.arg(node, args[1] if len(args) > 1 else kw["target"]), reduction)
        if target is F.dropout:
            p = args[1] if len(args) > 1 else kw.get("p", 0.5)
            training = args[2] if len(args) > 2 else kw.get("training", True)
            if training and p:
                raise Unmapped("is random while training: call model.eval() in the file, or remove it")
            return Alias(a(0))
        if target is torch.where:
            return f"where({a(0)}, {a(1)}, {a(2)})"
        if target is getattr:
            return self.attribute(node, args[0], args[1])
        if target is operator.getitem:
            base = self.value.get(args[0]) if isinstance(args[0], self.torch.fx.Node) else None
            if isinstance(base, SizeOf) and base.axis is None and isinstance(args[1], int):
                return SizeOf(base.node, args[1])
            raise Unmapped("(indexing) is not in backstep's op table")
        raise Unmapped("")

    def method(self, node, name: str, args: list, kw: dict):
        torch = self.torch
        same = {
            "add": torch.add,
            "sub": torch.sub,
            "mul": torch.mul,
            "div": torch.div,
            "matmul": torch.matmul,
            "mm": torch.mm,
            "pow": torch.pow,
            "neg": torch.neg,
            "relu": torch.relu,
            "tanh": torch.tanh,
            "sigmoid": torch.sigmoid,
            "exp": torch.exp,
            "log": torch.log,
            "sin": torch.sin,
            "cos": torch.cos,
            "tan": torch.tan,
            "sqrt": torch.sqrt,
            "abs": torch.abs,
            "erf": torch.erf,
            "square": torch.square,
            "clamp": torch.clamp,
            "clip": torch.clip,
            "sum": torch.sum,
            "mean": torch.mean,
            "softmax": torch.softmax,
            "log_softmax": torch.log_softmax,
            "logsumexp": torch.logsumexp,
            "flatten": torch.flatten,
            "unsqueeze": torch.unsqueeze,
            "transpose": torch.transpose,
            "t": torch.t,
            "outer": torch.outer,
            "dot": torch.dot,
            "trace": torch.trace,
            "det": torch.det,
            "logdet": torch.logdet,
            "inverse": torch.inverse,
            "diag": torch.diag,
            "maximum": torch.maximum,
            "minimum": torch.minimum,
            "norm": torch.norm,
            "sign": torch.sign,
        }
        if name in same:
            return self.function(node, same[name], args, kw)
        if name in ("view", "reshape"):
            shape = args[1:] if len(args) > 2 or (len(args) == 2 and not isinstance(args[1], (tuple, list))) else None
            if shape is None:
                shape = args[1] if len(args) == 2 else kw.get("shape", kw.get("size"))
            return self.reshape(node, args[0], shape)
        if name == "permute":
            dims = args[1:] if len(args) > 2 else args[1]
            if list(dims) != [1, 0]:
                raise Unmapped("other than (1, 0) on a matrix")
            return self.transpose(node, self.arg(node, args[0]))
        if name in ("contiguous", "float", "double", "clone"):
            return Alias(self.arg(node, args[0]))
        if name == "size":
            axis = args[1] if len(args) > 1 else kw.get("dim")
            return SizeOf(args[0], axis)
        raise Unmapped("")

    def module(self, node, mod):
        nn = self.torch.nn
        x = self.arg(node, node.args[0]) if node.args and node.args[0] not in self.fused else None
        if isinstance(mod, nn.Linear):
            w = self.parameter(f"{node.target}.weight", mod.weight, node)
            if mod.bias is None:
                return f"{x} @ {w}.T"
            b = self.parameter(f"{node.target}.bias", mod.bias, node)
            return f"linear({x}, {w}, {b})"
        simple = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
        for cls, fn in simple.items():
            if type(mod) is cls:
                return f"{fn}({x})"
        if isinstance(mod, (nn.Identity,)):
            return Alias(x)
        if isinstance(mod, nn.Dropout):
            if mod.training and mod.p:
                raise Unmapped("is random while training: call model.eval() in the file, or remove it")
            return Alias(x)
        if isinstance(mod, (nn.Softmax, nn.LogSoftmax)):
            if mod.dim is None:
                raise Unmapped("without dim: give it, e.g. nn.Softmax(dim=1)")
            fn = "softmax" if isinstance(mod, nn.Softmax) else "log_softmax"
            return f"{fn}({x}, axis={mod.dim})"
        if isinstance(mod, nn.LeakyReLU):
            return f"leaky_relu({x}, negative_slope={float(mod.negative_slope)!r})"
        if isinstance(mod, nn.ELU):
            return f"elu({x}, alpha={float(mod.alpha)!r})"
        if isinstance(mod, nn.GELU):
            if mod.approximate != "none":
                raise Unmapped("with approximate='tanh'; backstep's gelu is the exact (erf) one")
            return f"gelu({x})"
        if isinstance(mod, nn.Softplus):
            if mod.beta != 1:
                raise Unmapped("with beta ≠ 1")
            return f"softplus({x})"
        if isinstance(mod, nn.Flatten):
            return self.flatten(node, x, mod.start_dim, mod.end_dim)
        if isinstance(mod, nn.Conv2d):
            if mod.padding_mode != "zeros":
                raise Unmapped(f"with padding_mode={mod.padding_mode!r}")
            p = {"input": node.args[0], "stride": mod.stride, "padding": mod.padding}
            p.update(dilation=mod.dilation, groups=mod.groups)
            p["weight"] = ("param", f"{node.target}.weight", mod.weight)
            p["bias"] = ("param", f"{node.target}.bias", mod.bias) if mod.bias is not None else None
            return self.conv2d(node, p)
        if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            kind = "max_pool2d" if isinstance(mod, nn.MaxPool2d) else "avg_pool2d"
            p = {"input": node.args[0], "kernel_size": mod.kernel_size, "stride": mod.stride, "padding": mod.padding}
            if isinstance(mod, nn.MaxPool2d):
                p.update(dilation=mod.dilation, return_indices=mod.return_indices)
            p["ceil_mode"] = mod.ceil_mode
            if isinstance(mod, nn.AvgPool2d):
                p["divisor_override"] = mod.divisor_override
            return self.pool(node, kind, p)
        if isinstance(mod, nn.MSELoss):
            return self.mse(node, x, self.arg(node, node.args[1]), mod.reduction)
        if isinstance(mod, nn.NLLLoss):
            if mod.weight is not None:
                raise Unmapped("with class weights")
            return self.nll(node, list(node.args), {"reduction": mod.reduction})
        if isinstance(mod, nn.CrossEntropyLoss):
            if mod.weight is not None or mod.label_smoothing:
                raise Unmapped("with class weights or label smoothing")
            return self.cross_entropy(node, list(node.args), {"reduction": mod.reduction})
        raise Unmapped("")

    # --- the mapping, one op at a time ------------------------------------------------------------

    @staticmethod
    def only(kw: dict, **defaults) -> None:
        """Keyword arguments must be absent or at their defaults (the op table has no others)."""
        for key, value in kw.items():
            if key in defaults and value != defaults[key]:
                raise Unmapped(f"with {key}={value!r}")
            if key not in defaults and key not in ("input", "out", "dtype") and value is not None:
                raise Unmapped(f"with {key}={value!r}")

    def clamp(self, node, args, kw) -> str:
        lo = args[1] if len(args) > 1 else kw.get("min")
        hi = args[2] if len(args) > 2 else kw.get("max")
        parts = [self.arg(node, args[0])]
        for key, value in (("min", lo), ("max", hi)):
            if value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise Unmapped(f"with a tensor {key}")
            parts.append(f"{key}={float(value)!r}")
        return f"clamp({', '.join(parts)})"

    def reduce(self, node, kind: str, args, kw) -> str:
        x = self.arg(node, args[0])
        dim = args[1] if len(args) > 1 else kw.get("dim", kw.get("axis"))
        keep = args[2] if len(args) > 2 else kw.get("keepdim", False)
        if kw.get("dtype") is not None:
            raise Unmapped("with a dtype")
        if dim is None or (isinstance(dim, (tuple, list)) and not dim):
            return f"{kind}({x}, keepdims=True)" if keep else f"{kind}({x})"
        dims = list(dim) if isinstance(dim, (tuple, list)) else [dim]
        if all(d >= 0 for d in dims):
            order = sorted(dims, reverse=True)
        elif all(d < 0 for d in dims):
            order = sorted(dims, reverse=True)  # -1 first
            if not keep:
                order = [d + i for i, d in enumerate(order)]
        else:
            raise Unmapped("over axes counted from both ends")
        out = x
        for d in order:
            out = f"{kind}({out}, axis={d}{', keepdims=True' if keep else ''})"
        return out

    def softmax(self, node, kind: str, args, kw) -> str:
        dim = args[1] if len(args) > 1 else kw.get("dim")
        if dim is None:
            raise Unmapped("without dim: give it, e.g. softmax(x, dim=1)")
        if kw.get("dtype") is not None:
            raise Unmapped("with a dtype")
        return f"{kind}({self.arg(node, args[0])}, axis={dim})"

    def attribute(self, node, base, attr: str):
        if attr == "T":
            return self.transpose(node, self.arg(node, base))
        if attr == "shape":
            return SizeOf(base, None)
        raise Unmapped(f"(the attribute .{attr}) is not in backstep's op table")

    def transpose(self, node, x: str, dims=None) -> str:
        if dims is not None and sorted(int(d) % 2 for d in dims) != [0, 1]:
            raise Unmapped(f"over the axes {tuple(dims)}; backstep transposes matrices (.T)")
        self.transposes.add(node)
        return f"{x}.T"

    def flatten(self, node, x: str, start: int, end: int) -> str:
        if "flatten" not in OPS:
            raise Unmapped("is not in backstep's op table yet")
        params = ""
        if start != 1:
            params += f", start_dim={start}"
        if end != -1:
            params += f", end_dim={end}"
        return f"flatten({x}{params})"

    def reshape(self, node, base, shape) -> str:
        if "reshape" not in OPS:
            raise Unmapped("is not in backstep's op table yet")
        x = self.arg(node, base)
        if shape is None:
            raise Unmapped("without a shape")
        items = list(shape) if isinstance(shape, (tuple, list)) else [shape]
        sizes = [self.value.get(i) if isinstance(i, self.torch.fx.Node) else i for i in items]
        batch = [i for i, s in enumerate(sizes) if isinstance(s, SizeOf)]
        if batch:
            s = sizes[batch[0]]
            if batch != [0] or s.node is not base or s.axis not in (0, None):
                raise Unmapped("with sizes computed from tensors other than x.size(0)")
            rest = sizes[1:]
            if rest == [-1]:
                return f"flatten({x})" if "flatten" in OPS else f"reshape({x}, (-1,))"
            if -1 in rest:
                raise Unmapped("with both x.size(0) and -1; write the sizes")
            sizes = [-1] + rest
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
            raise Unmapped("with sizes that are not integers")
        return f"reshape({x}, ({', '.join(str(s) for s in sizes)}{',' if len(sizes) == 1 else ''}))"

    def tensor_or_param(self, node, item) -> str | None:
        if item is None:
            return None
        if isinstance(item, tuple) and len(item) == 3 and item[0] == "param":
            return self.parameter(item[1], item[2], node)
        return self.arg(node, item)

    def conv2d(self, node, p: dict) -> str:
        if "conv2d" not in OPS:
            raise Unmapped("is not in backstep's op table yet")
        if p.get("groups", 1) != 1:
            raise Unmapped(f"with groups={p['groups']}")
        if pair(p.get("dilation", 1)) != (1, 1):
            raise Unmapped(f"with dilation={p['dilation']}")
        padding = p.get("padding", 0)
        if isinstance(padding, str):
            if padding != "valid":
                raise Unmapped(f"with padding={padding!r}; give the padding as numbers")
            padding = 0
        x = self.tensor_or_param(node, p["input"])
        w = self.tensor_or_param(node, p["weight"])
        b = self.tensor_or_param(node, p.get("bias"))
        extra = ""
        if pair(p.get("stride", 1)) != (1, 1):
            extra += f", stride={compact(p['stride'])}"
        if pair(padding) != (0, 0):
            extra += f", padding={compact(padding)}"
        conv = f"conv2d({x}, {w}{extra})"
        if b is None:
            return conv
        channels = self.annotations.get(b, (None,))[0]
        if not isinstance(channels, int):
            raise Unmapped("with a bias whose size is not known")
        return f"{conv} + reshape({b}, ({channels}, 1, 1))"

    def pool(self, node, kind: str, p: dict) -> str:
        if kind not in OPS:
            raise Unmapped("is not in backstep's op table yet")
        if pair(p.get("padding", 0)) != (0, 0):
            raise Unmapped(f"with padding={p['padding']}")
        if pair(p.get("dilation", 1)) != (1, 1):
            raise Unmapped(f"with dilation={p['dilation']}")
        if p.get("ceil_mode") or p.get("return_indices") or p.get("divisor_override"):
            raise Unmapped("with ceil_mode, return_indices or divisor_override")
        x = self.tensor_or_param(node, p["input"])
        k = p["kernel_size"]
        stride = p.get("stride")
        extra = ""
        if stride not in (None, (), []) and pair(stride) != pair(k):
            extra = f", stride={compact(stride)}"
        return f"{kind}({x}, {compact(k)}{extra})"

    def cross_entropy(self, node, args, kw) -> str:
        z = self.arg(node, args[0])
        t = self.arg(node, args[1] if len(args) > 1 else kw["target"])
        for key in ("weight",):
            if kw.get(key) is not None:
                raise Unmapped(f"with {key}")
        if kw.get("label_smoothing"):
            raise Unmapped("with label smoothing")
        reduction = kw.get("reduction", "mean")
        if reduction not in ("mean", "sum"):
            raise Unmapped(f"with reduction={reduction!r}")
        return f"cross_entropy({z}, {t})" if reduction == "mean" else f'cross_entropy({z}, {t}, reduction="sum")'

    def nll(self, node, args, kw) -> str:
        """nll_loss of a log_softmax over the classes is the cross-entropy of the logits."""
        logp = args[0]
        if logp not in self.fused:
            raise Unmapped("except as nll_loss(log_softmax(z, dim=1), t), which backstep writes cross_entropy(z, t)")
        if kw.get("weight") is not None:
            raise Unmapped("with class weights")
        return self.cross_entropy(node, [self.fused[logp], *args[1:]], {"reduction": kw.get("reduction", "mean")})

    def mse(self, node, a: str, b: str, reduction: str) -> str:
        if reduction == "mean":
            return f"mse({a}, {b})"
        if reduction == "sum":
            return f"sum(({a} - {b}) ** 2)"
        if reduction == "none":
            return f"({a} - {b}) ** 2"
        raise Unmapped(f"with reduction={reduction!r}")


@dataclass
class Alias:
    """An op that changes nothing backstep sees (dropout in eval mode, .contiguous()): its input."""

    name: str


def pair(value) -> tuple:
    if isinstance(value, (tuple, list)):
        return tuple(value) if len(value) == 2 else (value[0], value[0])
    return (value, value)


def compact(value):
    """2 or (2, 3): a pair with equal halves written as one number."""
    p = pair(value)
    return p[0] if p[0] == p[1] else p


def ancestors(node) -> set:
    seen = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return seen


def trace_from_cli(spec: str, expr: str | None, file, shapes: dict[str, tuple]) -> Traced:
    """--torch: the model instead of a formula (not both)."""
    if expr is not None or file is not None:
        raise UsageError("give a formula (or -f FILE) or --torch FILE.py:NAME, not both")
    return trace_model(spec, shapes)
