#!/usr/bin/env bash
# The real PC/SC stack with the simulated IoT SAFE card behind it:
#   a private pcscd (reader config: one vsmartcard-vpcd line, ports 35963/35964)
#   + iotsafe-sim connected to the first vpcd port as the card.
#
# Usage: bash scripts/stack.sh start|stop|status|env
#   start   write a fresh card profile, start pcscd and the simulator, wait for the card,
#           write <state dir>/env (shell exports for the module, the tests and the tools)
#   stop    stop exactly the processes `start` started (by PID), idempotent
#   status  show what runs
#   env     print the exports (use: eval "$(bash scripts/stack.sh env)")
#
# State dir: $IOTSAFE_STACK_DIR, default <repo>/target/stack. Needs root (pcscd writes /run/pcscd)
# and the release build (cargo build --release --workspace).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stack_dir=${IOTSAFE_STACK_DIR:-$root/target/stack}
mkdir -p "$stack_dir"
stack_dir=$(cd "$stack_dir" && pwd)

port=35963                      # vpcd listens here (slot 0) and on port+1 (slot 1)
reader_name="IoT SAFE sim"
wait_seconds=${IOTSAFE_STACK_WAIT:-30}
sim_bin=$root/target/release/iotsafe-sim
module=${IOTSAFE_MODULE:-$root/target/release/libiotsafe_pkcs11.so}
vpcd_driver=/usr/lib/pcsc/drivers/serial/libifdvpcd.so

card_dir=$stack_dir/card
log_dir=$stack_dir/log
run_dir=$stack_dir/run
conf_dir=$stack_dir/reader.conf.d
control=$stack_dir/sim.sock
env_file=$stack_dir/env
provider_conf=$stack_dir/openssl-pkcs11-provider.cnf

say() { echo "stack: $*"; }
die() { echo "stack: ERROR: $*" >&2; exit 1; }

# --- processes -------------------------------------------------------------------------------

