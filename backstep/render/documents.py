"""Documents (Markdown, LaTeX, exercise sheets) from jinja2 templates in ``backstep/templates/``.

A template reads one object per derivation, ``D``, built here from the model by ``view``: every
expression already printed (LaTeX, through ``backstep.printing`` in the chosen notation), every
sentence from the message catalogue, the graph laid out. Templates lay these out; they never
compute math. ``D.d`` is the derivation itself, for a teacher's template that wants more (its
attributes may be read; its methods, and those of the SymPy expressions in it, not called).

Two jinja2 environments share one loader. Templates whose name ends in ``.tex.j2`` use
LaTeX-safe delimiters — ``\\BLOCK{for s in D.backward}``, ``\\VAR{s.lhs}``, ``\\#{a comment}`` —
so that LaTeX's ``{%`` and ``{{`` never collide with jinja2's; the others (Markdown) use jinja2's own.
A ``--template DIR`` is searched first, then the default templates: a teacher overrides only the
files they want.

Templates are shared between teachers, so untrusted: every one renders in jinja2's immutable
sandbox (no ``__globals__``, no ``_private`` attributes, no changing what it is handed), may call
only macros, the catalogue, ``format_value``, jinja2's helpers and plain methods of strings,
lists and dicts (not the methods of the SymPy expressions and models in ``D``: SymPy's ``diff``
or ``equals`` evaluate a string as Python, ``to_pdf`` writes a file), and may
include, import or extend only the files of its folders (no ``..``, no link out). Anything that
goes wrong while one renders is a TemplateError naming the file and the line. User text is put
into a document only through the filters here: ``tex`` (LaTeX-escaped, control characters made
visible), ``tex_text`` (a teacher's prose with restricted ``$…$`` math, see ``check_math``),
``md`` and ``md_code`` (a code block whose fence is longer than any backticks in it).
"""

from __future__ import annotations

import math
import os
import re
import traceback
import unicodedata
from importlib import resources
from pathlib import Path
from types import SimpleNamespace as Row
from typing import Any

import jinja2
import jinja2.runtime
import jinja2.sandbox
import jinja2.utils

from ..errors import BackstepError, UsageError
from ..model import Derivation
from ..printing import latex_name, text_name
from ..userfiles import printable
from .common import Notation, format_error, format_number, format_value, latex_error, latex_number, latex_value
from .glossary import notation_box
from .graph import LEVEL_CM, ROW_CM, build_graph, edge_numbers, layer_boxes, page_layout, small_number

TEX_SYNTAX = {
    "block_start_string": "\\BLOCK{",
    "block_end_string": "}",
    "variable_start_string": "\\VAR{",
    "variable_end_string": "}",
    "comment_start_string": "\\#{",
    "comment_end_string": "}",
}

# Widths in printed characters (of the text form), for the layout of the LaTeX steps: a step
# `lhs = applied = result` longer than LONG_STEP puts its simplified result on a second line; a
# line longer than RULE_BESIDE, or too long with its rule beside it, puts the rule under the step. A gradient
# longer than LONG_GRADIENT is measured by TeX: scaled down a little if it almost fits, else
# written in terms of the named steps of the backward pass.
LONG_STEP = 40
RULE_BESIDE = 40
LINE, RULE_SCALE = 62, 0.85  # the room for a step and its rule (in \small) side by side
LONG_GRADIENT = 60


class TemplateError(UsageError):
    """A template that cannot be found, parsed or rendered (a teacher's own, usually)."""

    kind = "template error"


def default_template_dir() -> Path:
    """backstep's own templates: package data (`backstep/templates/`), found by importlib.resources,
    so that a wheel, `pip install --user`, `--target` and an sdist all find them from any folder."""
    path = Path(str(resources.files("backstep") / "templates"))
    if not (path / "derivation.tex.j2").is_file():
        raise TemplateError(f"backstep's templates are missing (looked in {path}); reinstall backstep")
    return path


