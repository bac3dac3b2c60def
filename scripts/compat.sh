#!/usr/bin/env bash
# The versions pyproject.toml promises, tested (scripts/test.sh runs this; 1-2 minutes with pip's cache warm):
#   1. the LOWEST version of every direct dependency (its `>=` floor; torch stays 2.13.0, the local CPU
#      wheel) in a fresh venv under this Python, with the fast tests;
#   2. meanwhile, Python 3.10 (the floors again, with tomli), 3.12 and 3.13 (the newest allowed versions),
#      without torch: the paths that need none — derive --no-verify in every text format, ops, a problem file.
# The package is installed from its wheel, built once. Python 3.10/3.12/3.13 are pyenv's; where one is
# absent its step says so and is skipped. BACKSTEP_SKIP_COMPAT=1 skips everything (needs PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python}
if [ "${BACKSTEP_SKIP_COMPAT:-}" = 1 ]; then
    echo "compat: skipped (BACKSTEP_SKIP_COMPAT=1)"
    exit 0
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/backstep-compat.XXXXXX")
SMOKES=""
trap '[ -z "$SMOKES" ] || kill "$SMOKES" 2>/dev/null || true; wait; rm -rf "$WORK"' EXIT
# pip's output only when it fails (it warns about every index it cannot read)
quiet() {
    local log
    log=$(mktemp "$WORK/log.XXXXXX")
    if ! "$@" >"$log" 2>&1; then cat "$log" >&2; return 1; fi
}
# --no-compile: Python compiles what it imports; compiling all of sympy up front costs more than the tests
pip_in() { local venv=$1; shift; quiet "$venv/bin/python" -m pip install --disable-pip-version-check --no-compile "$@"; }

# built from a copy: an in-tree build leaves build/ behind, whose stale files would go into the next wheel
mkdir "$WORK/src"
cp -r pyproject.toml README.md LICENSE MANIFEST.in backstep "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
quiet "$PY" -m pip wheel --disable-pip-version-check --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/backstep_autograd-*.whl)

# floors.txt: `name==floor` for every direct dependency (each must have a `>=` floor); newest.txt: the
# requirements as they are. torch is left out of both (see above).
"$PY" - "$WORK" <<'EOF'
import re, sys
from pathlib import Path
try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib
work = Path(sys.argv[1])
deps = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
floors, newest = [], []
for dep in deps:
    spec, _, marker = dep.partition(";")
    name = re.match(r"\s*([A-Za-z0-9_.-]+)", spec).group(1)
    low = re.search(r">=\s*([^,\s]+)", spec)
    if low is None:
        sys.exit(f"compat: {dep!r} in pyproject.toml has no >= floor to test")
    if name.lower() == "torch":
        continue
    floors.append(f"{name}=={low.group(1)}" + (f"; {marker.strip()}" if marker else ""))
    newest.append(dep)
(work / "floors.txt").write_text("\n".join(floors) + "\n")
(work / "newest.txt").write_text("\n".join(newest) + "\n")
EOF

