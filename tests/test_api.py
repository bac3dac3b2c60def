"""The Python API: `backstep.derive/parse/check/check_file/codegen/schema`, a Derivation's short
repr and str, the submodules `backstep.check` and `backstep.codegen` that are also functions, and
an `import backstep` that stays light."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from typer.testing import CliRunner

import backstep
from backstep.cli import app

ROOT = Path(__file__).resolve().parent.parent
MLP = "relu(x@W1)@W2"
MLP_W1 = "x.T @ ((grad_y @ W2.T) * step(x @ W1))"
runner = CliRunner()


def cli(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def nfc(text: str) -> str:
    """ȳ is printed as y and a combining macron: compare composed forms."""
    return unicodedata.normalize("NFC", text)


def run_python(code: str) -> str:
    """Run `code` in a fresh interpreter (a clean sys.modules) and return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- repr and str of a Derivation ----------------------------------------------------------------


def test_repr_is_one_short_line():
    d = backstep.derive(MLP, verify=False)
    assert repr(d) == (
        "<Derivation y = relu(x W1) W2: 3 forward steps, 5 backward steps, gradients for x, W1, W2; not verified>"
    )
    d.verify()
    assert repr(d) == (
        "<Derivation y = relu(x W1) W2: 3 forward steps, 5 backward steps, gradients for x, W1, W2; verified ✓>"
    )
    assert "\n" not in repr(d)


def test_repr_of_a_long_formula_is_clipped():
    source = " + ".join(f"sin(x{i})" for i in range(40))
    d = backstep.derive(source, wrt=["x0"])
    assert len(repr(d)) < 200 and "…" in repr(d) and "gradients for x0;" in repr(d)


def test_str_is_a_few_readable_lines():
    d = backstep.derive(MLP, verify=True)
    assert nfc(str(d)).splitlines() == [
        "y = relu(x W1) W2",
        "x: n×d   W1: d×h   W2: h×o   →   y: n×o",
        "∂L/∂x = ((ȳ W2ᵀ) ⊙ 1[x W1 > 0]) W1ᵀ   (n×d)",
        "∂L/∂W1 = xᵀ ((ȳ W2ᵀ) ⊙ 1[x W1 > 0])   (d×h)",
        "∂L/∂W2 = relu(x W1)ᵀ ȳ   (h×o)",
        "✓ verified with PyTorch autograd (float64, 3 random points, n=2 d=3 h=5 o=7)",
    ]
    assert str(backstep.derive(MLP, verify=False)).splitlines()[-1].startswith("not verified")


def test_str_of_a_program_with_at_values():
    program = (ROOT / "examples" / "linear_model.bs").read_text(encoding="utf-8")
    d = backstep.derive(program, wrt=["w"], at={"x": 1.0, "y": 2.0, "w": 1.0}, verify=False)
    assert str(d).splitlines() == [
        "y_pred = x * w",
        "l = (y_pred - y) ** 2",
        "x: scalar   w: scalar   y: scalar   →   l: scalar",
        "∂l/∂w = ȳ_pred x = -2   (scalar)",  # the named form, with the adjoint it refers to
        "  where ȳ_pred = 2 (y_pred - y)   (scalar)",
        "not verified (d.verify() checks it against PyTorch autograd)",
    ]
    assert repr(d).startswith("<Derivation l = (w x - y)²: 3 forward steps, 3 backward steps, gradients for w;")


def test_a_failed_verification_shows_in_repr_and_str():
    from backstep.model import Check

    d = backstep.derive("sin(x)", verify=True)
    d.verification.gradients[0] = Check("x", False, 1.0, 1.0)
    assert repr(d).endswith("; ✗ verification failed: gradient of x>")
    assert str(d).splitlines()[-1] == "✗ verification failed: gradient of x"


def test_repr_never_fails():
    d = dataclasses.replace(backstep.derive("sin(x)"), output_expr=object(), variables=None)
    assert repr(d) == "<Derivation of 'sin(x)'>"
    assert str(d) == repr(d)


def test_dataclass_equality_still_works():
    a, b = backstep.derive(MLP), backstep.derive(MLP)
    assert a == b and a is not b  # the parse each came from is not compared
    assert a != backstep.derive("relu(x@W1)@W3")
    assert dataclasses.replace(a, notes=["x"]) != a


# --- backstep.check and backstep.codegen: submodules and functions --------------------------------


def test_check_is_a_function_and_the_submodule():
    import backstep.check
    from backstep.check import Problem

    assert callable(backstep.check)
    assert backstep.check(MLP, "W1", MLP_W1).verdict == "right"
    assert Problem(MLP).check_claim("W1", MLP_W1).verdict == "right"
    assert backstep.check is sys.modules["backstep.check"]
    from backstep import check

    assert check is backstep.check and check("sin(x)", wrt="x", claim="cos(x)").ok


