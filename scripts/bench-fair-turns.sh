#!/usr/bin/env bash
# Fair turns (issue #11 item 4), figures only: 4 processes signing at once for 30 s on the
# 5 ms / 40 ms card, over pcscd and over the simulated modem on a pty, for this build and for a
# build without turns on PC/SC readers; prints a markdown table (benches/fair_turns.rs).
#   bash scripts/bench-fair-turns.sh [--before MODULE.so]... [--seconds N] [--busy N]
# --before: a module to compare with (e.g. a release build of the commit before the turns on
# PC/SC readers; may be given more than once); without it only this build is measured.
# --busy N: N threads of the benchmark spin meanwhile (a busy machine, where a woken process
# does not run at once).
# The pcscd+vpcd stack is started here when it is not running (and stopped again at exit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

before=
seconds=30
busy=0
while [ $# -gt 0 ]; do
  case "$1" in
    --before) before=${before:+$before:}$(realpath "$2"); shift 2 ;;
    --busy) busy=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "usage: bash scripts/bench-fair-turns.sh [--before MODULE.so]... [--seconds N] [--busy N]" >&2; exit 2 ;;
  esac
done

cargo build --release --workspace
if ! bash scripts/stack.sh status >/dev/null 2>&1; then
  bash scripts/stack.sh start >&2
  trap 'bash scripts/stack.sh stop >&2' EXIT
fi
# shellcheck disable=SC1091
. "${IOTSAFE_STACK_DIR:-target/stack}/env"
export IOTSAFE_FAIR_TURNS_SECONDS=$seconds IOTSAFE_FAIR_TURNS_BUSY_LOOPS=$busy
if [ -n "$before" ]; then export IOTSAFE_FAIR_TURNS_BEFORE=$before; fi
cargo bench --bench fair_turns
