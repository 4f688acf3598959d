#!/usr/bin/env bash
# Bounded cargo-fuzz run of every fuzz target (fuzz/fuzz_targets/): the parsers of card and
# modem bytes and the attribute templates (see fuzz/src/lib.rs).
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 30 s, all targets)
# Works on stable Rust: cargo-fuzz needs nightly-only flags (-Zsanitizer), which a stable rustc
# accepts with RUSTC_BOOTSTRAP=1. cargo-fuzz is installed once into ~/.cargo/bin when missing.
# The corpus grows in target/fuzz/corpus/<target> (seeded from fuzz/seeds/<target>); a crash
# stops the run with the input in target/fuzz/artifacts/<target>/: copy it to
# fuzz/regressions/<target>/ (tests/fuzz_regressions.rs replays it in every cargo test) and fix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-${IOTSAFE_FUZZ_SECONDS:-30}}
shift || true
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (once, into ~/.cargo/bin)"
  cargo install --locked cargo-fuzz
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

build_args=(--fuzz-dir fuzz --target-dir target/fuzz/build -O --debug-assertions)
echo "fuzz: building ${#targets[@]} targets (ASan, release + debug assertions)"
cargo fuzz build "${build_args[@]}"

summary=()
status=0
for t in "${targets[@]}"; do
  corpus=target/fuzz/corpus/$t
  artifacts=target/fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  log=target/fuzz/$t.log
  echo "fuzz: $t for ${seconds} s"
  rc=0
  cargo fuzz run "${build_args[@]}" "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/" \
    -rss_limit_mb=4096 -timeout=10 >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  size=$(find "$corpus" -type f | wc -l)
  crashes=$(find "$artifacts" -type f | wc -l)
  summary+=("| $t | ${runs:-?} | $size | $crashes |")
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    status=1
    echo "fuzz: $t FAILED (exit $rc); last lines of $log:" >&2
    tail -n 40 "$log" >&2
    echo "fuzz: inputs in $artifacts/ — copy them to fuzz/regressions/$t/ and fix the module" >&2
  fi
done

echo
echo "| target | executions | corpus | crashes |"
echo "|---|---|---|---|"
printf '%s\n' "${summary[@]}"
exit "$status"
