#!/usr/bin/env bash
# Runs a short CPU forward and backward of deeprnn's LSTM, GRU and RNN
# (tests/valgrind/forward_backward.cpp) under valgrind's memcheck and ends
# with one summary line. Fails on any memcheck error (invalid read or write,
# use of uninitialised values, bad free) and on any "definitely lost" block;
# "possibly lost" and "still reachable" blocks are LibTorch's process-long
# state (thread pools, the dispatcher's tables) and are only counted.
#
# Installs valgrind (apt) when it is missing. Builds the program in an
# existing CMake build (DEEPRNN_BUILD_DIR, default build) or configures one.
# Environment: DEEPRNN_BUILD_DIR, DEEPRNN_JOBS (default nproc).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${DEEPRNN_BUILD_DIR:-build}"
JOBS="${DEEPRNN_JOBS:-$(nproc)}"
PY="$ROOT/.venv/bin/python"
say() { echo "valgrind: $*"; }

if ! command -v valgrind >/dev/null 2>&1; then
  SUDO=()
  if [[ "$(id -u)" -ne 0 ]]; then SUDO=(sudo); fi
  say "installing valgrind (apt)"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    valgrind >/dev/null
fi

start=$SECONDS
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  TORCH_PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DDEEPRNN_BUILD_TESTS=ON >/dev/null
fi
sanitize="$(sed -n 's/^DEEPRNN_SANITIZE:STRING=//p' "$BUILD_DIR/CMakeCache.txt")"
if [[ -n "$sanitize" ]] && ! grep -qiE '^(off|false|no|n|0)$' <<<"$sanitize"; then
  say "$BUILD_DIR is a sanitizer build; valgrind needs an ordinary one"
  exit 2
fi
cmake --build "$BUILD_DIR" -j "$JOBS" --target deeprnn_valgrind
build_s=$((SECONDS - start))

# One intra-op thread: valgrind runs threads one at a time anyway, and
# fewer OpenMP workers make the run faster and the report smaller.
export OMP_NUM_THREADS=1
# Same reason as in scripts/test.sh (AMX advertised but unusable here).
export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX512_CORE_BF16}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
start=$SECONDS
set +e
valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
  --errors-for-leak-kinds=definite --error-exitcode=99 --num-callers=40 \
  --suppressions="$ROOT/scripts/valgrind.supp" \
  "$BUILD_DIR/deeprnn_valgrind" >"$log" 2>&1
rc=$?
set -e
run_s=$((SECONDS - start))
cat "$log"

# "==123==    definitely lost: 0 bytes in 0 blocks"
field() { # field NAME: bytes of that leak kind, 0 when not reported
  grep -oE "$1: [0-9,]+ bytes" "$log" | tail -n 1 | grep -oE '[0-9,]+' \
    | tr -d , || echo 0
}
definitely="$(field 'definitely lost')"
possibly="$(field 'possibly lost')"
reachable="$(field 'still reachable')"
errors="$(grep -oE 'ERROR SUMMARY: [0-9,]+ errors' "$log" | tail -n 1 \
  | grep -oE '[0-9,]+' | tr -d , || echo '?')"
status=ok
if [[ $rc -ne 0 || "$errors" != 0 || "${definitely:-0}" != 0 ]]; then
  status=FAILED
fi
echo "valgrind: ${status}: ${errors} errors, definitely lost ${definitely:-0}" \
  "bytes (possibly lost ${possibly:-0}, still reachable ${reachable:-0}:" \
  "LibTorch's process state), rc ${rc}; build ${build_s}s, run ${run_s}s"
[[ $status == ok ]]
