"""The text of `backstep codegen`'s module that comes from the user: names, comments, the docstring.

No user text ever becomes code in the generated module: the program, its comments and the
regenerate command reach it only inside the docstring, written by ``literal_text`` (every quote
that could close it, every backslash, every control or line-separator character escaped), or as
a raw docstring where nothing in it needs an escape (``raw_docstring_ok``); names only as
identifiers in the form Python reads them (NFKC) that clash with nothing; comments only through
``comment`` (control characters made visible).

The regenerate command is shell text that runs as it reads: each argument quoted by
``shell_quote`` (``'...'``, or ``$'...'`` with escapes for an argument with a newline or another
control character, so that the command holds only printable characters), and a long command
continued over lines with a backslash (``shell_lines``), as a shell reads it.
"""

from __future__ import annotations

import builtins
import keyword
import re
import shlex
import textwrap
import unicodedata
from pathlib import Path

import sympy

from .codegen_printer import LINE, RESERVED, CodegenError
from .errors import UsageError
from .model import Derivation
from .printing import Printer


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


def visible(text: str) -> str:
    """`text` with each control, format or separator character (other than a space) written as an
    escape: in a comment of the module none can end the line (\\r does, for Python; \\x1c and
    \\u2028 do, for str.splitlines() and editors) or reorder what a reader sees (\\u202e)."""
    return "".join(ch if ch.isprintable() else escape_char(ch) for ch in text)


def escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def literal_text(text: str) -> str:
    """`text` as the inside of a \"\"\"-quoted string literal that reads back as exactly `text`:
    backslashes doubled, each quote that could close the literal (one followed by a quote, or the
    last character) escaped, control and line-separator characters written as escapes."""
    out = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"' and (i + 1 == len(text) or text[i + 1] == '"'):
            out.append('\\"')
        else:
            out.append(ch if ch.isprintable() else escape_char(ch))
    return "".join(out)


def comment(text: str, indent: int) -> list[str]:
    width = LINE - indent - 2
    wrapped = textwrap.wrap(visible(text), width, break_long_words=True, break_on_hyphens=False)
    return ["# " + line for line in wrapped]


def check_class_name(name: str, option: str = "--name") -> str:
    """`name` if the generated class can take it, else a UsageError that says why: an ASCII
    identifier that is no keyword, no builtin and no name of the module's own (the module reads
    torch, math, its builtins and gradcheck at module level; a class named so would hide one)."""
    if not (name.isascii() and name.isidentifier()):
        why = "not a Python class name (ASCII letters, digits and _, not starting with a digit)"
    elif keyword.iskeyword(name) or keyword.issoftkeyword(name):
        why = "a Python keyword"
    elif name in RESERVED or (name.startswith("__") and name.endswith("__")):
        why = "a name that the generated module uses itself"
    elif name in dir(builtins):
        why = "a Python builtin, which the class would hide from the generated module"
    else:
        return name
    raise UsageError(f"{option} {name!r}: {why}; choose another class name")


def class_name_for(path: Path | None) -> str:
    if path is None:
        return "DerivedFunction"
    words = re.findall(r"[A-Za-z0-9]+", path.stem)
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Derived"
    if name[0].isdigit():
        name = "F" + name
    name = name if name.endswith("Function") else name + "Function"
    return check_class_name(name, f"-o {path}")


def step_comment(d: Derivation, s, text: Printer) -> str:
    target = text(sympy.Symbol(s.target, real=True))
    if s.kind == "sum":
        parts = len(s.result.args) if s.result.is_Add else (0 if s.result == 0 else 1)
        why = f"{s.of} is used {parts} times: the contributions add up" if parts > 1 else f"{s.of} gets no gradient"
        return f"{s.index}. {target} = {text(s.result)}   ({why})"
    node = next((f for f in d.forward if f.name == s.node), None)
    where = f"   ({s.node} = {text(node.expr)})" if node is not None else ""
    return f"{s.index}. {target} = {text(s.result)}{where}"


def module_doc(d: Derivation, class_name: str, command: str | None) -> list[str]:
    lines = [f"{class_name}: a torch.autograd.Function generated by backstep from", ""]
    for src in d.source.strip().splitlines():
        src = src.rstrip()
        wrapped = textwrap.wrap(src, LINE - 8, break_long_words=True, subsequent_indent="    ") or [""]
        lines += [("    " + w).rstrip() for w in wrapped]  # a blank line with no trailing spaces
    lines.append("")
    shapes = ", ".join(f"{v.name}: {shape_tuple(v.shape)}" for v in d.variables)
    grads = [v.name for v in d.variables if v.requires_grad]
    nograd = [v.name for v in d.variables if not v.requires_grad]
    info = (
        f"Inputs in order: {shapes}; forward returns {d.output}: {shape_tuple(d.output_shape)}. "
        f"backward returns the gradients of {', '.join(grads) or 'none'}"
        + (f" (and None for {', '.join(nograd)})" if nograd else "")
        + ", each computed by backstep's derivation step by step in plain torch operations; "
        "gradcheck() compares them with finite differences in float64."
    )
    lines += textwrap.wrap(info, LINE - 4)
    if command:
        # shell text that runs as it reads: continued with backslashes, never wrapped into a space; a
        # newline or tab of a command not quoted by regenerate_command shown as an escape
        lines += ["", "Regenerate with:", ""] + shell_lines(visible(command), LINE - 4)
    return lines


