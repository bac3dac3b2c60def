"""The fx walk: a torch model, traced by torch.fx, written as a backstep program.

trace_model loads and traces the model; _Walk visits the graph's nodes in order and writes one
statement per node, asking the adapters (adapters.py, modules.py, one_to_one.py, looked up
through registry.py; the ops they write found through torch_ops.py) for the text of each torch
call. It also owns the program's names, the model's line for each statement (places), and the
final parse that checks the program.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BackstepError, Place, UnsupportedError, UsageError
from ..ops import FUNCTION_OPS
from ..printing import bar_latex, bar_text, latex_name
from .registry import Alias, SizeOf, Unmapped, function_adapter, method_adapter, module_adapter
from .torch_ops import ops_by_torch

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


def trace_model(spec: str, shapes: dict[str, tuple]) -> Traced:
    """Trace `path.py:name` (an nn.Module instance or class, or a function of tensors)."""
    from ..codegen import load_user_object, user_code

    obj, path = load_user_object(spec, "--torch")
    import torch
    import torch.fx

    if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        obj = create_model(obj, spec, path)
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
    # the tracer's root holds what the graph's get_attr nodes read: the model's parameters and
    # buffers, and the tensor constants fx stores there (a plain function gets a fresh root)
    root = tracer.root
    walk = _Walk(spec, Path(path), root, shapes)
    walk.traced = obj
    return walk.build(graph)


def create_model(cls, spec: str, path):
    """`--torch model.py:Net`: the model is Net(), which must need no arguments."""
    from ..codegen import user_code

    with user_code(f"--torch {spec}", f"while backstep created {cls.__name__}()"):
        try:
            return cls()
        except Exception as err:  # the model's own __init__: any failure is a message
            if isinstance(err, TypeError) and needs_arguments(cls):
                raise UsageError(
                    f"--torch {spec}: {cls.__name__}() needs arguments ({err}); create the model in the file, "
                    f"e.g. model = {cls.__name__}(...), and give --torch {path}:model"
                ) from None
            raise UsageError(
                f"--torch {spec}: {cls.__name__}() failed: {type(err).__name__}: {first_line(err)}"
            ) from None


def needs_arguments(cls) -> bool:
    """Whether calling cls() lacks an argument its signature asks for."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # inspect's own: no signature to read, so none is known missing
        return False
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return any(p.default is p.empty and p.kind not in variadic for p in signature.parameters.values())


def first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


class _Walk:
    """One traced graph written as a backstep program, node by node."""

    def __init__(self, spec: str, path: Path, root, shapes: dict[str, tuple]):
        import torch

        from . import one_to_one  # noqa: F401 (importing it registers every adapter)

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
        from ..parser import parse

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
                    "backstep's .T reverses all the axes, which is the same only for a matrix "
                    "(write x.swapaxes(0, 1) to swap the first two)",
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
        found = ops_by_torch()
        if inner.op == "call_function":
            op = found.functions.get(inner.target)
        elif inner.op == "call_method":
            op = found.methods.get(inner.target)
        else:
            return False
        if op is None or op is not found.functions.get(F.log_softmax):
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
            result = self.adapt(node)
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

    def adapt(self, node):
        """The node's expression, from the adapter registered for its torch target."""
        args, kw = list(node.args), dict(node.kwargs)
        if node.op == "call_module":
            mod = self.root.get_submodule(node.target)
            x = self.arg(node, node.args[0]) if node.args and node.args[0] not in self.fused else None
            return module_adapter(mod)(self, node, mod, x)
        if node.op == "call_function":
            return function_adapter(node.target)(self, node, args, kw)
        if node.op == "call_method":
            return method_adapter(node.target)(self, node, args, kw)
        raise self.unsupported(node)

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
