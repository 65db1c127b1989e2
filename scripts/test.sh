#!/usr/bin/env bash
# The whole test suite, from a fresh clone: install what is missing, fetch the test models,
# build, and run every test (unit tests and black-box tests against the real binary).
#
#   scripts/test.sh [--cuda]
#
# --cuda: also build ggml's CUDA module (scripts/cuda-module.sh, CUDA 13.0 from PyPI; about
# 75 minutes the first time on 2 cores, a relink after) and run the whole suite with it in the
# module folder (CORRAL_LIB_DIR), as a machine without an NVIDIA driver would have it.
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=0
for arg in "$@"; do
  case "$arg" in
    --cuda) cuda=1 ;;
    *) echo "test.sh: unknown option $arg (use --cuda)" >&2; exit 2 ;;
  esac
done
# docker-registry: a real registry for the pull/push tests; chromium: a real browser for the
# cross-origin tests (both started by the tests themselves, on loopback ports; the package's
# own service is not used); qemu-user: an older CPU for the portable bundle's test;
# mesa-vulkan-drivers (lavapipe) and vulkan-tools: a real Vulkan device on the CPU; glslc and
# libvulkan1: to build llama.cpp's Vulkan module; prometheus: a real server scraping /metrics
# (started by the metrics tests on loopback; the package's own service is not used).
CORRAL_SETUP_EXTRA="docker-registry chromium qemu-user mesa-vulkan-drivers vulkan-tools glslc libvulkan1 prometheus" \
  source scripts/setup.sh

# The real Python clients for the compatibility suite (crates/corral/tests/it/clients.rs), pinned,
# in a virtual environment kept between runs and refreshed when the pins change.
venv="${CORRAL_CLIENT_VENV:-$HOME/.cache/corral/client-venv}"
# Debian's python3 makes virtual environments only with python3-venv (ensurepip).
python3 -c "import ensurepip" 2>/dev/null || {
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq python3-venv >&2
}
client_venv() {
  if ! cmp -s tests/clients/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements.txt
    cp tests/clients/requirements.txt "$venv/requirements.txt"
  fi
}

# The test models and the client packages come over the network while llama.cpp builds;
# their logs are printed only if they fail.
fetch_log=$(mktemp) venv_log=$(mktemp) fetch_pid="" venv_pid=""
trap 'kill "$fetch_pid" "$venv_pid" 2>/dev/null || true; rm -f "$fetch_log" "$venv_log"' EXIT
scripts/fetch-models.sh >"$fetch_log" 2>&1 &
fetch_pid=$!
client_venv >"$venv_log" 2>&1 &
venv_pid=$!

# The portable bundle with the Vulkan module; the tests build with the same features, so
# cargo reuses that build.
if [ "$cuda" = 1 ]; then
  bundle=$(scripts/build.sh --vulkan --cuda | tail -1)
  export CORRAL_LIB_DIR="$bundle/lib/corral" CORRAL_TEST_CUDA=1
else
  bundle=$(scripts/build.sh --vulkan | tail -1)
fi
sdk=$(scripts/vulkan-sdk.sh)
export VULKAN_SDK="$sdk/usr" CMAKE_PREFIX_PATH="$sdk/usr" CORRAL_TEST_BUNDLE="$bundle"

wait "$fetch_pid" || { cat "$fetch_log" >&2; echo "test.sh: fetching the test models failed" >&2; exit 1; }
wait "$venv_pid" || { cat "$venv_log" >&2; echo "test.sh: installing the Python clients failed" >&2; exit 1; }
export CORRAL_CLIENT_VENV="$venv"
# The patched copy of gotmpl (vendor/gotmpl/PATCHED.md) is not a workspace member: its own
# suite (Go's text/template and html/template cases) runs here, in a build folder of its own.
gotmpl=0
cargo test --manifest-path vendor/gotmpl/Cargo.toml --features html,serde --locked -q \
  --target-dir "${CARGO_TARGET_DIR:-target}/gotmpl" || gotmpl=$?
suite=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --features corral/vulkan --cargo-profile release --locked --no-fail-fast || suite=$?
else
  cargo test --workspace --features corral/vulkan --release --locked --no-fail-fast || suite=$?
fi
[ "$gotmpl" = 0 ] || echo "test.sh: vendor/gotmpl's own tests failed" >&2
[ "$gotmpl" = 0 ] && [ "$suite" = 0 ]
