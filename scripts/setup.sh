#!/usr/bin/env bash
# Install what building Corral needs on a fresh Debian machine, only where it is missing:
# cmake and a C/C++ toolchain for llama.cpp, clang and libclang-dev for its bindings.
# Sourced by demo.sh and test.sh; also sets CARGO_TARGET_DIR if the caller did not.
# Packages named in CORRAL_SETUP_EXTRA are installed too (test.sh adds docker-registry, the
# OCI registry the pull/push tests run on loopback).
set -euo pipefail

need=()
for pkg in cmake clang libclang-dev g++ ${CORRAL_SETUP_EXTRA:-}; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# pip fetches the test models; python3 may come with its own (pyenv) or need Debian's.
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
fi

# One build folder outside the clone, kept between runs: llama.cpp takes minutes to build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/corral/cargo-target}"
