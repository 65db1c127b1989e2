#!/usr/bin/env bash
# The main job, from a fresh clone: build, fetch the demo model, import it, ask it a question.
#
#   scripts/demo.sh ["your question"]
#
# It starts its own server on a free loopback port with a throwaway model store, and stops it
# (and its runner) on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "building corral (release; the first build compiles llama.cpp and takes several minutes)" >&2
# The same bundle as the test command's (CPU variants and the Vulkan module): one build serves
# both, and the Vulkan module is simply not loaded where there is no Vulkan driver.
bundle=$(scripts/build.sh --vulkan | tail -1)
corral="$bundle/bin/corral"
models=$(scripts/fetch-models.sh smol)

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CORRAL_HOST="127.0.0.1:$port" CORRAL_MODELS="$work/models"
"$corral" serve 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do "$corral" list >/dev/null 2>&1 && break; sleep 0.1; done

cp "$models/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/"
cat >"$work/Modelfile" <<MODELFILE
FROM ./SmolLM2-135M-Instruct.Q4_1.gguf
PARAMETER temperature 0
SYSTEM Answer in one short sentence.
MODELFILE
"$corral" create smol -f "$work/Modelfile"
"$corral" run smol "${1:-What is the capital of France?}" --verbose
