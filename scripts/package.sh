#!/usr/bin/env bash
# Builds the Debian packages into target/debian/ and checks them with lintian:
#   iotsafe-pkcs11_<version>_<arch>.deb   the module (p11-kit's module directory), its p11-kit
#                                         registration, the field diagnosis command
#                                         (/usr/bin/iotsafe-pkcs11 doctor), the header,
#                                         /etc/iotsafe-pkcs11/config.toml
#                                         (a conffile), the polkit rule for the group "iotsafe",
#                                         the docs and an example udev rule for ModemManager
#   iotsafe-sim_<version>_<arch>.deb      the card simulator (/usr/bin/iotsafe-sim)
# The version is the module's in Cargo.toml. Usage: bash scripts/package.sh [--no-build]
# (--no-build: package what target/release holds). Needs dpkg-dev, lintian and help2man
# (scripts/install-deps.sh installs them).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=1
case ${1:-} in
  --no-build) build=0 ;;
  "") ;;
  *) echo "package: unknown argument $1" >&2; exit 2 ;;
esac

version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
out=$root/target/debian
[ -n "$version" ] || { echo "package: no version in Cargo.toml" >&2; exit 1; }

if [ "$build" = 1 ]; then
  cargo build --release --workspace --locked
fi
for f in target/release/libiotsafe_pkcs11.so target/release/iotsafe-pkcs11 target/release/iotsafe-sim; do
  [ -f "$f" ] || { echo "package: $f missing (cargo build --release --workspace)" >&2; exit 1; }
done

rm -rf "$out"
mkdir -p "$out"
# Debian's changelog for a native package: one entry for this version, dated by the last commit.
changelog() {
  local date
  date=$(git log -1 --format=%cD 2>/dev/null || date -R)
  printf '%s (%s) unstable; urgency=medium\n\n  * Release %s (git %s).\n\n -- %s  %s\n' \
    "$1" "$version" "$version" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "iotsafe-pkcs11 developers <iotsafe-pkcs11@users.noreply.github.com>" "$date"
}

# `shlibs:Depends` of the ELF files given, from dpkg-shlibdeps (it wants a debian/control).
shlib_depends() {
  local work
  work=$(mktemp -d)
  mkdir "$work/debian"
  printf 'Source: iotsafe-pkcs11\n\nPackage: iotsafe-pkcs11\nArchitecture: any\n' > "$work/debian/control"
  local files=()
  for f in "$@"; do files+=("$(realpath "$f")"); done
  (cd "$work" && dpkg-shlibdeps -O "${files[@]}" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
  rm -rf "$work"
}

# Finishes the staged tree of package $1 (control template $2) and builds the .deb.
build_deb() {
  local name=$1 template=$2 stage=$3
  shift 3
  local doc=$stage/usr/share/doc/$name
  install -D -m 0644 packaging/debian/copyright "$doc/copyright"
  changelog "$name" | gzip -9n > "$doc/changelog.gz"
  chmod 0644 "$doc/changelog.gz"
  local depends size
  depends=$(shlib_depends "$@")
  size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  mkdir -p "$stage/DEBIAN"
  sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
      -e "s/@DEPENDS@/$depends/" "$template" > "$stage/DEBIAN/control"
  (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort \
     | xargs md5sum > DEBIAN/md5sums)
  chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"
  dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/${name}_${version}_${arch}.deb" >/dev/null
  echo "package: $out/${name}_${version}_${arch}.deb (Depends: $depends)"
}

# A manual page from the program's --help (help2man), gzipped: manual PROGRAM NAME PAGE
# [SUBCOMMAND...] (each subcommand's --help becomes a section of its own).
manual() {
  local program=$1 name=$2 page=$3 include
  shift 3
  include=$(mktemp)
  for sub in "$@"; do
    printf '[%s]\n.nf\n' "$(echo "$sub" | tr '[:lower:]' '[:upper:]')"
    "$program" "$sub" --help | sed 's/^\./\\\&./'
    printf '.fi\n'
  done > "$include"
  local sections=()
  [ ! -s "$include" ] || sections=(--include "$include")
  mkdir -p "$(dirname "$page")"
  LC_ALL=C.UTF-8 help2man --no-info --no-discard-stderr --name "$name" "${sections[@]}" \
    --output "$page" "$program"
  rm -f "$include"
  gzip -9n "$page"
  chmod 0644 "$page.gz"
}

strip_into() {
  install -D -m "$3" "$1" "$2"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$2"
}

# The module.
stage=$out/stage/iotsafe-pkcs11
so=$stage/usr/lib/$multiarch/pkcs11/libiotsafe_pkcs11.so
strip_into target/release/libiotsafe_pkcs11.so "$so" 0644
bin=$stage/usr/bin/iotsafe-pkcs11
strip_into target/release/iotsafe-pkcs11 "$bin" 0755
manual "$bin" "field tools for the iotsafe-pkcs11 module (doctor: why there is no token)" \
  "$stage/usr/share/man/man1/iotsafe-pkcs11.1" doctor
install -D -m 0644 packaging/iotsafe-pkcs11.module "$stage/usr/share/p11-kit/modules/iotsafe-pkcs11.module"
install -D -m 0644 include/iotsafe_pkcs11.h "$stage/usr/include/iotsafe_pkcs11.h"
install -D -m 0644 packaging/config.toml "$stage/etc/iotsafe-pkcs11/config.toml"
install -D -m 0644 packaging/polkit/60-iotsafe-pkcs11.rules "$stage/usr/share/polkit-1/rules.d/60-iotsafe-pkcs11.rules"
doc=$stage/usr/share/doc/iotsafe-pkcs11
for f in README.md docs/configuration.md docs/modems.md docs/usage.md docs/design.md; do
  install -D -m 0644 "$f" "$doc/$(basename "$f")"
done
install -D -m 0644 packaging/udev/78-iotsafe-pkcs11-modem.rules "$doc/examples/78-iotsafe-pkcs11-modem.rules"
install -D -m 0755 packaging/debian/iotsafe-pkcs11.postinst "$stage/DEBIAN/postinst"
install -D -m 0755 packaging/debian/iotsafe-pkcs11.postrm "$stage/DEBIAN/postrm"
echo /etc/iotsafe-pkcs11/config.toml > "$stage/DEBIAN/conffiles"
chmod 0644 "$stage/DEBIAN/conffiles"
build_deb iotsafe-pkcs11 packaging/debian/iotsafe-pkcs11.control "$stage" "$so" "$bin"

# The simulator.
stage=$out/stage/iotsafe-sim
strip_into target/release/iotsafe-sim "$stage/usr/bin/iotsafe-sim" 0755
manual target/release/iotsafe-sim "simulated GSMA IoT SAFE card" \
  "$stage/usr/share/man/man1/iotsafe-sim.1"
for f in sim/README.md sim/docs/*.md; do
  install -D -m 0644 "$f" "$stage/usr/share/doc/iotsafe-sim/$(basename "$f")"
done
build_deb iotsafe-sim packaging/debian/iotsafe-sim.control "$stage" "$stage/usr/bin/iotsafe-sim"

rm -rf "$out/stage"
# Errors fail the build; warnings and informational tags are printed.
lintian --fail-on error --tag-display-limit 0 "$out"/*.deb
echo "package: lintian found no errors"
