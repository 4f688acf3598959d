#!/usr/bin/env bash
# The demo on the built-in simulated card:
#   bash scripts/demo.sh
# Installs missing Debian packages, builds, starts pcscd + the simulated IoT SAFE card
# (stopped again on any exit), then: lists the token and its objects, signs on the card and
# verifies with openssl against the card's certificate, and does mutual-TLS handshakes with the
# SIM key through OpenSSL (pkcs11-provider) and through curl (libp11 engine).
# Exits non-zero if any step fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold= plain=; fi
heading() { printf '\n%s=== %s%s\n' "$bold" "$*" "$plain"; }
# quote ARGS...: the command line as one could paste it into a shell.
quote() {
  local a out=()
  for a; do
    if [[ $a =~ ^[][A-Za-z0-9_./:=,%+@-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}
run() { printf '$ %s\n' "$(quote "$@")"; "$@"; }

heading "Install Debian packages"
bash scripts/install-deps.sh

heading "Build (release)"
cargo build --release --workspace

heading "Start pcscd + the simulated card (a fresh one; stopped again on exit)"
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  bash scripts/stack.sh stop
}
trap cleanup EXIT
bash scripts/stack.sh stop > /dev/null   # a stack left running by an earlier start: restart it
bash scripts/stack.sh start
. "${IOTSAFE_STACK_DIR:-target/stack}/env"
card=$IOTSAFE_CARD_DIR
work=$IOTSAFE_STACK_DIR/demo
rm -rf "$work"
mkdir -p "$work"

heading "The token (pkcs11-tool -L)"
run pkcs11-tool --module "$IOTSAFE_MODULE" -L

heading "Its objects (pkcs11-tool -O)"
run pkcs11-tool --module "$IOTSAFE_MODULE" -O

heading "Sign on the card (ECDSA-SHA256, key ID 01), verify with openssl against the card's certificate"
printf 'Hello from the IoT SAFE demo, %s\n' "$(date -u +%FT%TZ)" > "$work/message.txt"
run pkcs11-tool --module "$IOTSAFE_MODULE" --read-object --type cert --id 01 -o "$work/card-cert.der"
run openssl x509 -inform DER -in "$work/card-cert.der" -noout -subject -issuer
openssl x509 -inform DER -in "$work/card-cert.der" -noout -pubkey > "$work/card-pub.pem"
run pkcs11-tool --module "$IOTSAFE_MODULE" --sign --mechanism ECDSA-SHA256 --id 01 \
  --signature-format openssl -i "$work/message.txt" -o "$work/message.sig"
run openssl dgst -sha256 -verify "$work/card-pub.pem" -signature "$work/message.sig" "$work/message.txt"

# start_server LOG ARGS...: openssl s_server on 127.0.0.1, a free port chosen by the kernel;
# sets server_pid and server_port. The server uses OpenSSL's defaults (no PKCS#11).
# shellcheck source=scripts/lib/openssl.sh
. scripts/lib/openssl.sh
start_server() {
  local log=$1
  shift
  start_s_server "$log" -naccept 1 -cert "$card/server.pem" -key "$card/server-key.pem" \
    -CAfile "$card/ca.pem" -Verify 1 -verify_return_error "$@" || {
    echo "demo: openssl s_server did not start" >&2
    return 1
  }
}

# finish_server: wait for the one-connection server to exit and show what it verified.
finish_server() {
  local log=$1 rc=0
  wait "$server_pid" || rc=$?
  server_pid=
  echo "--- server side:"
  grep -E '^(depth=|verify return|verify error)' "$log.err" || true
  grep -E 'server accepts that finished' "$log" || true
  if ! grep -q '^ *1 server accepts that finished' "$log" || [ "$rc" -ne 0 ]; then
    cat "$log.err" >&2
    echo "demo: the server did not complete a handshake with a verified client certificate (exit $rc)" >&2
    return 1
  fi
}

heading "Mutual TLS 1.3: openssl s_client with the SIM key (pkcs11-provider) vs openssl s_server -Verify"
start_server "$work/s_server.log" -www -tls1_3
echo "server: 127.0.0.1:$server_port, requires a client certificate issued by $card/ca.pem"
client=(env OPENSSL_CONF="$IOTSAFE_OPENSSL_CONF" openssl s_client
  -connect "127.0.0.1:$server_port" -servername localhost -tls1_3
  -cert 'pkcs11:object=client;type=cert' -key 'pkcs11:object=client;type=private'
  -CAfile "$card/ca.pem" -verify_return_error -ign_eof)
printf '$ printf %s | %s\n' "'GET / HTTP/1.0\r\n\r\n'" "$(quote "${client[@]}")"
printf 'GET / HTTP/1.0\r\n\r\n' | "${client[@]}" > "$work/s_client.out" 2> "$work/s_client.err" \
  || { cat "$work/s_client.out" "$work/s_client.err" >&2; exit 1; }
echo "--- client side:"
grep -E '^(New, |Verification|Peer signature type|Verify return code)' "$work/s_client.out" | sort -u
echo "--- what the server reports about the client's certificate (from its status page):"
sed -n '/^Client certificate/,/Subject:/p' "$work/s_client.out" | grep -E 'Client certificate|Issuer:|Subject:'
finish_server "$work/s_server.log"

heading "Mutual TLS with curl 7.88 through the libp11 engine (SIM key) vs openssl s_server -www"
start_server "$work/curl-server.log" -www
echo "server: https://localhost:$server_port/"
run env PKCS11_MODULE_PATH="$IOTSAFE_MODULE" curl --silent --show-error --fail \
  --engine pkcs11 --key-type ENG --key 'pkcs11:object=client;type=private' \
  --cert "$card/client.pem" --cacert "$card/ca.pem" \
  --resolve "localhost:$server_port:127.0.0.1" \
  -o "$work/curl-page.txt" -w 'curl: HTTP %{http_code}\n' "https://localhost:$server_port/"
grep -E '^(New, |Client certificate)' "$work/curl-page.txt"
sed -n '/^Client certificate/,/Subject:/p' "$work/curl-page.txt" | grep -E 'Subject:'
finish_server "$work/curl-server.log"

heading "Done: every step succeeded"