def test_codegen_is_a_function_and_the_submodule():
    from backstep import codegen

    assert codegen is backstep.codegen is sys.modules["backstep.codegen"]
    assert callable(codegen.generate) and callable(codegen)
    assert "class F(torch.autograd.Function)" in backstep.codegen("x*y", "F")


def test_signatures_are_the_functions():
    params = inspect.signature(backstep.check).parameters
    assert list(params)[:3] == ["source", "wrt", "claim"] and "points" in params
    assert list(inspect.signature(backstep.codegen).parameters)[:2] == ["source", "name"]


# Each in a fresh interpreter. The call reaches backstep.api.check, which refuses two variables
# before any work (so torch is never imported here; the calls that work are tested above).
CALL = (
    "import types\n"
    "try:\n    backstep.check('sin(x)', 'x,y', 'cos(x)')\n"
    "except backstep.UsageError as err:\n    print('refused' if 'one variable' in str(err) else err)\n"
    "print(isinstance(backstep.check, types.ModuleType), callable(backstep.codegen))\n"
    "print(callable(backstep.codegen.generate))\n"
)
IMPORT_ORDERS = {
    "submodule first": "import backstep.check\nimport backstep\nassert backstep.check.Problem\n",
    "from the submodule first": "from backstep.check import Problem\nimport backstep\n",
    "package, then submodule": (
        "import backstep\nimport backstep.check\nimport backstep.check as m\nassert m is backstep.check\n"
    ),
    "from the package": "from backstep import check, codegen\nimport backstep\nassert check is backstep.check\n",
    "the CLI first": "import backstep.cli\nimport backstep.check.run\nimport backstep.codegen\nimport backstep\n",
}


@pytest.mark.parametrize("order", sorted(IMPORT_ORDERS))
def test_every_import_order_gives_the_callable_submodule(order):
    assert run_python(IMPORT_ORDERS[order] + CALL).split() == ["refused", "True", "True", "True"]


def test_import_backstep_stays_light():
    code = (
        "import sys, backstep; heavy = ['torch', 'rich', 'typer', 'jinja2', 'backstep.api', 'backstep.check', "
        "'backstep.codegen', 'backstep.check.run', 'backstep.render']; print([m for m in heavy if m in sys.modules])"
    )
    assert run_python(code).strip() == "[]"


# --- backstep.check --------------------------------------------------------------------------------


def test_check_right_and_wrong():
    right = backstep.check(MLP, "W1", MLP_W1)
    assert right.ok and right.verdict == "right" and right.exit_code == 0 and right.proof == "symbolic"
    assert repr(right) == f"<CheckResult ✓ right  ∂L/∂W1 = {MLP_W1}>"
    wrong = backstep.check(MLP, "W1", "x @ ((grad_y @ W2.T) * step(x @ W1))")
    assert not wrong.ok and wrong.exit_code == 1
    assert wrong.mistake.kind == "missing_transpose" and wrong.mistake.fix == MLP_W1
    assert repr(wrong).endswith(": a missing transpose: x should be x.T>")
    assert "mistake   a missing transpose: x should be x.T" in str(wrong)
    circular = backstep.check(MLP, "W1", "grad_W1 = grad_W1")
    assert circular.verdict == "wrong" and circular.reason.startswith("circular")


def test_check_options():
    lin = backstep.check("x@W + b", "b", "grad_y", shapes={"b": ("h",)})
    assert lin.mistake.kind == "missing_broadcast_sum"
    assert backstep.check("log(x)", "x", "1/x", assume={"x": "positive"}).ok
    assert backstep.check(MLP, "W1", MLP_W1, points=2, seed=3).points == 2 + 1  # 1 more at the second sizes
    assert backstep.check("sin(x)", "x", "cos(x)", timeout=0).ok


def test_check_document_and_text_are_the_clis():
    result = backstep.check(MLP, "W1", "x @ ((grad_y @ W2.T) * step(x @ W1))")
    shown = cli("check", MLP, "--wrt", "W1", "--claim", "x @ ((grad_y @ W2.T) * step(x @ W1))", "--format", "json")
    assert result.to_dict() == json.loads(shown.stdout) == json.loads(result.to_json())
    text = cli("check", MLP, "--wrt", "W1", "--claim", "x @ ((grad_y @ W2.T) * step(x @ W1))")
    assert [line.rstrip() for line in text.stdout.splitlines()] == result.to_text().splitlines()


