#!/usr/bin/env bash
# Sets up deeprnn, then runs the demo: the same 2-layer bidirectional LSTM
# trained with deeprnn and with torch.nn from the same weights. Arguments go
# to scripts/demo.py (try --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
exec "$ROOT/.venv/bin/python" scripts/demo.py "$@"
