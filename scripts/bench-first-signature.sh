#!/usr/bin/env bash
# "First signature" benchmark (issue #11): APDUs and time from process start to the first
# signature of a one-shot process, cold and warm, on the simulated modem (AT+CGLA on a
# pseudo-terminal, T=0 answers, 30 ms per APDU + 40 ms per signature), for
#   C ABI (tests/c/first_signature.c), pkcs11-tool --sign, openssl pkeyutl -sign and a one-shot
#   openssl s_client mutual-TLS handshake through pkcs11-provider, curl + the libp11 engine;
# and one-shot handshakes per second next to one long-running process's signing rate.
#
#   bash scripts/bench-first-signature.sh                 report on stdout and in
#                                                         target/bench/first-signature.md
#   bash scripts/bench-first-signature.sh --update-docs   also replace the table in
#                                                         docs/benchmarks.md (between its markers)
#
# Needs the release build (cargo build --release --workspace); builds nothing but the small C
# program (cc). Needs no pcscd: every simulator is an `iotsafe-sim modem` started here, in a
# scratch directory, and stopped by PID at exit.
# cold = the first process on a freshly started simulator, with an empty $XDG_CACHE_HOME;
# warm = a second process on the same simulator with the same $XDG_CACHE_HOME;
# warm, cache off = a third one with `cache = false` in the module's configuration.
# Env: IOTSAFE_BENCH_RUNS (5: simulators per case, each gives one run of every column),
#      IOTSAFE_BENCH_APDU_MS (30), IOTSAFE_BENCH_SIGNATURE_MS (40),
#      IOTSAFE_BENCH_REPEAT (20: signatures of the long-running process after its first).
# Exits 1 if any run failed or a signature did not verify (the report is written anyway).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

update_docs=
case "${1:-}" in
  "") ;;
  --update-docs) update_docs=1 ;;
  *) echo "usage: bash scripts/bench-first-signature.sh [--update-docs]" >&2; exit 2 ;;
esac

runs=${IOTSAFE_BENCH_RUNS:-5}
apdu_ms=${IOTSAFE_BENCH_APDU_MS:-30}
sig_ms=${IOTSAFE_BENCH_SIGNATURE_MS:-40}
repeat=${IOTSAFE_BENCH_REPEAT:-20}
module=$root/target/release/libiotsafe_pkcs11.so
sim=$root/target/release/iotsafe-sim
out=$root/target/bench
report=$out/first-signature.md
docs=$root/docs/benchmarks.md
scratch=$out/first-signature
key_uri="pkcs11:object=client;type=private"
cert_uri="pkcs11:object=client;type=cert"
# How the module is told to keep nothing between processes (top-level key of its file).
cache_off_line="cache = false"

die() { echo "bench-first-signature: $*" >&2; exit 1; }
for f in "$module" "$sim"; do
  [ -f "$f" ] || die "$f not found; build first: cargo build --release --workspace"
done
for tool in cc openssl pkcs11-tool curl socat jq; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh)"
done
# shellcheck source=scripts/lib/openssl.sh
. scripts/lib/openssl.sh
[ -n "$(provider_module)" ] || die "pkcs11-provider not found (scripts/install-deps.sh installs it)"
engine=$(openssl version -e | sed -nE 's/^ENGINESDIR: "(.*)"$/\1/p')/pkcs11.so
[ -f "$engine" ] || die "the libp11 engine not found at $engine"

rm -rf "$scratch"
mkdir -p "$scratch"
card=$scratch/card
mkdir -p "$card"
"$sim" init-profile "$card/profile.toml" >/dev/null 2>&1
openssl x509 -in "$card/client.pem" -pubkey -noout >"$card/client-pub.pem"
helper=$scratch/first_signature
cc -O2 -Wall -Wextra -Werror -I include -o "$helper" tests/c/first_signature.c -ldl
message=$scratch/message.txt
printf 'first signature benchmark\n' >"$message"
openssl dgst -sha256 -binary -out "$scratch/digest.bin" "$message"

