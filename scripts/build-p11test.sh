#!/usr/bin/env bash
# Builds OpenSC's p11test (a PKCS#11 conformance program, LGPL-2.1) from Debian's `opensc` source
# package, once: the binary is cached as target/p11test/p11test (rebuilt only when the source
# version changes), with one local fix (a NULL dereference, see below). Nothing of OpenSC is
# installed or committed.
#   bash scripts/build-p11test.sh        # prints the binary's path on its last line
# Needs (scripts/install-deps.sh installs them): dpkg-dev, autoconf, automake, libtool,
# pkg-config, libssl-dev, libpcsclite-dev, zlib1g-dev, libreadline-dev, libcmocka-dev.
# Enables a deb-src entry for the configured Debian archive if there is none (root/sudo).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${P11TEST_DIR:-$root/target/p11test}
mkdir -p "$out"
# One build at a time (tests that need p11test may start it at once); the next one finds it built.
exec 8>"$out.lock"
flock 8
bin=$out/p11test
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

have_deb_src() {
  grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/
}
if ! have_deb_src; then
  # deb822 (Debian 12 default): the first stanza of the first .sources file with Types deb-src;
  # else the first "deb" line of sources.list as "deb-src". No archive address is written here.
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  # The stanza whose Suites list the release itself (not -backports / -security).
  stanza=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v c="$codename" '
    BEGIN { RS = ""; ORS = "\n" }
    { n = split($0, l, "\n"); for (i = 1; i <= n; i++) if (l[i] ~ /^Suites:/) {
        m = split(l[i], w, /[ \t]+/); for (j = 2; j <= m; j++) if (w[j] == c) { print; exit } } }')
  if [ -n "$stanza" ]; then
    printf '%s\n' "$stanza" | sed -e 's/^Types:.*/Types: deb-src/' -e "s/^Suites:.*/Suites: $codename/" \
      | "${sudo[@]}" tee /etc/apt/sources.list.d/deb-src.sources >/dev/null
  else
    line=$(awk '$1 == "deb" { $1 = "deb-src"; print; exit }' /etc/apt/sources.list)
    [ -n "$line" ] || { echo "build-p11test: no Debian archive configured in apt" >&2; exit 1; }
    echo "$line" | "${sudo[@]}" tee /etc/apt/sources.list.d/deb-src.list >/dev/null
  fi
  echo "build-p11test: added a deb-src entry; apt-get update"
  "${sudo[@]}" apt-get update -qq
fi

srcversion() { apt-cache showsrc opensc 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -n 1; }
version=$(srcversion)
if [ -z "$version" ]; then
  "${sudo[@]}" apt-get update -qq
  version=$(srcversion)
fi
[ -n "$version" ] || { echo "build-p11test: apt knows no source package opensc (deb-src entry?)" >&2; exit 1; }
# The cache key names the local fix below too, so a binary built without it is rebuilt.
build_id="$version+unavailable-value-len"
if [ -x "$bin" ] && [ "$(cat "$out/version" 2>/dev/null)" = "$build_id" ]; then
  echo "build-p11test: cached p11test from opensc $version"
  echo "$bin"
  exit 0
fi

echo "build-p11test: building p11test from Debian's opensc $version source package"
work=$out/src
rm -rf "$work"
mkdir -p "$work"
cd "$work"
apt-get source -qq "opensc=$version" >/dev/null 2>&1 || apt-get source -qq "opensc=$version"
dir=$(find . -maxdepth 1 -type d -name 'opensc-*' | head -n 1)
cd "$dir"
# One fix to p11test 0.23 itself: it reads a secret key's CKA_VALUE_LEN as
# `ulValueLen > 0 ? *(CK_ULONG *)pValue : 0`, so a module that answers CK_UNAVAILABLE_INFORMATION
# (the length cannot be revealed, as for the card's PSKs) makes it dereference a NULL pValue and
# crash in every test. The fix reads the length only when the module gave one; nothing else of
# p11test changes.
common=src/tests/p11test/p11test_case_common.c
sed -i 's|o->bits = template\[11\]\.ulValueLen > 0 ?|o->bits = (template[11].ulValueLen != (CK_ULONG) -1 \&\& template[11].ulValueLen > 0) ?|' "$common"
grep -q 'template\[11\]\.ulValueLen != (CK_ULONG) -1' "$common" \
  || { echo "build-p11test: the CKA_VALUE_LEN fix did not apply to $common" >&2; exit 1; }
log=$out/build.log
{
  ./bootstrap
  ./configure --disable-doc --disable-man --disable-notify --disable-openpace --enable-cmocka
  make -C src/common -j"$(nproc)"
  make -C src/tests/p11test -j"$(nproc)"
} >"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "build-p11test: build failed (log: $log)" >&2; exit 1; }
# libtool may leave a wrapper script in src/tests/p11test and the binary in .libs.
real=src/tests/p11test/p11test
[ -x src/tests/p11test/.libs/p11test ] && real=src/tests/p11test/.libs/p11test
cp "$real" "$bin"
echo "$build_id" > "$out/version"
rm -rf "$work"
echo "build-p11test: built $bin"
echo "$bin"
