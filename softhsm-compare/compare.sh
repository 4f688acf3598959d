#!/usr/bin/env bash
# The differential run: the same checklist against SoftHSM2 (reference) and against our module on
# a simulated card, then a diff that fails on any difference not listed, with its reason, in
# softhsm-compare/intended-differences.toml (or known-module-issues.toml), and on any listed
# entry whose difference no longer occurs (stale).
#   bash softhsm-compare/compare.sh [--card write-protected|provisioning|both] [--via stack|modem]
# --card  which card(s) (default both): the simulator's default card, whose token is
#         write-protected, and a card that offers the STORE DATA provisioning profile
#         (`iotsafe-sim init-profile --provisioning`). Each run gets its own lines in
#         target/softhsm-compare/<card>/ and its own diff.
# --via   stack (default): the write-protected card of the pcscd+vpcd stack
#         (bash scripts/stack.sh start). It is shared with other tests, so no token writes are
#         tried in R/W sessions there. The provisioning card is always a simulated modem of
#         this run's own.
#         modem: every card is `iotsafe-sim modem` on a pseudo-terminal started here (no pcscd),
#         read through a module configuration of this run (IOTSAFE_PKCS11_CONFIG); token writes
#         in R/W sessions are compared (`p11-compare run --token-writes`) on both tokens.
# Environment: IOTSAFE_STACK_DIR (default target/stack), IOTSAFE_MODULE (default
# target/release/libiotsafe_pkcs11.so), IOTSAFE_SIM (default target/release/iotsafe-sim),
# SOFTHSM2_MODULE, P11_COMPARE_TIMEOUT (seconds per run, default 300).
# Output per card in target/softhsm-compare/<card>/: softhsm.txt, iotsafe.txt (one line per
# check), diff.txt; the summary lines start with "differential (".
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# One run at a time: every run writes its cards and results under target/softhsm-compare.
mkdir -p target
exec 8>target/softhsm-compare.lock
flock 8
cards=both
via=stack
while [ $# -gt 0 ]; do
  case "$1" in
    --card) cards=${2:?--card needs a value}; shift 2 ;;
    --via) via=${2:?--via needs a value}; shift 2 ;;
    *) echo "compare: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
case "$cards" in both) cards="write-protected provisioning" ;; write-protected|provisioning) ;;
  *) echo "compare: --card write-protected|provisioning|both" >&2; exit 2 ;; esac
case "$via" in stack|modem) ;; *) echo "compare: --via stack|modem" >&2; exit 2 ;; esac

stack_dir=${IOTSAFE_STACK_DIR:-$root/target/stack}
module=${IOTSAFE_MODULE:-$root/target/release/libiotsafe_pkcs11.so}
sim=${IOTSAFE_SIM:-$root/target/release/iotsafe-sim}
softhsm=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
bin=$root/target/softhsm-compare/release/p11-compare
limit=${P11_COMPARE_TIMEOUT:-300}

[ -f "$module" ] || { echo "compare: $module not found: cargo build --release --workspace" >&2; exit 2; }
[ -f "$softhsm" ] || { echo "compare: $softhsm not found: bash scripts/install-deps.sh (softhsm2)" >&2; exit 2; }

echo "compare: building p11-compare (softhsm-compare/, target dir target/softhsm-compare)"
cargo build --quiet --release --manifest-path softhsm-compare/Cargo.toml --target-dir target/softhsm-compare

modem_pid=
stop_modem() {
  if [ -n "$modem_pid" ]; then
    kill "$modem_pid" 2>/dev/null || true
    wait "$modem_pid" 2>/dev/null || true
    modem_pid=
  fi
}
trap stop_modem EXIT

# Starts `iotsafe-sim modem` on a fresh card profile in $1 (`--provisioning` when $2 is
# "provisioning") and writes $1/module.toml: PC/SC off, this modem, and a second configured modem
# whose device does not exist (a slot without a token, as the stack's empty second reader), with
# private lock and cache directories.
start_modem() {
  local dir=$1 card=$2 extra=()
  [ -x "$sim" ] || { echo "compare: $sim not found: cargo build --release --workspace" >&2; exit 2; }
  [ "$card" = provisioning ] && extra=(--provisioning)
  rm -rf "$dir"
  mkdir -p "$dir/card" "$dir/lock" "$dir/cache"
  "$sim" init-profile "$dir/card/profile.toml" "${extra[@]}" >/dev/null
  "$sim" modem --no-persist --link "$dir/modem" --profile "$dir/card/profile.toml" \
    --control "$dir/modem.sock" "${extra[@]}" >"$dir/modem.log" 2>&1 &
  modem_pid=$!
  for _ in $(seq 100); do
    [ -e "$dir/modem" ] && [ -S "$dir/modem.sock" ] && break
    sleep 0.1
  done
  [ -e "$dir/modem" ] || { echo "compare: the simulated modem did not start ($dir/modem.log)" >&2; exit 2; }
  cat > "$dir/module.toml" <<CONF
lock_dir = "$dir/lock"
cache_dir = "$dir/cache"
[pcsc]
enabled = false
[[modem]]
device = "$dir/modem"
label = "simulated modem"
[[modem]]
device = "$dir/no-such-modem"
label = "absent modem"
CONF
}

rc=0
for card in $cards; do
  out=$root/target/softhsm-compare/$card
  writes=()
  if [ "$via" = stack ] && [ "$card" = write-protected ]; then
    profile=$stack_dir/card/profile.toml
    [ -f "$profile" ] || { echo "compare: $profile not found: start the stack (bash scripts/stack.sh start) or use --via modem" >&2; exit 2; }
    unset IOTSAFE_PKCS11_CONFIG
  else
    start_modem "$out/modem" "$card"
    profile=$out/modem/card/profile.toml
    export IOTSAFE_PKCS11_CONFIG=$out/modem/module.toml
    writes=(--token-writes)
  fi
  # The module's token label for this card: "IoT SAFE " + the first 8 hex digits of the applet ID.
  applet=$(sed -n 's/^applet_id *= *"\([0-9A-Fa-f]\{8\}\).*/\1/p' "$profile" | head -n 1)
  label="IoT SAFE $applet"
  mkdir -p "$out"
  echo "compare [$card card, via $via]: SoftHSM2 reference token \"$label\" from $profile"
  bash softhsm-compare/setup-softhsm.sh "$out/softhsm" "$profile" "$label" "$bin"

  echo "compare [$card]: checklist against $softhsm"
  SOFTHSM2_CONF=$out/softhsm/softhsm2.conf timeout -k 5 "$limit" \
    "$bin" run --module "$softhsm" --label "$label" --pin 1234 --out "$out/softhsm.txt" "${writes[@]}"
  echo "compare [$card]: checklist against $module"
  timeout -k 5 "$limit" "$bin" run --module "$module" --label "$label" --pin 1234 \
    --out "$out/iotsafe.txt" "${writes[@]}"
  stop_modem

  card_rc=0
  "$bin" diff --reference "$out/softhsm.txt" --ours "$out/iotsafe.txt" \
    --intended softhsm-compare/intended-differences.toml \
    --known softhsm-compare/known-module-issues.toml --card "$card" > "$out/diff.txt" || card_rc=$?
  cat "$out/diff.txt"
  [ "$card_rc" -eq 0 ] || rc=$card_rc
done
exit "$rc"
