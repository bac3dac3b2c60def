"""The module `backstep codegen` writes: a derivation laid out as a `torch.autograd.Function`.

``forward`` computes the forward steps; ``backward`` recomputes from the saved inputs the
intermediates it reads, then computes the derivation's backward steps one line each, in plain
torch operations. Only inputs (and the output) are saved, never an intermediate made in
``forward`` (which autograd does not track there): so the backward is itself differentiable by
autograd, and double backward (``gradgradcheck``, a gradient penalty) is right. Two styles:
``ctx`` (``forward(ctx, ...)``) and ``setup_context`` (``forward(...)`` and
``setup_context(ctx, inputs, output)``, the form ``torch.func`` transforms take, with
``generate_vmap_rule = True``). Constants take the dtype and device of a tensor in scope.

The module text comes from the jinja2 template ``backstep/templates/codegen/function.py.j2``;
the lines are made here, laid out as ``ruff format`` lays them out within 88 columns.
``generate`` parses the module it made and checks its docstring and its top level before handing
it out (``text`` says how user text reaches the docstring and nothing else). ``safe_names`` makes
every name of the derivation a Python identifier that clashes with nothing.
"""

from __future__ import annotations

import ast
import keyword
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import sympy

from ..errors import CannotPrint, UsageError
from ..model import Derivation, SymbolInfo, Symbols
from ..numeric import sample_sizes
from ..printing import Printer
from .gradcheck import gradcheck_context
from .layout import bracketed, needs_lines, none_lines, return_lines, unpack_lines
from .printer import INDENT, RESERVED, CodegenError, CodePrinter, ShapeOf, fit
from .text import check_class_name, comment, literal_text, module_doc, raw_docstring_ok, step_comment

STYLES = ("ctx", "setup_context")

# --- the module ----------------------------------------------------------------------------------------


@dataclass
class Block:
    guard: str | None
    lines: list[str] = field(default_factory=list)


@dataclass
class Generated:
    code: str
    class_name: str
    inputs: list[str]  # variable names, in order (backstep's names)
    sizes: dict[str, int]  # the gradcheck's size of each dimension
    module_name: str | None = None  # the nn.Module wrapper's class, if one was asked for


def python_name(name: str) -> str:
    """`name` as Python reads an identifier (NFKC): a --shape dimension ｔｏｒｃｈ is torch to Python."""
    return unicodedata.normalize("NFKC", name)


def safe_names(d: Derivation, class_name: str) -> dict[str, str]:
    """Every name of the derivation as a Python identifier that does not clash with the module's
    names nor with another name of the derivation (ﬁ and fi are one name to Python)."""
    names = list(d.symbols.table) + list(d.dims)
    for name in names:
        if not python_name(name).isidentifier():  # the parser and --shape allow only identifiers
            raise CodegenError(f"internal: the name {name!r} is not a Python identifier")
    taken = {python_name(n) for n in names} | RESERVED | {class_name}
    given: set[str] = set()
    out = {}
    for name in names:
        new = python_name(name)
        if new in RESERVED or new == class_name or keyword.iskeyword(new) or new in given:
            while new in taken or new in given or keyword.iskeyword(new):
                new += "_"
            taken.add(new)
        given.add(new)
        out[name] = new
    return out


