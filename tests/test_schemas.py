"""The JSON Schemas shipped in backstep/schemas/ (draft 2020-12), checked against real output: the
CLI's `derive --format json` for every example and every op's example (with and without --at,
with verification and --no-verify), `check --format json` for right, wrong, circular and bad
input, `check --derivation FILE --format json`, and the lines of `check --batch`."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

import backstep
from backstep.cli import app
from backstep.ops import OPS

jsonschema = pytest.importorskip("jsonschema")
from jsonschema import Draft202012Validator  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
runner = CliRunner()

MLP = "relu(x@W1)@W2"
MLP_PROGRAM = """X: (n, d); W1: (d, h); W2: (h, o); Y: (n, o)
H = relu(X @ W1)
L = sum((H @ W2 - Y)**2)
"""


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(backstep.schema(name))


def assert_valid(name: str, doc) -> None:
    errors = sorted(validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def invoke(*args: str, input: str | None = None):
    result = runner.invoke(app, list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def readme_commands() -> dict[str, list[str]]:
    """The `backstep derive -f examples/NAME.bs ...` line of each example in examples/README.md."""
    commands = {}
    for line in (EXAMPLES / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("backstep derive "):
            argv = [str(ROOT / a) if a.startswith("examples/") else a for a in shlex.split(line)[1:]]
            commands[Path(argv[argv.index("-f") + 1]).stem] = argv
    return commands


COMMANDS = readme_commands()


# --- the schema files --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["derivation", "check", "check-file", "check-batch"])
def test_each_schema_is_a_valid_draft_2020_12_schema(name):
    schema = backstep.schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schemas_are_package_data_named_by_their_documents_schema_field():
    from importlib.resources import files

    shipped = sorted(p.name for p in files("backstep").joinpath("schemas").iterdir() if p.name.endswith(".json"))
    assert shipped == [
        "check-batch.schema.json",
        "check-file.schema.json",
        "check.schema.json",
        "derivation.schema.json",
    ]
    for doc_id in ("backstep.derivation/1", "backstep.check/1", "backstep.check-file/1"):
        assert backstep.schema(doc_id)["title"] == doc_id
    with pytest.raises(backstep.UsageError, match="no schema"):
        backstep.schema("nope")


def test_pyproject_ships_the_schemas():
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "schemas/*.json" in data["tool"]["setuptools"]["package-data"]["backstep"]


def test_the_enums_follow_the_code():
    from backstep.check import MISTAKE_KINDS, Result
    from backstep.check.run import BATCH_KEYS

    for name, path in [
        ("check", ["oneOf", 0, "properties"]),
        ("check-file", ["$defs", "line", "properties"]),
        ("check-batch", ["properties"]),
    ]:
        node = backstep.schema(name)
        for key in path:
            node = node[key]
        assert node["mistake_kind"]["enum"] == [*MISTAKE_KINDS, None], name
    claim = backstep.schema("check")["oneOf"][0]
    fields = list(Result("right", "").to_dict())
    assert claim["required"] == ["schema", "input", "wrt", *fields]
    line = backstep.schema("check-file")["$defs"]["line"]
    assert line["required"] == ["line", "written", "step", *fields]
    assert {k: v for k, v in line["properties"].items() if k not in ("line", "written", "step", "verdict")} == {
        k: v for k, v in claim["properties"].items() if k not in ("schema", "input", "wrt", "verdict")
    }
    assert backstep.schema("check-batch")["required"] == list(BATCH_KEYS)


# --- backstep.derivation/1 ---------------------------------------------------------------------


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "no-verify"])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_derive_json_of_every_example_is_valid(name, verify):
    argv = COMMANDS[name] + ["--format", "json"] + ([] if verify else ["--no-verify"])
    result = invoke(*argv)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert_valid("derivation", doc)
    assert (doc["verification"] is None) == (not verify)
    assert (doc["at"] is not None) == ("--at" in argv)


def test_the_examples_cover_at_and_verification():
    assert any("--at" in argv for argv in COMMANDS.values())
    assert any("--at" not in argv for argv in COMMANDS.values())


@pytest.mark.parametrize("name", sorted(OPS))
def test_derive_json_of_every_op_example_is_valid(name):
    example = OPS[name].example
    verified = invoke("derive", example, "--format", "json")
    assert verified.exit_code == 0, verified.output
    assert_valid("derivation", json.loads(verified.stdout))
    # --at for the first variable (a value of its shape, drawn inside its domain), the rest drawn
    first = backstep.derive(example, at={}).at
    var, value = next(iter(first.items()))
    at = invoke("derive", example, "--at", f"{var}={json.dumps(value)}", "--no-verify", "--format", "json")
    assert at.exit_code == 0, at.output
    doc = json.loads(at.stdout)
    assert doc["at"] is not None and doc["verification"] is None
    assert_valid("derivation", doc)


def test_derivation_schema_is_strict():
    doc = json.loads(invoke("derive", MLP, "--format", "json").stdout)
    assert_valid("derivation", doc)
    v = validator("derivation")
    for mutate in (
        lambda d: d.update(extra=1),
        lambda d: d.pop("gradients"),
        lambda d: d.update(schema="backstep.derivation/2"),
        lambda d: d["forward"][0].update(surprise=True),
        lambda d: d["backward"][0].update(kind="guess"),
        lambda d: d["gradients"]["x"].update(shape=[1.5]),
        lambda d: d["verification"]["gradients"][0].pop("ok"),
        lambda d: d["output"].update(shape="n,o"),
    ):
        bad = copy.deepcopy(doc)
        mutate(bad)
        assert not v.is_valid(bad)


def test_the_api_document_is_the_cli_document():
    d = backstep.derive(MLP, verify=True)
    assert d.to_dict() == json.loads(d.to_json()) == json.loads(invoke("derive", MLP, "--format", "json").stdout)


# --- backstep.check/1 --------------------------------------------------------------------------


def check_json(*args: str) -> tuple[int, dict]:
    result = invoke("check", *args, "--format", "json")
    return result.exit_code, json.loads(result.stdout)


def test_check_json_right_claim():
    code, doc = check_json(MLP, "--wrt", "W1", "--claim", "x.T @ ((grad_y @ W2.T) * step(x @ W1))")
    assert code == 0 and doc["verdict"] == "right" and doc["proof"] in ("symbolic", "numeric")
    assert_valid("check", doc)


def test_check_json_wrong_claim_with_mistake_and_counterexample():
    code, doc = check_json("sin(x**2)*exp(y)", "--wrt", "x", "--claim", "-2*x*cos(x**2)*exp(y)")
    assert code == 1 and doc["mistake_kind"] == "sign" and doc["counterexample"] is not None
    assert_valid("check", doc)
    code, doc = check_json(MLP, "--wrt", "W1", "--claim", "x @ ((grad_y @ W2.T) * step(x @ W1))")
    assert code == 1 and doc["mistake_kind"] == "missing_transpose" and doc["claim_shape"] is None
    assert_valid("check", doc)
    code, doc = check_json("x@W + b", "--shape", "b=h", "--wrt", "b", "--claim", "grad_y")
    assert code == 1 and doc["mistake_kind"] == "missing_broadcast_sum" and doc["claim_shape"] == ["n", "h"]
    assert_valid("check", doc)


def test_check_json_circular_claim():
    code, doc = check_json(MLP, "--wrt", "W1", "--claim", "grad_W1")
    assert code == 1 and doc["reason"].startswith("circular") and doc["points"] == 0
    assert_valid("check", doc)


@pytest.mark.parametrize(
    "args",
    [
        (MLP, "--wrt", "W1", "--claim", "x @@ 2"),  # a claim that does not parse
        (MLP, "--wrt", "Q", "--claim", "x"),  # an unknown name
        ("relu(x@", "--wrt", "x", "--claim", "x"),  # a formula that does not parse
    ],
)
def test_check_json_bad_input(args):
    code, doc = check_json(*args)
    assert code == 2 and doc["verdict"] == "error"
    assert_valid("check", doc)


def test_check_schema_is_strict():
    _, doc = check_json("sin(x**2)*exp(y)", "--wrt", "x", "--claim", "-2*x*cos(x**2)*exp(y)")
    v = validator("check")
    for mutate in (
        lambda d: d.update(extra=1),
        lambda d: d.pop("expected"),
        lambda d: d.update(mistake_kind="typo"),
        lambda d: d.update(verdict="maybe"),
        lambda d: d["counterexample"].pop("claim"),
    ):
        bad = copy.deepcopy(doc)
        mutate(bad)
        assert not v.is_valid(bad)
    assert not v.is_valid({"verdict": "error", "reason": "x", "extra": 1})
    assert not v.is_valid({"verdict": "wrong", "reason": "x"})


# --- backstep.check-file/1 ---------------------------------------------------------------------

BOB = """# bob's derivation
grad_W2 = H.T @ (2*(H @ W2 - Y))
H_bar = 2*(H @ W2 - Y) @ W2
mask = step(X @ W1)
W1_bar = X.T @ (H_bar * mask)
Z = X @ W1
this is not a line
H = relu(X @ W1)
"""


def test_check_file_json_right_wrong_defined_and_error_lines(tmp_path):
    formula, steps = tmp_path / "mlp.bs", tmp_path / "bob.txt"
    formula.write_text(MLP_PROGRAM, encoding="utf-8")
    steps.write_text(BOB, encoding="utf-8")
    result = invoke("check", "-f", str(formula), "-d", str(steps), "--format", "json")
    assert result.exit_code == 2, result.output  # a line that cannot be checked
    doc = json.loads(result.stdout)
    assert {line["verdict"] for line in doc["lines"]} == {"right", "wrong", "defined", "error"}
    assert doc["first_wrong_line"] == 3
    assert_valid("check-file", doc)


def test_check_file_json_all_right_and_bad_formula(tmp_path):
    steps = tmp_path / "steps.txt"
    steps.write_text("grad_W2 = relu(x@W1).T @ grad_y\ngrad_W1 = x.T @ ((grad_y @ W2.T) * step(x @ W1))\n")
    result = invoke("check", MLP, "-d", str(steps), "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "right" and doc["first_wrong_line"] is None
    assert_valid("check-file", doc)
    bad = invoke("check", "relu(x@", "-d", str(steps), "--format", "json")
    assert bad.exit_code == 2
    assert_valid("check-file", json.loads(bad.stdout))
    assert not validator("check-file").is_valid({**doc, "lines": [{**doc["lines"][0], "extra": 1}]})


# --- check --batch: one line ---------------------------------------------------------------------


def test_batch_lines_are_valid(tmp_path):
    lines = [
        {"id": 1, "expr": "x@W + b", "wrt": "b", "claim": "sum(grad_y, axis=0)", "shapes": {"b": ["h"]}},
        {"id": "two", "expr": "x@W + b", "wrt": "b", "claim": "grad_y", "shapes": {"b": ["h"]}},
        {"expr": "sin(x)", "wrt": "x", "claim": "cos(x"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n"
    batch = tmp_path / "claims.jsonl"
    batch.write_text(text, encoding="utf-8")
    result = invoke("check", "--batch", str(batch))
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["verdict"] for o in out] == ["right", "wrong", "error", "error"]
    for o in out:
        assert_valid("check-batch", o)
    # not a backstep.check/1 document: a batch line carries neither schema, input nor wrt
    assert not validator("check").is_valid(out[0])
