#!/usr/bin/env bash
# Corral beside llama-server in one run (bench/versus.py): builds the bundle and llama-server
# (bench/llama-server.sh) first. Arguments go to versus.py (e.g. --runs 5). Run on an
# otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
bundle=$(scripts/build.sh --vulkan | tail -1)
server=$(bench/llama-server.sh | tail -1)
models=$(scripts/fetch-models.sh)
python3 bench/versus.py --corral "$bundle/bin/corral" --llama-server "$server" --models "$models" "$@"
