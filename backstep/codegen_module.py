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
it out (codegen_text says how user text reaches the docstring and nothing else).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import sympy

from .codegen_printer import INDENT, LINE, RESERVED, CodegenError, CodePrinter, ShapeOf, fit
from .codegen_text import (
    check_class_name,
    comment,
    literal_text,
    module_doc,
    raw_docstring_ok,
    safe_names,
    step_comment,
)
from .errors import UsageError
from .model import Derivation
from .printing import Printer, SymbolInfo, Symbols

STYLES = ("ctx", "setup_context")

# How a variable is drawn for the gradcheck, by its domain (backstep.numeric.draw, in code).
DRAW = {
    "real": "4 * draw({shape}) - 2",
    "positive": "0.5 + 1.5 * draw({shape})",
    "nonnegative": "2 * draw({shape})",
    "nonzero": "(0.5 + 1.5 * draw({shape})) * torch.sign(draw({shape}) - 0.5)",
    "probability": "torch.softmax(4 * draw({shape}) - 2, dim=-1)",
    "symmetric": "(lambda m: (m + m.T) / 2)(2 * draw({shape}) - 1)",
    "orthogonal": "torch.linalg.qr(2 * draw({shape}) - 1)[0]",
}
DOMAIN_OPS = {"log", "sqrt", "pow", "div", "logdet", "det", "inv", "tan", "norm"}


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