class ConfinedLoader(jinja2.FileSystemLoader):
    """FileSystemLoader (which already refuses `..` and looks an absolute name up inside its
    folders), also refusing a template that is a symbolic link to a file outside them. backstep's
    own templates (`trusted`) may be links, as some packagers install data files."""

    def __init__(self, searchpath: list[str], trusted: str):
        super().__init__(searchpath)
        self.roots = [os.path.join(os.path.realpath(folder), "") for folder in searchpath]
        self.trusted = os.path.join(os.path.abspath(trusted), "")

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        real = os.path.realpath(filename)
        if not os.path.abspath(filename).startswith(self.trusted) and not any(map(real.startswith, self.roots)):
            raise jinja2.TemplateNotFound(f"{template} (a link to a file outside the template folders)")
        return source, filename, uptodate


# What a template may call: its macros, jinja2's own helpers, the catalogue, and the methods of
# plain values (`line.strip()`, `d.items()`); the immutable sandbox already refuses those that
# change a list or dict. Everything else is refused: the methods of SymPy expressions (`diff`,
# `equals` sympify a string, which runs it), of the derivation (`to_pdf` writes a file), of tensors.
_CALLABLE_TYPES = (
    jinja2.runtime.Macro,
    jinja2.runtime.BlockReference,
    jinja2.runtime.LoopContext,  # loop(...) in a recursive loop
    jinja2.utils.Joiner,
)
_METHOD_OWNERS = (
    str,
    int,
    float,
    bool,
    tuple,
    list,
    dict,
    set,
    frozenset,
    jinja2.runtime.LoopContext,
    jinja2.utils.Cycler,
)
MAX_POWER = 1000  # `10 ** 10 ** 10` would keep the CPU busy for ever
MAX_REPEAT = 1_000_000  # `"x" * 10 ** 12` would take all memory


class Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox that calls only what a document template needs (see above)."""

    intercepted_binops = frozenset(["**", "*"])

    def __init__(self, **options: Any):
        super().__init__(**options)
        # range (the sandbox's, bounded), dict, lipsum, cycler, joiner, namespace; and format_value
        self.safe_functions = (*self.globals.values(), format_value)

    def is_safe_callable(self, obj: Any) -> bool:
        if not super().is_safe_callable(obj):
            return False
        if isinstance(obj, _CALLABLE_TYPES) or _is_catalogue(obj) or _is_sandboxed_format(obj):
            return True
        if any(obj is f for f in self.safe_functions):  # `is`: comparing a stranger's object runs its __eq__
            return True
        owner = getattr(obj, "__self__", None)
        return type(owner) in _METHOD_OWNERS or _is_catalogue(owner)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja2's signature)
        if not __self.is_safe_callable(__obj):
            raise jinja2.sandbox.SecurityError(
                f"calling {_callable_name(__obj)} (a template may call its macros, msg, format_value, "
                "and the methods of strings, lists and dicts)"
            )
        return __context.call(__obj, *args, **kwargs)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_POWER:
            raise jinja2.sandbox.SecurityError(f"a power above {MAX_POWER}")
        if operator == "*":
            sized, times = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(sized, (str, list, tuple)) and isinstance(times, int) and len(sized) * times > MAX_REPEAT:
                raise jinja2.sandbox.SecurityError(f"repeating text or a list to over {MAX_REPEAT} items")
        return super().call_binop(context, operator, left, right)


def _is_catalogue(obj: Any) -> bool:
    from .i18n import Messages

    return isinstance(obj, Messages)


def _is_sandboxed_format(obj: Any) -> bool:
    """`"{}".format` as the sandbox hands it out: a wrapper that formats through its own checks."""
    code = getattr(obj, "__code__", None)
    wrapped = getattr(obj, "__wrapped__", None)
    from_sandbox = code is not None and code.co_filename == jinja2.sandbox.__file__
    return from_sandbox and isinstance(getattr(wrapped, "__self__", None), str)


def _callable_name(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    return printable(name)[:80]


class Templates:
    """The two environments (LaTeX and Markdown) over `template_dir` (optional) + the defaults."""

    def __init__(self, template_dir: Path | str | None = None):
        dirs = []
        if template_dir is not None:
            template_dir = Path(template_dir)
            if not template_dir.is_dir():
                raise TemplateError(f"--template {template_dir}: no such directory")
            dirs.append(template_dir)
        dirs.append(default_template_dir())
        self.dirs = dirs
        loader = ConfinedLoader([str(d) for d in dirs], trusted=str(dirs[-1]))
        common = {"loader": loader, "undefined": jinja2.StrictUndefined, "keep_trailing_newline": True}
        self.tex = Sandbox(**common, **TEX_SYNTAX, trim_blocks=True, lstrip_blocks=True)
        self.md = Sandbox(**common, trim_blocks=True, lstrip_blocks=True)
        for env in (self.tex, self.md):
            env.filters.update(tex=tex_escape, tex_text=tex_text, mermaid=mermaid_escape, md=md_escape)
            env.filters.update(md_cell=md_cell, md_code=md_code, lines=source_lines, math=lambda s: f"${s}$")

    def render(self, name: str, **context: Any) -> str:
        env = self.tex if name.endswith(".tex.j2") else self.md
        try:
            return env.get_template(name).render(**context)
        except jinja2.TemplateNotFound as err:
            where = " or ".join(str(d) for d in self.dirs)
            missing = printable(err.name)
            raise TemplateError(f"{self._where(err, name)}template {missing} not found in {where}") from None
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(f"{err.filename or err.name}:{err.lineno}: {printable(err.message)}") from None
        except jinja2.UndefinedError as err:
            raise TemplateError(f"{self._where(err, name)}{printable(err.message)}") from None
        except jinja2.sandbox.SecurityError as err:
            raise TemplateError(f"{self._where(err, name)}not allowed in a template: {_short(err)}") from None
        except RecursionError as err:
            raise TemplateError(f"{self._where(err, name)}the template calls itself too deeply") from None
        except BackstepError as err:
            raise TemplateError(f"{self._where(err, name)}{_short(err.message)}") from None
        except Exception as err:  # a template is code from a stranger: whatever it raises is its error
            raise TemplateError(f"{self._where(err, name)}{type(err).__name__}: {_short(err)}") from None

    def _where(self, err: BaseException | None, name: str) -> str:
        """`file:line: ` of the innermost template line running when `err` was raised (jinja2 puts
        the template's file and line into the traceback's frames), else `template NAME: `."""
        if err is not None and err.__traceback__ is not None:
            for frame in reversed(traceback.extract_tb(err.__traceback__)):
                if frame.filename.endswith(".j2") and frame.lineno:
                    return f"{printable(frame.filename)}:{frame.lineno}: "
        return f"template {name}: "


def _short(err: object, limit: int = 300) -> str:
    """An error's message, printable and short (a template can make one a megabyte long)."""
    text = printable(err)
    return text if len(text) <= limit else text[:limit] + "…"


