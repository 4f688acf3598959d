#!/usr/bin/env bash
# Cross-checks the modem-only module on musl (docs/building.md, "musl targets"):
#  1. builds it as a dynamically linked cdylib for aarch64-unknown-linux-musl and
#     armv7-unknown-linux-musleabihf, with Zig (PyPI `ziglang`) as C compiler and linker;
#  2. checks each .so: its architecture, NEEDED only musl's libc.so, 92 exported C_* functions;
#  3. runs the unit tests on armv7 musl under qemu-arm (a static test binary), the layout test
#     compiling with the armv7 musl C compiler;
#  4. loads each .so into a dynamically linked musl program (tests/c/load_module.c) under qemu,
#     with Debian's musl for that architecture as the runtime, and checks the first calls.
# Installs what it needs (idempotent) under $IOTSAFE_CROSS_CACHE (default ~/.cache/iotsafe-cross)
# and builds in this checkout's target/. Uses one core (CROSS_JOBS=N to change). Needs no pcscd.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cache=${IOTSAFE_CROSS_CACHE:-$HOME/.cache/iotsafe-cross}
jobs=${CROSS_JOBS:-1}
zig_version=0.17.1
mkdir -p "$cache/bin"

say() { printf '== %s\n' "$*"; }
fail() {
  printf 'cross-check: %s\n' "$*" >&2
  exit 1
}

# --- host tools -----------------------------------------------------------------------------
missing=()
command -v qemu-arm >/dev/null || missing+=(qemu-user)
command -v file >/dev/null || missing+=(file)
command -v readelf >/dev/null || missing+=(binutils)
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

venv=$cache/zig-venv
if ! "$venv/bin/python" -m ziglang version 2>/dev/null | grep -qx "$zig_version"; then
  say "pip install ziglang==$zig_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "ziglang==$zig_version"
fi

# One wrapper per Rust target, used as linker and as $CC. Zig's `cc -fsyntax-only` fails
# looking for an object it never wrote, so a syntax check compiles to /dev/null instead.
wrapper() { # rust-triple zig-target [cflags...]
  local path=$cache/bin/cc-$1 zig_target=$2
  shift 2
  cat >"$path" <<EOF
#!/bin/sh
args=
for a in "\$@"; do [ "\$a" = -fsyntax-only ] && args="-c -o /dev/null"; done
if [ -n "\$args" ]; then
  for a in "\$@"; do shift; [ "\$a" = -fsyntax-only ] || set -- "\$@" "\$a"; done
fi
exec "$venv/bin/python" -m ziglang cc -target $zig_target $* \$args "\$@"
EOF
  chmod +x "$path"
}
wrapper aarch64-unknown-linux-musl aarch64-linux-musl
wrapper armv7-unknown-linux-musleabihf arm-linux-musleabihf -mcpu=generic+v7a

# --- Rust targets ---------------------------------------------------------------------------
rustup target add aarch64-unknown-linux-musl >/dev/null
# rustup has no prebuilt armv7 musl std on this machine's mirror (404): then nightly builds std
# from rust-src (-Zbuild-std).
armv7_cargo=(cargo)
if ! RUST_BACKTRACE=0 rustup target add armv7-unknown-linux-musleabihf >/dev/null 2>&1; then
  say "no prebuilt armv7-unknown-linux-musleabihf std: nightly -Zbuild-std"
  # An installed nightly is used as it is (installing it again would update it for everyone).
  rustup run nightly rustc --version >/dev/null 2>&1 ||
    rustup toolchain install nightly --profile minimal >/dev/null
  rustup component add rust-src --toolchain nightly >/dev/null
  armv7_cargo=(cargo +nightly -Zbuild-std=std,panic_unwind)
fi

# --- Debian's musl as the target's runtime (a private apt state: the system's is left alone) -
apt_dir=$cache/apt
apt_opts=(-o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root
  -o APT::Architecture=armhf -o "APT::Architectures::=armhf" -o "APT::Architectures::=arm64"
  -o Acquire::Languages=none)
for arch in armhf arm64; do
  sysroot=$cache/sysroot-$arch
  [ -e "$sysroot/usr/share/doc/musl" ] && continue
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  if ! compgen -G "$apt_dir/lists/*binary-${arch}_Packages*" >/dev/null; then
    say "apt-get update (armhf, arm64 lists under $apt_dir)"
    apt-get "${apt_opts[@]}" update -qq
  fi
  (cd "$apt_dir/archives" && apt-get "${apt_opts[@]}" download -qq "musl:$arch")
  rm -rf "$sysroot"
  dpkg-deb -x "$(ls "$apt_dir"/archives/musl_*_"$arch".deb)" "$sysroot"
