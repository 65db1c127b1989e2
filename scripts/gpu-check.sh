#!/usr/bin/env bash
# The device matrix on a real NVIDIA GPU, as one command for a lent machine (an H200 here:
# no Rust, no network, nvcc and CMake present). Writes a report of every case.
#
# Here (the build machine), once:
#   scripts/gpu-check.sh --prepare
# makes .gpucheck/ (git-ignored) in three parts, each under the 64 MiB a device call carries:
#   .gpucheck/a, .gpucheck/b  the SmolLM2 test model, cut in two halves;
#   .gpucheck/c               the portable CPU bundle (stripped, as bundle.tar.xz), the CUDA
#                             module built here for the H200 alone (sm_90, xz-compressed) and
#                             ggml's sources.
# Then three device calls one after another (the machine keeps what earlier calls carried):
#   carry [.gpucheck/a] `true`;  carry [.gpucheck/b] `true`;
#   carry [.gpucheck/c] `scripts/gpu-check.sh` (timeout 600 s)
# There the script puts the carried CUDA module into the bundle. Only if that module does not
# load on a machine with a GPU (another compute capability, a driver it does not run on) does
# it build the module from the carried sources with the machine's nvcc, for the GPU it finds
# (minutes on 16 cores). Then it runs the matrix and writes $OUT/gpu-check.md (else
# ./gpu-check.md).
#
# CORRAL_BUNDLE names a bundle already built (else scripts/build.sh --vulkan makes it).
# The sm_90 module is built once with the PyPI toolkit (scripts/cuda-module.sh; about an
# hour on 2 cores, kept in ~/.cache/corral/cuda-module-sm90). It also runs here, without a
# GPU: the CUDA module is then reported as not loaded, and every case must still answer to
# the end on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=.gpucheck

