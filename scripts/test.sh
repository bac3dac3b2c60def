#!/usr/bin/env bash
# The whole test suite, from nothing: installs what it needs, lints, runs every test.
# README.md's second set-up command, and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
# The documents' tests compile real PDFs (English and Chinese) and read them back: TeX Live's
# xelatex with latexmk, xeCJK (with ctex's hooks), a CJK font, and poppler's pdftotext/pdftoppm.
# About 190 MB from Debian's packages, two minutes to install; skipped when already installed.
TEX_PACKAGES="latexmk texlive-xetex texlive-lang-chinese fonts-noto-cjk poppler-utils"
if ! { command -v latexmk && command -v xelatex && command -v pdftotext && command -v pdftoppm \
       && kpsewhich xeCJK.sty && kpsewhich ctexhook.sty && fc-list | grep -q "Noto Serif CJK"; } >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $TEX_PACKAGES
fi

python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"   # the CPU wheel; first, always
# The distribution is backstep-autograd (`backstep` on PyPI is another project): an install under the old
# name would shadow the package and the command.
if python -m pip show --quiet backstep >/dev/null 2>&1; then
    echo "uninstalling the distribution named backstep (this project is backstep-autograd)"
    python -m pip uninstall --quiet --yes backstep
fi
# setuptools >= 77 reads the SPDX license; tests/test_packaging.py and scripts/compat.sh build the wheel
# with the installed one (--no-build-isolation)
python -m pip install --quiet --disable-pip-version-check "setuptools>=77"
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
# tests/test_pages.py checks the Markdown with KaTeX's strict parser and Mermaid's own, run by node on
# the packages pinned in tests/js (about 170 MB from the npm registry); without npm those tests skip.
if command -v npm >/dev/null 2>&1 && [ ! -d tests/js/node_modules/mermaid ]; then
    npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
fi
python -m ruff check backstep tests benchmarks examples
python -m ruff format --check backstep tests benchmarks examples
python -m pytest "$@"
# The lowest dependency versions pyproject.toml allows, and Python 3.10 / 3.12 / 3.13 without torch (1-2
# minutes; needs PyPI): after a full run only, not after a selection (`bash scripts/test.sh -k …`).
if [ $# = 0 ]; then
    bash scripts/compat.sh
fi
