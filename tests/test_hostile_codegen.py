"""`backstep codegen` and `derive --torch` against hostile input.

The generated module is code that `--check`, `--against` and the user run, so no user text (a
comment of the program, the command line quoted in the docstring, a name) may ever become code
in it: each payload below tries to create a canary file, which must never appear. `--name` must
not shadow what the module needs (torch). A user's file that `--torch`/`--against` imports and
runs may call sys.exit(0) or never return: backstep must neither exit 0 (which `--against` reads
as "every gradient agrees") nor hang.
"""

from __future__ import annotations

import ast
import builtins
import io
import signal
import textwrap
import tokenize
import unicodedata
from pathlib import Path

import pytest
from helpers import time_limit
from typer.testing import CliRunner

import backstep
from backstep import codegen
from backstep.cli import app
from backstep.codegen import class_name_for, generate, load_generated, run_gradcheck, usercode
from backstep.errors import UsageError

runner = CliRunner()
CANARY = "CANARY"  # relative: each test runs in its own tmp_path
PAYLOAD = 'open("CANARY","w").write("pwned")'


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not (tmp_path / CANARY).exists(), "a payload ran"


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_safe_module(code: str, *texts: str) -> None:
    """The module parses, every one of its lines is one line for Python, editors and
    str.splitlines(), running it creates no canary, and each text is in its docstring as text."""
    tree = ast.parse(code)
    assert code.splitlines() == code.split("\n")[:-1], "a character that some reader takes for a line break"
    assert "\r" not in code and "\x0c" not in code
    doc = ast.get_docstring(tree, clean=False)
    for text in texts:
        assert text in doc
    module = load_generated(code)
    assert module.__doc__ == doc
    assert not Path(CANARY).exists()
    assert run_gradcheck(module)[0]
    assert not Path(CANARY).exists()


# --- 1. user text in the generated module ------------------------------------------------------

COMMENT_PROGRAMS = {
    "triple double quotes": f'y = x * 2  # """;{PAYLOAD};"""',
    "triple single quotes": f"y = x * 2  # ''';{PAYLOAD};'''",
    "backslash at the end": f'y = x * 2  # a backslash \\\n# """;{PAYLOAD};"""\n# \\',
    "backslash before quotes": f'y = x * 2  # \\""";{PAYLOAD};"""',
    "quotes at the end": 'y = x * 2  # ends in quotes """',
    "four quotes": f'y = x * 2  # """";{PAYLOAD};""""',
    "newline": f'y = x * 2\n# first line\n# """;{PAYLOAD};"""',
    "carriage return": f'y = x * 2  # a\r# """;{PAYLOAD};"""',
    "file separator": f'y = x * 2  # a\x1c""";{PAYLOAD};"""',
    "group separator": f'y = x * 2  # a\x1d\x1e""";{PAYLOAD};"""',
    "next line": f'y = x * 2  # a\x85""";{PAYLOAD};"""',
    "line separator": f'y = x * 2  # a\u2028""";{PAYLOAD};"""',
    "paragraph separator": f'y = x * 2  # a\u2029""";{PAYLOAD};"""',
    "vertical tab and form feed": f'y = x * 2  # a\x0b\x0c""";{PAYLOAD};"""',
    "right-to-left override": f'y = x * 2  # \u202e""";{PAYLOAD};"""',
    "escape sequence": "y = x * 2  # \\N{BULLET} \\x41 \\u0041 \\",
}


@pytest.mark.parametrize("program", COMMENT_PROGRAMS.values(), ids=COMMENT_PROGRAMS.keys())
def test_a_comment_stays_text_in_the_docstring(program):
    d = backstep.derive(program)
    code = generate(d, "F").code
    assert_safe_module(code)
    doc = ast.get_docstring(ast.parse(code), clean=False)
    assert "y = x * 2" in doc
    if PAYLOAD in program:
        assert PAYLOAD in doc


@pytest.mark.parametrize("program", COMMENT_PROGRAMS.values(), ids=COMMENT_PROGRAMS.keys())
def test_codegen_check_runs_no_comment(program, tmp_path):
    result = invoke("codegen", program, "-o", "out.py", "--check")
    assert result.exit_code == 0, result.output
    assert "✓ gradcheck passed" in result.stderr
    assert_safe_module((tmp_path / "out.py").read_text(encoding="utf-8"))


COMMANDS = {
    "triple quotes": f'backstep codegen "y = x" -o """;{PAYLOAD};""".py',
    "newline": f'backstep codegen \'y = x\n"""\n{PAYLOAD}\n"""\'',
    "carriage return": f'backstep codegen \'y = x\r"""\r{PAYLOAD}\r"""\'',
    "line separators": f'backstep codegen \'a\x1c\u2028\x85""";{PAYLOAD};"""\'',
    "backslash at the end": "backstep codegen 'y = x' -o a\\",
    "quote at the end": 'backstep codegen "y = x"',
}


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_the_regenerate_command_stays_text(command):
    code = generate(backstep.derive("y = x * 2"), "F", command=command).code
    # all of it, to its last character (a backslash there must not swallow the line break)
    assert_safe_module(code, "Regenerate with:", codegen.visible(command).split()[-1] + "\n")