def generate(
    d: Derivation,
    class_name: str = "DerivedFunction",
    command: str | None = None,
    style: str = "ctx",
    module: bool = False,
) -> Generated:
    """The module text for derivation `d` (see the module docstring). `style`: "ctx" or
    "setup_context"; `module`: also an nn.Module `<class_name>Module` whose forward applies it."""
    check_class_name(class_name)
    if style not in STYLES:
        raise UsageError(f"--style {style!r}: write one of {', '.join(STYLES)}")
    module_name = check_class_name(class_name + "Module") if module else None
    if not d.forward:
        raise CodegenError(f"the output {d.output} is an input itself: there is no computation to write")
    w = ModuleWriter(d, class_name, module_name)
    rename, inputs, wanted, final = w.rename, w.inputs, w.wanted, w.final
    recompute_lines, blocks, steps, again = w.backward()

    used = steps.used | again.used
    saved = [n for n in inputs if n in used] + ([d.output] if d.output in used else [])
    backward_dims = [dm for dm in d.dims if dm in used]
    # Dimensions in backward: from the upstream gradient, the saved tensors, else stashed on ctx.
    sources = [(w.seed, d.seed.shape)] + [(n, w.shapes[n]) for n in saved]
    backward_dim_lines, stash = dim_lines(backward_dims, sources, rename)

    forward_lines, fprinter = w.forward(steps.taken)
    forward_dims = [dm for dm in d.dims if dm in fprinter.used or (dm in stash and style == "ctx")]
    input_shapes = [(n, w.shapes[n]) for n in inputs]
    forward_dim_lines, missing = dim_lines(forward_dims, input_shapes, rename)
    stash_dim_lines, missing_stash = dim_lines(stash, input_shapes, rename)
    if missing or missing_stash:
        raise CodegenError(f"the sizes {', '.join(missing + missing_stash)} are not the size of any input")

    returns = [rename[final[v]] if v in final else "None" for v in inputs]
    guarded = {v for v in wanted if any(b.guard and f"need_{rename[v]}" in b.guard.split(" or ") for b in blocks)}
    code_lines = forward_lines + recompute_lines + [line for b in blocks for line in b.lines]
    module_uses_math = any("math." in line for line in code_lines)

    save_names = [rename[n] for n in saved]
    names_in = [rename[n] for n in inputs]
    signature = w.signature(style, saved, stash, stash_dim_lines)

    sizes = sample_sizes(d.dims)
    doc = module_doc(d, class_name, command)
    doc_value = "\n".join(doc) + "\n"
    raw = "\\" in doc_value and raw_docstring_ok(doc_value)
    body_indent = 2 * INDENT
    context = {
        "class_name": class_name,
        "doc_prefix": "r" if raw else "",
        "doc": doc if raw else [literal_text(line) for line in doc],
        "import_math": module_uses_math,
        "vmap": style == "setup_context",
        **signature,
        "backward_def": bracketed("def backward(", ["ctx", w.seed_code], "):", INDENT),
        "forward_dims": forward_dim_lines,
        "forward_lines": forward_lines,
        "unpack": unpack_lines(save_names, "ctx.saved_tensors", body_indent) if saved else [],
        "forward_return": f"return {rename[d.output]}",
        "recompute": recompute_lines,
        "scalar_note": comment(
            f"{d.output} is a scalar: the steps take the upstream gradient {w.seed_code} "
            "(1 for loss.backward()) where they leave the output",
            body_indent,
        )
        if d.seed.is_one
        else [],
        "needs": needs_lines([rename[n] if n in guarded else None for n in inputs], body_indent),
        "nones": none_lines([rename[final[v]] for v in wanted], body_indent),
        "backward_dims": backward_dim_lines + [f"{rename[dm]} = ctx.{rename[dm]}" for dm in stash],
        "blocks": blocks,
        "returns": return_lines(returns, body_indent),
        "module": module_context(module_name, class_name, names_in) if module_name else None,
        "check": gradcheck_context(d, class_name, rename, sizes),
    }
    code = render_template(context)
    check_module_text(code, doc_value, class_name, module_name)
    return Generated(code=code, class_name=class_name, inputs=inputs, sizes=sizes, module_name=module_name)


