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

The package: fx.py walks the traced graph; the adapters (adapters.py for torch functions and
tensor methods, modules.py for nn.Module classes, one_to_one.py for the torch spellings that are
exactly one op) write each torch call, and are found through registry.py. Which torch spelling
means which op is written in the op records (``Op.torch_aliases``), as dotted names that
torch_ops.py resolves when a model is traced. Only fx.py is imported here: the adapters import
torch, so they are imported when a model is traced.
"""

from .fx import Traced, trace_from_cli, trace_model

__all__ = ["Traced", "trace_from_cli", "trace_model"]