# alive PID: true if the process exists and is not a zombie.
alive() {
  local pid=$1 state
  [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# exe_is PID NAME: the process's executable is called NAME (guards against a reused PID).
exe_is() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [ "$(basename "${exe% (deleted)}")" = "$2" ]
}

# ours NAME: PID recorded in run/NAME.pid if that process still runs as NAME; else nothing.
ours() {
  local f=$run_dir/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && exe_is "$pid" "$1"; then echo "$pid"; fi
}

# other_pcscds: PIDs of running pcscd processes that are not ours.
other_pcscds() {
  local mine d pid
  mine=$(ours pcscd)
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$(cat "$d/comm" 2>/dev/null)" = pcscd ] || continue
    alive "$pid" || continue
    [ "$pid" = "$mine" ] || echo "$pid"
  done
}

# stop_pid NAME: TERM the process from run/NAME.pid, wait (bounded), KILL if needed.
stop_pid() {
  local name=$1 pid i
  pid=$(ours "$name")
  if [ -n "$pid" ]; then
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      say "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    fi
    alive "$pid" && die "$name (pid $pid) does not stop"
  fi
  rm -f "$run_dir/$name.pid"
}

# readers_output: what opensc-tool sees through pcscd (empty if nothing).
readers_output() { opensc-tool --list-readers 2>/dev/null || true; }

# card_present: the first reader of our vpcd line shows a card.
#   opensc-tool prints e.g. "0    Yes             IoT SAFE sim 00 00".
card_present() { readers_output | grep -E "^[[:space:]]*[0-9]+[[:space:]]+Yes[[:space:]].*$reader_name" >/dev/null; }
reader_present() { readers_output | grep -F "$reader_name" >/dev/null; }

# wait_for CHECK PID...: poll CHECK up to $wait_seconds while the PIDs stay alive;
# returns 1 on timeout, 2 if one of the PIDs died.
wait_for() {
  local check=$1 i pid
  shift
  for ((i = 0; i < wait_seconds * 10; i++)); do
    "$check" && return 0
    for pid in "$@"; do alive "$pid" || return 2; done
    sleep 0.1
  done
  return 1
}

show_logs() {
  local f
  for f in "$log_dir"/*.log; do
    [ -f "$f" ] || continue
    echo "----- last lines of $f" >&2
    tail -n 30 "$f" >&2
  done
}

# --- files -----------------------------------------------------------------------------------

# provider_module, write_provider_conf FILE MODULE: the one OpenSSL configuration all scripts use.
# shellcheck source=scripts/lib/openssl.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/openssl.sh"

write_env() {
  cat > "$env_file" <<EOF
# written by scripts/stack.sh start; use: . $env_file
export IOTSAFE_STACK_DIR='$stack_dir'
export IOTSAFE_MODULE='$module'
export IOTSAFE_SIM_CONTROL='$control'
export IOTSAFE_CARD_DIR='$card_dir'
export IOTSAFE_OPENSSL_CONF='$provider_conf'
export IOTSAFE_READER='$reader_name'
# The module's content cache of this stack: a fresh card (same keys as the last one, other
# content) must not find what the last stack's card said.
export XDG_CACHE_HOME='$stack_dir/cache'
EOF
}

# Starts our pcscd in the background with the private reader configuration (appends to its log).
start_pcscd() {
  say "starting pcscd (log: $log_dir/pcscd.log)"
  local pcscd_args=(--foreground --config "$conf_dir")
  [ -n "${IOTSAFE_PCSCD_DEBUG:-}" ] && pcscd_args+=(--debug --apdu)
  pcscd "${pcscd_args[@]}" < /dev/null >> "$log_dir/pcscd.log" 2>&1 &
  started_pcscd_pid=$!
  echo "$started_pcscd_pid" > "$run_dir/pcscd.pid"
}

# --- commands --------------------------------------------------------------------------------

start() {
  local pcscd_pid sim_pid others rc=0

  pcscd_pid=$(ours pcscd)
  sim_pid=$(ours iotsafe-sim)
  if [ -n "$pcscd_pid" ] && [ -n "$sim_pid" ] && card_present; then
    write_provider_conf "$provider_conf" "$module"
    write_env
    say "already running (pcscd pid $pcscd_pid, iotsafe-sim pid $sim_pid); env: $env_file"
    return 0
  fi
  # Half a stack (e.g. after a crash): stop what is left of ours, start afresh.
  stop_pid iotsafe-sim
  stop_pid pcscd

  [ "$(id -u)" -eq 0 ] || die "must run as root (pcscd creates /run/pcscd); try: sudo bash $0 start"
  command -v pcscd >/dev/null && command -v opensc-tool >/dev/null && [ -f "$vpcd_driver" ] \
    || die "pcscd, opensc-tool or the vpcd driver is missing; run: bash scripts/install-deps.sh"
  [ -x "$sim_bin" ] || die "$sim_bin not found; build first: cargo build --release --workspace"
  [ -f "$module" ] || say "warning: module $module not built yet (cargo build --release)"

  others=$(other_pcscds | tr '\n' ' ')
  if [ -n "$others" ]; then
    die "another pcscd is already running (pid ${others% }), not started by this script.
  Only one pcscd can run per machine. This script does not stop it; stop it yourself, e.g.
    systemctl stop pcscd.socket pcscd.service   # where systemd runs it
    kill <pid>                                  # if you started it by hand
  then run: bash scripts/stack.sh start"
  fi
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ] \
    && systemctl is-active --quiet pcscd.socket 2>/dev/null; then
    die "systemd's pcscd.socket is active (it would start the system pcscd on the first client).
  Stop it first: systemctl stop pcscd.socket pcscd.service"
  fi

  mkdir -p "$log_dir" "$run_dir" "$conf_dir"
  rm -rf "$card_dir" "$stack_dir/cache"
  mkdir -p "$card_dir"
  rm -f "$control"

  # A fresh card for every start: deterministic tests, and a profile matching the simulator.
  "$sim_bin" init-profile "$card_dir/profile.toml" > "$log_dir/init-profile.log" 2>&1 \
    || { cat "$log_dir/init-profile.log" >&2; die "iotsafe-sim init-profile failed"; }
  local f
  for f in profile.toml ca.pem ca-key.pem client.pem server.pem server-key.pem; do
    [ -f "$card_dir/$f" ] || die "iotsafe-sim init-profile did not write $card_dir/$f"
  done

  cat > "$conf_dir/vpcd" <<EOF
# private reader configuration of scripts/stack.sh: one vsmartcard-vpcd reader line
# (the driver listens on $port for slot 0 and on $((port + 1)) for slot 1)
FRIENDLYNAME "$reader_name"
DEVICENAME /dev/null:$port
LIBPATH $vpcd_driver
CHANNELID $port
EOF

  : > "$log_dir/pcscd.log"
  start_pcscd
  pcscd_pid=$started_pcscd_pid

  wait_for reader_present "$pcscd_pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    show_logs
    stop_pid pcscd
    [ "$rc" -eq 2 ] && die "pcscd exited during start-up (see the log above)"
    die "reader '$reader_name' did not appear within ${wait_seconds} s"
  fi

  say "starting iotsafe-sim on port $port (log: $log_dir/sim.log)"
  "$sim_bin" vpcd --profile "$card_dir/profile.toml" --port "$port" --control "$control" \
    < /dev/null > "$log_dir/sim.log" 2>&1 &
  sim_pid=$!
  echo "$sim_pid" > "$run_dir/iotsafe-sim.pid"

  control_ready() { [ -S "$control" ] && card_present; }
  wait_for control_ready "$pcscd_pid" "$sim_pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    show_logs
    readers_output >&2
    stop_pid iotsafe-sim
    stop_pid pcscd
    [ "$rc" -eq 2 ] && die "pcscd or iotsafe-sim exited during start-up (see the logs above)"
    die "no card in reader '$reader_name' (or no control socket $control) within ${wait_seconds} s"
  fi

  write_provider_conf "$provider_conf" "$module"
  write_env
  say "up: pcscd pid $pcscd_pid, iotsafe-sim pid $sim_pid"
  readers_output | sed 's/^/stack:   /'
  say "env: $env_file   (. $env_file)"
}

stop() {
  local had=0
  [ -n "$(ours iotsafe-sim)$(ours pcscd)" ] && had=1
  stop_pid iotsafe-sim
  stop_pid pcscd
  rm -f "$control"
  if [ "$had" -eq 1 ]; then say "stopped"; else say "not running (nothing to stop)"; fi
}

# Restarts only pcscd (the simulator reconnects by itself): for the recovery tests.
restart_pcscd() {
  local sim_pid rc=0
  sim_pid=$(ours iotsafe-sim)
  [ -n "$(ours pcscd)" ] && [ -n "$sim_pid" ] || die "the stack is not running; run: bash scripts/stack.sh start"
  stop_pid pcscd
  start_pcscd
  wait_for card_present "$started_pcscd_pid" "$sim_pid" || rc=$?
  [ "$rc" -eq 0 ] || { show_logs; die "the card did not come back after restarting pcscd"; }
  say "pcscd restarted: pid $(ours pcscd)"
}

status() {
  local p s o
  p=$(ours pcscd)
  s=$(ours iotsafe-sim)
  o=$(other_pcscds | tr '\n' ' ')
  echo "state dir:   $stack_dir"
  if [ -n "$p" ]; then echo "pcscd:       running, pid $p"; else echo "pcscd:       not running"; fi
  if [ -n "$s" ]; then echo "iotsafe-sim: running, pid $s"; else echo "iotsafe-sim: not running"; fi
  [ -n "$o" ] && echo "other pcscd: pid ${o% } (not ours)"
  if [ -n "$p" ]; then readers_output; fi
  [ -n "$p" ] && [ -n "$s" ]
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart-pcscd) restart_pcscd ;;
  env)
    [ -f "$env_file" ] || die "no $env_file; run: bash scripts/stack.sh start"
    grep '^export ' "$env_file"
    ;;
  *)
    echo "usage: bash scripts/stack.sh start|stop|status|env|restart-pcscd" >&2
    exit 2
    ;;
esac
