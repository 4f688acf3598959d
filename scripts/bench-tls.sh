#!/usr/bin/env bash
# Mutual-TLS handshakes per second through the real stack (pcscd + vpcd + simulated card) with
# the card's latency model on: a small OpenSSL client (benches/tls_handshakes.c, key by pkcs11:
# URI through pkcs11-provider) against `openssl s_server -Verify 1`, full TLS 1.3 handshakes.
#   bash scripts/bench-tls.sh            (needs the stack: bash scripts/stack.sh start)
# Env: IOTSAFE_BENCH_APDU_MS (5), IOTSAFE_BENCH_SIGNATURE_MS (40), IOTSAFE_BENCH_HANDSHAKES (60).
# Writes the markdown rows to target/bench/tls.md (cargo bench --bench performance includes it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. "${IOTSAFE_STACK_DIR:-target/stack}/env"
apdu_ms=${IOTSAFE_BENCH_APDU_MS:-5}
sig_ms=${IOTSAFE_BENCH_SIGNATURE_MS:-40}
count=${IOTSAFE_BENCH_HANDSHAKES:-60}
out=target/bench
mkdir -p "$out"

cc -O2 -Wall -o "$out/tls_handshakes" benches/tls_handshakes.c -lssl -lcrypto

control() { printf '%s\n' "$1" | socat -t 30 - "UNIX-CONNECT:$IOTSAFE_SIM_CONTROL"; }

# The stack tests' lock: nothing else uses the card meanwhile.
exec 9>"$IOTSAFE_STACK_DIR/tests.lock"
flock 9

server_log=$out/tls-server.log
openssl s_server -accept 127.0.0.1:0 -naccept $((count + 1)) -www -tls1_3 -quiet \
  -cert "$IOTSAFE_CARD_DIR/server.pem" -key "$IOTSAFE_CARD_DIR/server-key.pem" \
  -CAfile "$IOTSAFE_CARD_DIR/ca.pem" -Verify 1 -verify_return_error >"$server_log" 2>&1 &
server=$!
cleanup() {
  control "set-latency apdu=0 signature=0" >/dev/null || true
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap cleanup EXIT
port=
for _ in $(seq 100); do
  port=$(sed -n 's/^ACCEPT .*:\([0-9]*\)$/\1/p' "$server_log" | head -n 1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "bench-tls: s_server did not start:" >&2; cat "$server_log" >&2; exit 1; }

control "set-latency apdu=$apdu_ms signature=$sig_ms" >/dev/null
control "reset-stats" >/dev/null
result=$(OPENSSL_CONF=$IOTSAFE_OPENSSL_CONF "$out/tls_handshakes" "$port" "$count" \
  "$IOTSAFE_CARD_DIR/client.pem" "pkcs11:object=client;type=private" "$IOTSAFE_CARD_DIR/ca.pem")
stats=$(control stats)
echo "bench-tls: $result; card: $stats"
rate=$(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' <<<"$result")
ceiling=$(awk -v a="$apdu_ms" -v s="$sig_ms" 'BEGIN { printf "%.2f", 1000 / (2 * a + s) }')
fraction=$(awk -v r="$rate" -v c="$ceiling" 'BEGIN { printf "%.3f", r / c }')
signatures=$(sed -n 's/.*"2B":\([0-9]*\).*/\1/p' <<<"$stats")
{
  echo "Full TLS 1.3 handshakes with client authentication (no resumption), one after the other,"
  echo "\`benches/tls_handshakes.c\` (OpenSSL 3 + pkcs11-provider, key \`pkcs11:object=client;type=private\`)"
  echo "against \`openssl s_server -Verify 1\` on 127.0.0.1, through pcscd + vpcd + the simulated card"
  echo "with ${apdu_ms} ms per APDU + ${sig_ms} ms per signature (one card signature per handshake:"
  echo "ceiling ${ceiling}/s). Measured by \`scripts/bench-tls.sh\`."
  echo
  echo "| handshakes | handshakes/s | fraction of the card's ceiling | card signatures (2B) |"
  echo "|---|---|---|---|"
  echo "| $count | $rate | $fraction | ${signatures:-?} (incl. 1 warm-up) |"
} >"$out/tls.md"
cat "$out/tls.md"
