#!/usr/bin/env bash
# The whole test suite, from a fresh clone: install what is missing, fetch the test models,
# build, and run every test (unit tests and black-box tests against the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

scripts/fetch-models.sh >/dev/null
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --cargo-profile release --locked --no-fail-fast
else
  cargo test --workspace --release --locked --no-fail-fast
fi
