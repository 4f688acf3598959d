#!/usr/bin/env bash
# Fair turns (issue #11 item 4), figures only: 4 processes signing at once for 30 s on the
# 5 ms / 40 ms card, over pcscd and over the simulated modem on a pty, for this build and for a
# build without turns on PC/SC readers; prints a markdown table (benches/fair_turns.rs).
#   bash scripts/bench-fair-turns.sh [--before MODULE.so]... [--seconds N] [--busy N] [--update-docs]
# --before: a module to compare with (e.g. a release build of the commit before the turns on
# PC/SC readers; may be given more than once); without it only this build is measured.
# --busy N: N threads of the benchmark spin meanwhile (a busy machine, where a woken process
# does not run at once).
# --update-docs: also write the table into docs/benchmarks.md (between the fair-turns markers).
# The table is also left in target/bench/fair-turns.md.
# The pcscd+vpcd stack is started here when it is not running (and stopped again at exit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

before=
seconds=30
busy=0
update_docs=
while [ $# -gt 0 ]; do
  case "$1" in
    --before) before=${before:+$before:}$(realpath "$2"); shift 2 ;;
    --busy) busy=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --update-docs) update_docs=1; shift ;;
    *) echo "usage: bash scripts/bench-fair-turns.sh [--before MODULE.so]... [--seconds N] [--busy N] [--update-docs]" >&2; exit 2 ;;
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
report=target/bench/fair-turns.md
mkdir -p target/bench
{
  echo "4 processes × ${seconds} s on one card (5 ms per APDU, 40 ms per signature), module at commit"
  echo "$(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, ${busy} busy threads:"
  echo
  cargo bench --bench fair_turns
} | tee "$report.tmp"
mv "$report.tmp" "$report"
if [ -n "$update_docs" ]; then
  docs=docs/benchmarks.md begin='<!-- fair-turns:begin -->' end='<!-- fair-turns:end -->'
  grep -qxF "$begin" "$docs" && grep -qxF "$end" "$docs" \
    || { echo "bench-fair-turns: $docs lacks the markers $begin / $end" >&2; exit 1; }
  awk -v begin="$begin" -v end="$end" -v report="$report" '
      $0 == begin { print; while ((getline line < report) > 0) print line; skip = 1; next }
      $0 == end { skip = 0 }
      !skip' "$docs" >"$docs.tmp"
  mv "$docs.tmp" "$docs"
  echo "bench-fair-turns: updated $docs" >&2
fi
