"""backstep: the backpropagation derivation of a function, step by step, verified by PyTorch.

>>> import backstep
>>> d = backstep.derive("relu(x@W1)@W2", verify=True)
>>> print(d.to_text())
"""

from .derive import derive
from .errors import BackstepError, DomainError, ParseError, ShapeError, UnsupportedError, UsageError
from .model import Derivation
from .parser import Limits, parse

__version__ = "0.1.0"

__all__ = [
    "derive",
    "parse",
    "Derivation",
    "Limits",
    "BackstepError",
    "ParseError",
    "ShapeError",
    "DomainError",
    "UnsupportedError",
    "UsageError",
]