class ModuleWriter:
    """The code of one module's forward and backward: the derivation's names made safe for Python
    (`rename`), the printers that write its lines, and which inputs need each backward step."""

    def __init__(self, d: Derivation, class_name: str, module_name: str | None):
        self.d = d
        self.rename = rename = safe_names(d, class_name)
        table = {
            name: SymbolInfo(info.text, info.latex, rename.get(name, name), info.shape)
            for name, info in d.symbols.table.items()
        }
        self.symbols = Symbols(table)
        self.shapes = {name: info.shape for name, info in d.symbols.table.items()}
        self.dims = {name: rename.get(name, name) for name in d.dims}
        self.shape_of = ShapeOf(self.shapes)
        self.seed = d.seed.name
        self.seed_code = rename.get(self.seed, self.seed)
        self.base_taken = set(rename.values()) | RESERVED | ({module_name} if module_name else set())
        self.text = Printer("text", d.symbols)
        self.inputs = [v.name for v in d.variables]
        self.wanted = [v.name for v in d.variables if v.requires_grad]
        self.final = {s.of: s.target for s in d.backward if s.partial is None and s.of in self.wanted}
        self.needed_by = self._needed_by()

    def printer(self, like: str, taken: set[str]) -> CodePrinter:
        p = CodePrinter(self.symbols, self.dims, self.shape_of, like=like, like_code=self.rename.get(like, like))
        p.taken = set(taken)
        return p

    def _needed_by(self) -> dict[str, set[str]]:
        """Which inputs need each backward step: those whose gradient depends on it."""
        d = self.d
        step_by_target = {s.target: s for s in d.backward}
        deps = {s.target: {x.name for x in s.result.free_symbols} & set(step_by_target) for s in d.backward}
        needed_by: dict[str, set[str]] = {s.target: set() for s in d.backward}
        for v in self.wanted:
            stack = [self.final[v]]
            while stack:
                t = stack.pop()
                if v in needed_by[t]:
                    continue
                needed_by[t].add(v)
                stack.extend(deps[t])
        return needed_by

    def backward_blocks(self, p: CodePrinter) -> list[Block]:
        """The backward steps' lines, in blocks under one guard each (`if need_W or need_b:`)."""
        d, rename, wanted = self.d, self.rename, self.wanted
        body_indent = 2 * INDENT
        blocks: list[Block] = []
        for s in d.backward:
            who = self.needed_by[s.target]
            if not who:
                continue
            guard = None if set(who) == set(wanted) else " or ".join(f"need_{rename[v]}" for v in wanted if v in who)
            if not blocks or blocks[-1].guard != guard:
                blocks.append(Block(guard))
            indent = body_indent + (INDENT if guard else 0)
            value = s.result
            if d.seed.is_one and s.kind == "rule" and s.node == d.output:
                value = sympy.Symbol(self.seed, real=True) * value  # the upstream gradient of a scalar output
            value = fit(value, self.shapes[s.target], self.shape_of)
            block = blocks[-1]
            block.lines += comment(step_comment(d, s, self.text), indent)
            block.lines += p.statement(rename[s.target], value, indent)
        return blocks

    def backward(self) -> tuple[list[str], list[Block], CodePrinter, CodePrinter]:
        """backward's body: the intermediates it reads, recomputed from the saved inputs, then its
        steps; and the printers that wrote them (what they used, the names they took).

        An intermediate saved from forward would be a constant to autograd (forward runs untracked),
        and double backward through it silently wrong; the inputs and the output are tracked."""
        d, text, body_indent = self.d, self.text, 2 * INDENT
        intermediates = {f.name for f in d.forward if f.name != d.output}
        try:
            first = self.printer(self.seed, self.base_taken)
            self.backward_blocks(first)
            recompute = first.used & intermediates
            for f in reversed(d.forward):
                if f.name in recompute:
                    recompute |= {x.name for x in f.expr.free_symbols} & intermediates
            again = self.printer(self.seed, self.base_taken)
            recompute_lines: list[str] = []
            for f in d.forward:
                if f.name in recompute:
                    recompute_lines += comment(f"{f.name} = {text(f.expr)}", body_indent)
                    recompute_lines += again.statement(self.rename[f.name], f.expr, body_indent)
            steps = self.printer(self.seed, again.taken)
            blocks = self.backward_blocks(steps)
        except CannotPrint as err:
            raise CodegenError(f"cannot write this derivation as torch code: {err}") from None
        if recompute_lines:
            recompute_lines = (
                comment(
                    "the forward's intermediates, recomputed from the saved inputs: so this backward can be "
                    "differentiated in turn (double backward)",
                    body_indent,
                )
                + recompute_lines
            )
        return recompute_lines, blocks, steps, again

    def forward(self, taken: set[str]) -> tuple[list[str], CodePrinter]:
        """forward's steps, in the dtype and on the device of its first floating-point input."""
        d, body_indent = self.d, 2 * INDENT
        floats = [v.name for v in d.variables if not v.domain.startswith("class_index")]
        fprinter = self.printer(floats[0] if floats else self.inputs[0], taken)
        if not floats:
            fprinter.like_dtype = "torch.get_default_dtype()"
        forward_lines: list[str] = []
        try:
            for f in d.forward:
                forward_lines += comment(f"{f.name} = {self.text(f.expr)}", body_indent)
                forward_lines += fprinter.statement(self.rename[f.name], f.expr, body_indent)
        except CannotPrint as err:
            raise CodegenError(f"cannot write this forward pass as torch code: {err}") from None
        return forward_lines, fprinter

    def signature(self, style: str, saved: list[str], stash: list[str], stash_dim_lines: list[str]) -> dict:
        """forward's (and setup_context's) definition and the lines that save what backward reads."""
        rename, body_indent = self.rename, 2 * INDENT
        save_names = [rename[n] for n in saved]
        stash_lines = [f"ctx.{rename[dm]} = {rename[dm]}" for dm in stash]
        save = bracketed("ctx.save_for_backward(", save_names, ")", body_indent) if saved else []
        names_in = [rename[n] for n in self.inputs]
        if style == "ctx":
            return {
                "forward_def": bracketed("def forward(", ["ctx"] + names_in, "):", INDENT),
                "setup_def": [],
                "setup_lines": [],
                "forward_tail": save + stash_lines,
            }
        read = {rename[n] for n in saved} | {line.split(" = ")[1].split(".shape")[0] for line in stash_dim_lines}
        unpack = [n if n in read else "_" for n in names_in]
        setup_lines = (unpack_lines(unpack, "inputs", body_indent) if set(unpack) != {"_"} else []) + stash_dim_lines
        setup_lines += save + stash_lines
        return {
            "forward_def": bracketed("def forward(", names_in, "):", INDENT),
            "setup_def": bracketed("def setup_context(", ["ctx", "inputs", rename[self.d.output]], "):", INDENT),
            "setup_lines": setup_lines or ["pass"],
            "forward_tail": [],
        }