if [ "${1:-}" = "--prepare" ]; then
  bundle=${CORRAL_BUNDLE:-$(scripts/build.sh --vulkan | tail -1)}
  model=$(scripts/fetch-models.sh)/SmolLM2-135M-Instruct.Q4_1.gguf
  src=$(scripts/cuda-module.sh --print-src)
  grep -qx '/.gpucheck/' .git/info/exclude 2>/dev/null || echo '/.gpucheck/' >>.git/info/exclude
  rm -rf "$work"
  mkdir -p "$work/a" "$work/b" "$work/c/llama.cpp"
  half=$(( ($(stat -c %s "$model") + 1) / 2 ))
  head -c "$half" "$model" >"$work/a/smol.part1"
  tail -c +$((half + 1)) "$model" >"$work/b/smol.part2"
  sha256sum "$model" | cut -d' ' -f1 >"$work/c/smol.sha256"
  cp -a "$bundle" "$work/bundle"
  strip --strip-unneeded "$work/bundle/bin/corral" "$work/bundle/lib/corral/"*.so* 2>/dev/null || true
  rm -f "$work/bundle/lib/corral/libggml-vulkan.so"
  tar -C "$work" -cf - bundle | xz -T0 -6 >"$work/c/bundle.tar.xz"
  rm -rf "$work/bundle"
  # The H200's module, built here: no build on the device unless it fails to load there.
  h200="$HOME/.cache/corral/cuda-module-sm90"
  [ -f "$h200/libggml-cuda.so" ] ||
    CORRAL_CUDA_BUILD="$HOME/.cache/corral/cuda-build-sm90" scripts/cuda-module.sh "$h200" --archs 90-real >&2
  xz -T0 -6 -c "$h200/libggml-cuda.so" >"$work/c/libggml-cuda.so.xz"
  "$(scripts/cuda-toolkit.sh)/bin/nvcc" --version | tail -1 >"$work/c/libggml-cuda.nvcc"
  # ggml's sources for the CUDA module: its CMake files, headers, base and CUDA backend.
  (cd "$src" && tar cf - ggml/CMakeLists.txt ggml/cmake ggml/include ggml/src/*.c ggml/src/*.cpp ggml/src/*.in \
     ggml/src/*.h ggml/src/CMakeLists.txt ggml/src/ggml-cuda ggml/src/ggml-cpu/CMakeLists.txt) |
    tar xf - -C "$work/c/llama.cpp"
  du -sh "$work"/*
  for part in "$work"/*; do
    size=$(du -sb "$part" | cut -f1)
    [ "$size" -lt $((64 << 20)) ] || { echo "gpu-check.sh: $part is $size bytes, over the 64 MiB a device call carries" >&2; exit 1; }
  done
  exit 0
fi

out="${OUT:-$root}"
report="$out/gpu-check.md"
tmp=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
log() { echo "$*" | tee -a "$report"; }
: >"$report"

# The bundle and the model: carried (.gpucheck), else built here.
if [ -f "$work/c/bundle.tar.xz" ]; then
  # Python's tarfile reads xz without the xz tool, which a bare machine may lack.
  python3 -c 'import sys, tarfile
safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
tarfile.open(sys.argv[1]).extractall(sys.argv[2], **safe)' \
    "$work/c/bundle.tar.xz" "$tmp"
  cat "$work/a/smol.part1" "$work/b/smol.part2" >"$tmp/smol.gguf"
  echo "$(cat "$work/c/smol.sha256")  $tmp/smol.gguf" | sha256sum --check --status ||
    { log "the model's halves do not join into the test model (sha256 differs)"; exit 1; }
  src="$work/c/llama.cpp"
else
  cp -a "${CORRAL_BUNDLE:-$(scripts/build.sh --vulkan | tail -1)}" "$tmp/bundle"
  cp "$(scripts/fetch-models.sh)/SmolLM2-135M-Instruct.Q4_1.gguf" "$tmp/smol.gguf"
  src=""
fi
corral="$tmp/bundle/bin/corral"

log "# Corral GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
log ""
gpu_name=$(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -1 || true)
log "GPU: ${gpu_name:-none found (nvidia-smi missing or no device)}"

# The CUDA module: the one carried (built for sm_90), else or if it does not load on this
# machine's GPU, one built here for the compute capability present.
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
cuda_lib=$( [ -n "$nvcc" ] && echo "$(dirname "$(dirname "$nvcc")")/lib64" || echo /usr/local/cuda/lib64)
[ -d "$cuda_lib" ] && export LD_LIBRARY_PATH="$cuda_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# cuda_state: "loaded", or the report's note on why the module is not loaded.
cuda_state() {
  "$corral" devices --json 2>/dev/null | python3 -c '
import json, sys
for m in json.load(sys.stdin)["modules"]["modules"]:
    if m["file"] == "libggml-cuda.so":
        print("loaded" if m["loaded"] else m.get("note") or "not loaded"); break
else:
    print("no module")' 2>/dev/null || echo "no report"
}
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d . || true)
carried="$work/c/libggml-cuda.so.xz" installed=0
# The carried module has sm_90 code only: a GPU of another compute capability would load it
# and then find no kernel for itself.
if [ -f "$carried" ] && { [ -z "$cap" ] || [ "$cap" = 90 ]; }; then
  # Python's lzma, as for the bundle: a bare machine may lack the xz tool.
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' \
    "$carried" >"$tmp/bundle/lib/corral/libggml-cuda.so"
  installed=1
  log "CUDA module: carried, built with $(cat "$work/c/libggml-cuda.nvcc" 2>/dev/null) for sm_90: $(cuda_state)"
fi
state=$(cuda_state)
if [ "$state" != loaded ] && [ -n "$nvcc" ] && [ -n "$gpu_name" ]; then
  archs=${cap:+${cap}-real}
  started=$(date +%s)
  if scripts/cuda-module.sh "$tmp/bundle/lib/corral" ${src:+--src "$src"} --nvcc "$nvcc" \
       ${archs:+--archs "$archs"} >"$tmp/cuda-build.log" 2>&1; then
    log "CUDA module: built with $("$nvcc" --version | tail -1) for ${archs:-the default list} in $(( $(date +%s) - started )) s: $(cuda_state)"
  else
    log "CUDA module: build failed; the end of its log:"
    tail -n 30 "$tmp/cuda-build.log" | sed 's/^/    /' | tee -a "$report"
  fi
elif [ "$state" != loaded ] && [ "$installed" = 0 ]; then
  log "CUDA module: not built here (${nvcc:+no GPU found}${nvcc:-no nvcc on this machine}): $state"
fi
uuid=$(nvidia-smi -L 2>/dev/null | sed -n 's/.*(UUID: \(GPU-[^)]*\)).*/\1/p' | head -1 || true)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CORRAL_HOST="127.0.0.1:$port"

start_server() { # env assignments...
  env "$@" CORRAL_MODELS="$tmp/models" "$corral" serve >>"$tmp/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    curl -sf "http://$CORRAL_HOST/" >/dev/null && return 0
    sleep 0.1
  done
  log "the server did not start"; tail -n 20 "$tmp/server.log" | tee -a "$report"; return 1
}
stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  if pgrep -f "$tmp/bundle/bin/corral runner" >/dev/null; then
    log "    LEFT BEHIND: $(pgrep -af "$tmp/bundle/bin/corral runner")"
  fi
}

