#!/usr/bin/env bash
# Build ggml's CUDA backend module (libggml-cuda.so) from the llama.cpp sources the
# llama-cpp-sys-2 crate ships, and put it into a bundle's module folder.
#
#   scripts/cuda-module.sh DEST [--src LLAMA_CPP_DIR] [--nvcc PATH] [--archs LIST] [--runtime]
#   scripts/cuda-module.sh --print-src     # the sys crate's llama.cpp folder, nothing built
#
# DEST: the folder that gets libggml-cuda.so (a bundle's lib/corral). --src: the llama.cpp
# source folder (default: the sys crate's, found with cargo). --nvcc: the compiler (default
# $CUDACXX, else the PyPI toolkit of scripts/cuda-toolkit.sh). --archs: CMake's CUDA
# architectures (default 86-real;90-real;90-virtual: an RTX 3060's and an H200's code, and
# PTX for later GPUs). --runtime: also copy the toolkit's libcudart, libcublas and
# libcublasLt into DEST/cuda/, where the module looks first ($ORIGIN/cuda), for machines
# with a driver but no toolkit.
#
# Only ggml's CUDA target is built (with ggml-base, which it links; the bundle's own
# libggml-base, built from the same sources, is the one used at run time): the CPU and
# Vulkan build is not repeated. The build folder is kept (~/.cache/corral/cuda-build) so a
# second run only relinks.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="" src="" nvcc="${CUDACXX:-}" archs="86-real;90-real;90-virtual" runtime=0 print_src=0
while [ $# -gt 0 ]; do
  case "$1" in
    --src) src=$2; shift 2 ;;
    --nvcc) nvcc=$2; shift 2 ;;
    --archs) archs=$2; shift 2 ;;
    --runtime) runtime=1; shift ;;
    --print-src) print_src=1; shift ;;
    -*) echo "cuda-module.sh: unknown option $1" >&2; exit 2 ;;
    *) dest=$1; shift ;;
  esac
done
[ -n "$dest" ] || [ "$print_src" = 1 ] || { echo "usage: scripts/cuda-module.sh DEST [--src DIR] [--nvcc PATH] [--archs LIST] [--runtime]" >&2; exit 2; }
if [ -z "$src" ]; then
  manifest=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "llama-cpp-sys-2":
        print(p["manifest_path"])')
  src="$(dirname "$manifest")/llama.cpp"
fi
[ -f "$src/ggml/CMakeLists.txt" ] || { echo "cuda-module.sh: no ggml sources in $src" >&2; exit 1; }
if [ "$print_src" = 1 ]; then
  echo "$src"
  exit 0
fi
if [ -z "$nvcc" ]; then
  nvcc="$(scripts/cuda-toolkit.sh)/bin/nvcc"
fi
[ -x "$nvcc" ] || { echo "cuda-module.sh: nvcc not found at $nvcc" >&2; exit 1; }
root=$(dirname "$(dirname "$nvcc")")
build="${CORRAL_CUDA_BUILD:-$HOME/.cache/corral/cuda-build}"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
[ -f "$build/CMakeCache.txt" ] && generator=()

# ggml as a subproject of a two-line project: standalone, ggml wants files (ggml.pc.in) the
# crate does not ship.
src=$(cd "$src" && pwd)
wrapper="$build-src"
mkdir -p "$wrapper"
cat >"$wrapper/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.14)
project(corral_cuda_module C CXX)
add_subdirectory("$src/ggml" ggml)
CMAKE
echo "building ggml's CUDA module with $("$nvcc" --version | tail -1) for $archs" >&2
cmake -S "$wrapper" -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_BACKEND_DL=ON -DGGML_CPU=OFF -DGGML_NATIVE=OFF \
  -DGGML_CUDA=ON -DGGML_CUDA_NCCL=OFF \
  -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DCUDAToolkit_ROOT="$root" \
  "-DCMAKE_CUDA_ARCHITECTURES=$archs" \
  '-DCMAKE_INSTALL_RPATH=$ORIGIN/cuda' -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON >&2
cmake --build "$build" --target ggml-cuda --parallel "$(nproc)" >&2
module=$(find "$build" -name libggml-cuda.so -type f | head -1)
[ -n "$module" ] || { echo "cuda-module.sh: the build made no libggml-cuda.so" >&2; exit 1; }
mkdir -p "$dest"
cp "$module" "$dest/libggml-cuda.so.tmp"
mv "$dest/libggml-cuda.so.tmp" "$dest/libggml-cuda.so"
if [ "$runtime" = 1 ]; then
  mkdir -p "$dest/cuda"
  for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13; do
    cp -L "$root/lib64/$lib" "$dest/cuda/$lib"
  done
fi
echo "$dest/libggml-cuda.so"
