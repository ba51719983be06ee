#!/usr/bin/env bash
# Compile-only check of the CUDA build, for machines with nvcc but no GPU
# (CI). It keeps the CUDA code from rotting unseen: the CUDA kernels are
# compiled and linked against a CUDA build of torch, the library is loaded,
# and the CUDA kernels must be registered. Nothing runs on a GPU here; the
# tests that do run on one are in scripts/gpu_check.sh.
#
#   .venv-cuda/   torch (DEEPRNN_CUDA_TORCH_SPEC, default torch==2.14.1, a
#                 CUDA 13 build) and numpy, apart from .venv (created once)
#   build-cuda/   the CMake build with DEEPRNN_CUDA=ON (Ninja, Release)
#
# Then, in .venv-cuda's Python: the library loads, _rnn_forward and
# _rnn_backward have CUDA kernels, and the CPU operators still work (a small
# LSTM and GRU against torch.nn, forward and backward, float64).
#
# Environment: DEEPRNN_CUDA_VENV (default .venv-cuda), DEEPRNN_CUDA_BUILD_DIR
# (default build-cuda), DEEPRNN_CUDA_TORCH_SPEC, CUDACXX (the nvcc to use,
# default /usr/local/cuda/bin/nvcc, else nvcc on PATH), DEEPRNN_JOBS
# (default nproc), PYTHON (the interpreter that creates the venv, default
# python3), DEEPRNN_CUDA_CHECK_TESTS=1 to build the C++ tests too (GoogleTest
# needed; off by default: the same sources are compiled and run by the CPU
# build, and here they would double the check's time).
# Exit status: 0 when everything compiled, linked, loaded and was registered.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${DEEPRNN_CUDA_VENV:-.venv-cuda}"
BUILD_DIR="${DEEPRNN_CUDA_BUILD_DIR:-build-cuda}"
TORCH_SPEC="${DEEPRNN_CUDA_TORCH_SPEC:-torch==2.14.1}"
JOBS="${DEEPRNN_JOBS:-$(nproc)}"
PYTHON="${PYTHON:-python3}"
WITH_TESTS="${DEEPRNN_CUDA_CHECK_TESTS:-0}"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "cuda-check: $*"; }
fail() {
  echo "cuda-check: FAILED: $*" >&2
  echo "cuda-check: FAILED (CUDA compile-only check; nothing ran on a GPU)"
  exit 1
}
START=$SECONDS

# 1. nvcc ---------------------------------------------------------------------
NVCC="${CUDACXX:-}"
if [[ -z "$NVCC" ]]; then
  if [[ -x /usr/local/cuda/bin/nvcc ]]; then
    NVCC=/usr/local/cuda/bin/nvcc
  else
    NVCC="$(command -v nvcc || true)"
  fi
fi
if [[ -z "$NVCC" || ! -x "$NVCC" ]]; then
  fail "nvcc not found (CUDACXX='${CUDACXX:-}', /usr/local/cuda/bin/nvcc, PATH):" \
    "the CUDA compile check needs the CUDA toolkit's compiler"
fi
NVCC_VERSION="$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
say "nvcc $NVCC_VERSION at $NVCC"
# The toolkit around that nvcc. torch's CMake looks for the CUDA libraries
# with FindCUDA, which derives the toolkit from the first nvcc on PATH: a
# wrapper script there (/usr/local/bin/nvcc) points it at /usr/local, where
# the headers and libcudart are not. Name the toolkit instead.
CUDA_ROOT="$(cd "$(dirname "$(readlink -f "$NVCC")")/.." && pwd)"
CUDA_ROOT_ARGS=()
if [[ -f "$CUDA_ROOT/include/cuda_runtime.h" ]]; then
  CUDA_ROOT_ARGS=(-DCUDA_TOOLKIT_ROOT_DIR="$CUDA_ROOT" -DCUDAToolkit_ROOT="$CUDA_ROOT")
fi

# 2. Virtual environment with a CUDA torch ------------------------------------
if [[ ! -x "$PY" ]]; then
  say "creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV" || fail "could not create $VENV with $PYTHON"
