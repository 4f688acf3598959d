#!/usr/bin/env bash
# Mutual-TLS handshakes per second with the card's latency model on: a small OpenSSL client
# (benches/tls_handshakes.c, key by pkcs11: URI through pkcs11-provider) against
# `openssl s_server -Verify 1`, full TLS 1.3 handshakes, one card signature each.
#   bash scripts/bench-tls.sh [modem] [vpcd]     (default: both; vpcd needs the stack:
#                                                 bash scripts/stack.sh start)
# modem: the .so talks AT commands to `iotsafe-sim modem` on a pseudo-terminal (no daemon);
# vpcd:  the .so talks PC/SC to pcscd, whose vsmartcard-vpcd reader reaches the simulator
#        over TCP (every APDU pays that link's round trip).
# Env: IOTSAFE_BENCH_APDU_MS (5), IOTSAFE_BENCH_SIGNATURE_MS (40), IOTSAFE_BENCH_HANDSHAKES (60).
# Writes the markdown to target/bench/tls.md (cargo bench --bench performance includes it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
apdu_ms=${IOTSAFE_BENCH_APDU_MS:-5}
sig_ms=${IOTSAFE_BENCH_SIGNATURE_MS:-40}
count=${IOTSAFE_BENCH_HANDSHAKES:-60}
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(modem vpcd)
out=$PWD/target/bench
mkdir -p "$out"
module=$PWD/target/release/libiotsafe_pkcs11.so
cards=$out/tls-card
# shellcheck source=scripts/lib/openssl.sh
. scripts/lib/openssl.sh

cc -O2 -Wall -o "$out/tls_handshakes" benches/tls_handshakes.c -lssl -lcrypto
# Certificates for the server and the client (the same default card keys on every machine).
mkdir -p "$cards"
[ -f "$cards/client.pem" ] || target/release/iotsafe-sim init-profile "$cards/profile.toml" --force >/dev/null
ceiling=$(awk -v a="$apdu_ms" -v s="$sig_ms" 'BEGIN { printf "%.2f", 1000 / (2 * a + s) }')

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

rows=()
measure() { # path-name, control-socket, card-dir, module-config, openssl-conf
  local name=$1 control=$2 card=$3 config=$4 conf=$5
  ctl() { printf '%s\n' "$1" | socat -t 30 - "UNIX-CONNECT:$control"; }
  local port server
  start_s_server "$out/tls-server-${control##*/}.log" -naccept $((count + 1)) -www -tls1_3 \
    -cert "$card/server.pem" -key "$card/server-key.pem" -CAfile "$card/ca.pem" \
    -Verify 1 -verify_return_error || { echo "bench-tls ($name): s_server did not start" >&2; exit 1; }
  server=$server_pid port=$server_port
  pids+=("$server")
  ctl "set-latency apdu=$apdu_ms signature=$sig_ms" >/dev/null
  ctl "reset-stats" >/dev/null
  local result stats rate fraction signatures
  result=$(OPENSSL_CONF=$conf IOTSAFE_PKCS11_CONFIG=$config "$out/tls_handshakes" "$port" "$count" \
    "$card/client.pem" "pkcs11:object=client;type=private" "$card/ca.pem")
  stats=$(ctl stats)
  ctl "set-latency apdu=0 signature=0" >/dev/null
  wait "$server" 2>/dev/null || true
  echo "bench-tls ($name): $result; card: $stats"
  rate=$(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' <<<"$result")
  fraction=$(awk -v r="$rate" -v c="$ceiling" 'BEGIN { printf "%.3f", r / c }')
  signatures=$(sed -n 's/.*"2B":\([0-9]*\).*/\1/p' <<<"$stats")
  rows+=("| $name | $count | $rate | $fraction | ${signatures:-?} |")
}

for path in "${paths[@]}"; do
  case "$path" in
    modem)
      link=$out/tls-modem
      target/release/iotsafe-sim modem --link "$link" --profile "$cards/profile.toml" \
        --control "$out/tls-modem.sock" >"$out/tls-modem.log" 2>&1 &
      pids+=("$!")
      for _ in $(seq 50); do [ -S "$out/tls-modem.sock" ] && [ -e "$link" ] && break; sleep 0.1; done
      printf '[pcsc]\nenabled = false\n[[modem]]\ndevice = "%s"\n' "$link" >"$out/tls-modem.toml"
      write_provider_conf "$out/tls-modem-provider.cnf" "$module"
      measure "modem (AT+CGLA on a pty)" "$out/tls-modem.sock" "$cards" "$out/tls-modem.toml" \
        "$out/tls-modem-provider.cnf"
      ;;
    vpcd)
      stack_dir=${IOTSAFE_STACK_DIR:-target/stack}
      if [ ! -f "$stack_dir/env" ] || ! bash scripts/stack.sh status >/dev/null 2>&1; then
        echo "bench-tls: the pcscd+vpcd stack is not running; vpcd path left out" >&2
        continue
      fi
      # shellcheck disable=SC1090
      . "$stack_dir/env"
      exec 9>"$IOTSAFE_STACK_DIR/tests.lock"
      flock 9
      measure "PC/SC (pcscd + vpcd over TCP)" "$IOTSAFE_SIM_CONTROL" "$IOTSAFE_CARD_DIR" /dev/null \
        "$IOTSAFE_OPENSSL_CONF"
      flock -u 9
      ;;
    *) echo "bench-tls: unknown path $path (modem, vpcd)" >&2; exit 2 ;;
  esac
done

{
  echo "Full TLS 1.3 handshakes with client authentication (no resumption), one after the other:"
  echo "\`benches/tls_handshakes.c\` (OpenSSL 3 + pkcs11-provider, key \`pkcs11:object=client;type=private\`)"
  echo "against \`openssl s_server -Verify 1\` on 127.0.0.1, with the simulated card at ${apdu_ms} ms per"
  echo "APDU + ${sig_ms} ms per signature: one card signature per handshake, ceiling ${ceiling}/s."
  echo "Measured by \`scripts/bench-tls.sh\`."
  echo
  echo "| path | handshakes | handshakes/s | fraction of the card's ceiling | card signatures (2B, incl. 1 warm-up) |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Why below the ceiling: a handshake is more than the card's signature — the TLS work on both"
  echo "sides and the connection take a few ms (the in-process card-bound rows, signatures only,"
  echo "reach 0.99). Over PC/SC every APDU also crosses pcscd's vsmartcard-vpcd driver and its TCP"
  echo "link to the simulator; the simulator acknowledges each frame at once (TCP_QUICKACK), else the"
  echo "driver's Nagle and the delayed ACK cost ~44 ms per APDU (the figure was 0.47 before)."
} >"$out/tls.md"
cat "$out/tls.md"
