#!/usr/bin/env bash
# The module under valgrind memcheck: no invalid reads/writes, no use of uninitialised memory,
# no definite leaks (scripts/valgrind.supp lists the two known one-off allocations that are
# not the module's errors).
#   bash scripts/valgrind.sh           the release .so through pkcs11-tool (--test, -O, --sign,
#                                       random) over a simulated modem on a pty (no pcscd needed),
#                                       and the table-driven bad-argument test binary
#   bash scripts/valgrind.sh --pcsc    the same pkcs11-tool runs over the pcscd+vpcd stack
#                                       (scripts/stack.sh start first)
# Needs: cargo build --release --workspace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null || { echo "valgrind: not installed (apt-get install valgrind)" >&2; exit 1; }

work=target/valgrind
mkdir -p "$work"
module=$PWD/target/release/libiotsafe_pkcs11.so
vg=(valgrind --quiet --keep-debuginfo=yes --suppressions=scripts/valgrind.supp --error-exitcode=99
    --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite)
echo "valgrind: signed by the card under valgrind" >"$work/message"
failed=0

run() { # name, command...
  local name=$1; shift
  local log=$work/$name.log
  if "${vg[@]}" --log-file="$log.vg" "$@" >"$log" 2>&1; then
    echo "valgrind: $name: 0 errors"
  else
    echo "valgrind: $name: FAILED (exit $?)" >&2
    cat "$log" "$log.vg" >&2
    failed=1
  fi
}

tools() { # prefix
  local p=$1
  run "$p-test" pkcs11-tool --module "$module" --test
  run "$p-objects" pkcs11-tool --module "$module" -O
  run "$p-sign" pkcs11-tool --module "$module" --sign --mechanism ECDSA-SHA256 --id 01 \
    -i "$work/message" -o "$work/$p.sig"
  run "$p-random" pkcs11-tool --module "$module" --generate-random 1024 -o "$work/$p.random"
}

if [ "${1:-}" = "--pcsc" ]; then
  # shellcheck disable=SC1091
  . "${IOTSAFE_STACK_DIR:-target/stack}/env"
  exec 9>"$IOTSAFE_STACK_DIR/tests.lock"
  flock 9
  IOTSAFE_PKCS11_CONFIG=/dev/null tools pcsc
else
  # A simulated modem on a pseudo-terminal: the whole .so, AT transport included, no daemon.
  link=$PWD/$work/modem
  target/release/iotsafe-sim modem --link "$link" >"$work/modem.log" 2>&1 &
  sim=$!
  trap 'kill "$sim" 2>/dev/null || true; wait "$sim" 2>/dev/null || true' EXIT
  for _ in $(seq 50); do [ -e "$link" ] && break; sleep 0.1; done
  printf '[pcsc]\nenabled = false\n[[modem]]\ndevice = "%s"\n' "$link" >"$work/modem.toml"
  IOTSAFE_PKCS11_CONFIG=$PWD/$work/modem.toml tools modem
  # Every C_* function with bad arguments (tests/bad_arguments.rs), in-process, under memcheck.
  bin=$(cargo test --release --test bad_arguments --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*bad_arguments[^"]*\)".*/\1/p' | tail -n 1)
  [ -n "$bin" ] || { echo "valgrind: cannot build tests/bad_arguments.rs" >&2; exit 1; }
  run bad-arguments "$bin" --test-threads=1
fi
exit "$failed"
