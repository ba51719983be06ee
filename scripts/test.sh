#!/usr/bin/env bash
# Sets up deeprnn, runs the C++ tests (ctest) and the Python tests (pytest),
# and ends with one summary line: "N passed, N failed[, N skipped]".
# With DEEPRNN_SANITIZERS=1 (CI sets it) it also runs scripts/sanitize.sh
# (ASan + UBSan build of the library and the C++ tests) and
# scripts/valgrind.sh, and with DEEPRNN_CUDA_CHECK=1 (CI sets it)
# scripts/cuda_build_check.sh (the CUDA build, compiled and linked only),
# each counted as one check in that line.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${DEEPRNN_BUILD_DIR:-build}"
JOBS="${DEEPRNN_JOBS:-$(nproc)}"
# The virtual machines here advertise AMX in /proc/cpuinfo without enabling
# it, and oneDNN's bfloat16 GEMMs (torch's own included) then die with
# SIGILL. Capping oneDNN's ISA below AMX is harmless elsewhere (it is a
# ceiling); a caller's own setting wins.
export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX512_CORE_BF16}"

if ! bash scripts/setup.sh; then
  echo "test: setup failed"
  echo "0 passed, 1 failed"
  exit 1
fi

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# C++ ---------------------------------------------------------------------------
echo "test: C++ tests (ctest)"
set +e
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" 2>&1 \
  | tee "$logs/ctest.log"
ctest_rc=${PIPESTATUS[0]}
set -e
# "100% tests passed, 0 tests failed out of 42"
ctest_line="$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' \
  "$logs/ctest.log" | tail -n 1 || true)"
if [[ -n "$ctest_line" ]]; then
  ctest_total="$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$ctest_line")"
  ctest_failed="$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$ctest_line")"
  # ctest counts a skipped test (GTEST_SKIP, e.g. the CUDA tests without a
  # GPU) among the passed ones; it lists each as "... (Skipped)".
  ctest_skipped="$(grep -cE '\(Skipped\)$' "$logs/ctest.log" || true)"
  ctest_passed=$((ctest_total - ctest_failed - ctest_skipped))
else
  echo "test: ctest ran no test"
  ctest_passed=0
  ctest_failed=0
  ctest_skipped=0
fi
if [[ $ctest_rc -ne 0 || -z "$ctest_line" ]] && [[ $ctest_failed -eq 0 ]]; then
  ctest_failed=1 # it failed without a count (no tests, crash, ...)
fi

# Python --------------------------------------------------------------------------
echo "test: Python tests (pytest)"
set +e
"$ROOT/.venv/bin/python" -m pytest tests/python -q 2>&1 | tee "$logs/pytest.log"
pytest_rc=${PIPESTATUS[0]}
set -e
# The closing line, e.g. "3 failed, 120 passed, 4 skipped in 12.3s".
pytest_line="$(grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected)' \
  "$logs/pytest.log" | tail -n 1 || true)"
count() { # count WORD LINE
  grep -oE "[0-9]+ $1" <<<"$2" | head -n 1 | cut -d' ' -f1 || true
}
pytest_passed="$(count passed "$pytest_line")"
pytest_failed="$(count failed "$pytest_line")"
pytest_errors="$(count 'errors?' "$pytest_line")"
pytest_skipped="$(count skipped "$pytest_line")"
pytest_passed=${pytest_passed:-0}
pytest_failed=$(( ${pytest_failed:-0} + ${pytest_errors:-0} ))
pytest_skipped=${pytest_skipped:-0}
if [[ $pytest_rc -eq 5 ]]; then
  echo "test: pytest collected no test"
fi
if [[ $pytest_rc -ne 0 && $pytest_failed -eq 0 ]]; then
  pytest_failed=1 # no tests (exit 5), interrupted, internal error, ...
fi

# Sanitizers and valgrind (CI) --------------------------------------------------------
extra_passed=0
extra_failed=0
extra_line=""
if [[ "${DEEPRNN_SANITIZERS:-0}" == 1 ]]; then
  for check in sanitize valgrind; do
    echo "test: scripts/${check}.sh"
    if bash "scripts/${check}.sh"; then
      extra_passed=$((extra_passed + 1))
      extra_line+="; ${check} ok"
    else
      extra_failed=$((extra_failed + 1))
      extra_line+="; ${check} FAILED"
    fi
  done
fi

# CUDA compile-only check (CI) ---------------------------------------------------------
# With DEEPRNN_CUDA_CHECK=1 (CI sets it): scripts/cuda_build_check.sh compiles
# and links the CUDA build against a CUDA torch in .venv-cuda and loads it;
# nothing runs on a GPU. One check in the summary line.
if [[ "${DEEPRNN_CUDA_CHECK:-0}" == 1 ]]; then
  echo "test: scripts/cuda_build_check.sh (CUDA: compile and link only, no GPU)"
  if bash scripts/cuda_build_check.sh; then
    extra_passed=$((extra_passed + 1))
    extra_line+="; cuda compile-only ok (nothing ran on a GPU)"
  else
    extra_failed=$((extra_failed + 1))
    extra_line+="; cuda compile-only FAILED"
  fi
fi

# Summary -------------------------------------------------------------------------
passed=$((ctest_passed + pytest_passed + extra_passed))
failed=$((ctest_failed + pytest_failed + extra_failed))
skipped=$((ctest_skipped + pytest_skipped))
echo "test: ctest ${ctest_passed} passed, ${ctest_failed} failed," \
  "${ctest_skipped} skipped (rc ${ctest_rc});" \
  "pytest ${pytest_passed} passed, ${pytest_failed} failed," \
  "${pytest_skipped} skipped (rc ${pytest_rc})${extra_line}"
if [[ $skipped -gt 0 ]]; then
  echo "${passed} passed, ${failed} failed, ${skipped} skipped"
else
  echo "${passed} passed, ${failed} failed"
fi
if [[ $failed -ne 0 || $ctest_rc -ne 0 || $pytest_rc -ne 0 ]]; then
  exit 1
fi
