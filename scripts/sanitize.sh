#!/usr/bin/env bash
# Builds libdeeprnn, the C++ tests and the C++ example with AddressSanitizer
# and UndefinedBehaviorSanitizer (CMake option DEEPRNN_SANITIZE=ON), runs
# them, and ends with one summary line. Any sanitizer report fails the run:
# ASan and UBSan halt on the first error, LeakSanitizer runs at exit.
#
# Needs what scripts/setup.sh installs (.venv with torch, cmake, ninja,
# GoogleTest). Environment: DEEPRNN_ASAN_BUILD_DIR (default build-asan),
# DEEPRNN_JOBS (default nproc), GTEST_FILTER (to run part of the tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${DEEPRNN_ASAN_BUILD_DIR:-build-asan}"
JOBS="${DEEPRNN_JOBS:-$(nproc)}"
PY="$ROOT/.venv/bin/python"
say() { echo "sanitize: $*"; }

# Same reason as in scripts/test.sh: AMX is advertised but unusable on the
# virtual machines here, and oneDNN's bfloat16 GEMMs would die with SIGILL.
export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX512_CORE_BF16}"
# Set before the build too: gtest_discover_tests runs the test binary at
# build time to list the tests, under the same options.
# detect_leaks: LeakSanitizer checks at exit (LibTorch needs no suppression:
# what it keeps for the whole process stays reachable from its globals).
# halt_on_error / -fno-sanitize-recover: the first report ends the process
# with a non-zero status. strict_string_checks, detect_stack_use_after_return
# and check_initialization_order widen what ASan checks in our code.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:print_summary=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:report_error_type=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

start=$SECONDS
TORCH_PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
# RelWithDebInfo: optimised like the real build (the tests stay fast), with
# line numbers in the sanitizers' stack traces.
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DDEEPRNN_SANITIZE=ON \
  -DDEEPRNN_BUILD_TESTS=ON -DDEEPRNN_BUILD_TOOLS=OFF >/dev/null
say "building $BUILD_DIR (ASan + UBSan, -j$JOBS)"
cmake --build "$BUILD_DIR" -j "$JOBS" --target deeprnn deeprnn_tests \
  lstm_example
build_s=$((SECONDS - start))

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
start=$SECONDS
say "running deeprnn_tests"
set +e
"$BUILD_DIR/deeprnn_tests" --gtest_brief=1 2>&1 | tee "$logs/tests.log"
tests_rc=${PIPESTATUS[0]}
say "running lstm_example"
"$BUILD_DIR/examples/lstm_example" >"$logs/example.log" 2>&1
example_rc=$?
set -e
cat "$logs/example.log"
test_s=$((SECONDS - start))

# "[  PASSED  ] 120 tests." and "[  FAILED  ] 2 tests, listed below:"
passed="$(grep -oE '^\[  PASSED  \] [0-9]+' "$logs/tests.log" | grep -oE '[0-9]+$' || true)"
failed="$(grep -oE '^\[  FAILED  \] [0-9]+ tests?,' "$logs/tests.log" | grep -oE '[0-9]+' || true)"
reports="$(cat "$logs/tests.log" "$logs/example.log" \
  | grep -cE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' || true)"
passed=${passed:-0}
failed=${failed:-0}
status=ok
if [[ $tests_rc -ne 0 || $example_rc -ne 0 || $reports -ne 0 || $failed -ne 0 ]]; then
  status=FAILED
fi
echo "sanitize: ${status}: deeprnn_tests ${passed} passed, ${failed} failed" \
  "(rc ${tests_rc}), lstm_example rc ${example_rc}, ${reports} sanitizer" \
  "reports; build ${build_s}s, run ${test_s}s"
[[ $status == ok ]]