def module_context(module_name: str, class_name: str, names: list[str]) -> dict:
    """An nn.Module whose forward applies the Function: for a model built of modules."""
    return {
        "name": module_name,
        "doc": f"{class_name} as a torch.nn.Module: forward(...) is {class_name}.apply(...).",
        "forward_def": bracketed("def forward(", ["self"] + names, "):", INDENT),
        "returns": bracketed(f"return {class_name}.apply(", names, ")", 2 * INDENT),
    }


def check_module_text(code: str, doc: str, class_name: str, module_name: str | None = None) -> None:
    """Defence in depth: the module parses, each of its lines is one line to every reader, its
    docstring is exactly `doc` (no user text closed it) and its top level is the template's."""
    if code.splitlines() != code.split("\n")[:-1] or "\r" in code or "\x0c" in code:
        raise CodegenError("internal: the generated module has a line break other than \\n")
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise CodegenError(f"internal: the generated module does not parse ({err.msg}, line {err.lineno})") from None
    body = [node for node in tree.body if not isinstance(node, ast.Import)]
    imports = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    shape = [type(node).__name__ + ":" + getattr(node, "name", "") for node in body]
    classes = [f"ClassDef:{class_name}"] + ([f"ClassDef:{module_name}"] if module_name else [])
    if (
        ast.get_docstring(tree, clean=False) != doc
        or shape != ["Expr:", *classes, "FunctionDef:gradcheck", "If:"]
        or not set(imports) <= {"math", "torch"}
    ):
        raise CodegenError("internal: the generated module is not laid out as its template lays it out")


def dim_lines(wanted: list[str], sources: list[tuple[str, tuple]], rename: dict[str, str]):
    """`n, d = X.shape` / `h = W.shape[1]` lines defining `wanted`; and those no tensor has."""
    todo = list(wanted)
    lines = []
    for tensor, shape in sources:
        here = [(i, dm) for i, dm in enumerate(shape) if dm in todo]
        if not here:
            continue
        # first come, first served: each dimension from the first tensor that has it
        seen: set[str] = set()
        picks = []
        for i, dm in here:
            if dm not in seen:
                seen.add(dm)
                picks.append((i, dm))
        name = rename.get(tensor, tensor)
        if len(picks) == len(shape) and len(shape) > 1:
            lines.append(", ".join(rename.get(dm, dm) for _, dm in picks) + f" = {name}.shape")
        else:
            lines += [f"{rename.get(dm, dm)} = {name}.shape[{i}]" for i, dm in picks]
        todo = [dm for dm in todo if dm not in seen]
    return lines, todo


# --- the template -----------------------------------------------------------------------------------


def template_dir() -> Path:
    """The codegen template, package data beside the document templates (`backstep/templates/codegen`)."""
    from importlib import resources

    path = Path(str(resources.files("backstep") / "templates" / "codegen"))
    if not (path / "function.py.j2").is_file():
        raise UsageError(f"backstep's codegen template is missing (looked in {path}); reinstall backstep")
    return path


def render_template(context: dict) -> str:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    # sandboxed although the template is backstep's own: defence in depth, it can reach no Python internals
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("function.py.j2").render(**context)