def test_an_output_file_name_cannot_close_the_docstring(tmp_path):
    out = f'a""";{PAYLOAD};""".py'
    result = invoke("codegen", "y = x * 2", "-o", out, "--check")
    assert result.exit_code == 0, result.output
    assert_safe_module((tmp_path / out).read_text(encoding="utf-8"), PAYLOAD)


def test_a_formula_with_newlines_and_separators_in_the_command(tmp_path):
    program = f'y = x * 2\n# """\n# {PAYLOAD}\x1c\u2028"""'
    result = invoke("codegen", program, "--check", "-o", "out.py")
    assert result.exit_code == 0, result.output
    assert_safe_module((tmp_path / "out.py").read_text(encoding="utf-8"), PAYLOAD)


def test_code_comments_hold_no_line_breaks_or_control_characters():
    lines = codegen.comment("1. x̄ = a\rb\nc\x1cd\u2028e\x85f\x0bg\x0ch\u202ei\x00j", 8)
    assert lines and all(line.startswith("# ") for line in lines)
    assert all(line.isprintable() for line in lines), lines
    ast.parse("\n".join(["x = 1", *lines, "y = 2"]))


def test_a_dimension_in_fullwidth_letters_does_not_shadow_torch():
    # Python reads ｔｏｒｃｈ as torch (NFKC): as a local of gradcheck() it would hide the module
    result = invoke("codegen", "X * 2", "--shape", "X=ｔｏｒｃｈ", "--check")
    assert result.exit_code == 0, result.output
    assert "✓ gradcheck passed" in result.stderr


def test_names_are_written_as_python_reads_them():
    # ﬁ and fi are one name to Python (NFKC): the module spells every name in that form
    d = backstep.derive("sum(X) * sum(Y)", shapes={"X": ("ﬁ",), "Y": ("fi",)})
    code = generate(d, "F").code
    names = [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.NAME]
    assert all(unicodedata.normalize("NFKC", name) == name for name in names)
    assert_safe_module(code)


def test_the_codegen_template_environment_is_sandboxed(monkeypatch):
    import jinja2.sandbox

    made = []
    real = jinja2.sandbox.SandboxedEnvironment.__init__

    def spy(self, *args, **kwargs):
        made.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.sandbox.SandboxedEnvironment, "__init__", spy)
    generate(backstep.derive("y = x * 2"), "F")
    assert made


# --- 2. --name --------------------------------------------------------------------------------------

