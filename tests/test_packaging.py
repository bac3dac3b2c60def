"""The package as a user gets it: a wheel installed with `pip install --target`, run from another folder;
and the sdist, whose own tests collect.

The wheel and the sdist are built from a copy of the source tree (so that no build/ or egg-info lands in
the checkout) with the installed setuptools: `pip wheel --no-build-isolation` and setuptools' PEP 517
backend for the sdist, so nothing is downloaded. Slow-ish (a build, an install, a dozen commands: about
half a minute); part of every run.
"""

from __future__ import annotations

import email
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from backstep.render.pdf import missing_engine

ROOT = Path(__file__).resolve().parent.parent
DIST = "backstep-autograd"
REQUIRED_TEX = os.environ.get("BACKSTEP_REQUIRE_TEX") == "1"
IGNORE = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.pdf",
)
FORMULA = "relu(x@W1)@W2"
SHEET = """title = "Backpropagation by hand"
course = "Deep Learning, week 3"

[[problem]]
function = "sum((relu(X@W1)@W2 - Y)**2)"
wrt = ["W1", "W2"]
title = "A two-layer network"
text = "Let $\\\\sigma$ be the ReLU."
"""


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(args)} (in {cwd}) exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    setuptools_version = importlib.metadata.version("setuptools")
    if int(setuptools_version.split(".")[0]) < 77:
        pytest.fail(
            f"setuptools {setuptools_version} is installed; the build needs >= 77 (the SPDX license): "
            "pip install 'setuptools>=77' (scripts/test.sh does)"
        )
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=IGNORE, symlinks=True)
    dist = base / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "-w",
            str(dist),
            ".",
        ],
        cwd=source,
    )
    _run(
        [sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"],
        cwd=source,
    )
    (wheel,) = dist.glob("backstep_autograd-*.whl")
    (sdist,) = dist.glob("backstep_autograd-*.tar.gz")
    target = base / "target"
    _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)], base
    )
    elsewhere = base / "elsewhere"  # not the checkout, not the target: only PYTHONPATH finds the package
    elsewhere.mkdir()
    return {"wheel": wheel, "sdist": sdist, "target": target, "cwd": elsewhere, "base": base}


def _env(target: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(target), NO_COLOR="1", COLUMNS="120")


def _backstep(built, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "backstep", *args], cwd=built["cwd"], env=_env(built["target"]), check=check)


def test_the_wheel_holds_the_package_its_data_and_honest_metadata(built):
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = set(wheel.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_string(wheel.read(info).decode())
        entry_points = wheel.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert metadata["Name"] == DIST
    assert metadata["Version"] == importlib.metadata.version(DIST)
    assert metadata["License-Expression"] == "MIT"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    requires = metadata.get_all("Requires-Dist")
    for dependency in ("sympy", "torch", "typer", "rich", "jinja2", "numpy", "matplotlib"):
        assert any(r.split(">")[0].split("<")[0].strip() == dependency for r in requires), dependency
    assert any(r.startswith("tomli") and 'python_version < "3.11"' in r for r in requires), requires
    assert "backstep = backstep.cli:main" in entry_points
    assert "backstep/py.typed" in names
    assert "backstep/__main__.py" in names
    templates = {n for n in names if n.startswith("backstep/templates/")}
    assert "backstep/templates/document.tex.j2" in templates
    assert any(n.startswith("backstep/templates/codegen/") for n in templates)
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "backstep").rglob("*") if p.is_file()}
    data = {n for n in on_disk if n.endswith((".j2", ".json", "py.typed"))}
    assert data <= names, f"package data missing from the wheel: {sorted(data - names)}"
    modules = {n for n in on_disk if n.endswith(".py")}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]


def test_the_installed_wheel_is_the_one_that_runs(built):
    done = _run(
        [sys.executable, "-c", "import backstep, sys; print(backstep.__file__); print(backstep.__version__)"],
        cwd=built["cwd"],
        env=_env(built["target"]),
    )
    path, version = done.stdout.split()
    assert Path(path).resolve().is_relative_to(built["target"].resolve())
    assert version == importlib.metadata.version(DIST)


def test_derive_in_every_text_format(built):
    text = _backstep(built, "derive", FORMULA, "--no-verify").stdout
    assert "Gradients" in text and "W2" in text
    md = _backstep(built, "derive", FORMULA, "--no-verify", "--format", "md").stdout
    assert md.lstrip().startswith("#") and "W_{1}" in md
    latex = _backstep(built, "derive", FORMULA, "--no-verify", "--format", "latex", "--standalone").stdout
    assert "\\documentclass" in latex and latex.rstrip().endswith("\\end{document}")
    data = json.loads(_backstep(built, "derive", FORMULA, "--no-verify", "--format", "json").stdout)
    assert data["input"] == FORMULA and data["gradients"]


def test_derive_verified_and_ops(built):
    verified = _backstep(built, "derive", FORMULA).stdout
    assert "verified with PyTorch" in verified
    assert "relu" in _backstep(built, "ops").stdout


def test_sheet_from_a_problem_file(built):
    folder = built["base"] / "sheet"
    folder.mkdir()
    problems = folder / "hw.toml"
    problems.write_text(SHEET, encoding="utf-8")
    _backstep(built, "sheet", str(problems), "--format", "latex")
    for kind in ("exercises", "solutions"):
        tex = (folder / f"hw-{kind}.tex").read_text(encoding="utf-8")
        assert "\\documentclass" in tex and "Backpropagation by hand" in tex


def test_codegen_writes_a_module_that_compiles(built):
    code = _backstep(built, "codegen", FORMULA).stdout
    assert "torch.autograd.Function" in code or "autograd.Function" in code
    compile(code, "generated.py", "exec")


def test_the_console_script_of_the_target(built):
    script = built["target"] / "bin" / "backstep"
    assert script.is_file()
    done = _run([str(script), "ops"], cwd=built["cwd"], env=_env(built["target"]))
    assert "relu" in done.stdout


def test_pdf_from_the_wheel(built):
    problem = missing_engine("en")
    if problem:
        if REQUIRED_TEX:
            pytest.fail(f"BACKSTEP_REQUIRE_TEX=1 but {problem}")
        pytest.skip(problem)
    out = built["cwd"] / "x.pdf"
    _backstep(built, "derive", FORMULA, "--no-verify", "--format", "pdf", "-o", str(out))
    assert out.read_bytes().startswith(b"%PDF")


def test_the_sdist_carries_its_tests_and_they_collect(built):
    unpacked = built["base"] / "sdist"
    with tarfile.open(built["sdist"]) as sdist:
        names = sdist.getnames()
        sdist.extractall(unpacked, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (top,) = unpacked.iterdir()
    relative = {Path(n).relative_to(top.name).as_posix() for n in names if "/" in n}
    for needed in ("pyproject.toml", "README.md", "LICENSE", "backstep/py.typed", "tests/tex_tools.py"):
        assert needed in relative, needed
    tracked = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("test_*.py")}
    assert tracked <= relative, f"tests missing from the sdist: {sorted(tracked - relative)}"
    assert any(n.startswith("examples/") for n in relative)
    # `python -m pytest` in the unpacked sdist: its own backstep (the current folder), its own tests
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = _run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=top,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "error" not in done.stdout.lower().splitlines()[-1], done.stdout[-2000:]
    collected = sum(int(line.rsplit(":", 1)[1]) for line in done.stdout.splitlines() if line.startswith("tests/"))
    assert collected > 100
