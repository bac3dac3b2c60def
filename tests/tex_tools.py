"""Helpers for the tests that compile real PDFs: skip without TeX, unless CI says it must be there."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from backstep.render.pdf import missing_engine

# .ci/run installs TeX Live and sets this: there a missing engine fails the tests instead of skipping them.
REQUIRED = os.environ.get("BACKSTEP_REQUIRE_TEX") == "1"


def need_tex(lang: str = "en") -> None:
    """Skip the calling test (fail it under BACKSTEP_REQUIRE_TEX=1) when PDFs cannot be made and read."""
    problem = missing_engine(lang)
    for tool in ("pdftotext", "pdftoppm"):
        if problem is None and shutil.which(tool) is None:
            problem = f"{tool} not found: apt-get install poppler-utils"
    if problem is None:
        return
    if REQUIRED:
        pytest.fail(f"BACKSTEP_REQUIRE_TEX=1 but {problem}")
    pytest.skip(problem)


def pdf_text(pdf: Path) -> str:
    """The text of a PDF, as pdftotext reads it (layout kept, so lines stay lines)."""
    out = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True)
    return out.stdout


def pdf_pages(pdf: Path) -> int:
    return pdf_text(pdf).count("\f") or 1


def compile_tex(folder: Path, name: str, document: str) -> tuple[int, str]:
    """`document` compiled with latexmk -xelatex in `folder` as `name`.tex: (the return code, the log)."""
    (folder / f"{name}.tex").write_text(document, encoding="utf-8")
    run = subprocess.run(
        ["latexmk", "-xelatex", "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    log = folder / f"{name}.log"
    return run.returncode, log.read_text(errors="replace") if log.exists() else run.stdout + run.stderr


def overfull_lines(log: str) -> list[str]:
    """The lines of a TeX log that report a line too wide for the page."""
    return [line for line in log.splitlines() if line.startswith("Overfull \\hbox")]
