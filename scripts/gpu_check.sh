#!/usr/bin/env bash
# The one command for a GPU machine: builds deeprnn from source with the CUDA
# kernels (DEEPRNN_CUDA=ON) in a fresh build directory, runs the C++ tests
# (ctest), the CUDA tests (tests/python/test_cuda.py) and the rest of the
# Python tests, a short benchmark against torch.nn (cuDNN), and prints a
# summary table last. Needs nothing from the network.
#
# CUDA fast paths (off by default, switch DEEPRNN_CUDA_FAST_PATH=1: the
# persistent kernels and the wavefront across a stack's layers,
# csrc/cuda/persistent.cuh, and CUDA graphs of the general path's time
# loops, csrc/cuda/loop_graphs.h): test_cuda.py runs every test on both
# paths, the general one (switch off) and with the switch on (test ids
# [general-...] / [fast-...]), plus the test_fast_path_* tests of the fit,
# the fallback, the wavefront and the graphs; the summary gives a row per
# path and how many layers (stacked layers, graphs) the fast paths ran. The
# benchmark runs the fast path's rows once more with the switch on, and its
# stacks once more with the wavefront off (DEEPRNN_CUDA_FAST_PATH_WAVEFRONT=0:
# layer by layer on the persistent kernels). Everything else runs with the
# switch off.
#
# Expects on the machine: a CUDA build of torch in $PYTHON (default python3),
# nvcc, cmake, ninja, pytest. GoogleTest is optional: if CMake cannot find it,
# the .deb files in $DEEPRNN_GPU_DEPS (default .gpu-deps/, e.g.
# libgtest-dev_*.deb, made with `apt-get download libgtest-dev`) are unpacked
# into the build directory and used; without either, the C++ tests are
# skipped and the summary says so. Wheels (*.whl) in the same folder are
# installed into the build directory (pip --no-index) for the Python tests.
#
# Logs: $OUT/gpu_check/ when OUT is set, else out/gpu_check/ (at most 8
# files: summary.txt, build.log, ctest.log, pytest_cuda.log, pytest_rest.log,
# bench.log, bench.json, gpu_report.json).
#
# Usage: scripts/gpu_check.sh [options]
#   --dry-run        check the tools and the GPU, print the plan, stop
#   --build-only     build (and check the CUDA registrations), run nothing
#   --no-cpp         skip ctest (and do not build the C++ tests)
#   --cuda-only      of the Python tests run only tests/python/test_cuda.py
#   --no-cuda-tests  skip tests/python/test_cuda.py (with --keep-build and
#                    --no-cpp --no-bench: the rest of the Python tests alone)
#   --no-bench       skip the benchmark
#   --keep-build     reuse the build directory instead of starting afresh
#   --cuda-paths P   which paths test_cuda.py runs its tests on: general,
#                    fast or general,fast (default; DEEPRNN_TEST_CUDA_PATHS)
#   --jobs N         parallel build jobs (default nproc)
# Environment: PYTHON, DEEPRNN_GPU_BUILD_DIR (default build-gpu),
# DEEPRNN_GPU_DEPS, TORCH_CUDA_ARCH_LIST (default: the GPU's own, e.g. 9.0),
# CUDACXX (the nvcc), DEEPRNN_GPU_XDIST (workers for the non-CUDA Python
# tests when pytest-xdist is there; default 8, 0 = serial),
# DEEPRNN_GPU_CTEST_ARGS / DEEPRNN_GPU_PYTEST_ARGS (extra arguments, e.g.
# "-R Cuda" or "-x -k lengths"), DEEPRNN_GPU_CHECK_ALLOW_NO_GPU=1 (to test
# this script itself on a machine without a GPU: everything runs, the CUDA
# tests skip, and the result says so).
# Exit status: 0 when everything that ran passed; 1 otherwise; 2 when the
# machine lacks what the script needs (no GPU, no nvcc, ...); 3 when it ran
# without a GPU (DEEPRNN_GPU_CHECK_ALLOW_NO_GPU) and nothing failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRY_RUN=0 BUILD_ONLY=0 RUN_CPP=1 CUDA_ONLY=0 RUN_BENCH=1 KEEP_BUILD=0 RUN_CUDA_TESTS=1
JOBS="$(nproc)"
while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --build-only) BUILD_ONLY=1 ;;
    --no-cpp) RUN_CPP=0 ;;
    --cuda-only) CUDA_ONLY=1 ;;
    --no-cuda-tests) RUN_CUDA_TESTS=0 ;;
    --no-bench) RUN_BENCH=0 ;;
    --keep-build) KEEP_BUILD=1 ;;
    --jobs) JOBS="$2"; shift ;;
    --cuda-paths) CUDA_PATHS="$2"; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

