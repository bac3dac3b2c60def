"""backstep: the backpropagation derivation of a function, step by step, verified by PyTorch.

>>> import backstep
>>> d = backstep.derive("relu(x@W1)@W2", verify=True)
>>> print(d.to_text())
>>> backstep.check("relu(x@W1)@W2", "W1", "x.T @ ((grad_y @ W2.T) * step(x @ W1))").verdict
'right'
>>> code = backstep.codegen("relu(x@W1)@W2", "MLP")

``backstep.check`` and ``backstep.codegen`` are both the submodules (``from backstep.check import
Problem``, ``from backstep import codegen; codegen.generate(...)``) and functions: the submodules
are callable, and calling them calls ``backstep.api.check`` / ``backstep.api.codegen``. A plain
function bound to the same name would be replaced by the module as soon as something imports
the submodule, and ``from backstep import codegen`` (which the CLI does) would then get the
function; a callable module is the same object whichever way it is reached.

Only what ``derive`` and ``parse`` need is imported here (the CLI's cold start pays for it); the
rest is loaded on first use.
"""

import sys
import types

from .derive import derive
from .errors import BackstepError, DomainError, ParseError, ShapeError, UnsupportedError, UsageError
from .facade import Derivation
from .parser import Limits, parse

DISTRIBUTION = "backstep-autograd"  # `backstep` on the package index is another project


def _version() -> str:
    """pyproject.toml's version, from the installed distribution's metadata (looked up on first use:
    it costs ~16 ms of cold start)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a source tree on sys.path, never installed
        import re
        from pathlib import Path

        try:
            text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8")
            return re.search(r'^version = "([^"]+)"', text, re.M).group(1)
        except (OSError, AttributeError):
            return "0+unknown"


__all__ = [
    "derive",
    "parse",
    "check",
    "check_file",
    "codegen",
    "schema",
    "Derivation",
    "CheckResult",
    "FileCheckResult",
    "Limits",
    "BackstepError",
    "ParseError",
    "ShapeError",
    "DomainError",
    "UnsupportedError",
    "UsageError",
]


class _CallableModule(types.ModuleType):
    """A submodule that is also a function of backstep.api (``_api_name``)."""

    _api_name = ""

    def __call__(self, *args, **kwargs):
        from . import api

        return getattr(api, self._api_name)(*args, **kwargs)

    @property
    def __signature__(self):  # inspect.signature(backstep.check) is the function's
        import inspect

        from . import api

        return inspect.signature(getattr(api, self._api_name))


class _CheckModule(_CallableModule):
    _api_name = "check"


class _CodegenModule(_CallableModule):
    _api_name = "codegen"


_CALLABLE_SUBMODULES = {"check": _CheckModule, "codegen": _CodegenModule}
_LAZY = {"check_file": "api", "schema": "api", "CheckResult": "api", "FileCheckResult": "api"}


def _make_callable(name: str, module: types.ModuleType) -> None:
    if type(module) is types.ModuleType:
        module.__class__ = _CALLABLE_SUBMODULES[name]


class _Package(types.ModuleType):
    # The import system binds a submodule to its package with setattr once it is loaded (by
    # `import backstep.check`, `from backstep import check`, `from .check import X`, ...): this is
    # where the submodule becomes callable, whichever of those loads it first.
    def __setattr__(self, name, value):
        if name in _CALLABLE_SUBMODULES and isinstance(value, types.ModuleType):
            _make_callable(name, value)
        super().__setattr__(name, value)


def __getattr__(name: str):
    """``backstep.check``, ``backstep.codegen``, ``backstep.check_file``, ... on first use."""
    import importlib

    if name == "__version__":
        value = globals()["__version__"] = _version()
        return value
    if name in _CALLABLE_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | {"__version__"})


sys.modules[__name__].__class__ = _Package
for _name in _CALLABLE_SUBMODULES:  # loaded already (by something the imports above imported)?
    if f"{__name__}.{_name}" in sys.modules:
        _make_callable(_name, sys.modules[f"{__name__}.{_name}"])