# --- filters ------------------------------------------------------------------------------------

_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: Any) -> str:
    """Plain text made safe for LaTeX (`W1.grad`, `x_hat`, `50%`); control characters made visible
    (XeTeX ends a line at U+2028 too: inside a `%` comment the rest would be live LaTeX)."""
    escaped = "".join(_TEX_SPECIAL.get(c, c) for c in printable(text, keep_newlines=True))
    return escaped.replace("--", "-{}-").replace("--", "-{}-")  # `--compact`, not TeX's en dash –compact


# The commands a teacher's `$…$` math may use: math, and nothing that reads or writes a file,
# defines a command or changes how TeX reads its input (\input, \openin, \csname, \catcode, \def).
MATH_COMMANDS = frozenset(
    """
    alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi
    pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega
    Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega
    frac dfrac tfrac sqrt partial nabla sum prod int oint lim limsup liminf max min sup inf arg
    log ln exp sin cos tan sinh cosh tanh arcsin arccos arctan sec csc cot det dim ker Pr
    mathbf mathrm mathit mathbb mathcal mathsf mathtt mathfrak boldsymbol operatorname text textrm
    le leq ge geq ne neq approx equiv sim simeq cong propto ll gg in notin ni subset subseteq supset supseteq
    cup cap to gets rightarrow leftarrow Rightarrow Leftarrow leftrightarrow Leftrightarrow mapsto implies iff
    forall exists nexists mid parallel perp not land lor neg
    cdot times div pm mp circ odot oplus otimes ominus ast star bullet setminus wedge vee
    top intercal dagger ldots cdots vdots ddots dots infty emptyset varnothing prime ell hbar Re Im
    hat bar tilde vec dot ddot breve check acute grave widehat widetilde overline underline overbrace underbrace
    left right middle big Big bigg Bigg bigl bigr Bigl Bigr langle rangle lfloor rfloor lceil rceil
    lvert rvert lVert rVert vert Vert backslash
    quad qquad displaystyle textstyle scriptstyle limits nolimits binom tbinom dbinom
    mathop underset overset stackrel sqcup sqcap triangle square
    begin end
    """.split()
)
MATH_SYMBOLS = frozenset(",;:! {}|\\#%&_")  # \, \; \{ \% … and \\ (a new row of a matrix)
MATH_ENVIRONMENTS = frozenset("matrix pmatrix bmatrix Bmatrix vmatrix Vmatrix smallmatrix cases aligned".split())


