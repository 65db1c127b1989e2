#!/usr/bin/env bash
# Vulkan headers new enough for llama.cpp's Vulkan backend, into a cache folder, once.
#
# Debian 12's libvulkan-dev (1.3.239) is older than ggml-vulkan needs; Debian 13's (1.4.x) and
# its spirv-headers are downloaded as .deb files with apt, through a private sources list and
# state folder (the system's apt set-up is not touched), and unpacked with dpkg -x. The mirror
# is the one the system's own sources name. Prints the cache folder (its usr/include and
# usr/share/cmake/SPIRV-Headers are what CMake needs).
set -euo pipefail
cache="${CORRAL_VULKAN_SDK:-$HOME/.cache/corral/vulkan-sdk}"
if [ -f "$cache/.complete" ]; then
  echo "$cache"
  exit 0
fi
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '/^URIs:/ {print $2; exit}' "$f")
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^(http|https|file):/) {print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "vulkan-sdk.sh: no Debian mirror found in the system's apt sources" >&2; exit 1; }
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
cat >"$work/sources.list" <<EOF
deb [signed-by=$keyring] $mirror trixie main
EOF
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
      -o "APT::Architecture=$(dpkg --print-architecture)" -o "Debug::NoLocking=1")
apt-get "${opts[@]}" update -qq >&2
(cd "$work/debs" && apt-get "${opts[@]}" download libvulkan-dev spirv-headers >&2)
rm -rf "$cache.tmp"
mkdir -p "$cache.tmp"
for deb in "$work"/debs/*.deb; do
  dpkg -x "$deb" "$cache.tmp"
done
# CMake's FindVulkan looks for the loader in $VULKAN_SDK/lib: point it at the system's
# (Debian 12's libvulkan1; the loader's ABI is stable, the headers are what must be new).
loader=$(dpkg -L libvulkan1 2>/dev/null | grep "/libvulkan.so.1$" | head -1)
[ -n "$loader" ] || { echo "vulkan-sdk.sh: the Vulkan loader (libvulkan1) is not installed" >&2; exit 1; }
mkdir -p "$cache.tmp/usr/lib"
ln -sf "$loader" "$cache.tmp/usr/lib/libvulkan.so"
test -f "$cache.tmp/usr/include/vulkan/vulkan.hpp"
test -d "$cache.tmp/usr/share/cmake/SPIRV-Headers"
touch "$cache.tmp/.complete"
rm -rf "$cache"
mv "$cache.tmp" "$cache"
echo "$cache"
