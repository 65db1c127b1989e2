#!/usr/bin/env bash
# Build llama.cpp's llama-server, the reference bench/versus.py runs beside Corral; print its
# path as the last line.
#
# The llama-cpp-sys-2 crate ships llama.cpp's library sources but not the server's
# (its tools/server holds only README and test files), so the server is built from the full
# llama.cpp that the llama-cpp-python source distribution vendors, from PyPI (the only source
# of it these machines reach), pinned below. The script prints both trees' ggml versions: the
# comparison is then between Corral's configuration and llama-server's, on kernels that may
# differ by the versions shown.
#
# CPU only, built for this machine (GGML_NATIVE), static, into ~/.cache/corral/llama-server
# (about ten minutes on 2 cores, once). With ggml's RPC backend, and llama.cpp's own
# rpc-server beside llama-server, for bench/rpc.py.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.3.36
cache="${CORRAL_LLAMA_SERVER_CACHE:-$HOME/.cache/corral/llama-server}"
exe="$cache/build/bin/llama-server"
if [ ! -x "$exe" ] || [ ! -x "$cache/build/bin/ggml-rpc-server" ]; then
  mkdir -p "$cache"
  if [ ! -d "$cache/src/vendor/llama.cpp" ]; then
    python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
      "llama-cpp-python==$version" -d "$cache/dl" >&2
    rm -rf "$cache/src.tmp" && mkdir -p "$cache/src.tmp"
    tar xzf "$cache/dl/llama_cpp_python-$version.tar.gz" -C "$cache/src.tmp" --strip-components=1
    mv "$cache/src.tmp" "$cache/src"
  fi
  cmake -S "$cache/src/vendor/llama.cpp" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DGGML_RPC=ON >&2
  cmake --build "$cache/build" --target llama-server ggml-rpc-server --parallel "$(nproc)" >&2
fi
ggml_version() {
  grep -E '^set\(GGML_VERSION_(MAJOR|MINOR|PATCH) ' "$1/ggml/CMakeLists.txt" | grep -oE '[0-9]+\)' | tr -d ')' | paste -sd.
}
echo "llama-server's ggml: $(ggml_version "$cache/src/vendor/llama.cpp"); Corral's: $(ggml_version "$(scripts/cuda-module.sh --print-src)")" >&2
echo "$exe"