def check_math(math: str) -> str | None:
    """Why the LaTeX `math` (the inside of a teacher's `$…$`) is not allowed, or None when it is.

    Allowed: letters, digits, punctuation, `^ _ & ~`, balanced braces, the commands of
    MATH_COMMANDS (math, and nothing else), the symbols `\\,` `\\;` `\\:` `\\!` `\\{` `\\}` `\\|` `\\%` `\\#`
    `\\&` `\\_` `\\\\`, and the environments of MATH_ENVIRONMENTS. Refused: every other command, a bare
    `%` (a comment would eat the rest of the line) or `#`, `^^` (TeX's way of writing any character,
    a backslash too, without it) and control characters."""
    for ch in math:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in "\n\t":
            return f"the control character {printable(ch)}"
    if "^^" in math:
        return "^^ (a character code)"
    bare = re.sub(r"\\.", "", math, flags=re.S)  # without \{ \} \% \\ …
    for ch, what in (("%", "% (a comment)"), ("#", "# (a macro parameter)"), ("\\", "a lone \\ at the end")):
        if ch in bare:
            return what
    depth = 0
    for ch in bare:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return "an unbalanced }"
    if depth:
        return "an unbalanced {"
    # a command's name is every letter after the backslash (in XeTeX, any Unicode letter)
    for m in re.finditer(r"\\([^\W\d_]+|.)", math, flags=re.S):
        name = m.group(1)
        if not name[0].isalpha():
            if name not in MATH_SYMBOLS:
                return "\\" + printable(name)
        elif name not in MATH_COMMANDS:
            return "\\" + name
        elif name in ("begin", "end"):
            env = re.match(r"\s*\{([^{}]*)\}", math[m.end() :])
            if env is None or env.group(1).strip() not in MATH_ENVIRONMENTS:
                return "\\" + name + ("{" + env.group(1) + "}" if env else " without a known environment")
    return None


_MATH = re.compile(r"(?<!\\)(\$[^$]+\$)")


def tex_text(text: Any) -> str:
    """A teacher's text: plain prose (escaped), with `$…$` passed through as LaTeX math when
    `check_math` allows it; math it refuses is escaped as prose, dollars and all."""
    parts = _MATH.split(str(text))
    out = []
    for part in parts:
        math = len(part) > 2 and part.startswith("$") and part.endswith("$")
        out.append(part if math and check_math(part[1:-1]) is None else tex_escape(part))
    return "".join(out)


def math_in_text(text: str) -> list[str]:
    """The `$…$` math of a teacher's text, as `tex_text` reads it."""
    return [part[1:-1] for part in _MATH.split(str(text)) if len(part) > 2 and part[0] == part[-1] == "$"]


def md_escape(text: Any) -> str:
    """Plain text made safe for Markdown prose (and control characters made visible)."""
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", printable(text))


def source_lines(text: Any, blank: bool = True) -> list[str]:
    """The lines of a user's program, each printable: split at newlines only, so that a character
    Python's `splitlines` also splits at (\\x1c, \\u2028, …) stays inside its line, made visible.
    `blank=False` leaves out the empty lines."""
    lines = [printable(line.removesuffix("\r")) for line in str(text).split("\n")]
    return lines if blank else [line for line in lines if line.strip()]


def md_code(lines: Any, info: str = "") -> str:
    """A fenced Markdown code block of `lines` (a list, or text): the fence is longer than any run
    of backticks inside, so no line can close it (CommonMark), and every line is printable."""
    if isinstance(lines, str):
        lines = source_lines(lines)
    lines = [printable(line) for line in lines]
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([fence + printable(info).replace("`", ""), *lines, fence])


