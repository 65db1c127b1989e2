#!/usr/bin/env bash
# Build Corral and run the benchmarks. Prints tables; writes bench/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked -q -p corral
models=$(scripts/fetch-models.sh)
python3 bench/concurrency.py --corral "$CARGO_TARGET_DIR/release/corral" --models "$models" "$@"