def generate(
    d: Derivation,
    class_name: str = "DerivedFunction",
    command: str | None = None,
    style: str = "ctx",
    module: bool = False,
) -> Generated:
    """The module text for derivation `d` (see the module docstring). `style`: "ctx" or
    "setup_context"; `module`: also an nn.Module `<class_name>Module` whose forward applies it."""
    from .verify import sample_sizes

    check_class_name(class_name)
    if style not in STYLES:
        raise UsageError(f"--style {style!r}: write one of {', '.join(STYLES)}")
    module_name = check_class_name(class_name + "Module") if module else None
    if not d.forward:
        raise CodegenError(f"the output {d.output} is an input itself: there is no computation to write")
    rename = safe_names(d, class_name)
    table = {
        name: SymbolInfo(info.text, info.latex, rename.get(name, name), info.shape)
        for name, info in d.symbols.table.items()
    }
    symbols = Symbols(table)
    shapes = {name: info.shape for name, info in d.symbols.table.items()}
    dims = {name: rename.get(name, name) for name in d.dims}
    shape_of = ShapeOf(shapes)
    seed = d.seed.name
    seed_code = rename.get(seed, seed)
    base_taken = set(rename.values()) | RESERVED | ({module_name} if module_name else set())
    text = Printer("text", d.symbols)

    def printer(like: str, taken: set[str]) -> CodePrinter:
        p = CodePrinter(symbols, dims, shape_of, like=like, like_code=rename.get(like, like))
        p.taken = set(taken)
        return p

    inputs = [v.name for v in d.variables]
    wanted = [v.name for v in d.variables if v.requires_grad]
    step_by_target = {s.target: s for s in d.backward}
    final = {s.of: s.target for s in d.backward if s.partial is None and s.of in wanted}

    # Which inputs need each step: those whose gradient depends on it.
    deps = {s.target: {x.name for x in s.result.free_symbols} & set(step_by_target) for s in d.backward}
    needed_by: dict[str, set[str]] = {s.target: set() for s in d.backward}
    for v in wanted:
        stack = [final[v]]
        while stack:
            t = stack.pop()
            if v in needed_by[t]:
                continue
            needed_by[t].add(v)
            stack.extend(deps[t])

    body_indent = 2 * INDENT

    def backward_blocks(p: CodePrinter) -> list[Block]:
        blocks: list[Block] = []
        for s in d.backward:
            who = needed_by[s.target]
            if not who:
                continue
            guard = None if set(who) == set(wanted) else " or ".join(f"need_{rename[v]}" for v in wanted if v in who)
            if not blocks or blocks[-1].guard != guard:
                blocks.append(Block(guard))
            indent = body_indent + (INDENT if guard else 0)
            value = s.result
            if d.seed.is_one and s.kind == "rule" and s.node == d.output:
                value = sympy.Symbol(seed, real=True) * value  # the upstream gradient of a scalar output
            value = fit(value, shapes[s.target], shape_of)
            block = blocks[-1]
            block.lines += comment(step_comment(d, s, text), indent)
            block.lines += p.statement(rename[s.target], value, indent)
        return blocks

    # --- backward: the intermediates it reads, recomputed from the saved inputs, then its steps.
    # An intermediate saved from forward would be a constant to autograd (forward runs untracked),
    # and double backward through it silently wrong; the inputs and the output are tracked.
    intermediates = {f.name for f in d.forward if f.name != d.output}
    try:
        first = printer(seed, base_taken)
        backward_blocks(first)
        recompute = first.used & intermediates
        for f in reversed(d.forward):
            if f.name in recompute:
                recompute |= {x.name for x in f.expr.free_symbols} & intermediates
        again = printer(seed, base_taken)
        recompute_lines: list[str] = []
        for f in d.forward:
            if f.name in recompute:
                recompute_lines += comment(f"{f.name} = {text(f.expr)}", body_indent)
                recompute_lines += again.statement(rename[f.name], f.expr, body_indent)
        steps = printer(seed, again.taken)
        blocks = backward_blocks(steps)
    except TypeError as err:
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

    used = steps.used | again.used
    saved = [n for n in inputs if n in used] + ([d.output] if d.output in used else [])
    backward_dims = [dm for dm in d.dims if dm in used]
    # Dimensions in backward: from the upstream gradient, the saved tensors, else stashed on ctx.
    sources = [(seed, d.seed.shape)] + [(n, shapes[n]) for n in saved]
    backward_dim_lines, stash = dim_lines(backward_dims, sources, rename)

    # --- forward: its steps, in the dtype and on the device of its first floating-point input
    floats = [v.name for v in d.variables if not v.domain.startswith("class_index")]
    fprinter = printer(floats[0] if floats else inputs[0], steps.taken)
    if not floats:
        fprinter.like_dtype = "torch.get_default_dtype()"
    forward_lines: list[str] = []
    try:
        for f in d.forward:
            forward_lines += comment(f"{f.name} = {text(f.expr)}", body_indent)
            forward_lines += fprinter.statement(rename[f.name], f.expr, body_indent)
    except TypeError as err:
        raise CodegenError(f"cannot write this forward pass as torch code: {err}") from None
    forward_dims = [dm for dm in d.dims if dm in fprinter.used or (dm in stash and style == "ctx")]
    input_shapes = [(n, shapes[n]) for n in inputs]
    forward_dim_lines, missing = dim_lines(forward_dims, input_shapes, rename)
    stash_dim_lines, missing_stash = dim_lines(stash, input_shapes, rename)
    if missing or missing_stash:
        raise CodegenError(f"the sizes {', '.join(missing + missing_stash)} are not the size of any input")

    returns = [rename[final[v]] if v in final else "None" for v in inputs]
    guarded = {v for v in wanted if any(b.guard and f"need_{rename[v]}" in b.guard.split(" or ") for b in blocks)}
    code_lines = forward_lines + recompute_lines + [line for b in blocks for line in b.lines]
    module_uses_math = any("math." in line for line in code_lines)

    save_names = [rename[n] for n in saved]
    stash_lines = [f"ctx.{rename[dm]} = {rename[dm]}" for dm in stash]
    save = bracketed("ctx.save_for_backward(", save_names, ")", body_indent) if saved else []
    names_in = [rename[n] for n in inputs]
    if style == "ctx":
        forward_def = bracketed("def forward(", ["ctx"] + names_in, "):", INDENT)
        setup_def, setup_lines = [], []
        forward_tail = save + stash_lines
    else:
        forward_def = bracketed("def forward(", names_in, "):", INDENT)
        setup_def = bracketed("def setup_context(", ["ctx", "inputs", rename[d.output]], "):", INDENT)
        read = {rename[n] for n in saved} | {line.split(" = ")[1].split(".shape")[0] for line in stash_dim_lines}
        unpack = [n if n in read else "_" for n in names_in]
        setup_lines = (unpack_lines(unpack, "inputs", body_indent) if set(unpack) != {"_"} else []) + stash_dim_lines
        setup_lines += save + stash_lines
        forward_tail = []
        if not setup_lines:
            setup_lines = ["pass"]

    sizes = sample_sizes(d.dims)
    doc = module_doc(d, class_name, command)
    doc_value = "\n".join(doc) + "\n"
    raw = "\\" in doc_value and raw_docstring_ok(doc_value)
    context = {
        "class_name": class_name,
        "doc_prefix": "r" if raw else "",
        "doc": doc if raw else [literal_text(line) for line in doc],
        "import_math": module_uses_math,
        "vmap": style == "setup_context",
        "forward_def": forward_def,
        "setup_def": setup_def,
        "setup_lines": setup_lines,
        "backward_def": bracketed("def backward(", ["ctx", seed_code], "):", INDENT),
        "forward_dims": forward_dim_lines,
        "forward_lines": forward_lines,
        "forward_tail": forward_tail,
        "unpack": unpack_lines(save_names, "ctx.saved_tensors", body_indent) if saved else [],
        "forward_return": f"return {rename[d.output]}",
        "recompute": recompute_lines,
        "scalar_note": comment(
            f"{d.output} is a scalar: the steps take the upstream gradient {seed_code} "
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


def bracketed(head: str, items: list[str], tail: str, indent: int, one_tuple: bool = False) -> list[str]:
    """`head(items)tail` on one line, else one item a line with a trailing comma: the two layouts
    that ruff keeps as they are at any line length (so the module is clean under ruff's default
    88 columns and under a project's longer limit alike)."""
    inner = ", ".join(items) + ("," if one_tuple and len(items) == 1 else "")
    if indent + len(head) + len(inner) + len(tail) <= LINE:
        return [head + inner + tail]
    return [head] + [" " * INDENT + item + "," for item in items] + [tail]


def unpack_lines(names: list[str], rhs: str, indent: int) -> list[str]:
    """`a, b = rhs` (`(a,) = rhs` for one name), else the names one a line in parentheses."""
    lhs = f"({names[0]},)" if len(names) == 1 else ", ".join(names)
    if indent + len(lhs) + 3 + len(rhs) <= LINE:
        return [f"{lhs} = {rhs}"]
    return ["("] + [" " * INDENT + name + "," for name in names] + [f") = {rhs}"]


def printer_lines_text(blocks: list[Block]) -> list[str]:
    return [line for b in blocks for line in b.lines]


def needs_lines(flags: list[str | None], indent: int) -> list[str]:
    if not any(flags):
        return []
    return unpack_lines([f"need_{f}" if f else "_" for f in flags], "ctx.needs_input_grad", indent)


def none_lines(names: list[str], indent: int) -> list[str]:
    line = " = ".join(names + ["None"])
    if not names:
        return []
    if indent + len(line) <= LINE:
        return [line]
    return [f"{name} = None" for name in names]


def return_lines(items: list[str], indent: int) -> list[str]:
    if len(items) > 1 and indent + 7 + len(", ".join(items)) <= LINE:
        return ["return " + ", ".join(items)]
    return bracketed("return (", items, ")", indent, one_tuple=True)


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


def gradcheck_context(d: Derivation, class_name: str, rename: dict[str, str], sizes: dict[str, int]) -> dict:
    """The lines of gradcheck(): sizes, inputs drawn inside their domains, the check itself."""
    retry = any(f.op in DOMAIN_OPS for f in d.forward)
    indent = 2 * INDENT if retry else INDENT
    lines = []
    for v in d.variables:
        name = rename[v.name]
        dims = [rename.get(dm, dm) if isinstance(dm, str) else str(dm) for dm in v.shape]
        shape = ", ".join(dims)
        shape_t = "(" + shape + ("," if len(dims) == 1 else "") + ")"
        domain = v.domain
        steps = []  # statements that make the value; the last one gives it
        if domain.startswith("class_index"):
            classes = domain.split(":", 1)[1]
            if not (classes.isdigit() or classes in rename):  # a count or a dimension, never other text
                raise CodegenError(f"internal: the number of classes {classes!r} is neither a number nor a size")
            steps.append(f"torch.randint({rename.get(classes, classes)}, {shape_t}, generator=generator)")
        elif domain == "onehot":
            lead = dims[:-1]
            lead_t = "(" + ", ".join(lead) + ("," if len(lead) == 1 else "") + ")"
            steps.append(f"torch.randint({dims[-1]}, {lead_t}, generator=generator)")
            steps.append(f"torch.nn.functional.one_hot({name}, {dims[-1]}).double()")
        elif domain in ("spd", "invertible"):
            k = dims[0]
            eye = f"torch.eye({k}, dtype=torch.float64)"
            steps.append(f"2 * draw({shape}) - 1")
            steps.append(f"{name} @ {name}.T / {k} + {eye}" if domain == "spd" else f"{name} + (1 + {k}**0.5) * {eye}")
        elif domain == "symmetric":
            steps += [f"2 * draw({shape}) - 1", f"({name} + {name}.T) / 2"]
        else:
            steps.append(DRAW.get(domain, DRAW["real"]).format(shape=shape))
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            if last and v.requires_grad:
                line = f"{name} = ({step}).requires_grad_()"
                if indent + len(line) > LINE:
                    lines += [f"{name} = {step}", f"{name}.requires_grad_()"]
                    continue
            else:
                line = f"{name} = {step}"
            lines.append(line)
    numel = 0
    for v in d.variables:
        count = 1
        for dm in v.shape:
            count *= dm if isinstance(dm, int) else sizes[dm]
        numel += count
    names = [rename[v.name] for v in d.variables]
    check = f"torch.autograd.gradcheck({class_name}.apply, inputs" + (", fast_mode=True" if numel > 2000 else "") + ")"
    return {
        "sizes": unpack_lines([rename.get(dm, dm) for dm in d.dims], ", ".join(str(sizes[dm]) for dm in d.dims), INDENT)
        if len(d.dims) > 1
        else [f"{rename.get(dm, dm)} = {sizes[dm]}" for dm in d.dims],
        "draws": lines + bracketed("inputs = (", names, ")", indent, one_tuple=True),
        "retry": retry,
        "finite": f"if torch.isfinite({class_name}.apply(*inputs)).all():",
        "returns": bracketed("return ", [check], "", INDENT)
        if INDENT + 7 + len(check) <= LINE
        else [
            "return " + check  # a class name this long is the user's choice
        ],
    }


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