printf 'FROM %s\n' "$tmp/smol.gguf" >"$tmp/Modelfile"
start_server
"$corral" create smol -f "$tmp/Modelfile" >/dev/null 2>&1
stop_server

# answer NAME OPTIONS_JSON: 64 greedy tokens; one line of the report.
answer() {
  local name=$1 options=$2
  local body
  body=$(curl -s -m 120 "http://$CORRAL_HOST/api/generate" -d "{\"model\":\"smol\",\"prompt\":\"Write a short story about a lighthouse.\",\"stream\":false,\"options\":$options}" || true)
  local ps
  ps=$(curl -s "http://$CORRAL_HOST/api/ps" || true)
  python3 - "$name" "$body" "$ps" <<'PY' | tee -a "$report"
import json, sys
name, body, ps = sys.argv[1:4]
try:
    b = json.loads(body)
except ValueError:
    print(f"| {name} | no answer: {body[:200]!r} | | | |"); sys.exit()
if "error" in b:
    print(f"| {name} | error: {b['error']} | | | |"); sys.exit()
rate = b.get("eval_count", 0) / max(b.get("eval_duration", 1), 1) * 1e9
m = (json.loads(ps).get("models") or [{}])[0] if ps else {}
size, vram = m.get("size", 0), m.get("size_vram", 0)
where = "100% CPU" if vram == 0 else ("100% GPU" if vram >= size else f"{100-round(vram/size*100)}%/{round(vram/size*100)}% CPU/GPU")
done = "done" if b.get("done") else "NOT DONE"
print(f"| {name} | {done} ({b.get('done_reason')}), {b.get('eval_count')} tokens | {rate:.1f} tok/s | {where} | {m.get('warning','') or ''} | {b.get('response','')[:40]!r} |")
PY
}

log ""
log "| case | answer | decode | PROCESSOR | fall-back | first words |"
log "|---|---|---|---|---|---|"
greedy='{"temperature":0,"num_predict":64,"seed":1}'
run_case() { # name options env...
  local name=$1 options=$2; shift 2
  start_server "$@" || return 0
  answer "$name" "$options"
  stop_server
}
run_case "CUDA_VISIBLE_DEVICES unset" "$greedy" -u CUDA_VISIBLE_DEVICES
run_case 'CUDA_VISIBLE_DEVICES=""' "$greedy" CUDA_VISIBLE_DEVICES=
run_case "CUDA_VISIBLE_DEVICES=-1" "$greedy" CUDA_VISIBLE_DEVICES=-1
run_case "CUDA_VISIBLE_DEVICES=0" "$greedy" CUDA_VISIBLE_DEVICES=0
[ -n "$uuid" ] && run_case "CUDA_VISIBLE_DEVICES=$uuid" "$greedy" CUDA_VISIBLE_DEVICES="$uuid"
run_case "CUDA_VISIBLE_DEVICES=abc" "$greedy" CUDA_VISIBLE_DEVICES=abc
run_case "num_gpu 0 (device visible)" '{"temperature":0,"num_predict":64,"seed":1,"num_gpu":0}' -u CUDA_VISIBLE_DEVICES
run_case "CORRAL_DEVICE=cpu" "$greedy" CORRAL_DEVICE=cpu
run_case "num_gpu 10 (split)" '{"temperature":0,"num_predict":64,"seed":1,"num_gpu":10}' -u CUDA_VISIBLE_DEVICES

log ""
log "Devices as corral reports them (CUDA_VISIBLE_DEVICES unset):"
"$corral" devices 2>&1 | sed 's/^/    /' | tee -a "$report"
log ""
log "Runner processes left after the last stop: $(pgrep -fc "$tmp/bundle/bin/corral runner" || true)"