case "${CUDA_PATHS:=general,fast}" in
  general|fast|general,fast|fast,general) ;;
  *) echo "gpu_check: --cuda-paths takes general, fast or general,fast, got '$CUDA_PATHS'" >&2
     exit 2 ;;
esac
PY="${PYTHON:-python3}"
BUILD_DIR="${DEEPRNN_GPU_BUILD_DIR:-build-gpu}"
[[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
DEPS="${DEEPRNN_GPU_DEPS:-.gpu-deps}"
[[ "$DEPS" = /* ]] || DEPS="$ROOT/$DEPS"
XDIST="${DEEPRNN_GPU_XDIST:-8}"
if [[ -n "${OUT:-}" ]]; then
  LOGS="$OUT/gpu_check"
else
  LOGS="$ROOT/out/gpu_check"
fi
mkdir -p "$LOGS"
# Nothing of an earlier run may pass for this one's.
rm -f "$LOGS"/{summary.txt,build.log,ctest.log,pytest_cuda.log,pytest_rest.log} \
  "$LOGS"/{bench.log,bench.json,gpu_report.json}
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
SUMMARY="$LOGS/summary.txt"
: >"$SUMMARY"

say() { echo "gpu_check: $*"; }
cant() { # the machine lacks something: exit 2
  say "CANNOT RUN: $*"
  echo "gpu_check: CANNOT RUN: $*" >>"$SUMMARY"
  exit 2
}
export PYTHONUNBUFFERED=1

# 1. Tools and the GPU ------------------------------------------------------------
command -v "$PY" >/dev/null || cant "no Python interpreter '$PY' (set PYTHON)"
# cmake, ninja and pytest may be pip packages beside that interpreter.
PATH="$(dirname "$(command -v "$PY")"):$PATH"
for tool in cmake ninja; do
  command -v "$tool" >/dev/null || cant "$tool is not on PATH"
done
NVCC="${CUDACXX:-}"
if [[ -z "$NVCC" ]]; then
  if [[ -x /usr/local/cuda/bin/nvcc ]]; then
    NVCC=/usr/local/cuda/bin/nvcc
  else
    NVCC="$(command -v nvcc || true)"
  fi
fi
[[ -n "$NVCC" && -x "$NVCC" ]] || cant "nvcc not found (CUDACXX, PATH, /usr/local/cuda/bin)"
NVCC_VERSION="$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
# The toolkit around that nvcc. torch's CMake looks for the CUDA libraries
# with FindCUDA, which derives the toolkit from the first nvcc on PATH: a
# wrapper script there (/usr/local/bin/nvcc) points it at /usr/local, where
# the headers and libcudart are not. Name the toolkit instead.
CUDA_ROOT="$(cd "$(dirname "$(readlink -f "$NVCC")")/.." && pwd)"
CUDA_ROOT_ARGS=()
if [[ -f "$CUDA_ROOT/include/cuda_runtime.h" ]]; then
  CUDA_ROOT_ARGS=(-DCUDA_TOOLKIT_ROOT_DIR="$CUDA_ROOT" -DCUDAToolkit_ROOT="$CUDA_ROOT")
fi

# One interpreter start answers every question about torch and the GPU.
"$PY" - >"$TMP/probe" 2>&1 <<'PYEOF'
import importlib.util
import torch
print("torch", torch.__version__)
print("torch_cuda", torch.version.cuda)
print("prefix", torch.utils.cmake_prefix_path)
print("cudnn", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
print("available", int(torch.cuda.is_available()))
print("pytest", int(importlib.util.find_spec("pytest") is not None))
print("xdist", int(importlib.util.find_spec("xdist") is not None))
print("pytest_timeout", int(importlib.util.find_spec("pytest_timeout") is not None))
if torch.cuda.is_available():
    print("count", torch.cuda.device_count())
    print("name", torch.cuda.get_device_name(0).replace(" ", "_"))
    major, minor = torch.cuda.get_device_capability(0)
    print("capability", f"{major}.{minor}")
PYEOF
probe_rc=$?
if [[ $probe_rc -ne 0 ]]; then
  cat "$TMP/probe"
  cant "$PY could not import torch"
fi
probe() { awk -v k="$1" '$1 == k { print $2 }' "$TMP/probe"; }
TORCH_VERSION="$(probe torch)"
TORCH_CUDA="$(probe torch_cuda)"
TORCH_PREFIX="$(probe prefix)"
CUDNN="$(probe cudnn)"
GPU_COUNT="$(probe count)"
GPU_NAME="$(probe name | tr _ ' ')"
CAPABILITY="$(probe capability)"
say "torch $TORCH_VERSION (CUDA $TORCH_CUDA, cuDNN $CUDNN), nvcc $NVCC_VERSION at $NVCC"
[[ "$TORCH_CUDA" != None ]] || cant "torch $TORCH_VERSION in $PY is not a CUDA build"
NO_GPU=0
if [[ "$(probe available)" != 1 ]]; then
  NO_GPU=1
  if [[ $DRY_RUN == 1 || $BUILD_ONLY == 1 || "${DEEPRNN_GPU_CHECK_ALLOW_NO_GPU:-0}" == 1 ]]; then
    say "no CUDA device here (torch.cuda.is_available() is False): going on only" \
      "because of --dry-run/--build-only/DEEPRNN_GPU_CHECK_ALLOW_NO_GPU"
    CAPABILITY=""
  else
    cant "no CUDA device: torch.cuda.is_available() is False (torch $TORCH_VERSION," \
      "CUDA $TORCH_CUDA). This script is for a GPU machine; on a machine without" \
      "one, scripts/cuda_build_check.sh compiles and links the CUDA build."
  fi
else
  say "GPU: $GPU_COUNT x $GPU_NAME (compute capability $CAPABILITY)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
      2>/dev/null | sed 's/^/gpu_check: nvidia-smi: /'
  fi
fi
if [[ $DRY_RUN == 0 && $BUILD_ONLY == 0 && "$(probe pytest)" != 1 ]]; then
  cant "pytest is not installed for $PY"
fi
# The GPU's own architecture only: the build is for testing here, and one
# architecture compiles in half the time of the release list.
ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-${CAPABILITY:-9.0}}"

if [[ $NO_GPU == 1 && $RUN_BENCH == 1 ]]; then
  RUN_BENCH=0
  BENCH_NOTE="not run (no GPU)"
fi

if [[ $DRY_RUN == 1 ]]; then
  say "plan: configure $BUILD_DIR (DEEPRNN_CUDA=ON, TORCH_CUDA_ARCH_LIST=$ARCH_LIST)," \
    "build, ctest$([[ $RUN_CPP == 1 ]] || echo ' (skipped)')," \
    "pytest test_cuda.py, pytest the rest$([[ $CUDA_ONLY == 0 ]] || echo ' (skipped)')," \
    "bench$([[ $RUN_BENCH == 1 ]] || echo ' (skipped)'); logs in $LOGS"
  say "dry run: stopping before the build"
  exit 0
fi

# 2. Optional dependencies that travel as files (.deb, .whl) ------------------------
if [[ $KEEP_BUILD == 0 ]]; then
  rm -rf "$BUILD_DIR"
fi
mkdir -p "$BUILD_DIR"
GTEST_ARGS=()
shopt -s nullglob
debs=("$DEPS"/*.deb)
wheels=("$DEPS"/*.whl)
shopt -u nullglob
if ((${#debs[@]})); then
  root="$BUILD_DIR/_deps/root"
  mkdir -p "$root"
  for deb in "${debs[@]}"; do
    if command -v dpkg >/dev/null; then
      dpkg -x "$deb" "$root"
    else # a .deb is an ar archive holding data.tar.*
      (cd "$TMP" && ar x "$deb" && tar -xf data.tar.* -C "$root" &&
        rm -f data.tar.* control.tar.* debian-binary)
    fi
  done
  gtest_config="$(find "$root" -name GTestConfig.cmake -print -quit)"
  if [[ -n "$gtest_config" ]]; then
    GTEST_ARGS=(-DGTest_DIR="$(dirname "$gtest_config")")
    say "GoogleTest from ${debs[*]##*/}"
  fi
fi
if ((${#wheels[@]})); then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$BUILD_DIR/_deps/site" \
    "${wheels[@]}" || cant "could not install ${wheels[*]##*/}"
  export PYTHONPATH="$BUILD_DIR/_deps/site${PYTHONPATH:+:$PYTHONPATH}"
  say "Python wheels from $DEPS: ${wheels[*]##*/}"
fi

# 3. Build --------------------------------------------------------------------
START=$SECONDS
configure() { # configure TESTS(ON|OFF)
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DPython3_EXECUTABLE="$(command -v "$PY")" \
    -DCMAKE_CUDA_COMPILER="$NVCC" "${CUDA_ROOT_ARGS[@]}" -DDEEPRNN_CUDA=ON \
    -DTORCH_CUDA_ARCH_LIST="$ARCH_LIST" \
    -DDEEPRNN_BUILD_TESTS="$1" "${GTEST_ARGS[@]}" >>"$LOGS/build.log" 2>&1
}
: >"$LOGS/build.log"
CPP_NOTE=""
say "configuring $BUILD_DIR (DEEPRNN_CUDA=ON, TORCH_CUDA_ARCH_LIST=$ARCH_LIST)"
if [[ $RUN_CPP == 1 ]] && configure ON; then
  :
elif [[ $RUN_CPP == 1 ]] && grep -q "GTest" "$LOGS/build.log"; then
  CPP_NOTE="skipped: GoogleTest not found (no GTest for CMake, no libgtest-dev .deb in $DEPS)"
  say "C++ tests $CPP_NOTE"
  rm -rf "$BUILD_DIR/CMakeCache.txt" "$BUILD_DIR/CMakeFiles"
  configure OFF || { tail -n 40 "$LOGS/build.log"; BUILD_FAILED="configure failed"; }
elif [[ $RUN_CPP == 0 ]]; then
  CPP_NOTE="skipped (--no-cpp)"
  configure OFF || { tail -n 40 "$LOGS/build.log"; BUILD_FAILED="configure failed"; }
else
  tail -n 40 "$LOGS/build.log"
  BUILD_FAILED="configure failed"
fi
if [[ -z "${BUILD_FAILED:-}" ]]; then
  say "building (-j $JOBS)"
  if ! cmake --build "$BUILD_DIR" -j "$JOBS" >>"$LOGS/build.log" 2>&1; then
    grep -E "error|FAILED" "$LOGS/build.log" | head -n 40
    BUILD_FAILED="build failed"
  fi
fi
BUILD_S=$((SECONDS - START))
LIBRARY="$BUILD_DIR/libdeeprnn.so"
if [[ -z "${BUILD_FAILED:-}" ]]; then
  # The build must have CUDA kernels: without them every GPU test would skip.
  if ! "$PY" - "$LIBRARY" >>"$LOGS/build.log" 2>&1 <<'PYEOF'
import sys
import torch
torch.ops.load_library(sys.argv[1])
for op in ("deeprnn::_rnn_forward", "deeprnn::_rnn_backward"):
    if not torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"):
        sys.exit(f"{op} has no CUDA kernel in {sys.argv[1]}")
PYEOF
  then
    tail -n 5 "$LOGS/build.log"
    BUILD_FAILED="the library has no CUDA kernels"
  fi
fi
warnings="$(grep -cE "^($ROOT/)?(csrc|tests)/[^:]*[:(][0-9]+.*warning" "$LOGS/build.log")"
if [[ -n "${BUILD_FAILED:-}" ]]; then
  say "BUILD FAILED: $BUILD_FAILED (log: $LOGS/build.log)"
else
  say "built in ${BUILD_S}s; $warnings warning(s) in our sources"
fi

# 4. Tests --------------------------------------------------------------------
export DEEPRNN_LIBRARY="$LIBRARY" DEEPRNN_BUILD_DIR="$BUILD_DIR"
# Tests that configure CMake projects against this torch (test_deploy's
# consumer) need the toolkit found the same way.
export CUDACXX="$NVCC"
if ((${#CUDA_ROOT_ARGS[@]})); then
  export CUDA_PATH="$CUDA_ROOT"
fi
export DEEPRNN_GPU_REPORT="$LOGS/gpu_report.json"
# The fast paths are off unless a step below turns them on for itself.
export DEEPRNN_CUDA_FAST_PATH=0 DEEPRNN_TEST_CUDA_PATHS="$CUDA_PATHS"
CTEST_S=0 CUDA_S=0 REST_S=0 BENCH_S=0
# A hung kernel (a grid-wide wait that never ends) must not eat the whole
# lease: per-test limits where the tools have them, and one for the bench.
PYTEST_LIMIT=()
if [[ "$(probe pytest_timeout)" == 1 ]]; then
  PYTEST_LIMIT=(--timeout=300)
fi
CTEST_RC="" CUDA_RC="" REST_RC="" BENCH_RC=""
if [[ -z "${BUILD_FAILED:-}" && $BUILD_ONLY == 0 ]]; then
  if [[ $RUN_CPP == 1 && -z "$CPP_NOTE" ]]; then
    say "ctest"
    START=$SECONDS
    # shellcheck disable=SC2086 # extra arguments split on spaces
    ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" --timeout 300 \
      ${DEEPRNN_GPU_CTEST_ARGS:-} >"$LOGS/ctest.log" 2>&1
    CTEST_RC=$?
    CTEST_S=$((SECONDS - START))
  fi

  if [[ $RUN_CUDA_TESTS == 1 ]]; then
    say "pytest tests/python/test_cuda.py (paths: $CUDA_PATHS)"
    START=$SECONDS
    # shellcheck disable=SC2086
    "$PY" -m pytest tests/python/test_cuda.py -q -rs -p no:cacheprovider "${PYTEST_LIMIT[@]}" \
      --junitxml="$TMP/cuda.xml" ${DEEPRNN_GPU_PYTEST_ARGS:-} >"$LOGS/pytest_cuda.log" 2>&1
    CUDA_RC=$?
    CUDA_S=$((SECONDS - START))
  fi

  if [[ $CUDA_ONLY == 0 ]]; then
    xdist_args=()
    if [[ "$XDIST" != 0 && "$(probe xdist)" == 1 ]]; then
      # One file per worker (module fixtures, DDP ports), two threads each.
      xdist_args=(-n "$XDIST" --dist loadfile)
      export OMP_NUM_THREADS=2
    fi
    say "pytest tests/python (the rest${xdist_args:+, ${XDIST} workers})"
    START=$SECONDS
    # shellcheck disable=SC2086
    "$PY" -m pytest tests/python --ignore=tests/python/test_cuda.py -q -rs \
      -p no:cacheprovider "${xdist_args[@]}" "${PYTEST_LIMIT[@]}" --junitxml="$TMP/rest.xml" \
      ${DEEPRNN_GPU_PYTEST_ARGS:-} >"$LOGS/pytest_rest.log" 2>&1
    REST_RC=$?
    REST_S=$((SECONDS - START))
    unset OMP_NUM_THREADS
  fi

  # 5. Benchmark against torch.nn (cuDNN) --------------------------------------
  if [[ $RUN_BENCH == 1 ]]; then
    say "bench.py --device cuda --quick"
    START=$SECONDS
    # cuDNN's RNNs default to TF32 on this hardware and deeprnn follows the
    # matmul setting (IEEE by default): bench.py --tf32 off turns TF32 off
    # for both (matmul and cuDNN), so float32 compares the same arithmetic
    # and bench.py's float32 agreement check holds. The first run is the
    # issue's grid: every row (large included) in float32 and bfloat16.
    bench() {
      timeout 300 "$PY" scripts/bench.py --tf32 off "$@"
    }
    {
      bench --device cuda --quick \
        --rows fastrnns,stacked-bi,deep,small-batch,long,large \
        --dtype float32,bfloat16 --modes lstm,gru,rnn_tanh --png "" \
        --json "$TMP/bench_full.json" &&
      bench --device cuda --quick --rows fastrnns,stacked-bi --modes lstm,gru \
        --lengths spread --png "" --json "$TMP/bench_lengths.json" &&
      DEEPRNN_CUDA_FAST_PATH=1 bench --device cuda --quick \
        --rows small-batch,stacked-bi,deep,fastrnns --modes lstm,gru,rnn_tanh --png "" \
        --json "$TMP/bench_fast.json" &&
      DEEPRNN_CUDA_FAST_PATH=1 DEEPRNN_CUDA_FAST_PATH_WAVEFRONT=0 bench --device cuda \
        --quick --rows small-batch,deep --modes lstm,gru --png "" \
        --json "$TMP/bench_nowave.json"
    } >"$LOGS/bench.log" 2>&1
    BENCH_RC=$?
    BENCH_S=$((SECONDS - START))
    "$PY" - "$TMP/bench_full.json" "$TMP/bench_lengths.json" "$TMP/bench_fast.json" \
      "$TMP/bench_nowave.json" "$LOGS/bench.json" <<'PYEOF'
import json, os, sys
runs = []
# the paths of the runs: DEEPRNN_CUDA_FAST_PATH off, off, on, on without
# the wavefront
for file, path in zip(sys.argv[1:5], ("general", "general", "fast", "fast-layer")):
    if os.path.isfile(file):
        run = json.load(open(file))
        run["fast_path"] = path != "general"
        run["path"] = path
        runs.append(run)
json.dump({"runs": runs}, open(sys.argv[5], "w"), indent=1)
PYEOF
  fi
fi

# 6. Summary table (last) --------------------------------------------------------
"$PY" - "$TMP" "$LOGS" >>"$SUMMARY" <<PYEOF
import json, os, re, sys
import xml.etree.ElementTree as ET

tmp, logs = sys.argv[1], sys.argv[2]
failed_any = False
print("=" * 78)
gpu = "$GPU_COUNT x $GPU_NAME (sm $CAPABILITY)" if "$NO_GPU" == "0" else "NO GPU"
print(f"deeprnn gpu_check: {gpu}, torch $TORCH_VERSION, CUDA $TORCH_CUDA, cuDNN $CUDNN,"
      " nvcc $NVCC_VERSION")
build_failed = "${BUILD_FAILED:-}"
print(f"build: {'FAILED: ' + build_failed if build_failed else 'ok'} (DEEPRNN_CUDA=ON, "
      f"TORCH_CUDA_ARCH_LIST=$ARCH_LIST, ${BUILD_S}s, $warnings warning(s) in our sources)")
failed_any |= bool(build_failed)
if "$warnings" != "0":
    failed_any = True

rows = []
def junit(name, path, rc, seconds, note=""):
    global failed_any
    if rc == "":
        rows.append((name, "-", "-", "-", "-", note or "not run"))
        return
    try:
        root = ET.parse(path).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        tests, failures = int(suite.get("tests")), int(suite.get("failures"))
        errors, skipped = int(suite.get("errors")), int(suite.get("skipped"))
        passed = tests - failures - errors - skipped
        bad = failures + errors
    except Exception as error:
        rows.append((name, "?", "?", "?", seconds,
                     f"no report ({error.__class__.__name__}), rc {rc}"))
        failed_any = True
        return
    if bad or rc not in ("0",):
        failed_any = True
    rows.append((name, passed, bad, skipped, seconds, f"rc {rc}" + (f"; {note}" if note else "")))

# ctest: "  12/120 Test  #12: name ....   Passed    0.10 sec"
ctest_rc = "$CTEST_RC"
if ctest_rc == "":
    rows.append(("ctest (C++)", "-", "-", "-", "-", "${CPP_NOTE:-not run}"))
else:
    text = open(os.path.join(logs, "ctest.log"), errors="replace").read()
    # Anything but Passed, Skipped and Not Run counts as a failure.
    statuses = re.findall(r"Test +#\d+: \S+ \.*\**\s*(Passed|Skipped|Not Run|\w+)", text)
    passed = statuses.count("Passed")
    skipped = statuses.count("Skipped") + statuses.count("Not Run")
    bad = len(statuses) - passed - skipped
    if bad or ctest_rc != "0" or not statuses:
        failed_any = True
    rows.append(("ctest (C++)", passed, bad, skipped, "$CTEST_S", f"rc {ctest_rc}"))
junit("pytest test_cuda.py", os.path.join(tmp, "cuda.xml"), "$CUDA_RC", "$CUDA_S",
      "" if "$CUDA_RC" or "$RUN_CUDA_TESTS" == "1" else "skipped (--no-cuda-tests)")

# test_cuda.py per path: the cuda_path parameter in each test id, [general-...]
# (switch off), [fast-...] (switch on), [own-...] (test_fast_path_*).
def by_path(path):
    counts = {}
    try:
        root = ET.parse(path).getroot()
    except Exception:
        return counts
    for case in root.iter("testcase"):
        match = re.search(r"\[([^\]]*)\]", case.get("name", ""))
        tokens = match.group(1).split("-") if match else []
        which = next((t for t in tokens if t in ("general", "fast", "own")), "?")
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        entry = counts.setdefault(which, {"passed": 0, "failed": 0, "skipped": 0})
        entry[outcome] += 1
    return counts

if "$CUDA_RC" != "":
    names = {"general": "  general path", "fast": "  fast path on",
             "own": "  test_fast_path_*", "?": "  (no path)"}
    notes = {"general": "switch off", "fast": "switch on: fast where it fits",
             "own": "fit, fallback, boundary", "?": ""}
    for which, c in sorted(by_path(os.path.join(tmp, "cuda.xml")).items(),
                           key=lambda kv: list(names).index(kv[0])):
        rows.append((names[which], c["passed"], c["failed"], c["skipped"], "",
                     notes[which]))
junit("pytest the rest", os.path.join(tmp, "rest.xml"), "$REST_RC", "$REST_S",
      "" if "$REST_RC" or "$CUDA_ONLY" == "0" else "skipped (--cuda-only)")
print()
print(f"{'suite':22} {'passed':>7} {'failed':>7} {'skipped':>8} {'time s':>7}  note")
for name, p, f, s, t, n in rows:
    print(f"{name:22} {p!s:>7} {f!s:>7} {s!s:>8} {t!s:>7}  {n}")

# Skip reasons of the CUDA tests: a GPU run should skip only what needs 2 GPUs.
cuda_log = os.path.join(logs, "pytest_cuda.log")
if os.path.isfile(cuda_log):
    text = open(cuda_log, errors="replace").read()
    reasons = re.findall(r"^SKIPPED \[(\d+)\] [^:]+:\d+: (.*)$", text, re.M)
    merged = {}
    for count, reason in reasons:
        merged[reason] = merged.get(reason, 0) + int(count)
    for reason, count in sorted(merged.items(), key=lambda kv: -kv[1]):
        print(f"  test_cuda.py skipped {count}: {reason}")
    failures = re.findall(r"^(FAILED|ERROR) (\S+)", text, re.M)
    for kind, test in failures[:15]:
        print(f"  test_cuda.py {kind}: {test}")
    if len(failures) > 15:
        print(f"  ... {len(failures) - 15} more in pytest_cuda.log")
rest_log = os.path.join(logs, "pytest_rest.log")
if os.path.isfile(rest_log):
    failures = re.findall(r"^(FAILED|ERROR) (\S+)", open(rest_log, errors="replace").read(), re.M)
    for kind, test in failures[:10]:
        print(f"  rest {kind}: {test}")

report = os.path.join(logs, "gpu_report.json")
if os.path.isfile(report):
    report_data = json.load(open(report))
    errors = report_data["errors"]
    forward, backward = (report_data.get("fast_path_layers") or [0, 0])[:2]
    stacked_forward, stacked_backward = report_data.get("stacked_layers") or [0, 0]
    captures, replays = report_data.get("loop_graphs") or [0, 0]
    print()
    print(f"paths run by test_cuda.py: {', '.join(report_data.get('paths', ['general']))}; "
          f"the fast path (persistent kernels) ran {forward} forward and {backward} backward "
          "layer(s)" + ("" if forward and backward else
                        " -- a pass that never ran was not verified by the fast-path rows"))
    print(f"  of those, in the stack kernels (wavefront): {stacked_forward} forward and "
          f"{stacked_backward} backward; CUDA graphs of the general loops: {captures} "
          f"captured, {replays} replayed"
          + ("" if stacked_forward and stacked_backward and replays
             else " -- what never ran was not verified"))
    print()
    print("largest errors (test_cuda.py):")
    print(f"{'comparison':46} {'checks':>6} {'max abs':>10} {'max |d|/|ref|':>13}  worst case")
    for kind in sorted(errors):
        e = errors[kind]
        print(f"{kind:46} {e['checks']:>6} {e['max_abs']:>10.2e} "
              f"{e['max_norm_ratio']:>13.2e}  {e['max_norm_ratio_case']}")

bench = os.path.join(logs, "bench.json")
if os.path.isfile(bench):
    runs = json.load(open(bench))["runs"]
    if runs:
        print()
        print("bench (TF32 off on both sides; ratio = torch.nn / deeprnn, "
              ">1: deeprnn faster):")
        print(f"{'row':22} {'dtype':9} {'mode':9} {'pass':10} {'path':10} "
              f"{'torch ms':>9} {'deeprnn ms':>10} {'ratio':>6}")
        for run in runs:
            path = run.get("path") or ("fast" if run.get("fast_path") else "general")
            for r in run["results"]:
                ms = r["median_ms"]
                print(f"{r['row']:22} {r.get('dtype', 'float32'):9} {r['mode']:9} "
                      f"{r['pass']:10} {path:10} {ms['torch.nn']:>9.2f} "
                      f"{ms['deeprnn']:>10.2f} {r['ratio']:>6.2f}")
if "$BENCH_RC" not in ("", "0"):
    failed_any = True
    print(f"bench: FAILED (rc $BENCH_RC; see bench.log)")
elif "$BENCH_RC" == "":
    print("bench: ${BENCH_NOTE:-not run}")
print()
print(f"times: build ${BUILD_S}s, ctest ${CTEST_S}s, test_cuda ${CUDA_S}s, rest ${REST_S}s, "
      f"bench ${BENCH_S}s; logs in {logs}")
if failed_any:
    result = "FAILED"
elif "$BUILD_ONLY" == "1":
    result = "BUILT (--build-only: nothing ran)"
elif "$NO_GPU" == "1":
    result = "NO GPU: the script ran, the CUDA tests skipped; nothing was verified on a GPU"
else:
    result = "PASSED"
print("RESULT: " + result)
PYEOF
cat "$SUMMARY"
grep -q "^RESULT: FAILED" "$SUMMARY" && exit 1
grep -q "^RESULT: " "$SUMMARY" || exit 1
grep -q "^RESULT: NO GPU" "$SUMMARY" && exit 3
exit 0
