"""Verification under a torch that names things otherwise than backstep's op table.

The op table's grad_fn names are the documented expectation (what the pinned torch reports).
Another torch version may name a node differently (a 1-d `linear` as LinearBackward0, say): the
derivation is still right, so verification shows torch's name with a note and still passes.
Simulated here by renaming what the verifier reads from torch.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import backstep
from backstep import verify as verify_module
from backstep.cli import app

MATVEC = "W@x"
SHAPES = {"W": ("m", "n"), "x": ("n",)}
NOTE = "names the grad_fn of y LinearBackward0, where backstep's op table expects MvBackward0"


@pytest.fixture
def renamed_torch(monkeypatch):
    """A torch that calls a matrix-vector product's grad_fn LinearBackward0."""
    real = verify_module.torch_grad_fn_name

    def torch_grad_fn_name(tensor):
        name = real(tensor)
        return "LinearBackward0" if name == "MvBackward0" else name

    monkeypatch.setattr(verify_module, "torch_grad_fn_name", torch_grad_fn_name)


def test_the_pinned_torch_names_what_the_table_says():
    d = backstep.derive(MATVEC, shapes=SHAPES, verify=True)
    assert d.verification.ok and not d.verification.notes
    assert d.verification.grad_fn_names == {"y": "MvBackward0"} == {s.name: s.grad_fn for s in d.forward}


def test_another_name_is_a_note_not_a_failure(renamed_torch):
    d = backstep.derive(MATVEC, shapes=SHAPES, verify=False)
    assert d.grad_fn_of(d.forward[0]) == "MvBackward0"  # before verification: the table's expectation
    d.verify()
    assert d.verification.ok and all(c.ok for c in d.verification.grad_fns)
    assert d.forward[0].grad_fn == "MvBackward0"  # the table's name stays in the model
    assert d.grad_fn_of(d.forward[0]) == "LinearBackward0"  # shown: torch's
    assert len(d.verification.notes) == 1 and NOTE in d.verification.notes[0]
    assert repr(d).endswith("verified ✓>")


def test_the_cli_shows_torch_name_and_the_note_and_exits_0(renamed_torch):
    runner = CliRunner()
    text = runner.invoke(app, ["derive", MATVEC, "--shape", "W=m,n", "--shape", "x=n"])
    assert text.exit_code == 0, text.output
    assert "LinearBackward0" in text.stdout and "MvBackward0" in text.stdout  # the note names both
    assert NOTE in " ".join(text.stdout.split())
    assert "bug in backstep" not in text.stderr
    doc = json.loads(
        runner.invoke(app, ["derive", MATVEC, "--shape", "W=m,n", "--shape", "x=n", "--format", "json"]).stdout
    )
    assert doc["verification"]["ok"] and doc["forward"][0]["grad_fn"] == "LinearBackward0"
    assert any(NOTE in note for note in doc["notes"])
    md = runner.invoke(app, ["derive", MATVEC, "--shape", "W=m,n", "--shape", "x=n", "--format", "md"])
    assert md.exit_code == 0 and "`LinearBackward0`" in md.stdout and NOTE.replace("_", r"\_") in md.stdout