def md_cell(math: Any) -> str:
    """LaTeX math inside a Markdown table cell: a `|` would end the cell."""
    return str(math).replace(r"\|", r"\Vert ").replace("|", r"\vert ")


def mermaid_escape(text: Any) -> str:
    """Text inside a quoted Mermaid label."""
    return str(text).replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


# --- the view of one derivation -------------------------------------------------------------------


def _row(**fields: Any) -> Row:
    return Row(**fields)


def view(d: Derivation, notation: str = "bar", lang: str = "en") -> Row:
    """Everything a template shows of one derivation, printed in `notation` and `lang`."""
    n = Notation(d, notation, lang)
    msg, tex, text = n.msg, n.latex, n.text
    variables = _variables_view(d, n)
    forward = _forward_view(d, n)
    backward = _backward_view(d, n, {s.name: s for s in forward})
    gradients = _gradients_view(d, n)
    formulas = [tex(d.output_expr), *(s.rhs for s in forward)]
    formulas += [f"{s.applied} {s.result} {s.rule or ''}" for s in backward]
    formulas += [f"{g.expr} {g.named}" for g in gradients]
    where = _where_view(d, n)
    formulas += [w.expr for w in where]
    return _row(
        d=d,
        n=n,
        msg=msg,
        lang=lang,
        notation=notation,
        source=d.source,
        program=list(d.program) if len(d.program) > 1 else [],  # the statements, without annotations
        output=d.output,
        output_tex=n.name_latex(d.output),
        output_expr=tex(d.output_expr),
        output_step=next((s.rhs for s in forward if s.name == d.output), tex(d.output_expr)),
        output_text=f"{d.output} = {text(d.output_expr)}",
        output_shape=n.shape_latex(d.output_shape),
        output_space=n.space_latex(d.output_shape),
        variables=variables,
        wrt=[v for v in variables if v.requires_grad],
        all_wrt=all(v.requires_grad for v in variables),
        forward=forward,
        seed=n.seed_latex(),
        seed_text=n.seed_text(),
        seed_shape=n.shape_latex(d.seed.shape),
        seed_is_one=d.seed.is_one,
        backward=backward,
        # one step too wide for its rule beside it puts every rule under its step (a steady layout)
        rules_below=any(s.rule_below or s.long for s in backward),
        gradients=gradients,
        where=where,  # the adjoints the named gradients refer to
        gradients_named=any(d.gradients[k].named is not None for k in d.wrt if k in d.gradients) and not d.expand,
        # the symbols the document uses, each defined once (glossary.py)
        glossary=notation_box(formulas, notation, n.loss_latex(), lang) if backward else [],
        at=d.at,
        graph=_graph_view(d, n),
        verification=verification_view(d, msg),
        notes=list(d.all_notes),
    )


def _variables_view(d: Derivation, n: Notation) -> list[Row]:
    msg = n.msg
    return [
        _row(
            name=v.name,
            tex=n.name_latex(v.name),
            shape=n.shape_latex(v.shape),
            shape_text=n.shape_text(v.shape),
            space=n.variable_space_latex(v),
            # class labels: the set they are drawn from, in the Markdown table's shape column
            labels=n.variable_space_latex(v) if v.domain.startswith("class_index:") else "",
            requires_grad=v.requires_grad,
            domain=msg(f"domain_{v.domain}") if f"domain_{v.domain}" in msg.table else v.domain,
            value=latex_value(d.at.get(v.name)) if d.at else "",
            at=f"{n.name_latex(v.name)} = {latex_value(d.at.get(v.name))}" if d.at else "",
        )
        for v in d.variables
    ]


def _forward_view(d: Derivation, n: Notation) -> list[Row]:
    tex, text, msg = n.latex, n.text, n.msg
    return [
        _row(
            index=i,
            name=s.name,
            lhs=tex(n.sym(s.name)),
            rhs=tex(s.expr),
            text=f"{s.name} = {text(s.expr)}",
            shape=n.shape_latex(s.shape),
            shape_text=n.shape_text(s.shape),
            space=n.space_latex(s.shape),
            grad_fn=d.grad_fn_of(s),
            op=s.op,
            op_name=msg.op(s.op),
            value=_value(latex_value(s.value) if d.at else "", tex(s.expr)),
        )
        for i, s in enumerate(d.forward, 1)
    ]


