#!/usr/bin/env bash
# Installs the module system-wide, where PKCS#11 consumers look for it, and registers it with
# p11-kit; --uninstall removes exactly those files again.
#   bash scripts/install.sh                 # after `cargo build --release`
#   bash scripts/install.sh --uninstall
# Options: --module PATH (default target/release/libiotsafe_pkcs11.so), --destdir DIR (stage
# under DIR instead of /, for packaging and tests). Root (or sudo) for the real system dirs.
# Files:
#   /usr/lib/<multiarch>/pkcs11/libiotsafe_pkcs11.so      the module (p11-kit's module dir)
#   /usr/share/p11-kit/modules/iotsafe-pkcs11.module      p11-kit registration (packaging/)
#   /usr/include/iotsafe_pkcs11.h                          vendor attributes and config keys
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
module=$root/target/release/libiotsafe_pkcs11.so
destdir=
action=install
while [ $# -gt 0 ]; do
  case $1 in
    --uninstall) action=uninstall ;;
    --module) module=${2:?--module PATH}; shift ;;
    --destdir) destdir=${2:?--destdir DIR}; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "install: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
multiarch=$(gcc -print-multiarch 2>/dev/null || dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
# p11-kit's own idea of its module directory wins when p11-kit is installed.
moddir=$(pkg-config --variable=p11_module_path p11-kit-1 2>/dev/null || true)
[ -n "$moddir" ] || moddir=/usr/lib/$multiarch/pkcs11
confdir=$(pkg-config --variable=p11_module_configs p11-kit-1 2>/dev/null || true)
[ -n "$confdir" ] || confdir=/usr/share/p11-kit/modules

so=$destdir$moddir/libiotsafe_pkcs11.so
conf=$destdir$confdir/iotsafe-pkcs11.module
header=$destdir/usr/include/iotsafe_pkcs11.h
sudo=()
if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi

case $action in
  install)
    [ -f "$module" ] || { echo "install: $module not found (cargo build --release)" >&2; exit 1; }
    "${sudo[@]}" install -D -m 0644 "$module" "$so"
    "${sudo[@]}" install -D -m 0644 "$root/packaging/iotsafe-pkcs11.module" "$conf"
    "${sudo[@]}" install -D -m 0644 "$root/include/iotsafe_pkcs11.h" "$header"
    echo "install: $so"
    echo "install: $conf"
    echo "install: $header"
    ;;
  uninstall)
    for f in "$so" "$conf" "$header"; do
      if [ -e "$f" ]; then "${sudo[@]}" rm -f "$f"; echo "uninstall: removed $f"; fi
    done
    ;;
esac
