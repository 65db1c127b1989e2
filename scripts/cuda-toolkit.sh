#!/usr/bin/env bash
# A CUDA 13.0 toolkit from NVIDIA's PyPI wheels, for building ggml's CUDA module without a
# system CUDA. Prints the toolkit's root (use it as CUDAToolkit_ROOT; nvcc is in bin/).
#
#   scripts/cuda-toolkit.sh
#
# The wheels are CUDA 13.0 Update 2 as NVIDIA's `cuda-toolkit==13.0.2` metapackage pins them
# (cuBLAS 13.1.0.3 belongs to that release), so what is built runs on a 580 driver (CUDA
# 13.0): nvcc 13.0 writes PTX 9.0, which that driver can compile. They go into a virtual
# environment (~/.cache/corral/cuda-venv, about 900 MB) with --no-deps, since nvcc's wheel
# names its companions without versions and pip would take 13.5's.
#
# The wheels hold only versioned libraries (libcudart.so.13) under nvidia/cu13/; CMake and
# nvcc want a toolkit folder (bin/, include/, lib64/ with plain .so names), so the root
# (~/.cache/corral/cuda-toolkit) is a folder of links into the wheels, plus a link-time
# stand-in for the driver's libcuda.so, which no wheel ships (ggml links it for its virtual
# memory pool; at run time the real driver's libcuda.so.1 is used, and without a driver the
# module is reported as not loaded).
set -euo pipefail
venv="${CORRAL_CUDA_VENV:-$HOME/.cache/corral/cuda-venv}"
root="${CORRAL_CUDA_TOOLKIT:-$HOME/.cache/corral/cuda-toolkit}"
wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.1.0.3
)
stamp="$root/.wheels"
if [ -x "$root/bin/nvcc" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${wheels[*]}" ]; then
  echo "$root"
  exit 0
fi
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >&2
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps "${wheels[@]}" >&2
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cu="$site/nvidia/cu13"
[ -x "$cu/bin/nvcc" ] || { echo "cuda-toolkit.sh: no nvcc in $cu" >&2; exit 1; }

tmp="$root.tmp"
rm -rf "$tmp"
mkdir -p "$tmp/bin" "$tmp/lib64/stubs"
# nvcc finds its own files relative to the folder it was started from, so bin/ is a real
# folder of links (nvcc.profile included) and the root is this folder.
for f in "$cu"/bin/*; do ln -s "$f" "$tmp/bin/"; done
ln -s "$cu/include" "$tmp/include"
ln -s "$cu/nvvm" "$tmp/nvvm"
for f in "$cu"/lib/*; do ln -s "$f" "$tmp/lib64/"; done
for so in "$cu"/lib/lib*.so.*; do
  b=$(basename "$so")
  ln -sfn "$b" "$tmp/lib64/${b%%.so.*}.so"
done
ln -s lib64 "$tmp/lib"
# The driver's entry points ggml links, for the linker only (named libcuda.so so it can never
# stand in for libcuda.so.1 at run time).
cat >"$tmp/lib64/stubs/cuda_stub.c" <<'C'
typedef int CUresult;
#define S(f) CUresult f(void) { return 999; }
S(cuInit) S(cuDriverGetVersion) S(cuGetProcAddress) S(cuGetErrorString) S(cuDeviceGet)
S(cuDeviceGetAttribute) S(cuMemGetAllocationGranularity) S(cuMemAddressReserve)
S(cuMemAddressFree) S(cuMemCreate) S(cuMemRelease) S(cuMemMap) S(cuMemUnmap) S(cuMemSetAccess)
C
"${CC:-cc}" -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$tmp/lib64/stubs/libcuda.so" \
  "$tmp/lib64/stubs/cuda_stub.c"
echo "${wheels[*]}" >"$tmp/.wheels"
"$tmp/bin/nvcc" --version >&2
rm -rf "$root"
mv "$tmp" "$root"
echo "$root"
