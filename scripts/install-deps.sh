#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests need (Debian 12 "bookworm").
# Idempotent and fast: when every package is already installed it touches nothing
# (no apt-get update). Uses sudo when not run as root.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

# From the main suite.
packages=(
  pcscd                     # PC/SC daemon
  vsmartcard-vpcd           # virtual reader driver for pcscd; the simulator is the card behind it
  libpcsclite-dev pkg-config # build-time: the pcsc crate links libpcsclite
  opensc                    # pkcs11-tool, opensc-tool
  openssl                   # openssl CLI (s_server, s_client, pkeyutl, dgst)
  curl                      # curl 7.88 (mutual TLS through the libp11 engine)
  libengine-pkcs11-openssl  # libp11 engine for OpenSSL (used by curl)
  socat                     # pty pairs for the modem transport tests
  # issue #5: conformance and consumers (softhsm-compare/, tests/stack_conformance.rs,
  # tests/stack_consumers.rs, scripts/build-p11test.sh)
  softhsm2                  # the reference module of the differential run (softhsm-compare/)
  gnutls-bin                # p11tool, gnutls-cli
  p11-kit                   # p11-kit list-modules, the p11-kit proxy module
  gcc libc6-dev             # the C ABI test program (tests/c/)
  dpkg-dev                  # apt-get source (OpenSC's p11test is built from Debian's source package)
  autoconf automake libtool libssl-dev zlib1g-dev libreadline-dev libcmocka-dev # p11test build
  # issue #6: robustness and benchmarks (scripts/valgrind.sh; libssl-dev and gcc above also
  # build benches/tls_handshakes.c)
  valgrind                  # memcheck of the .so through pkcs11-tool and of the bad-argument table
  # issue #11: the module behind p11-kit server (tests/stack_p11kit_server.rs; p11-kit above
  # has the server)
  p11-kit-modules           # p11-kit-client.so, the client side of p11-kit server
  jq                        # scripts/bench-first-signature.sh reads the simulator's stats
  # issue #13: consumers (tests/stack_nss.rs, tests/stack_pykcs11.rs; the test puts PyKCS11
  # from PyPI into a venv under target/, a binary wheel: no swig needed)
  libnss3-tools             # NSS modutil, certutil
  python3-venv              # python3 -m venv
  libp11-dev                # libp11.h, -lp11: tests/c/store_certificate.c (tests/stack_libp11_store.rs)
  # issue #14: modems over MBIM and QMI (the simulator is checked against the real tools, and the
  # module runs through the real mbim-proxy / qmi-proxy)
  libmbim-utils             # mbimcli, /usr/libexec/mbim-proxy (libmbim 1.28)
  libqmi-utils              # qmicli, /usr/libexec/qmi-proxy (libqmi 1.32)
  # issue #15: Debian packages (scripts/package.sh; dpkg-dev above has dpkg-shlibdeps)
  lintian                   # checks the packages
  help2man                  # the manual pages of iotsafe-sim and iotsafe-pkcs11
  polkitd                   # scripts/test-polkit-rule.sh asks the real polkitd
  dbus-daemon               # its private bus
)
# From <codename>-backports (bookworm has no pkcs11-provider of its own).
backports_packages=(
  pkcs11-provider           # OpenSSL 3 provider for PKCS#11 modules
)

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
missing_bp=()
for p in "${backports_packages[@]}"; do installed "$p" || missing_bp+=("$p"); done

if [ ${#missing[@]} -eq 0 ] && [ ${#missing_bp[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: not root and no sudo; install as root: ${missing[*]} ${missing_bp[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive

# Installing pcscd on a machine without systemd would start a system-wide pcscd through its
# init script; scripts/stack.sh wants the single pcscd of the machine to be its own private one.
# Where no policy-rc.d exists, put a temporary one in place that forbids service starts.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary, from iotsafe-pkcs11 scripts/install-deps.sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

echo "install-deps: installing ${missing[*]} ${missing_bp[*]}"
"${sudo[@]}" apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ ${#missing_bp[@]} -gt 0 ]; then
  # Prefer the shared tool when the clone sits beside ../shared, else our own copy of it.
  if [ -x "$root/../shared/tools/apt-backports" ]; then
    "${sudo[@]}" "$root/../shared/tools/apt-backports"
  else
    "${sudo[@]}" sh "$here/apt-backports.sh"
  fi
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends -t "${codename}-backports" "${missing_bp[@]}"
fi

for p in "${packages[@]}" "${backports_packages[@]}"; do
  installed "$p" || { echo "install-deps: $p is still not installed" >&2; exit 1; }
done
echo "install-deps: done"
