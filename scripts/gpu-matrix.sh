#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and the CUDA toolkit: build Corral with the CUDA backend and
# run the device tests (the CPU-mode matrix: unset, "", -1, 0, abc, CORRAL_DEVICE=cpu,
# num_gpu 0, a num_gpu 0 Modelfile) plus `corral devices` with the GPU visible and hidden.
#
#   scripts/gpu-matrix.sh            # prints what it saw; exit status says whether tests passed
#
# Nothing else depends on this script: the usual machines have no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
command -v nvcc >/dev/null || { echo "nvcc not found: install the CUDA toolkit first" >&2; exit 2; }
scripts/fetch-models.sh >/dev/null
cargo build --release --locked -p corral --features cuda
corral="$CARGO_TARGET_DIR/release/corral"
for v in unset "" -1 0 abc; do
  echo "== CUDA_VISIBLE_DEVICES=${v}"
  if [ "$v" = unset ]; then env -u CUDA_VISIBLE_DEVICES "$corral" devices; else CUDA_VISIBLE_DEVICES="$v" "$corral" devices; fi
done
cargo nextest run --cargo-profile release --locked -p corral --features cuda --test devices --test end_to_end
