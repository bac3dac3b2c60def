#!/usr/bin/env bash
# The whole test suite, from nothing: installs what it needs, lints, runs every test.
# README.md's second set-up command, and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"   # the CPU wheel; first, always
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
python -m ruff check backstep tests benchmarks examples
python -m ruff format --check backstep tests benchmarks examples
python -m pytest "$@"
