#!/usr/bin/env bash
# Installs what deeprnn needs and builds it; idempotent, and fast when
# everything is already there.
#
#   Debian packages  cmake ninja-build ccache libgtest-dev libgmock-dev
#   .venv/           torch (DEEPRNN_TORCH_SPEC, default torch==2.13.0) and the
#                    test and demo dependencies
#   build/           the CMake build (Ninja, Release, tests on); one build,
#                    shared with setup.py (DEEPRNN_BUILD_DIR overrides it)
#   deeprnn          importable from .venv (editable install of ops/)
#
# Environment: DEEPRNN_TORCH_SPEC, DEEPRNN_BUILD_DIR, DEEPRNN_JOBS (default:
# nproc), PYTHON (the interpreter that creates .venv, default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_SPEC="${DEEPRNN_TORCH_SPEC:-torch==2.13.0}"
BUILD_DIR="${DEEPRNN_BUILD_DIR:-build}"
JOBS="${DEEPRNN_JOBS:-$(nproc)}"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
export DEEPRNN_BUILD_DIR="$BUILD_DIR" DEEPRNN_JOBS="$JOBS"
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "setup: $*"; }
START=$SECONDS

# 1. Debian packages ----------------------------------------------------------
apt_missing=()
for pkg in cmake ninja-build ccache libgtest-dev libgmock-dev; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null \
      | grep -q "install ok installed"; then
    apt_missing+=("$pkg")
  fi
done
if [[ ! -x "$PY" ]] && ! "$PYTHON" -c "import venv, ensurepip" 2>/dev/null; then
  apt_missing+=(python3-venv)
fi
if ((${#apt_missing[@]})); then
  SUDO=()
  if [[ "$(id -u)" -ne 0 ]]; then SUDO=(sudo); fi
  say "installing Debian packages: ${apt_missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    "${apt_missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

# 2. Virtual environment --------------------------------------------------------
if [[ ! -x "$PY" ]]; then
  say "creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi

# One interpreter start answers every question: is the torch spec satisfied,
# and which modules are missing.
mapfile -t pip_missing < <("$PY" - "$TORCH_SPEC" <<'PYEOF'
import importlib.metadata as md
import importlib.util
import sys

spec = sys.argv[1]
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

requirement = Requirement(spec)
try:
    version = md.version(requirement.name)
    ok = requirement.specifier.contains(version, prereleases=True)
except md.PackageNotFoundError:
    ok = False
if not ok:
    print(spec)
# Read setuptools' version from its metadata: importing it inside a fresh
# venv can trip its distutils hack before pip has configured anything.
try:
    if int(md.version("setuptools").split(".")[0]) < 64:
        print("setuptools>=64")
except (md.PackageNotFoundError, ValueError):
    print("setuptools>=64")
for module in ("numpy", "pytest", "expecttest", "hypothesis", "tqdm",
               "matplotlib"):
    if importlib.util.find_spec(module) is None:
        print(module)
PYEOF
)
if ((${#pip_missing[@]})); then
  say "installing into .venv: ${pip_missing[*]}"
  "$PY" -m pip install -q "${pip_missing[@]}"
else
  say ".venv has $TORCH_SPEC and the test dependencies"
fi

# 3. CMake build ----------------------------------------------------------------
cache="$BUILD_DIR/CMakeCache.txt"
if [[ ! -f "$cache" ]]; then
  say "configuring $BUILD_DIR/ (Ninja, Release, tests on)"
  torch_prefix="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$torch_prefix" -DPython3_EXECUTABLE="$PY" \
    -DDEEPRNN_BUILD_TESTS=ON >/dev/null
elif ! grep -q '^DEEPRNN_BUILD_TESTS:BOOL=ON$' "$cache"; then
  # An earlier configure (setup.py's, for a user install) left tests off;
  # keep everything else it chose.
  say "reconfiguring $BUILD_DIR/ with tests on"
  cmake -S . -B "$BUILD_DIR" -DDEEPRNN_BUILD_TESTS=ON >/dev/null
fi
say "building $BUILD_DIR/ (-j $JOBS)"
build_log="$(mktemp)"
trap 'rm -f "$build_log"' EXIT
if ! cmake --build "$BUILD_DIR" -j "$JOBS" >"$build_log" 2>&1; then
  cat "$build_log"
  say "build failed"
  exit 1
fi
if grep -q "no work to do" "$build_log"; then
  say "build up to date"
fi

# 4. The package ----------------------------------------------------------------
installed_at="$("$PY" -c '
import importlib.util
spec = importlib.util.find_spec("deeprnn")
print(spec.origin if spec and spec.origin else "")' 2>/dev/null || true)"
if [[ "$installed_at" != "$ROOT/ops/__init__.py" ]]; then
  say "installing deeprnn into .venv (editable, from ops/)"
  "$PY" -m pip install -q --no-build-isolation --no-deps -e . >/dev/null
elif ! cmp -s "$BUILD_DIR/libdeeprnn.so" ops/libdeeprnn.so \
    || [[ ! -f ops/_build_info.py ]]; then
  # Editable install present, but the library was rebuilt since: refresh the
  # copy in ops/ through setup.py (the same CMake build, nothing recompiles).
  say "refreshing ops/libdeeprnn.so"
  "$PY" setup.py -q build_ext --inplace >/dev/null
else
  say "deeprnn installed (editable) and up to date"
fi

say "done in $((SECONDS - START)) s"
