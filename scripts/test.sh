#!/usr/bin/env bash
# The whole test suite, from a fresh clone: install what is missing, fetch the test models,
# build, and run every test (unit tests and black-box tests against the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."
# docker-registry: a real registry for the pull/push tests (started by the tests themselves,
# on loopback ports; the package's own service is not used).
CORRAL_SETUP_EXTRA="docker-registry" source scripts/setup.sh

scripts/fetch-models.sh >/dev/null
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --cargo-profile release --locked --no-fail-fast
else
  cargo test --workspace --release --locked --no-fail-fast
fi
