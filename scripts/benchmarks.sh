#!/usr/bin/env bash
# The whole benchmark report (issue #6): the TLS handshake figure over the pcscd+vpcd stack
# (scripts/bench-tls.sh; the stack is started here when it is not running, and stopped again),
# then every in-process figure (cargo bench --bench performance), which includes it.
#   bash scripts/benchmarks.sh            print the report
#   bash scripts/benchmarks.sh --write    also write it into docs/performance.md (between the markers)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --workspace
rm -f target/bench/tls.md
stack_dir=${IOTSAFE_STACK_DIR:-target/stack}
started=
if ! bash scripts/stack.sh status >/dev/null 2>&1; then
  if bash scripts/stack.sh start; then
    started=1; echo "benchmarks: started the stack (stopped again at exit)"
    trap 'bash scripts/stack.sh stop' EXIT
  else
    echo "benchmarks: the stack could not start; the TLS figure is left out" >&2
  fi
fi
if [ -f "$stack_dir/env" ] && bash scripts/stack.sh status >/dev/null 2>&1; then
  bash scripts/bench-tls.sh
fi
cargo bench --bench performance -- "$@"