smoke() {  # $1: a Python; $2: the requirements file
    local python=$1 label venv
    label=$("$python" -c 'import sys; print("Python %d.%d" % sys.version_info[:2])')
    venv="$WORK/smoke-${label#Python }"
    "$python" -m venv "$venv"
    grep -v '^matplotlib' "$2" >"$venv.txt"  # only `train --plot` imports it
    pip_in "$venv" -r "$venv.txt"
    pip_in "$venv" --no-deps "$WHEEL"
    if "$venv/bin/python" -c "import torch" 2>/dev/null; then echo "compat: $label: torch is installed" >&2; return 1; fi
    local f="relu(x@W1)@W2" out="$venv.out"
    expect() {  # $1: what the output must contain; the rest: backstep's arguments (run outside the repository)
        local want=$1
        shift
        if ! (cd "$WORK" && "$venv/bin/backstep" "$@") >"$out" 2>&1 || ! grep -F -e "$want" "$out" >/dev/null; then
            echo "compat: $label: \`backstep $*\` failed or printed no '$want':" >&2
            tail -20 "$out" >&2
            return 1
        fi
    }
    expect "derive" --help
    expect "Gradients" derive "$f" --no-verify
    expect "W_{1}" derive "$f" --no-verify --format md
    expect '"gradients"' derive "$f" --no-verify --format json
    "$venv/bin/python" -c "import json, sys; json.load(open(sys.argv[1]))" "$out"
    expect '\documentclass' derive "$f" --no-verify --format latex --standalone
    expect "relu" ops
    # sheet and check derive and verify with torch; reading a problem file (tomllib, or tomli on 3.10) does not
    printf 'title = "T"\n[[problem]]\nfunction = "x**2"\n' >"$venv.toml"
    "$venv/bin/python" -c "import sys; from backstep.sheet import load_sheet; assert load_sheet(sys.argv[1]).problems" \
        "$venv.toml"
    echo "compat: $label ok, ${SECONDS}s"
}
smokes() {
    local want python reqs
    for want in 3.10 3.12 3.13; do
        python=$(ls -d "$PYENV_ROOT"/versions/"$want".*/bin/python 2>/dev/null | sort -V | tail -1 || true)
        if [ -z "$python" ]; then
            echo "compat: no Python $want under $PYENV_ROOT/versions: its smoke test is skipped"
            continue
        fi
        if [ "$want" = 3.10 ]; then reqs="$WORK/floors.txt"; else reqs="$WORK/newest.txt"; fi
        echo "compat: $("$python" --version) without torch, $(basename "$reqs" .txt) versions"
        smoke "$python" "$reqs"
    done
}
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
smokes >"$WORK/smokes.log" 2>&1 &
SMOKES=$!
# torch: exactly the one installed here (2.13.0+cpu, the local CPU wheel: never a download of the CUDA build)
TORCH=$("$PY" -c "import importlib.metadata as m; print(m.version('torch'))")
echo "compat: lowest versions, $("$PY" --version): $(tr '\n' ' ' <"$WORK/floors.txt")torch==$TORCH"
"$PY" -m venv "$WORK/low"
# this Python's torch is linked in, not installed again (a gigabyte to unpack); pip then adds what it needs
HOST_SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
LOW_SITE=$("$WORK/low/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ -f "$HOST_SITE/torch-$TORCH.dist-info/top_level.txt" ]; then
    for top in $(cat "$HOST_SITE/torch-$TORCH.dist-info/top_level.txt"); do ln -s "$HOST_SITE/$top" "$LOW_SITE/$top"; done
    cp -r "$HOST_SITE/torch-$TORCH.dist-info" "$LOW_SITE/"
fi
pip_in "$WORK/low" -r "$WORK/floors.txt" "torch==$TORCH" pytest hypothesis jsonschema
pip_in "$WORK/low" --no-deps "$WHEEL"
quiet "$WORK/low/bin/python" -m pip check
echo "compat: installed in ${SECONDS}s"
# the installed wheel, not the source tree: pytest (not python -m pytest) keeps the repository off sys.path
# shellcheck disable=SC2086  # a list of test files and options
(cd "$ROOT" && "$WORK/low/bin/pytest" -p no:cacheprovider -p no:warnings -q -x ${BACKSTEP_COMPAT_TESTS:-tests/test_parser.py tests/test_cli.py tests/test_json.py})
# numpy's floor writes the .npy that --at reads; matplotlib's floor draws `train --plot`
(cd "$ROOT" && "$WORK/low/bin/pytest" -p no:cacheprovider -p no:warnings -q -x tests/test_train.py -k png_plot)
"$WORK/low/bin/python" -c "import numpy; numpy.save('$WORK/X.npy', numpy.arange(6.0).reshape(2, 3))"
(cd "$WORK" && "$WORK/low/bin/backstep" derive "sum(X*X)" -s X=2,3 --at X=X.npy) >"$WORK/npy.out" 2>&1 || true
if ! grep -F "[[0, 2, 4], [6, 8, 10]]" "$WORK/npy.out" >/dev/null; then
    echo "compat: --at X=X.npy (numpy $(cd "$WORK" && low/bin/python -c 'import numpy; print(numpy.__version__)')):" >&2
    tail -20 "$WORK/npy.out" >&2
    exit 1
fi
echo "compat: lowest versions tested, ${SECONDS}s"
if ! wait "$SMOKES"; then
    SMOKES=""
    cat "$WORK/smokes.log"
    echo "compat: the Python 3.10/3.12/3.13 smoke test failed" >&2
    exit 1
fi
SMOKES=""
cat "$WORK/smokes.log"
echo "compat: ok, ${SECONDS}s"

