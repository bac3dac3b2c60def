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
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
python -m ruff check backstep tests benchmarks examples
python -m ruff format --check backstep tests benchmarks examples
python -m pytest "$@"