# The processes this script started and that still run: the TLS server and the current
# simulator (each simulator is stopped, and forgotten, before the next one starts).
server_pid= sim_pid=
cleanup() {
  local p
  for p in $sim_pid $server_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

write_provider_conf "$scratch/provider.cnf" "$module"

# One `openssl s_server` for every TLS run: TLS 1.3, client certificate required and verified.
start_s_server "$scratch/s_server.log" -www -cert "$card/server.pem" -key "$card/server-key.pem" \
  -CAfile "$card/ca.pem" -Verify 1 -verify_return_error || die "openssl s_server did not start"
port=$server_port

# --- simulators ------------------------------------------------------------------------------

sim_count=0
sim_dir= control=
ctl() { printf '%s\n' "$1" | socat -t 30 - "UNIX-CONNECT:$control"; }

# A fresh modem simulator (its own pty link, control socket, module configurations and an
# empty cache directory); sets sim_dir, sim_pid, control.
start_sim() {
  sim_count=$((sim_count + 1))
  sim_dir=$scratch/sim$sim_count
  mkdir -p "$sim_dir/cache"
  control=$sim_dir/control.sock
  "$sim" modem --link "$sim_dir/tty" --control "$control" --profile "$card/profile.toml" \
    --no-persist --t0 >"$sim_dir/sim.log" 2>&1 &
  sim_pid=$!
  for _ in $(seq 100); do [ -S "$control" ] && [ -e "$sim_dir/tty" ] && break; sleep 0.05; done
  [ -S "$control" ] || die "iotsafe-sim modem did not start: $(cat "$sim_dir/sim.log")"
  ctl "set-latency apdu=${apdu_ms}ms signature=${sig_ms}ms" | grep -q '"ok":true' \
    || die "set-latency refused"
  printf '[pcsc]\nenabled = false\n[[modem]]\ndevice = "%s"\n' "$sim_dir/tty" >"$sim_dir/module.toml"
  { echo "$cache_off_line"; cat "$sim_dir/module.toml"; } >"$sim_dir/module-cache-off.toml"
}

stop_sim() {
  kill "$sim_pid" 2>/dev/null || true
  wait "$sim_pid" 2>/dev/null || true
  sim_pid=
}

# --- one process -----------------------------------------------------------------------------

# case_X runs one process (output in $log*) and fails if it fails; check_X then checks its
# signature (or handshake).
case_c_abi() {
  BENCH_START_US=${EPOCHREALTIME/./} timeout 120 "$helper" "$module" client "$message" "$log.sig" \
    --control "$control" >"$log" 2>"$log.err"
}
check_c_abi() {
  openssl dgst -sha256 -verify "$card/client-pub.pem" -signature "$log.sig" "$message" >/dev/null
}
case_pkcs11_tool() {
  timeout 120 pkcs11-tool --module "$module" --sign --mechanism ECDSA-SHA256 --label client \
    --signature-format openssl --input-file "$message" --output-file "$log.sig" >"$log" 2>"$log.err"
}
check_pkcs11_tool() { check_c_abi; }
case_pkeyutl() {
  OPENSSL_CONF=$scratch/provider.cnf timeout 120 openssl pkeyutl -sign -inkey "$key_uri" \
    -in "$scratch/digest.bin" -out "$log.sig" >"$log" 2>"$log.err"
}
check_pkeyutl() {
  openssl pkeyutl -verify -pubin -inkey "$card/client-pub.pem" -in "$scratch/digest.bin" \
    -sigfile "$log.sig" >/dev/null
}
# The server's -www page names the cipher; it is only served after the server verified the
# client's certificate and its CertificateVerify signature (-verify_return_error).
case_s_client() {
  printf 'GET / HTTP/1.0\r\n\r\n' | OPENSSL_CONF=$scratch/provider.cnf timeout 120 openssl s_client \
    -connect "127.0.0.1:$port" -servername localhost -CAfile "$card/ca.pem" -verify_return_error \
    -ign_eof -cert "$cert_uri" -key "$key_uri" >"$log" 2>"$log.err"
}
check_s_client() { grep -q 'Client certificate' "$log" && grep -q 'Cipher is' "$log"; }
case_curl() {
  env -u OPENSSL_CONF PKCS11_MODULE_PATH="$module" timeout 120 curl --silent --show-error --fail \
    --resolve "localhost:$port:127.0.0.1" --cacert "$card/ca.pem" --engine pkcs11 \
    --key-type ENG --key "$key_uri" --cert "$card/client.pem" "https://localhost:$port/" \
    >"$log" 2>"$log.err"
}
check_curl() { check_s_client; }

cases=(c_abi pkcs11_tool pkeyutl s_client curl)
declare -A case_title=(
  [c_abi]="C ABI (\`tests/c/first_signature.c\`)"
  [pkcs11_tool]="\`pkcs11-tool --sign\`"
  [pkeyutl]="\`openssl pkeyutl -sign\` (pkcs11-provider)"
  [s_client]="\`openssl s_client\` mTLS handshake (pkcs11-provider)"
  [curl]="curl 7.88 + libp11 engine, mTLS"
)
columns=(cold warm nocache)

# Does the module take `cache = false`? The same card-less configuration with and without it:
# without, C_Initialize succeeds (and no token is found); with, it must succeed too.
cache_rejected=
printf '[pcsc]\nenabled = false\n' >"$scratch/probe.toml"
{ echo "$cache_off_line"; cat "$scratch/probe.toml"; } >"$scratch/probe-cache-off.toml"
probe() { IOTSAFE_PKCS11_CONFIG=$1 "$helper" "$module" client "$message" /dev/null 2>&1 || true; }
probe "$scratch/probe.toml" | grep -q 'C_Initialize failed' && die "C_Initialize fails without a card"
if probe "$scratch/probe-cache-off.toml" | grep -q 'C_Initialize failed'; then
  cache_rejected=1
  columns=(cold warm)
  echo "bench-first-signature: the module rejects \`$cache_off_line\`; that column is left out" >&2
fi

# case column run ok µs apdus by_ins(json) helper's-key=value channels-left-open
results=$scratch/results.tsv
: >"$results"
failures=0

# run_one CASE COLUMN RUN: one process on the current simulator, counted and timed.
run_one() {
  local name=$1 column=$2 run=$3 config=$sim_dir/module.toml cache=$sim_dir/cache
  local t0 t1 ok=1 stats extra= open_before
  [ "$column" = nocache ] && config=$sim_dir/module-cache-off.toml
  [ "$column" = cold ] && rm -rf "$cache" && mkdir -p "$cache"
  log=$sim_dir/$name-$column
  open_before=$(ctl stats | jq .open_channel_count)
  ctl reset-stats >/dev/null
  export IOTSAFE_PKCS11_CONFIG=$config XDG_CACHE_HOME=$cache
  t0=${EPOCHREALTIME/./}
  "case_$name" || ok=0
  t1=${EPOCHREALTIME/./}
  unset IOTSAFE_PKCS11_CONFIG XDG_CACHE_HOME
  stats=$(ctl stats)
  if [ "$ok" = 1 ] && ! "check_$name"; then
    ok=0
    echo "bench-first-signature: $name $column run $run: the signature does not verify" >&2
  fi
  if [ "$ok" = 0 ]; then
    failures=$((failures + 1))
    echo "bench-first-signature: $name $column run $run failed; $log.err:" >&2
    tail -n 5 "$log.err" >&2
  fi
  if [ "$name" = c_abi ] && [ "$ok" = 1 ]; then
    extra=$(awk -F= '{ printf "%s%s=%s", sep, $1, $2; sep = "," }' "$log")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$column" "$run" "$ok" $(((t1 - t0))) \
    "$(jq -r .total <<<"$stats")" "$(jq -c .by_ins <<<"$stats")" "${extra:--}" \
    $(($(jq .open_channel_count <<<"$stats") - open_before)) >>"$results"
}

for name in "${cases[@]}"; do
  for run in $(seq "$runs"); do
    start_sim
    for column in "${columns[@]}"; do
      run_one "$name" "$column" "$run"
    done
    stop_sim
  done
  echo "bench-first-signature: $name done" >&2
done

# Steady state: one process, one session, $repeat signatures after the first (warm card).
start_sim
log=$sim_dir/steady
IOTSAFE_PKCS11_CONFIG=$sim_dir/module.toml XDG_CACHE_HOME=$sim_dir/cache "$helper" "$module" \
  client "$message" "$log.sig" --control "$control" >/dev/null 2>&1 || true
ctl reset-stats >/dev/null
steady_ok=1
IOTSAFE_PKCS11_CONFIG=$sim_dir/module.toml XDG_CACHE_HOME=$sim_dir/cache "$helper" "$module" \
  client "$message" "$log.sig" --control "$control" --repeat "$repeat" >"$log" 2>"$log.err" \
  || steady_ok=0
[ "$steady_ok" = 1 ] && check_c_abi || { steady_ok=0; failures=$((failures + 1)); }
stop_sim

# --- report ----------------------------------------------------------------------------------

# rows CASE COLUMN: the results rows of that cell that succeeded.
rows() { awk -F'\t' -v c="$1" -v k="$2" '$1 == c && $2 == k && $4 == 1' "$results"; }
# apdus CASE COLUMN: "total/runs" (exact, unreduced).
apdus() { rows "$1" "$2" | awk -F'\t' '{ t += $6; n++ } END { if (n) printf "%d/%d", t, n; else printf "—" }'; }
# mean_ms CASE COLUMN: mean time from process start to exit, in ms.
mean_ms() {
  rows "$1" "$2" | awk -F'\t' '{ t += $5; n++ } END { if (n) printf "%.0f", t / n / 1000; else printf "—" }'
}
failed() { awk -F'\t' -v c="$1" -v k="$2" '$1 == c && $2 == k && $4 == 0' "$results" | wc -l; }
cell() { # CASE COLUMN: "APDUs | ms"
  local f
  f=$(failed "$1" "$2")
  if [ "$2" = nocache ] && [ -n "$cache_rejected" ]; then printf 'not measured | —'; return; fi
  printf '%s | %s' "$(apdus "$1" "$2")" "$(mean_ms "$1" "$2")"
  [ "$f" -eq 0 ] || printf ' (%d failed)' "$f"
}
c_abi_split() { # COLUMN: "before/N + signature/N + after/N" and the mean ms to the signature
  rows c_abi "$1" | awk -F'\t' '{
      split($8, kv, ","); delete v
      for (i in kv) { split(kv[i], p, "="); v[p[1]] = p[2] }
      before += v["card_total_before_sign"]; sig += v["card_total_after_sign"] - v["card_total_before_sign"]
      after += $6 - v["card_total_after_sign"]; us += v["start_to_signature_us"]; n++
    } END {
      if (n) printf "%d/%d + %d/%d + %d/%d | %.0f", before, n, sig, n, after, n, us / n / 1000
      else printf "— | —"
    }'
}
by_ins() { # CASE COLUMN: "INS total/runs" for every INS
  rows "$1" "$2" | awk -F'\t' '{ print $7 }' | jq -rs '
      (length) as $n | map(to_entries) | add // [] | group_by(.key)
      | map("\(.[0].key) \(map(.value) | add)/\($n)") | join(" · ")'
}
left_open() { # CASE COLUMN: logical channels the process left open on the card, total/runs
  rows "$1" "$2" | awk -F'\t' '{ t += $9; n++ } END { if (n) printf "%d/%d", t, n; else printf "—" }'
}
rate() { # CASE COLUMN: processes per second one after the other (1000 / mean ms)
  rows "$1" "$2" | awk -F'\t' '{ t += $5; n++ } END { if (n) printf "%.2f", n * 1e6 / t; else printf "—" }'
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src sim 2>/dev/null || commit="$commit (src or sim modified)"
steady_rate=— steady_apdus=— steady_ceiling=—
if [ "$steady_ok" = 1 ]; then
  steady_rate=$(awk -F= '/^repeat_signatures=/ { n = $2 } /^repeat_us=/ { us = $2 }
    END { printf "%.2f", n * 1e6 / us }' "$log")
  steady_apdus=$(awk -F= -v r="$repeat" '/^card_total_after_sign=/ { a = $2 }
    /^card_total_after_repeat=/ { b = $2 } END { printf "%d/%d", b - a, r }' "$log")
  steady_ceiling=$(awk -v f="$steady_apdus" -v a="$apdu_ms" -v s="$sig_ms" 'BEGIN {
    split(f, p, "/"); printf "%.2f", 1000 / (p[1] / p[2] * a + s) }')
fi

{
  echo "Simulated modem: \`iotsafe-sim modem --t0\` (AT+CCHO/AT+CGLA on a pseudo-terminal, T=0 answers:"
  echo "data comes back through GET RESPONSE), ${apdu_ms} ms per APDU + ${sig_ms} ms per signature."
  echo "APDUs: everything the card received from process start to exit, as total/runs (not"
  echo "reduced or rounded). Time: process start to exit, mean of the runs, in ms; every process"
  echo "exits right after its first signature. $runs runs per cell; module at commit $commit;"
  echo "$(nproc) cores. Every signature was verified against the card's certificate (TLS: by"
  echo "\`s_server -Verify 1 -verify_return_error\`)."
  echo
  echo "| one-shot process | cold: APDUs | cold: ms | warm: APDUs | warm: ms | warm, \`$cache_off_line\`: APDUs | warm, \`$cache_off_line\`: ms |"
  echo "|---|---|---|---|---|---|---|"
  for name in "${cases[@]}"; do
    echo "| ${case_title[$name]} | $(cell "$name" cold) | $(cell "$name" warm) | $(cell "$name" nocache) |"
  done
  echo
  echo "C ABI, split at the signature (the helper reads the simulator's count just before"
  echo "\`C_SignInit\` and just after \`C_Sign\`): APDUs before + of + after the signature, and the time"
  echo "from process start to the return of \`C_Sign\`:"
  echo
  echo "| | APDUs before + signature + after | ms to the first signature |"
  echo "|---|---|---|"
  for column in "${columns[@]}"; do
    label=$column
    [ "$column" = nocache ] && label="warm, \`$cache_off_line\`"
    echo "| $label | $(c_abi_split "$column") |"
  done
  echo
  echo "Rates: one-shot mutual-TLS handshakes (\`openssl s_client\`, one process each, one after the"
  echo "other) against one long-running process signing on the same card (one session, $repeat"
  echo "signatures after its first; card APDUs per signature $steady_apdus, so the card's ceiling is"
  echo "$steady_ceiling/s):"
  echo
  echo "| | per second |"
  echo "|---|---|"
  echo "| one-shot \`s_client\` handshakes, cold | $(rate s_client cold) |"
  echo "| one-shot \`s_client\` handshakes, warm | $(rate s_client warm) |"
  echo "| steady-state signatures, one process | $steady_rate |"
  echo
  echo "APDUs by INS, total/runs (\`70\` MANAGE CHANNEL, \`A4\` SELECT, \`CB\` GET DATA, \`B0\` READ FILE,"
  echo "\`CD\` READ PUBLIC KEY, \`E2\` STORE DATA (provisioning probe), \`84\` GET RANDOM, \`2A\`/\`2B\`"
  echo "signature init/update, \`C0\` GET RESPONSE), and the logical channels each process left open"
  echo "on the card (the simulator's open-channel count after the process minus before it):"
  echo
  echo "| one-shot process | column | APDUs by INS | channels left open |"
  echo "|---|---|---|---|"
  for name in "${cases[@]}"; do
    for column in "${columns[@]}"; do
      echo "| ${case_title[$name]} | $column | $(by_ins "$name" "$column") | $(left_open "$name" "$column") |"
    done
  done
  if [ -n "$cache_rejected" ]; then
    echo
    echo "\`$cache_off_line\` not measured: this module rejects the key (unknown field in its"
    echo "configuration, \`C_Initialize\` fails)."
  fi
} >"$report"
cat "$report"

if [ -n "$update_docs" ]; then
  begin='<!-- first-signature:begin -->' end='<!-- first-signature:end -->'
  grep -qxF "$begin" "$docs" && grep -qxF "$end" "$docs" || die "$docs lacks the markers $begin / $end"
  awk -v begin="$begin" -v end="$end" -v report="$report" '
      $0 == begin { print; while ((getline line < report) > 0) print line; skip = 1; next }
      $0 == end { skip = 0 }
      !skip' "$docs" >"$docs.tmp"
  mv "$docs.tmp" "$docs"
  echo "bench-first-signature: updated $docs" >&2
fi
[ "$failures" -eq 0 ] || die "$failures run(s) failed (logs under $scratch)"
