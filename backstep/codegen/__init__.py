"""`backstep codegen`: a derivation written out as a `torch.autograd.Function`.

The generated module holds one ``torch.autograd.Function`` subclass (and, if asked, an
``nn.Module`` that applies it). ``forward`` computes the forward steps and saves the inputs (and
the output) the backward reads; ``backward`` recomputes from them the intermediates it needs and
computes the derivation's backward steps one line each, in the derivation's order, in plain torch
operations (never autograd), each beside a comment with the step as backstep prints it: a
backward that autograd can differentiate in turn (double backward, gradient penalties). A step is
computed only when an input that needs its gradient (``ctx.needs_input_grad``) depends on it.
Every adjoint has its symbol's exact shape (a step that relies on broadcasting is expanded), so
each input's gradient has that input's shape, a broadcast bias included. Constants (``eye``,
``onehot``, a number laid out to a shape) take the dtype and device of a tensor in scope: the
module runs in float32 or float64, on any device. A ``gradcheck()`` function checks the module
against finite differences in float64.

The work is split by job: ``printer`` (expressions as torch code), ``module``
(the module laid out through the jinja2 template ``backstep/templates/codegen/function.py.j2``,
and the derivation's names made safe), ``layout`` (lines as ruff lays them out), ``gradcheck``
(the module's gradcheck() and ``--check``), ``text`` (comments, the docstring and the regenerate
command: the user text that reaches the module), ``usercode`` (running the generated module and
the user's file) and ``against`` (``--against``: the user's Function beside the derived one).

``--check`` and ``--against`` run code: the generated module (backstep's own text) and, for
``--against``, the user's file, which is imported as Python (that is what the user asks for).
No user text ever becomes code in the module (see ``text``); ``generate`` parses the
module it made and checks its docstring and its top level before handing it out. The user's own
code runs only inside ``usercode.user_code``: sys.exit() in it, or a run over
``usercode.USER_CODE_SECONDS``, is a UsageError (exit 2), never backstep's exit (exit 0 from ``--against``
says that every gradient agrees).
"""

from .against import Comparison, InputComparison, compare_against, comparison_text
from .gradcheck import check_text, run_gradcheck
from .module import (
    STYLES,
    Generated,
    check_module_text,
    generate,
    python_name,
    render_template,
    safe_names,
    template_dir,
)
from .printer import LINE, RESERVED, CodegenError, CodePrinter, Fit
from .text import (
    check_class_name,
    class_name_for,
    comment,
    escape_char,
    literal_text,
    regenerate_command,
    shell_lines,
    shell_quote,
    visible,
)
from .usercode import UserCodeBudget, UserCodeTimeout, load_generated, load_user_object, user_code

__all__ = [
    "LINE",
    "RESERVED",
    "STYLES",
    "CodePrinter",
    "CodegenError",
    "Comparison",
    "Fit",
    "Generated",
    "InputComparison",
    "UserCodeBudget",
    "UserCodeTimeout",
    "check_class_name",
    "check_module_text",
    "check_text",
    "class_name_for",
    "comment",
    "compare_against",
    "comparison_text",
    "escape_char",
    "generate",
    "literal_text",
    "load_generated",
    "load_user_object",
    "python_name",
    "regenerate_command",
    "render_template",
    "run_gradcheck",
    "safe_names",
    "shell_lines",
    "shell_quote",
    "template_dir",
    "user_code",
    "visible",
]
