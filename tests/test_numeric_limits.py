"""Verification and --at never hang, never crash, and lose nothing silently.

What verification allocates is bounded (per array and per point, from the concrete shapes, before
anything is allocated); any number of symbolic dimensions gets distinct sizes; every kind of bad
.npy file is a clear error naming the file; a function that overflows at every point drawn is the
input's range (exit 2), while a real mismatch stays a failed verification (exit 1).
"""

from __future__ import annotations

import importlib
import os
import resource

import numpy as np
import pytest
import sympy
import torch
from helpers import time_limit
from typer.testing import CliRunner

from backstep import BackstepError, derive
from backstep.cli import app
from backstep.numeric import MAX_ELEMENTS, parse_at_value, total_limit
from backstep.shapes import SAMPLE_SIZES, sample_sizes
from backstep.verify import verify

derive_module = importlib.import_module("backstep.derive")  # (backstep.derive is also the function)

runner = CliRunner()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def run(*args: str):
    with time_limit(120):
        return runner.invoke(app, ["derive", *args])


def refused(result, *needles: str) -> str:
    """The CLI refused cleanly: exit 2, no traceback, the message has every needle."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)
    return result.output


# --- 2. sizes are capped -------------------------------------------------------------------------


def test_the_limits_are_documented_constants():
    assert MAX_ELEMENTS == 10**7
    assert total_limit() == 125_000_000  # 1 GB of float64


def test_a_huge_matrix_is_refused_before_anything_is_allocated():
    before = peak_rss_bytes()
    result = run("sum(X @ W)", "--shape", "X=12000x12000", "--shape", "W=12000x3")
    out = refused(result, "144,000,000 numbers", "X", "--no-verify", "--max-elements")
    assert "10,000,000" in out
    assert peak_rss_bytes() - before < 2**30  # (verification used to reach 7 GB here)


def test_a_huge_broadcast_is_refused_not_hung():
    result = run("sum(broadcast_to(x, (1000000000, 1000000000)))")
    refused(result, "1,000,000,000,000,000,000 numbers", "--no-verify")
    refused(run("sum(broadcast_to(x, (10**9, 10**9)))"))  # (the parser wants literal sizes)


def test_many_arrays_under_the_per_array_limit_are_refused_in_total():
    # 3000×3000 is 9×10⁶ numbers per array, under 10⁷; X, 8 steps, the seed and 8 adjoints are over 1.25×10⁸.
    body = "X"
    for _ in range(8):
        body = f"sin({body})"
    result = run(f"sum({body})", "--shape", "X=3000x3000")
    refused(result, "at one point", "125,000,000", "--no-verify")


def test_without_verification_a_large_shape_still_derives():
    result = run("sum(X @ W)", "--shape", "X=12000x12000", "--shape", "W=12000x3", "--no-verify")
    assert result.exit_code == 0, result.output


def test_max_elements_is_a_parameter_of_verify():
    d = derive("sum(sin(sin(sin(sin(sin(sin(sin(sin(X)))))))))", shapes={"X": (5, 7)})
    with pytest.raises(BackstepError, match="over the limit of 20 numbers per array"):
        verify(d, max_elements=20)
    with pytest.raises(BackstepError, match="at one point"):
        verify(d, max_elements=40)  # each array of 35 numbers fits in 40, but 18 of them not in 12.5 × 40
    assert verify(d, max_elements=100).ok
    assert verify(d).ok


def test_sizes_that_at_values_fix_are_capped_too():
    program = "u: (n, 1)\nv: (1, m)\nsum(u * v)"
    at = {"u": np.zeros((4000, 1)), "v": np.zeros((1, 4000))}  # each small; u * v is 1.6×10⁷ numbers
    with pytest.raises(BackstepError, match=r"the --at point would hold step \w+ of shape \(4000, 4000\)"):
        derive(program, at=at)
    with pytest.raises(BackstepError, match="over the limit of 100 numbers per array"):
        parse_at_value("x", "[" + ",".join(["1"] * 101) + "]", max_elements=100)


def test_at_npy_values_that_fix_sizes_are_capped_through_the_cli(tmp_path):
    np.save(tmp_path / "u.npy", np.ones((4000, 1)))
    np.save(tmp_path / "v.npy", np.ones((1, 4000)))
    at = ["--at", f"u={tmp_path / 'u.npy'}", "--at", f"v={tmp_path / 'v.npy'}"]
    result = run("u: (n, 1)\nv: (1, m)\nsum(u * v)", *at)
    refused(result, "(4000, 4000)", "16,000,000 numbers")


# --- 8. any number of symbolic dimensions ---------------------------------------------------------


def test_sample_sizes_are_distinct_for_any_number_of_dimensions():
    dims = [f"h{i}" for i in range(300)]
    sizes = sample_sizes(dims)
    assert list(sizes.values())[: len(SAMPLE_SIZES)] == SAMPLE_SIZES  # the first ones are as before
    assert len(set(sizes.values())) == 300
    assert max(sizes.values()) == 300 + 1  # as small as distinct sizes >= 2 can be
    assert sample_sizes(dims) == sizes  # deterministic
    fixed = sample_sizes(dims, {"h0": 20})
    assert fixed["h0"] == 20 and len(set(fixed.values())) == 300


def mlp(layers: int) -> str:
    lines = [f"W{i}: (h{i}, h{i + 1})" for i in range(layers)] + ["x: (h0,)", "a0 = x"]
    lines += [f"a{i + 1} = tanh(a{i} @ W{i})" for i in range(layers)]
    return "\n".join([*lines, f"sum(a{layers})"])


def test_a_150_layer_mlp_with_150_dimensions_verifies():
    result = run(mlp(150), "--format", "json")
    assert result.exit_code == 0, (result.output[-2000:], result.exception)
    assert '"ok": true' in result.output


def test_a_chain_of_150_matmuls_with_inferred_dimensions_verifies():
    d = derive("sum(" + " @ ".join(f"A{i}" for i in range(150)) + ")", verify=True, points=1)
    assert len(d.dims) == 151 and len(set(d.verification.sizes.values())) == 151
    assert d.verification.ok, d.verification.first_failure


# --- 9. .npy files and JSON lists for --at --------------------------------------------------------


VECTOR = "x: (n,)\nsum(x)"


def at_npy(path, formula: str = VECTOR):
    return run(formula, "--at", f"x={path}")


def test_a_big_endian_float_array_is_converted(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.array([1.5, -2.0, 3.25], dtype=">f8"))
    result = run(VECTOR, "--at", f"x={path}", "--format", "json")
    assert result.exit_code == 0, result.output
    assert "2.75" in result.output  # 1.5 - 2 + 3.25, read in the right byte order
    assert parse_at_value("x", str(path)).tolist() == [1.5, -2.0, 3.25]


def test_a_version_2_file_is_read(tmp_path):
    path = tmp_path / "v2.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.arange(4.0), version=(2, 0))
    assert parse_at_value("x", str(path)).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_integer_and_boolean_arrays_are_converted(tmp_path):
    np.save(tmp_path / "i.npy", np.array([1, 2, 3], dtype=">i4"))
    np.save(tmp_path / "b.npy", np.array([True, False]))
    assert parse_at_value("x", str(tmp_path / "i.npy")).tolist() == [1.0, 2.0, 3.0]
    assert parse_at_value("x", str(tmp_path / "b.npy")).dtype == torch.float64


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        pytest.param(np.array(["a", "b"]), "strings", id="string"),
        pytest.param(np.array([b"a", b"b"]), "bytes", id="bytes"),
        pytest.param(np.array(["2024-01-01"], dtype="datetime64[D]"), "dates and times", id="datetime"),
        pytest.param(np.array([1], dtype="timedelta64[s]"), "time spans", id="timedelta"),
        pytest.param(np.zeros(2, dtype=[("a", "f8"), ("b", "i4")]), "structured", id="structured"),
        pytest.param(np.array([1 + 2j, 3]), "imaginary part would be lost", id="complex"),
    ],
)
def test_a_non_numeric_array_is_refused(tmp_path, array, needle):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    refused(at_npy(path), str(path), needle)


def test_an_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([1, {"a": 1}], dtype=object), allow_pickle=True)
    refused(at_npy(path), str(path), "Python objects", "never unpickles")


def test_an_npz_renamed_to_npy_is_refused(tmp_path):
    path = tmp_path / "archive.npy"
    with open(path, "wb") as f:
        np.savez(f, x=np.ones(3))
    refused(at_npy(path), str(path), ".npz archive")


def test_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.npy"
    path.write_bytes(b"")
    refused(at_npy(path), str(path), "empty")  # (was "Aborted.", exit 1)


def test_a_file_that_is_not_npy_is_refused(tmp_path):
    path = tmp_path / "text.npy"
    path.write_text("1, 2, 3\n")
    refused(at_npy(path), str(path), "not a .npy file")


def test_a_truncated_file_is_refused(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, np.arange(100.0))
    path.write_bytes(path.read_bytes()[:-8])
    refused(at_npy(path), str(path), "truncated", "800 bytes")


def test_a_damaged_header_is_refused(tmp_path):
    path = tmp_path / "header.npy"
    np.save(path, np.arange(3.0))
    data = path.read_bytes()
    path.write_bytes(data[:10] + b"{'descr': 'nonsense'" + data[30:])
    refused(at_npy(path), str(path), "header")


def test_trailing_bytes_are_refused(tmp_path):
    path = tmp_path / "extra.npy"
    np.save(path, np.arange(3.0))
    with open(path, "ab") as f:
        f.write(b"\0" * 16)
    refused(at_npy(path), str(path), "16 bytes after")


def test_a_sparse_huge_file_is_refused_from_its_header(tmp_path):
    path = tmp_path / "sparse.npy"
    shape = (20000, 20000)  # 3.2 GB of float64, of which nothing is written: the file is sparse
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
        f.truncate(f.tell() + 20000 * 20000 * 8)
    before = peak_rss_bytes()
    refused(at_npy(path), str(path), "(20000, 20000)", "400,000,000 numbers", "--max-elements")
    assert peak_rss_bytes() - before < 2**30


def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe.npy"
    os.mkfifo(path)
    with time_limit(20):
        result = runner.invoke(app, ["derive", VECTOR, "--at", f"x={path}"])
    refused(result, str(path), "FIFO")


def test_a_folder_and_a_device_are_refused(tmp_path):
    folder = tmp_path / "folder.npy"
    folder.mkdir()
    refused(at_npy(folder), "a folder")
    if os.path.exists("/dev/zero"):
        with time_limit(20):
            refused(run(VECTOR, "--at", "x=/dev/zero.npy"), "cannot read the array")
        with pytest.raises(BackstepError, match="a device"):
            from backstep.numeric import read_npy

            read_npy("--at x=/dev/zero", "/dev/zero")


def test_an_empty_array_is_refused(tmp_path):
    path = tmp_path / "none.npy"
    np.save(path, np.zeros((0,)))
    refused(at_npy(path), "no numbers")
    refused(run(VECTOR, "--at", "x=[]"), "no numbers")


def test_a_deeply_nested_json_list_is_refused():
    refused(run("x", "--at", "x=" + "[" * 100_000 + "]" * 100_000), "nested 100000 deep", "at most 32 axes")


def test_a_huge_json_list_is_refused_before_it_is_parsed():
    with pytest.raises(BackstepError, match="over the limit of 10,000,000 numbers per array"):
        parse_at_value("x", "[" + "0," * MAX_ELEMENTS + "0]")


def test_a_long_value_is_cut_short_in_the_message():
    out = refused(run("x", "--at", "x=[" + "1," * 5000 + "nope]"))
    assert len(out) < 1000


def test_complex_and_object_values_through_the_api_are_refused():
    with pytest.raises(BackstepError, match="imaginary part"):
        derive(VECTOR, at={"x": np.array([1 + 1j, 2])})
    with pytest.raises(BackstepError, match="imaginary part"):
        derive(VECTOR, at={"x": torch.tensor([1 + 1j, 2])})
    with pytest.raises(BackstepError, match="Python objects"):
        derive(VECTOR, at={"x": np.array([1, None], dtype=object)})


# --- 10. overflow is the input's range, not a bug --------------------------------------------------


@pytest.mark.parametrize(
    ("formula", "step"),
    [
        pytest.param("clamp(x, min=1e15) * 1e300", "1e+300", id="clamp-huge"),
        pytest.param("x * 1e308 * 1e308", "1e+308", id="product"),
    ],
)
def test_a_function_that_overflows_everywhere_is_refused(formula, step):
    out = refused(run(formula), "overflows at every point drawn", "value inf at step", step, "--no-verify")
    assert "bug in backstep" not in out


def test_an_infinite_clamp_bound_is_refused():
    out = refused(run("clamp(x, min=1e309)"))  # by the parser, or (before it did) by verification
    assert "bug in backstep" not in out


def test_a_function_that_overflows_at_some_points_is_verified_nearer_zero():
    result = run("exp(1000*x)")
    assert result.exit_code == 0, result.output
    assert "verified" in result.output


def test_without_verification_an_overflowing_function_derives():
    assert run("x * 1e308 * 1e308", "--no-verify").exit_code == 0


def test_an_overflow_at_the_at_point_is_a_domain_error():
    refused(run("exp(1000*x)", "--at", "x=2"), "not finite")


def _corrupt(monkeypatch, factor):
    """Make the derivation wrong: its last backward step times `factor` (a wrong rule)."""
    build = derive_module.build_derivation

    def wrong(*args, **kwargs):
        d = build(*args, **kwargs)
        step = d.backward[-1]
        step.result = step.result * factor
        for g in d.gradients.values():
            g.expr = g.expr * factor
        return d

    monkeypatch.setattr(derive_module, "build_derivation", wrong)


@pytest.mark.parametrize("factor", [2, sympy.oo], ids=["twice", "infinite"])
def test_a_real_mismatch_is_still_a_failed_verification(monkeypatch, factor):
    _corrupt(monkeypatch, factor)
    result = run("sin(x) * y")
    assert result.exit_code == 1, result.output
    assert "verification failed" in result.output
