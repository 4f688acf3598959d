# Shared by the scripts that run OpenSSL against the card: source it, then call
#   provider_module                   the path of pkcs11-provider's pkcs11.so (empty if missing)
#   write_provider_conf FILE MODULE   an OPENSSL_CONF loading pkcs11-provider with MODULE only
#   start_s_server LOG ARGS...        `openssl s_server -accept 127.0.0.1:0 ARGS...` in the
#                                     background; sets server_pid and server_port (stdout in
#                                     LOG, stderr in LOG.err); returns 1 if it did not start.

provider_module() {
  local dir
  dir=$(openssl version -m 2>/dev/null | sed -nE 's/^MODULESDIR: "(.*)"$/\1/p')
  if [ -n "$dir" ] && [ -f "$dir/pkcs11.so" ]; then echo "$dir/pkcs11.so"; return; fi
  dpkg -L pkcs11-provider 2>/dev/null | grep -E '/ossl-modules/pkcs11\.so$' | head -n 1 || true
}

write_provider_conf() {
  local file=$1 module=$2 provider
  provider=$(provider_module)
  [ -n "$provider" ] || echo "warning: pkcs11-provider not found (scripts/install-deps.sh installs it)" >&2
  cat >"$file" <<CONF
# OpenSSL 3 configuration that loads pkcs11-provider with the IoT SAFE module only.
# Use: OPENSSL_CONF=$file openssl ... -key 'pkcs11:object=client;type=private'
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect

[provider_sect]
default = default_sect
pkcs11 = pkcs11_sect

[default_sect]
activate = 1

[pkcs11_sect]
module = ${provider:-/usr/lib/x86_64-linux-gnu/ossl-modules/pkcs11.so}
pkcs11-module-path = $module
activate = 1
CONF
}

start_s_server() {
  local log=$1 i
  shift
  # Created here, before the server starts: the server's own redirection happens in the child,
  # and a reader that looks first would find no file.
  : >"$log"
  : >"$log.err"
  OPENSSL_CONF=/dev/null openssl s_server -accept 127.0.0.1:0 "$@" </dev/null >"$log" 2>"$log.err" &
  server_pid=$!
  server_port=
  for ((i = 0; i < 300; i++)); do
    server_port=$(sed -nE 's/^ACCEPT .*:([0-9]+)$/\1/p' "$log" | head -n 1)
    [ -n "$server_port" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log" "$log.err" >&2
  echo "openssl s_server did not start" >&2
  return 1
}
