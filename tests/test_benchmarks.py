"""The benchmark script keeps working: each section runs at toy sizes and its own checks hold.

No times are asserted (the machines are shared and noisy); what is checked is that the tables
are produced, that backstep and SymPy agree on the gradient they both computed, and that the
verification at the seed's real sizes passes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("backstep_benchmarks", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaling_covers_chains_and_mlps(bench):
    text, data = bench.scaling([10, 40], repeats=1)
    assert {row["family"] for row in data} == {"chain", "mlp"}
    assert all(row["nodes"] > 0 and row["size_per_node"] > 0 for row in data)
    assert text.count("\n| chain |") == 2 and text.count("\n| mlp |") == 2


def test_the_mlp_program_has_the_layers_it_says(bench):
    import backstep

    d = backstep.derive(bench.mlp_program(4), verify=True, points=1)
    assert d.verification.ok
    assert set(d.gradients) == {"X", "V", "Y"} | {f"{p}{i}" for p in "Wb" for i in range(1, 5)}


def test_against_sympy_agrees_on_the_gradient(bench):
    text, data = bench.against_sympy([3, 4], repeats=1)
    assert [row["depth"] for row in data] == [3, 4]
    assert all(row["agree"] for row in data), text
    assert all(row["size_cse"] > 0 and row["size_bs"] > 0 for row in data)


def test_verification_at_the_seed_sizes_passes(bench):
    text, data = bench.verification(repeats=1)
    assert data["ok"], text


def test_check_scale_reports_memory_and_a_linear_derivation_file():
    spec = importlib.util.spec_from_file_location("backstep_check_scale", RUN.parent / "check_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text, rows = module.derivation_time([20, 80])
    assert [r["lines"] for r in rows] == [21, 81] and all(r["ok"] for r in rows), text
    assert all(r["parses"] <= 3 * r["lines"] for r in rows), text  # linear: a bounded number per line
    text, rows = module.batch_memory([5])
    assert rows[0]["claims"] == 5 and rows[0]["peak_kib"] >= rows[0]["base_kib"] > 0, text
    assert "| 5 |" in text


def test_compact_layers_finds_each_hand_written_affine_map(bench):
    text, data = bench.compact_layers([10, 40], repeats=1)
    assert [row["layers"] for row in data] == [2, 12]  # one relu(h @ W + b) per layer
    assert all(row["compact"] > 0 and row["plain"] > 0 for row in data)
    assert text.count("×") == 2