@pytest.mark.parametrize(
    "args, match",
    [
        ((MLP, "W1", "x @@ 2"), "syntax"),
        ((MLP, "Q", "x"), "not a name of the formula"),
        ((MLP, "W1,W2", "x"), "one variable"),
        ((MLP, "", "x"), "wrt names"),
    ],
)
def test_check_bad_input_raises(args, match):
    with pytest.raises(backstep.BackstepError, match=match):
        backstep.check(*args)


# --- backstep.check_file ---------------------------------------------------------------------------

PROGRAM = "X: (n, d); W1: (d, h); W2: (h, o); Y: (n, o)\nH = relu(X @ W1)\nL = sum((H @ W2 - Y)**2)\n"
STEPS = [
    "grad_W2 = H.T @ (2*(H @ W2 - Y))",
    "H_bar = 2*(H @ W2 - Y) @ W2",
    "mask = step(X @ W1)",
    "W1_bar = X.T @ (H_bar * mask)",
]


def test_check_file_from_text_lines_and_path(tmp_path):
    from_text = backstep.check_file(PROGRAM, "\n".join(STEPS))
    assert [r.verdict for r in from_text.lines] == ["right", "wrong", "defined", "right"]
    assert from_text.verdict == "wrong" and not from_text.ok and from_text.first_wrong_line == 2
    assert from_text.exit_code == 1
    assert repr(from_text) == "<FileCheckResult wrong: 4 lines (2 right, 1 wrong, 1 defined); first wrong line 2>"
    path = tmp_path / "bob.txt"
    path.write_text("\n".join(STEPS) + "\n", encoding="utf-8")
    assert backstep.check_file(PROGRAM, path) == from_text == backstep.check_file(PROGRAM, STEPS)
    shown = cli("check", PROGRAM, "-d", str(path), "--format", "json")
    assert from_text.to_dict() == json.loads(shown.stdout) == json.loads(from_text.to_json())
    assert "first wrong line: 2" in str(from_text)
    with pytest.raises(backstep.UsageError, match="cannot read"):
        backstep.check_file(PROGRAM, tmp_path / "missing.txt")


def test_check_file_all_right():
    right = backstep.check_file(PROGRAM, [STEPS[0], "W1_bar = X.T @ ((2*(H @ W2 - Y) @ W2.T) * step(X @ W1))"])
    assert right.ok and right.exit_code == 0 and right.first_wrong_line is None


# --- backstep.codegen ------------------------------------------------------------------------------


def test_codegen_from_a_formula_or_a_derivation_is_the_clis_module():
    shown = cli("codegen", "x @ W + b", "--shape", "b=h", "--name", "Linear")
    assert shown.exit_code == 0, shown.output
    command = "backstep codegen 'x @ W + b' --shape b=h --name Linear"
    code = backstep.codegen("x @ W + b", "Linear", shapes={"b": ("h",)}, command=command)
    assert code == shown.stdout
    d = backstep.derive("x @ W + b", shapes={"b": ("h",)})
    assert backstep.codegen(d, "Linear", command=command) == code
    module = backstep.codegen.load_generated(code)
    assert module.gradcheck()


def test_codegen_wrt_and_errors():
    code = backstep.codegen("x*y", wrt="x")
    assert "class DerivedFunction(torch.autograd.Function)" in code
    with pytest.raises(backstep.UsageError, match="already has them"):
        backstep.codegen(backstep.derive("x*y"), shapes={"x": (3,)})
    with pytest.raises(backstep.BackstepError):
        backstep.codegen("x*y", "not a name")


# --- docstrings -------------------------------------------------------------------------------------


def test_every_public_function_has_a_docstring():
    from backstep import Derivation, api

    functions = [backstep.derive, backstep.parse, api.check, api.check_file, api.codegen, api.schema]
    functions += [getattr(Derivation, name) for name in dir(Derivation) if name.startswith("to_")]
    functions += [Derivation.verify, Derivation.__str__]
    functions += [api.CheckResult.to_dict, api.CheckResult.to_text, api.FileCheckResult.to_dict]
    missing = [f.__qualname__ for f in functions if not (f.__doc__ or "").strip()]
    assert not missing
    assert {"to_dict", "to_json", "to_text", "to_markdown", "to_latex", "to_pdf"} <= set(dir(Derivation))


def test_all_names_resolve():
    for name in backstep.__all__:
        assert getattr(backstep, name) is not None
    assert {"check", "codegen", "check_file", "schema"} <= set(dir(backstep))
    with pytest.raises(AttributeError):
        backstep.no_such_name  # noqa: B018


def test_derive_verifies_by_default_like_the_cli():
    d = backstep.derive("relu(x@W1)@W2")
    assert d.verification is not None and d.verification.ok
    assert backstep.derive("relu(x@W1)@W2", verify=False).verification is None
