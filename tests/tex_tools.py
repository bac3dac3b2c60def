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