BAD_NAMES = [
    "torch",
    "math",
    "gradcheck",
    "print",
    "len",
    "Exception",
    "__name__",
    "__builtins__",
    "__doc__",
    "None",
    "class",
    "match",
    "case",
    "_",
    "Ｆ",  # fullwidth: Python reads it as F, and it is not ASCII
    "Fa\u0304",
    "1F",
    "no way",
    "F;import os",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_class_names_are_usage_errors(name):
    d = backstep.derive("y = x * 2")
    with pytest.raises(UsageError):
        generate(d, name)


@pytest.mark.parametrize("name", ["torch", "math", "print", "gradcheck", "match", "Ｆ"])
def test_name_that_shadows_exits_2(name):
    result = invoke("codegen", "y = x * 2", "--name", name, "--check")
    assert result.exit_code == 2, result.output
    assert "--name" in result.stderr and "Traceback" not in result.output


def test_every_builtin_is_refused():
    d = backstep.derive("y = x * 2")
    for name in dir(builtins):
        if name.isidentifier():
            with pytest.raises(UsageError):
                generate(d, name)


def test_good_class_names_pass():
    d = backstep.derive("y = x * 2")
    for name in ("F", "MyLayer", "LinearFunction", "torch_function", "Math"):
        module = load_generated(generate(d, name).code)
        assert run_gradcheck(module)[0]


@pytest.mark.parametrize("stem", ["torch", "math", "print", "class", "__init__", "123", "é", "", "a-b c", "gradcheck"])
def test_class_names_from_output_files_are_checked_names(stem):
    name = class_name_for(Path(f"{stem}.py"))
    assert codegen.check_class_name(name, "-o") == name


# --- 3. the user's file: sys.exit, endless loops ---------------------------------------------------


@pytest.fixture
def no_hang():
    """The test's own alarm: a check that hangs fails instead of hanging."""
    with time_limit(10, "the check"):
        yield


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


GOOD_FUNCTION = """
import torch


class F(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, W):
        ctx.save_for_backward(X, W)
        return X @ W

    @staticmethod
    def backward(ctx, g):
        X, W = ctx.saved_tensors
        {backward}
        return g @ W.T, X.T @ g


def f(x):
    return x * 2
"""


@pytest.mark.parametrize("status", ["0", "1", "None", "'bye'"])
def test_sys_exit_at_import_under_torch_exits_2(tmp_path, status):
    path = write(tmp_path / "exits.py", f"import sys\nsys.exit({status})\n")
    result = invoke("derive", "--torch", f"{path}:f", "-s", "x=n")
    assert result.exit_code == 2, result.output
    assert "exits.py" in result.stderr and "sys.exit" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("status", ["0", "1"])
def test_sys_exit_at_import_under_against_exits_2(tmp_path, status):
    path = write(tmp_path / "exits.py", f"import sys\nsys.exit({status})\n" + GOOD_FUNCTION.format(backward="pass"))
    result = invoke("codegen", "X @ W", "--shape", "X=n,d", "--shape", "W=d,d", "--against", f"{path}:F")
    assert result.exit_code == 2, result.output
    assert "exits.py" in result.stderr and "sys.exit" in result.stderr
    assert "agrees" not in result.output


def test_sys_exit_in_the_users_backward_exits_2(tmp_path):
    path = write(tmp_path / "mine.py", "import sys\n" + GOOD_FUNCTION.format(backward="sys.exit(0)"))
    result = invoke("codegen", "X @ W", "--shape", "X=n,d", "--shape", "W=d,d", "--against", f"{path}:F")
    assert result.exit_code == 2, result.output
    assert "sys.exit" in result.stderr
    assert "agrees" not in result.output


def test_sys_exit_while_tracing_exits_2(tmp_path):
    path = write(tmp_path / "model.py", "import sys\n\ndef f(x):\n    sys.exit(0)\n")
    result = invoke("derive", "--torch", f"{path}:f", "-s", "x=n")
    assert result.exit_code == 2, result.output
    assert "sys.exit" in result.stderr


def test_sys_exit_in_a_models_constructor_exits_2(tmp_path):
    path = write(
        tmp_path / "model.py",
        """
        import sys
        import torch


        class Net(torch.nn.Module):
            def __init__(self):
                sys.exit(0)
        """,
    )
    result = invoke("derive", "--torch", f"{path}:Net", "-s", "x=n")
    assert result.exit_code == 2, result.output
    assert "sys.exit" in result.stderr


LOOPS = {
    "busy loop": "while True:\n    pass\n",
    "sleep": "import time\ntime.sleep(600)\n",
    "loop that swallows exceptions": "while True:\n    try:\n        pass\n    except Exception:\n        pass\n",
}


@pytest.mark.parametrize("body", LOOPS.values(), ids=LOOPS.keys())
def test_a_file_that_never_finishes_importing_times_out_under_torch(tmp_path, monkeypatch, no_hang, body):
    monkeypatch.setattr(usercode, "USER_CODE_SECONDS", 1)
    path = write(tmp_path / "loops.py", body)
    result = invoke("derive", "--torch", f"{path}:f", "-s", "x=n")
    assert result.exit_code == 2, result.output
    assert "loops.py" in result.stderr and "still running after 1 s" in result.stderr
    assert "Traceback" not in result.output


def test_a_file_that_never_finishes_importing_times_out_under_against(tmp_path, monkeypatch, no_hang):
    monkeypatch.setattr(usercode, "USER_CODE_SECONDS", 1)
    path = write(tmp_path / "loops.py", "while True:\n    pass\n")
    result = invoke("codegen", "X @ W", "--shape", "X=n,d", "--shape", "W=d,d", "--against", f"{path}:F")
    assert result.exit_code == 2, result.output
    assert "loops.py" in result.stderr and "still running after 1 s" in result.stderr


def test_a_backward_that_never_returns_times_out(tmp_path, monkeypatch, no_hang):
    monkeypatch.setattr(usercode, "USER_CODE_SECONDS", 1)
    path = write(tmp_path / "mine.py", GOOD_FUNCTION.format(backward="while True: pass"))
    result = invoke("codegen", "X @ W", "--shape", "X=n,d", "--shape", "W=d,d", "--against", f"{path}:F")
    assert result.exit_code == 2, result.output
    assert "still running after 1 s" in result.stderr


def test_a_forward_that_never_returns_while_tracing_times_out(tmp_path, monkeypatch, no_hang):
    monkeypatch.setattr(usercode, "USER_CODE_SECONDS", 1)
    path = write(tmp_path / "model.py", "def f(x):\n    while True:\n        pass\n")
    result = invoke("derive", "--torch", f"{path}:f", "-s", "x=n")
    assert result.exit_code == 2, result.output
    assert "still running after 1 s" in result.stderr


def test_the_time_limit_is_restored_afterwards(tmp_path, monkeypatch):
    monkeypatch.setattr(usercode, "USER_CODE_SECONDS", 1)
    handler = signal.getsignal(signal.SIGALRM)
    path = write(tmp_path / "mine.py", GOOD_FUNCTION.format(backward="pass"))
    result = invoke("codegen", "X @ W", "--shape", "X=n,d", "--shape", "W=d,d", "--against", f"{path}:F")
    assert result.exit_code == 0, result.output
    assert signal.getsignal(signal.SIGALRM) == handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