done

# --- 1 and 2: the modules -------------------------------------------------------------------
check_module() { # rust-triple file-pattern
  local so=target/$1/release/libiotsafe_pkcs11.so needed exports
  file "$so"
  file -L "$so" | grep -q "$2" || fail "$so is not $2"
  file -L "$so" | grep -q 'dynamically linked' || fail "$so is not dynamically linked"
  needed=$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  [ "$needed" = "libc.so " ] || fail "$so needs '$needed', expected only musl's libc.so"
  exports=$(readelf --dyn-syms -W "$so" | awk '$5 == "GLOBAL" && $7 != "UND" {print $8}' |
    grep -c '^C_')
  # PKCS#11 3.0 has 92 functions; the module exports each as C_*.
  [ "$exports" = 92 ] || fail "$so exports $exports C_* functions, expected 92"
  echo "$1: NEEDED $needed; $exports C_* exports"
}

modem_only=(--release --locked --no-default-features -p iotsafe-pkcs11 --lib -j "$jobs")

say "build aarch64-unknown-linux-musl"
RUSTFLAGS="-C target-feature=-crt-static" \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=$cache/bin/cc-aarch64-unknown-linux-musl \
  cargo build --target aarch64-unknown-linux-musl "${modem_only[@]}"
check_module aarch64-unknown-linux-musl 'ARM aarch64'

say "build armv7-unknown-linux-musleabihf"
RUSTFLAGS="-C target-feature=-crt-static" \
  CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_LINKER=$cache/bin/cc-armv7-unknown-linux-musleabihf \
  "${armv7_cargo[@]}" build --target armv7-unknown-linux-musleabihf "${modem_only[@]}"
check_module armv7-unknown-linux-musleabihf 'ARM, EABI5'
readelf -h target/armv7-unknown-linux-musleabihf/release/libiotsafe_pkcs11.so |
  grep -q 'hard-float ABI' || fail "the armv7 module is not hard-float"

# --- 3: unit tests on armv7 musl ------------------------------------------------------------
# The test binary links musl statically (Zig's crt and libc.a, hence link-self-contained=no),
# so qemu-arm runs it without a sysroot; the layout test runs $CC, the armv7 wrapper.
say "unit tests on armv7-unknown-linux-musleabihf under qemu-arm"
RUSTFLAGS="-C target-feature=+crt-static -C link-self-contained=no" \
  CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_LINKER=$cache/bin/cc-armv7-unknown-linux-musleabihf \
  CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUNNER=qemu-arm \
  CC=$cache/bin/cc-armv7-unknown-linux-musleabihf \
  "${armv7_cargo[@]}" test --locked --no-default-features -p iotsafe-pkcs11 --lib -j "$jobs" \
  --target armv7-unknown-linux-musleabihf

# --- 4: a dynamically linked musl program loads each module ---------------------------------
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
printf '[pcsc]\nenabled = false\n' >"$scratch/config.toml"
load_module() { # rust-triple qemu debian-arch
  local program=$scratch/load_module-$1 so=$top/target/$1/release/libiotsafe_pkcs11.so
  "$cache/bin/cc-$1" -dynamic -O2 -std=c11 -Wall -Wextra -Werror -I include \
    -o "$program" tests/c/load_module.c -ldl
  file "$program" | grep -q 'dynamically linked' || fail "$program is not dynamically linked"
  say "load the $1 module under $2 (Debian musl $(dpkg-deb -f "$(ls "$apt_dir"/archives/musl_*_"$3".deb)" Version))"
  IOTSAFE_PKCS11_CONFIG=$scratch/config.toml "$2" -L "$cache/sysroot-$3" "$program" "$so" 0 ||
    fail "$1: the module did not answer as expected"
  # The check can fail: the same run expecting one slot must not pass.
  if IOTSAFE_PKCS11_CONFIG=$scratch/config.toml "$2" -L "$cache/sysroot-$3" "$program" "$so" 1 \
    >/dev/null 2>&1; then
    fail "$1: load_module passed while expecting a slot that is not there"
  fi
}
load_module armv7-unknown-linux-musleabihf qemu-arm armhf
load_module aarch64-unknown-linux-musl qemu-aarch64 arm64

say "cross-check passed"
