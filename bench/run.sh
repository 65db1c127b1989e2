#!/usr/bin/env bash
# Build the bundle (the same build as the test command's) and the engine-limit example, then
# run the benchmarks. Prints tables; writes bench/*.json. Arguments go to both scripts (e.g.
# --runs 5). Run on an otherwise idle machine. bench/portable.py (portable against a native
# build) needs a second, native binary and is run by hand: see bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
bundle=$(scripts/build.sh --vulkan | tail -1)
sdk=$(scripts/vulkan-sdk.sh)
export VULKAN_SDK="$sdk/usr" CMAKE_PREFIX_PATH="$sdk/usr"
cargo build --release --locked -q -p corral-engine --features corral-engine/vulkan --example limit
# The example links llama.cpp's shared libraries: those of the bundle.
export LD_LIBRARY_PATH="$bundle/lib/corral${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
models=$(scripts/fetch-models.sh)
python3 bench/speed.py --corral "$bundle/bin/corral" \
  --limit "$CARGO_TARGET_DIR/release/examples/limit" --models "$models" "$@"
python3 bench/concurrency.py --corral "$bundle/bin/corral" --models "$models" "$@"
python3 bench/speculate.py --corral "$bundle/bin/corral" --models "$models" "$@"
