#!/usr/bin/env bash
# Build Corral as a portable bundle and print the bundle's folder as the last line.
#
#   scripts/build.sh [--vulkan] [--cuda]
#
# The bundle: bin/corral, and lib/corral/ with libllama, libggml, libggml-base and every
# backend module (a CPU build per instruction-set level, ggml picks the best at run time;
# Vulkan and CUDA when asked for). bin/corral finds lib/corral through its rpath
# ($ORIGIN/../lib/corral); CORRAL_LIB_DIR points it elsewhere. The Rust code is built for
# baseline x86-64 (no target-cpu=native), so the bundle runs on any x86-64 CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
features=()
name=cpu
cuda=0
for arg in "$@"; do
  case "$arg" in
    --vulkan) features+=(corral/vulkan); name="$name-vulkan" ;;
    --cuda) cuda=1; name="$name-cuda" ;;
    *) echo "build.sh: unknown option $arg (use --vulkan, --cuda)" >&2; exit 2 ;;
  esac
done
# The Vulkan module needs Debian's shader compiler and the Vulkan loader.
case " ${features[*]} " in
  *" corral/vulkan "*) CORRAL_SETUP_EXTRA="${CORRAL_SETUP_EXTRA:-} glslc libvulkan1" ;;
esac
# shellcheck source=setup.sh
source scripts/setup.sh
for f in "${features[@]}"; do
  if [ "$f" = corral/vulkan ]; then
    # Headers newer than Debian 12's, fetched once (scripts/vulkan-sdk.sh); glslc from Debian.
    sdk=$(scripts/vulkan-sdk.sh)
    export VULKAN_SDK="$sdk/usr" CMAKE_PREFIX_PATH="$sdk/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  fi
done
feature_args=()
[ ${#features[@]} -gt 0 ] && feature_args=(--features "$(IFS=,; echo "${features[*]}")")

# llama-cpp-sys-2 hard-links its libraries into the target folder as dangling symlinks and
# fails on the next configuration with "File exists": clear those first.
find "$CARGO_TARGET_DIR/release" -maxdepth 2 -xtype l -name 'lib*.so' -delete 2>/dev/null || true

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo build --release --locked -p corral "${feature_args[@]}" --message-format=json-render-diagnostics >"$log"
# The llama.cpp build this binary links: the sys crate's OUT_DIR, from cargo's own report.
out_dir=$(python3 - "$log" <<'EOF'
import json, sys
out = ""
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "build-script-executed" and m.get("package_id", "").find("llama-cpp-sys-2") >= 0:
        out = m["out_dir"]
print(out)
EOF
)
[ -n "$out_dir" ] && [ -d "$out_dir/backends" ] || { echo "build.sh: llama.cpp's build folder not found" >&2; exit 1; }

bundle="$CARGO_TARGET_DIR/bundle/corral-$name"
rm -rf "$bundle.tmp"
mkdir -p "$bundle.tmp/bin" "$bundle.tmp/lib/corral"
cp "$CARGO_TARGET_DIR/release/corral" "$bundle.tmp/bin/"
libdir="$out_dir/lib"
[ -d "$libdir" ] || libdir="$out_dir/lib64"
cp -a "$libdir"/lib*.so* "$bundle.tmp/lib/corral/"
cp -a "$out_dir"/backends/*.so "$bundle.tmp/lib/corral/"
# The unversioned names are for linking only.
find "$bundle.tmp/lib/corral" -maxdepth 1 -type l -name 'lib*.so' ! -name 'libggml-*' -delete
find "$bundle.tmp/lib/corral" -maxdepth 1 -type l -name 'libggml.so' -delete
find "$bundle.tmp/lib/corral" -maxdepth 1 -type l -name 'libggml-base.so' -delete
# The CUDA module is built on its own from the same ggml sources (scripts/cuda-module.sh, with
# the CUDA 13.0 toolkit from PyPI unless CUDACXX names another nvcc), so asking for it does not
# rebuild llama.cpp; its CUDA runtime libraries go beside it in lib/corral/cuda/.
if [ "$cuda" = 1 ]; then
  scripts/cuda-module.sh "$bundle.tmp/lib/corral" --runtime >&2
fi
rm -rf "$bundle"
mv "$bundle.tmp" "$bundle"
echo "$bundle"
