#!/usr/bin/env bash
# Build Corral and the engine-limit example, then run the benchmarks. Prints tables; writes
# bench/*.json. Arguments go to both scripts (e.g. --runs 5). Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked -q -p corral
cargo build --release --locked -q -p corral-engine --example limit
models=$(scripts/fetch-models.sh)
python3 bench/speed.py --corral "$CARGO_TARGET_DIR/release/corral" \
  --limit "$CARGO_TARGET_DIR/release/examples/limit" --models "$models" "$@"
python3 bench/concurrency.py --corral "$CARGO_TARGET_DIR/release/corral" --models "$models" "$@"
