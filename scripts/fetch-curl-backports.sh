#!/usr/bin/env bash
# Unpacks curl from bookworm-backports (8.x: OpenSSL provider keys, `--key-type PROV`) beside
# the system's curl 7.88 (which stays installed for the libp11 engine test): the .debs come
# from apt (`apt-get download`) and are extracted, not installed, into target/curl-backports/.
#   bash scripts/fetch-curl-backports.sh   # prints "<curl binary> <its library dir>" last
# Run it as: LD_LIBRARY_PATH=<library dir> <curl binary> ...
# Needs the backports suite in apt (scripts/apt-backports.sh, which install-deps.sh runs).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${CURL_BACKPORTS_DIR:-$root/target/curl-backports}
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
suite=${codename}-backports
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)

candidate() { apt-cache madison "$1" 2>/dev/null | awk -v s="$suite" '$0 ~ s"/" { print $3; exit }'; }
version=$(candidate curl)
if [ -z "$version" ]; then
  sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  if [ -x "$root/../shared/tools/apt-backports" ]; then "${sudo[@]}" "$root/../shared/tools/apt-backports"
  else "${sudo[@]}" sh "$root/scripts/apt-backports.sh"; fi
  version=$(candidate curl)
fi
[ -n "$version" ] || { echo "fetch-curl-backports: no curl in $suite" >&2; exit 1; }
bin=$out/root/usr/bin/curl
lib=$out/root/usr/lib/$multiarch
if [ -x "$bin" ] && [ "$(cat "$out/version" 2>/dev/null)" = "$version" ]; then
  echo "fetch-curl-backports: cached curl $version"
  echo "$bin $lib"
  exit 0
fi
rm -rf "$out"
mkdir -p "$out/debs" "$out/root"
(cd "$out/debs" && apt-get download -qq "curl=$version" "libcurl4=$version")
for d in "$out"/debs/*.deb; do dpkg-deb -x "$d" "$out/root"; done
LD_LIBRARY_PATH=$lib "$bin" --version | head -n 1
echo "$version" > "$out/version"
echo "$bin $lib"