def _backward_view(d: Derivation, n: Notation, forward: dict[str, Row]) -> list[Row]:
    """Each backward step, with the forward step of its node (`forward`: the forward view by name)."""
    tex, text, msg = n.latex, n.text, n.msg
    backward = []
    for s in d.backward:
        shape = n.step_shape(s)  # (a bare number there stands for an array of ones: 𝟏)
        applied, result = n.array_latex(s.applied, shape), n.array_latex(s.result, shape)
        lhs_text = text(n.sym(s.target))
        applied_text, result_text = n.array_text(s.applied, shape), n.array_text(s.result, shape)
        shown = [lhs_text, applied_text] + ([result_text] if applied_text != result_text else [])
        line = " = ".join(shown)
        split = len(shown) == 3 and len(line) > LONG_STEP
        widest = max(len(f"{lhs_text} = {applied_text}"), len(f"{lhs_text} = {result_text}")) if split else len(line)
        rule, rule_text = None, msg("chain_rule_sum")
        if s.rule is not None:
            r = s.rule
            rule = (
                f"{tex(r.forward_lhs)} = {tex(r.forward_rhs)} \\Rightarrow {tex(r.adjoint_lhs)} = {tex(r.adjoint_rhs)}"
            )
            rule_text = f"{msg.op(s.op)}: {text(r.forward_lhs)} = {text(r.forward_rhs)} ⇒ {text(r.adjoint_lhs)} = "
            rule_text += text(r.adjoint_rhs)
        node = forward.get(s.node) if s.node else None
        rule_name = msg.op(s.op) if s.op else msg("chain_rule_short")
        if s.layer is not None:  # a hand-written layer (--compact): the op it computes, from its steps
            node = _row(lhs=tex(n.sym(s.node)), rhs=tex(s.layer.forward))
            rule_name = msg("layer_rule", op=rule_name)  # (the steps it stands for: in the notes)
        target_shape = d.symbols.table[s.target].shape if s.target in d.symbols.table else ()
        backward.append(
            _row(
                index=s.index,
                target=s.target,
                of=s.of,
                kind=s.kind,
                lhs=tex(n.sym(s.target)),
                lhs_text=text(n.sym(s.target)),
                applied=applied,
                result=result,
                text=line,
                same=applied == result,
                long=split,
                # the shape stands beside every step, then the rule where there is room
                rule_below=widest > RULE_BESIDE
                or widest + RULE_SCALE * (len(rule_text) + len(n.shape_text(target_shape))) > LINE,
                shape=n.shape_latex(target_shape),
                rule_name=rule_name,
                rule=rule,
                rule_sentence=msg("chain_rule_sum") if s.kind == "sum" else None,
                node=node,
                of_tex=n.name_latex(s.of),
                partial=s.partial,
                value=_value(latex_value(s.value) if d.at else "", result),
            )
        )
    return backward


def _gradients_view(d: Derivation, n: Notation) -> list[Row]:
    """The final gradients as shown: in named form, unless d.expand."""
    tex = n.latex
    gradients = []
    for name in d.wrt:
        g = d.gradients.get(name)
        if g is None:
            continue
        shown = d.shown_gradient(name)
        expr_text = n.array_text(shown, g.shape)
        defining = d.adjoint_step(name)  # the sum, after partial contributions
        gradients.append(
            _row(
                kind="gradient",
                name=name,
                tex=n.name_latex(name),
                lhs=n.partial_latex(name),
                lhs_text=n.partial(name),
                expr=n.array_latex(shown, g.shape),
                text=f"{n.partial(name)} = {expr_text}",
                adjoint=n.adjoint_latex(name),
                shape=n.shape_latex(g.shape),
                space=n.space_latex(g.shape),
                in_inputs=g.in_inputs or shown is not g.expr,
                long=len(expr_text) > LONG_GRADIENT,
                named=tex(defining.result) if defining else tex(shown),
                step=defining.index if defining else None,
                value=latex_value(g.value) if g.value is not None else "",
            )
        )
    return gradients