def raw_docstring_ok(text: str) -> bool:
    """Whether `text` reads back exactly from r\"\"\"text\"\"\": printable lines, and no quote
    that could close the literal (one beside another quote, one after a backslash, one at an end)."""
    return (
        all(ch == "\n" or ch.isprintable() for ch in text)
        and '""' not in text
        and '\\"' not in text
        and not text.startswith('"')
        and text.endswith("\n")
    )


# --- the regenerate command: shell text ------------------------------------------------------------------


def shell_quote(arg: str) -> str:
    """`arg` as one shell word: shlex.quote where every character is printable, else bash's
    `$'...'` (zsh, ksh, POSIX 2024 sh) with \\n, \\t, \\xHH and \\uHHHH escapes, so that the command
    holds only printable characters and a newline in a program given inline survives."""
    if all(ch.isprintable() for ch in arg):
        return shlex.quote(arg)
    out = []
    for ch in arg:
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch in SHELL_ESCAPES:
            out.append(SHELL_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        else:  # $'\\xHH' is a byte to bash: a character above ASCII is \\u or \\U
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "$'" + "".join(out) + "'"


SHELL_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def shell_words(command: str) -> list[list[tuple[str, str | None]]]:
    """`command` split at its unquoted spaces into words, each a list of (character, the quoting
    in force before it: None, "'", '"' or "$'"), as a POSIX shell (and bash, for $'...') reads it."""
    words: list[list[tuple[str, str | None]]] = [[]]
    state: str | None = None
    escaped = dollar = False
    for ch in command:
        if state is None and not escaped and ch == " ":
            if words[-1]:
                words.append([])
            dollar = False
            continue
        words[-1].append((ch, state))
        was_dollar, dollar = dollar, state is None and not escaped and ch == "$"
        if escaped:
            escaped = False
        elif ch == "\\" and state != "'":
            escaped = True
        elif state is None and ch == "'":
            state = "$'" if was_dollar else "'"
        elif state is None and ch == '"':
            state = '"'
        elif (state in ("'", "$'") and ch == "'") or (state == '"' and ch == '"'):
            state = None
    return [w for w in words if w]


def word_pieces(word: list[tuple[str, str | None]], room: int, width: int) -> list[str]:
    """A word longer than a line, broken where the shell reads the break as nothing: a backslash
    and a newline outside single quotes; `'\\<newline>'` (closing and reopening) inside them."""
    pieces, piece = [], ""
    escape_left = 0  # characters still to come of a $'...' escape (\\n, \\xHH, \\uHHHH, ...)
    for i, (ch, state) in enumerate(word):
        limit = room if not pieces else width
        prev = word[i - 1][0] if i else ""
        closing = state in ("'", "$'") and ch == "'" and not escape_left
        in_escape = escape_left > 0
        if state == "$'":
            if escape_left:
                escape_left -= 1
                if prev == "\\" and ch in "xuU":
                    escape_left = {"x": 2, "u": 4, "U": 8}[ch]
            elif ch == "\\":
                escape_left = 1
        can_break = bool(piece) and not closing and not in_escape and prev != "\\" and len(piece) + 3 > limit
        if can_break:
            if state == "'":
                pieces.append(piece + "'\\")
                piece = "'"
            elif state == "$'":
                pieces.append(piece + "'\\")
                piece = "$'"
            else:
                pieces.append(piece + "\\")
                piece = ""
        piece += ch
    return pieces + [piece]


def shell_lines(command: str, width: int, indent: int = 4) -> list[str]:
    """`command` as lines of at most `width` columns that a shell reads as the one command: broken
    at spaces with ` \\` (each later line indented), a word longer than a line inside it."""
    lines: list[str] = []
    line = " " * indent
    for word in shell_words(command):
        text = "".join(ch for ch, _ in word)
        if line.strip() and len(line) + 1 + len(text) + 2 > width:
            lines.append(line + " \\")
            line = " " * (2 * indent)
        elif line.strip():
            line += " "
        if len(line) + len(text) + 2 <= width:
            line += text
            continue
        pieces = word_pieces(word, width - len(line) - 2, width - 2)
        lines += [line + pieces[0]] + pieces[1:-1]
        line = pieces[-1]
    return lines + [line]


def regenerate_command(
    expr: str | None,
    file: Path | None,
    torch_model: str | None,
    shape: list[str],
    wrt: str | None,
    assume: list[str],
    name: str | None,
    output: Path | None,
    style: str = "ctx",
    module: bool = False,
) -> str:
    """The `backstep codegen ...` line that makes this module again (for its docstring): shell
    text, each argument quoted by shell_quote."""
    parts = ["backstep", "codegen"]
    if expr is not None:
        parts.append(shell_quote(expr))
    if file is not None:
        parts += ["-f", shell_quote(str(file))]
    if torch_model is not None:
        parts += ["--torch", shell_quote(torch_model)]
    for s in shape:
        parts += ["--shape", shell_quote(s)]
    if wrt:
        parts += ["--wrt", shell_quote(wrt)]
    for a in assume:
        parts += ["--assume", shell_quote(a)]
    if name:
        parts += ["--name", shell_quote(name)]
    if style != "ctx":
        parts += ["--style", shell_quote(style)]
    if module:
        parts.append("--module")
    if output is not None:
        parts += ["-o", shell_quote(str(output))]
    return " ".join(parts)


def shape_tuple(shape: tuple) -> str:
    return "(" + ", ".join(str(x) for x in shape) + ("," if len(shape) == 1 else "") + ")"
