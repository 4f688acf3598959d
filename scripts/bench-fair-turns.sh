#!/usr/bin/env bash
# Fair turns (issue #11 item 4), figures only: 4 processes signing at once for 30 s on the
# 5 ms / 40 ms card, over pcscd and over the simulated modem on a pty, for this build and for a
# build without turns on PC/SC readers; prints a markdown table (benches/fair_turns.rs).
#   bash scripts/bench-fair-turns.sh [--before MODULE.so] [--seconds N]
# --before: the module to compare with (e.g. a release build of the commit before the turns on
# PC/SC readers); without it only this build is measured.
# The pcscd+vpcd stack is started here when it is not running (and stopped again at exit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

before=
seconds=30
while [ $# -gt 0 ]; do
  case "$1" in
    --before) before=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "usage: bash scripts/bench-fair-turns.sh [--before MODULE.so] [--seconds N]" >&2; exit 2 ;;
  esac
done

cargo build --release --workspace
if ! bash scripts/stack.sh status >/dev/null 2>&1; then
  bash scripts/stack.sh start >&2
  trap 'bash scripts/stack.sh stop >&2' EXIT
fi
# shellcheck disable=SC1091
. "${IOTSAFE_STACK_DIR:-target/stack}/env"
export IOTSAFE_FAIR_TURNS_SECONDS=$seconds
if [ -n "$before" ]; then export IOTSAFE_FAIR_TURNS_BEFORE=$before; fi
cargo bench --bench fair_turns