fi
# One interpreter start: which requirements are missing.
mapfile -t missing < <("$PY" - "$TORCH_SPEC" <<'PYEOF'
import importlib.metadata as md
import sys

try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

for spec in (sys.argv[1], "numpy"):
    requirement = Requirement(spec)
    try:
        ok = requirement.specifier.contains(md.version(requirement.name),
                                            prereleases=True)
    except md.PackageNotFoundError:
        ok = False
    if not ok:
        print(spec)
PYEOF
)
if ((${#missing[@]})); then
  say "installing into $VENV: ${missing[*]}"
  "$PY" -m pip install -q "${missing[@]}" || fail "pip install ${missing[*]} failed"
else
  say "$VENV has $TORCH_SPEC and numpy"
fi
read -r TORCH_VERSION TORCH_CUDA TORCH_PREFIX < <("$PY" -c '
import torch
print(torch.__version__, torch.version.cuda, torch.utils.cmake_prefix_path)') \
  || fail "import torch failed in $VENV"
if [[ "$TORCH_CUDA" == None ]]; then
  fail "torch $TORCH_VERSION in $VENV is not a CUDA build (torch.version.cuda is None)"
fi
say "torch $TORCH_VERSION (CUDA $TORCH_CUDA)"
setup_s=$((SECONDS - START))

# 3. Configure and build -------------------------------------------------------
tests_flag=OFF
targets=(deeprnn)
if [[ "$WITH_TESTS" == 1 ]]; then
  tests_flag=ON
  targets+=(deeprnn_tests)
fi
# Reconfigure when the cache is missing or was made for another torch or
# another nvcc (cmake keeps the first compiler it found).
cache="$BUILD_DIR/CMakeCache.txt"
if [[ -f "$cache" ]] && ! grep -qE "^CMAKE_CUDA_COMPILER:[A-Z]+=$NVCC\$" "$cache"; then
  say "$BUILD_DIR/ was configured with another nvcc: starting it afresh"
  rm -rf "$BUILD_DIR"
fi
if [[ -f "$cache" ]] && ! grep -qF "Torch_DIR:PATH=$TORCH_PREFIX/Torch" "$cache"; then
  say "$BUILD_DIR/ was configured for another torch: starting it afresh"
  rm -rf "$BUILD_DIR"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
START=$SECONDS
say "configuring $BUILD_DIR/ (DEEPRNN_CUDA=ON, C++ tests $tests_flag)"
if ! cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DPython3_EXECUTABLE="$PY" \
    -DCMAKE_CUDA_COMPILER="$NVCC" "${CUDA_ROOT_ARGS[@]}" -DDEEPRNN_CUDA=ON \
    -DDEEPRNN_BUILD_TESTS="$tests_flag" -DDEEPRNN_BUILD_TOOLS=OFF \
    >"$log" 2>&1; then
  cat "$log"
  fail "CMake could not configure the CUDA build (log above)"
fi
grep -E "deeprnn: CUDA kernels" "$log" | sed 's/^-- /cuda-check: /' || true
say "building ${targets[*]} (-j $JOBS)"
if ! cmake --build "$BUILD_DIR" -j "$JOBS" --target "${targets[@]}" >"$log" 2>&1; then
  cat "$log"
  fail "the CUDA build did not compile or link (log above)"
fi
# No warning in our own files (DESIGN.md §6), host or device side.
warnings="$(grep -E "^($ROOT/)?(csrc|tests)/[^:]*[:(][0-9]+.*warning" "$log" || true)"
if [[ -n "$warnings" ]]; then
  cat "$log"
  fail "warnings in our sources: $(wc -l <<<"$warnings")" $'\n'"$warnings"
fi
if grep -q "no work to do" "$log"; then
  say "build up to date"
fi
build_s=$((SECONDS - START))

# 4. Load it and look at the registrations -------------------------------------
START=$SECONDS
library="$ROOT/$BUILD_DIR/libdeeprnn.so"
[[ -f "$library" ]] || fail "$library was not built"
gpu_flag="$(mktemp)"
trap 'rm -f "$log" "$gpu_flag"' EXIT
if ! "$PY" - "$library" "$gpu_flag" <<'PYEOF'
import sys

import torch

library, gpu_flag = sys.argv[1], sys.argv[2]
torch.ops.load_library(library)
has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
problems = []
for op in ("deeprnn::_rnn_forward", "deeprnn::_rnn_backward"):
    for key in ("CPU", "CUDA", "Meta"):
        if not has_kernel(op, key):
            problems.append(f"{op} has no {key} kernel")
for op in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
    if not has_kernel(f"deeprnn::{op}", "Autograd"):
        problems.append(f"deeprnn::{op} has no Autograd kernel")
# The switch of the CUDA fast paths exists and is off unless the environment
# turns it on (they are not verified on a GPU yet).
import os
expected = 1 if os.environ.get("DEEPRNN_CUDA_FAST_PATH") == "1" else 0
if torch.ops.deeprnn._cuda_fast_path() != expected:
    problems.append(f"deeprnn::_cuda_fast_path() is not {expected} "
                    f"(DEEPRNN_CUDA_FAST_PATH={os.environ.get('DEEPRNN_CUDA_FAST_PATH')!r})")
if problems:
    sys.exit("cuda-check: " + "; ".join(problems))
print("cuda-check: registered: _rnn_forward and _rnn_backward for CPU, CUDA and "
      "Meta; lstm, gru, rnn_tanh, rnn_relu for Autograd; CUDA fast paths "
      f"{'on' if expected else 'off'} (DEEPRNN_CUDA_FAST_PATH)")

# The CPU operators of this build still work (float64 against torch.nn).
torch.manual_seed(0)
for module_class, op in ((torch.nn.LSTM, torch.ops.deeprnn.lstm),
                         (torch.nn.GRU, torch.ops.deeprnn.gru)):
    module = module_class(3, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    params = list(module._flat_weights)
    states = (None, None) if module_class is torch.nn.LSTM else (None,)
    ours = op(x, *states, params, True, 2, 0.0, True, True, False)
    reference = module(x)[0]
    torch.testing.assert_close(ours[0], reference, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(reference)
    got = torch.autograd.grad(ours[0], [x] + params, upstream)
    expected = torch.autograd.grad(reference, [x] + params, upstream)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
print("cuda-check: CPU operators of this build match torch.nn (LSTM, GRU; "
      "forward and backward, float64)")
with open(gpu_flag, "w") as f:
    f.write("1" if torch.cuda.is_available() else "0")
PYEOF
then
  fail "the CUDA build of libdeeprnn did not load, or lacks kernels (above)"
fi
load_s=$((SECONDS - START))
say "OK: setup ${setup_s}s, configure+build ${build_s}s, load ${load_s}s"
if [[ "$(cat "$gpu_flag")" == 1 ]]; then
  echo "CUDA: compiled and linked only; a GPU is here but this check ran nothing on it" \
    "(scripts/gpu_check.sh does)"
else
  echo "CUDA: compiled and linked only; no GPU here, nothing ran on CUDA"
fi