def _where_view(d: Derivation, n: Notation) -> list[Row]:
    """The adjoints the named gradients refer to ("where ō = …"), in the order of the backward pass."""
    tex, text = n.latex, n.text
    rows = []
    for a in d.shown_adjoints:
        lhs, lhs_text = tex(n.sym(a.symbol)), text(n.sym(a.symbol))
        rows.append(
            _row(
                kind="named_adjoint",
                name=a.of,
                tex=n.name_latex(a.of),
                lhs=lhs,
                lhs_text=lhs_text,
                expr=n.array_latex(a.expr, a.shape),
                text=f"{lhs_text} = {n.array_text(a.expr, a.shape)}",
                adjoint=lhs,
                shape=n.shape_latex(a.shape),
                space=n.space_latex(a.shape),
                in_inputs=True,
                long=False,
                named=tex(a.expr),
                step=None,
                value="",
            )
        )
    return rows


def _graph_view(d: Derivation, n: Notation) -> Row:
    tex, text = n.latex, n.text
    graph = build_graph(d)
    xgap = _column_width(graph, numbers=bool(d.at))
    numbers, arrays = edge_numbers(d, graph)
    output_value = small_number(next((f.value for f in d.forward if f.name == d.output), None)) if d.at else None
    layout, scale = page_layout(graph, float(xgap))

    def at(node) -> str:
        x, y = graph.drawn_at(node, layout)
        return f"{x + 0.0:g}, {y + 0.0:g}"

    skips: dict[str, int] = {}  # how many edges from each node already arc around the nodes between
    edge_labels = {
        id(e): (tex(n.sym(e.adjoint)), text(n.sym(e.adjoint))) if e.adjoint else ("", "") for e in graph.edges
    }
    return _row(
        graph=graph,
        drawable=graph.drawable,
        layout=layout,
        scale=f"{scale:.3f}",
        # Mermaid lays a long chain out top to bottom too
        direction="TB" if layout == "down" else "LR",
        xunit=xgap,
        yunit=f"{LEVEL_CM if layout == 'down' else ROW_CM:g}",
        nodes=[
            _row(
                id=node.id,
                name=node.name,
                kind=node.kind,
                op=node.op,
                tex=n.name_latex(node.name),
                text=text(n.sym(node.name)),
                shape=n.shape_latex(node.shape),
                shape_text=n.shape_text(node.shape),
                requires_grad=node.requires_grad,
                col=node.col,
                row=node.row,
                x=node.x,
                at=at(node),
            )
            for node in graph.nodes
        ],
        edges=[
            _row(
                source=e.source.id,
                target=e.target.id,
                label=edge_labels[id(e)][0] + (f" = {latex_number(grad)}" if grad is not None else ""),
                label_text=edge_labels[id(e)][1] + (f" = {format_number(grad)}" if grad is not None else ""),
                value="" if value is None else latex_number(value),  # the forward value it carries (--at)
                value_text="" if value is None else format_number(value),
                step=e.step,
                bend=_bend(graph, e, skips, LEVEL_CM if layout == "down" else float(xgap)),
                route=graph.route(e) if layout == "down" else [],  # (from one wrapped column to another)
            )
            for e, (value, grad) in zip(graph.edges, numbers)
        ],
        # --at: numbers on the edges, and whether arrays were left to the tables
        numbers=any(value is not None or grad is not None for value, grad in numbers),
        arrays_left_off=arrays,
        output_value="" if output_value is None else latex_number(output_value),
        output_value_text="" if output_value is None else format_number(output_value),
        width=graph.width,
        xgap=xgap,
        top=graph.rows[0],
        bottom=graph.rows[1],
        layers=[_row(title=n.msg.op(b.op) if b.op else "", **vars(b)) for b in layer_boxes(d, graph, layout)],
    )


