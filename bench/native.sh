#!/usr/bin/env bash
# The native reference for bench/portable.py: a commit (default HEAD) built the way Corral
# was built before the portable bundle, with one static llama.cpp and everything compiled
# for this CPU (target-cpu=native, so ggml gets GGML_NATIVE). Prints the binary's path last.
#
#   bench/native.sh [REV]
#
# It builds in a throwaway worktree (~/.cache/corral/native-src) with its own build folder
# (~/.cache/corral/native-target; about 15 minutes the first time on 2 cores), changed in
# three places that are never committed:
# - llama-cpp-2 without `dynamic-backends`;
# - `target-cpu=native` in .cargo/config.toml;
# - the module loader accepting the statically linked CPU backend.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$(git rev-parse "${1:-HEAD}")
wt=${CORRAL_NATIVE_WORKTREE:-$HOME/.cache/corral/native-src}
target=${CORRAL_NATIVE_TARGET:-$HOME/.cache/corral/native-target}
if [ -d "$wt/.git" ] || [ -f "$wt/.git" ]; then
  git -C "$wt" checkout -q -f --detach "$rev"
else
  git worktree add -f --detach "$wt" "$rev" >&2
fi
cd "$wt"
engine=crates/corral-engine/Cargo.toml
grep -q 'features = \["dynamic-backends"\]' "$engine" ||
  { echo "native.sh: $engine at $rev has no dynamic-backends feature to drop" >&2; exit 1; }
sed -i 's/llama-cpp-2 = { workspace = true, features = \["dynamic-backends"\] }/llama-cpp-2 = { workspace = true }/' "$engine"
printf '\n[build]\nrustflags = ["-C", "target-cpu=native"]\n' >>.cargo/config.toml
python3 - <<'EOF'
p = "crates/corral-engine/src/modules.rs"
s = open(p).read()
head = "fn load_now() -> Result<(PathBuf, String), String> {\n"
assert head in s, "native.sh: modules.rs has no load_now to patch"
s = s.replace(head, head + '''    if registered_backends().iter().any(|(n, _)| n == "cpu") {
        return Ok((PathBuf::from("/static"), "static build (benchmark reference)".into()));
    }
''', 1)
open(p, "w").write(s)
EOF
CARGO_TARGET_DIR=$target cargo build --release --locked -p corral >&2
echo "$target/release/corral"