def _bend(graph, e, skips: dict[str, int], spacing: float) -> int:
    """How far edge `e` bends (TikZ's bend left, in degrees): repeated edges fan out, and an edge that
    would pass through the nodes between its ends (`x` to `x - μ` past `μ`, down a chain) arcs round them."""
    if e.parallel:
        return (18 if e.parallel % 2 else -18) * ((e.parallel + 1) // 2)
    a, b = e.source, e.target
    between = [
        n
        for n in graph.nodes
        if n is not a and n is not b and abs(n.row - a.row) < 0.5 and min(a.x, b.x) < n.x < max(a.x, b.x)
    ]
    if a.row != b.row or not between:
        return 0
    k = skips.get(a.name, 0)
    skips[a.name] = k + 1
    # an arc of length L bent by θ clears the middle by about L/2 · tan(θ/2): 1.3 cm plus 0.5 cm per arc
    # already drawn on that side clears a node and the label beside it
    half = abs(b.x - a.x) * spacing / 2
    clearance = 1.3 + 0.5 * (k // 2)
    angle = min(80, max(25, round(2 * math.degrees(math.atan(clearance / half)))))
    return angle if k % 2 == 0 else -angle


def _column_width(graph, numbers: bool = False) -> str:
    """The distance between columns of the drawn graph, in cm: room for the widest node and an edge.

    A node is as wide as its longest line: the name, the op (small typewriter), the shape (small
    math, `N × 3 × 8 × 6`); these are estimates of their widths at the sizes graph.tex.j2 uses.
    """
    widest = 0.0
    for node in graph.nodes:
        shape = 0.2 * (2 * len(node.shape) - 1) if node.shape else 0.6
        op = 0.14 * len(node.op or "")
        # as printed: `gamma` is γ, `C_tilde` is C̃, `H_prev`'s subscript is small
        shown = text_name(node.name)
        base, _, sub = shown.partition("_")
        name = 0.22 * sum(not unicodedata.combining(c) for c in base) + 0.16 * len(sub)
        widest = max(widest, shape, op, name)
    room = 1.6 if numbers else 1.0  # an edge that carries `x̄ = 0.25` and its value needs more
    return f"{max(2.15, widest + 0.35 + room):.2f}"


def _value(value: str, shown: str) -> str:
    """A step's number, unless the step already is that number (`v̄ = 1`, not `v̄ = 1 = 1`)."""
    return "" if value == shown else value


def verification_view(d: Derivation, msg) -> Row | None:
    v = d.verification
    if v is None:
        return None
    rows = [
        _row(
            label=f"{c.name}.grad",
            ok=c.ok,
            count="",
            abs=latex_error(c.max_abs_err),
            rel=latex_error(c.max_rel_err),
            abs_text=format_error(c.max_abs_err),
            rel_text=format_error(c.max_rel_err),
        )
        for c in v.gradients
    ]
    summary = []
    for key, checks, errors in (
        ("every_intermediate", v.adjoints, True),
        ("forward_values", v.forward, True),
        ("grad_fn_names", v.grad_fns, False),
    ):
        if not checks:
            continue
        worst_abs = max(c.max_abs_err for c in checks)
        worst_rel = max(c.max_rel_err for c in checks)
        summary.append(
            _row(
                label=msg(key),
                ok=all(c.ok for c in checks),
                count=f"{sum(c.ok for c in checks)}/{len(checks)}",
                abs=latex_error(worst_abs) if errors else "",
                rel=latex_error(worst_rel) if errors else "",
                abs_text=format_error(worst_abs) if errors else "",
                rel_text=format_error(worst_rel) if errors else "",
            )
        )
    failure = v.first_failure
    return _row(
        ok=v.ok,
        status=msg("verified") if v.ok else msg("mismatch"),
        # with --at the first point verified is the given one (verify.py: point 0 is drawn at d.at)
        sentence=("verified_with_at" if v.points > 1 else "verified_with_at_only") if d.at else "verified_with",
        dtype=v.dtype,
        points=v.points,
        sizes=list(v.sizes.items()),
        sizes_tex=[f"{latex_name(k)} = {size}" for k, size in v.sizes.items()],
        sizes_text=" ".join(f"{k}={size}" for k, size in v.sizes.items()),
        rows=rows,
        summary=summary,
        failure=None
        if failure is None
        else _row(
            kind=msg(f"kind_{failure.kind}") if f"kind_{failure.kind}" in msg.table else failure.kind,
            name=failure.name,
            detail=failure.detail,
            error=format_error(failure.max_abs_err),
        ),
        problems=list(v.problems),
    )


def context(D: Row, **extra: Any) -> dict:
    """The names every template sees: the view `D`, its catalogue `msg`, and helpers."""
    return {"D": D, "msg": D.msg, "lang": D.lang, "format_value": format_value, **extra}
