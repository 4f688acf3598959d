#!/usr/bin/env bash
# Asks the real polkitd what the shipped polkit rule allows: the closest test there is while
# Debian 12's pcscd is built without polkit and never asks. Root only (useradd, mount namespace).
#   bash scripts/test-polkit-rule.sh [RULE_FILE]   (default packaging/polkit/60-iotsafe-pkcs11.rules)
# It starts its own dbus-daemon on a private socket (never the machine's system bus) and polkitd
# on it (DBUS_SYSTEM_BUS_ADDRESS), in a private mount namespace whose polkit directories hold only
# a test policy declaring pcsc-lite's two actions with upstream's defaults (any: no, inactive: no,
# active: yes) and the rule under test, so no file of the machine's polkit is read or changed.
# Then pkcheck --process asks for a process of each of three system users (no login session):
#   in the group "iotsafe" only                     -> authorized for both actions (exit 0)
#   with "iotsafe" as a supplementary group         -> authorized for both actions (exit 0)
#   outside the group                               -> "Not authorized." (exit 1) for both
# and, with polkitd restarted without the rule, the first user -> "Not authorized." (exit 1):
# the rule is what lets the group in. Users and the group "iotsafe" are made and removed unless
# they exist already; the daemons and processes it starts are stopped by PID on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rule=${1:-$root/packaging/polkit/60-iotsafe-pkcs11.rules}
[ "$(id -u)" = 0 ] || { echo "test-polkit-rule: run as root" >&2; exit 2; }
[ -f "$rule" ] || { echo "test-polkit-rule: no rule file $rule" >&2; exit 2; }

missing=()
[ -x /usr/lib/polkit-1/polkitd ] && command -v pkcheck >/dev/null || missing+=(polkitd)
command -v dbus-daemon >/dev/null || missing+=(dbus-daemon)
command -v dbus-send >/dev/null || missing+=(dbus-bin)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

actions=(org.debian.pcsc-lite.access_pcsc org.debian.pcsc-lite.access_card)
member=iotsafe-polkit-member        # primary group iotsafe, no other
supplementary=iotsafe-polkit-supp   # its own group, iotsafe as a supplementary one
outsider=iotsafe-polkit-outsider    # not in iotsafe
work=$(mktemp -d /tmp/iotsafe-polkit.XXXXXX)
chmod 0755 "$work"   # polkitd reads its directories as the user polkitd
bus=$work/system_bus_socket
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$bus
made_group=0
made_users=()
pids=()       # started here, stopped on exit
bus_pid=
polkitd_pid=
failures=0

say() { echo "test-polkit-rule: $*"; }
stop_pid() { kill "$1" 2>/dev/null || return 0; wait "$1" 2>/dev/null || true; }
cleanup() {
  local pid user
  set +e
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  [ -n "$polkitd_pid" ] && stop_pid "$polkitd_pid"
  [ -n "$bus_pid" ] && stop_pid "$bus_pid"
  for user in "${made_users[@]}"; do userdel "$user" 2>/dev/null || true; done
  [ "$made_group" = 1 ] && { groupdel iotsafe 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP   # so that cleanup runs then too

# Users and group, made unless they exist.
if ! getent group iotsafe >/dev/null; then
  groupadd --system iotsafe
  made_group=1
fi
add_user() { # name, useradd options
  local name=$1; shift
  getent passwd "$name" >/dev/null && return
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$@" "$name"
  made_users+=("$name")
}
add_user "$member" --gid iotsafe
add_user "$supplementary" --user-group --groups iotsafe
add_user "$outsider" --user-group
[ "$(id -Gn "$member")" = iotsafe ] || { say "FAIL: $member is in: $(id -Gn "$member")"; exit 1; }
id -Gn "$supplementary" | tr ' ' '\n' | grep -qx iotsafe \
  && [ "$(id -gn "$supplementary")" != iotsafe ] || { say "FAIL: $supplementary is in: $(id -Gn "$supplementary")"; exit 1; }
! id -Gn "$outsider" | tr ' ' '\n' | grep -qx iotsafe || { say "FAIL: $outsider is in iotsafe"; exit 1; }

# The test policy: pcsc-lite's two actions with upstream's defaults.
mkdir -p "$work/actions" "$work/rules-usr" "$work/rules-etc"
{
  echo '<?xml version="1.0" encoding="UTF-8"?>'
  echo '<!DOCTYPE policyconfig PUBLIC "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"'
  echo ' "http://www.freedesktop.org/standards/PolicyKit/1.0/policyconfig.dtd">'
  echo '<policyconfig>'
  for action in "${actions[@]}"; do
    echo "  <action id=\"$action\">"
    echo "    <description>$action (iotsafe-pkcs11 test)</description>"
    echo "    <message>$action is needed (iotsafe-pkcs11 test)</message>"
    echo '    <defaults><allow_any>no</allow_any><allow_inactive>no</allow_inactive><allow_active>yes</allow_active></defaults>'
    echo '  </action>'
  done
  echo '</policyconfig>'
} > "$work/actions/org.debian.pcsc-lite.policy"

# The private bus: the system bus type, anyone may own and call anything.
cat > "$work/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
EOF
chmod -R a+rX "$work"
dbus-daemon --config-file="$work/bus.conf" --nofork --nopidfile > "$work/dbus.log" 2>&1 &
bus_pid=$!
for _ in $(seq 100); do [ -S "$bus" ] && break; sleep 0.1; done
[ -S "$bus" ] || { cat "$work/dbus.log" >&2; say "FAIL: the private dbus-daemon did not start"; exit 1; }

polkitd_has_name() {
  dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:org.freedesktop.PolicyKit1 2>/dev/null | grep -q 'boolean true'
}
start_polkitd() { # with_rule: 1 or 0 (its log: polkitd-1.log or polkitd-0.log)
  rm -f "$work/rules-usr"/*
  [ "$1" = 1 ] && install -m 0644 "$rule" "$work/rules-usr/60-iotsafe-pkcs11.rules"
  # unshare execs the shell, the shell execs polkitd: the PID is polkitd's.
  unshare --mount --propagation private sh -c '
    mount --bind "$1/actions" /usr/share/polkit-1/actions &&
    mount --bind "$1/rules-usr" /usr/share/polkit-1/rules.d &&
    mount --bind "$1/rules-etc" /etc/polkit-1/rules.d &&
    exec /usr/lib/polkit-1/polkitd' sh "$work" > "$work/polkitd-$1.log" 2>&1 &
  polkitd_pid=$!
  for _ in $(seq 100); do polkitd_has_name && return; sleep 0.1; done
  cat "$work/polkitd-$1.log" >&2
  say "FAIL: polkitd did not take org.freedesktop.PolicyKit1 on the private bus"
  exit 1
}
stop_polkitd() { stop_pid "$polkitd_pid"; polkitd_pid=; }

start_as() { # user: a process of that user (its groups from /etc/group), stopped on exit
  setpriv --reuid="$1" --regid="$(id -g "$1")" --init-groups sleep 600 &
  pids+=($!)
}
start_as "$member"; member_pid=${pids[-1]}
start_as "$supplementary"; supplementary_pid=${pids[-1]}
start_as "$outsider"; outsider_pid=${pids[-1]}

check() { # label, user, pid, action, expected exit status, expected stderr ("" for none)
  local label=$1 user=$2 pid=$3 action=$4 want_rc=$5 want_err=$6 rc err
  set +e
  pkcheck --action-id "$action" --process "$pid" > "$work/pkcheck.out" 2> "$work/pkcheck.err"
  rc=$?
  set -e
  err=$(tr '\n' ' ' < "$work/pkcheck.err" | sed 's/ *$//')
  if [ "$rc" = "$want_rc" ] && [ "$err" = "$want_err" ]; then
    say "PASS: $label: $user, $action: pkcheck exit $rc${err:+ ($err)}"
  else
    say "FAIL: $label: $user, $action: pkcheck exit $rc${err:+ ($err)}, wanted exit $want_rc${want_err:+ ($want_err)}"
    failures=$((failures + 1))
  fi
}

start_polkitd 1
for action in "${actions[@]}"; do
  # The policy is what polkitd loaded: the defaults the rule has to override.
  defaults=$(pkaction --verbose --action-id "$action" 2>&1 | sed -n 's/^ *implicit \(any\|inactive\|active\): *//p' | paste -sd/)
  if [ "$defaults" = "no/no/yes" ]; then
    say "PASS: polkitd knows $action, implicit any/inactive/active: $defaults"
  else
    say "FAIL: polkitd reports $action with implicit any/inactive/active: '$defaults'"
    failures=$((failures + 1))
  fi
  check "with the rule" "$member" "$member_pid" "$action" 0 ""
  check "with the rule" "$supplementary" "$supplementary_pid" "$action" 0 ""
  check "with the rule" "$outsider" "$outsider_pid" "$action" 1 "Not authorized."
done
stop_polkitd

start_polkitd 0
for action in "${actions[@]}"; do
  check "without the rule" "$member" "$member_pid" "$action" 1 "Not authorized."
done
stop_polkitd

if [ "$failures" = 0 ]; then
  say "all polkit rule checks passed ($rule)"
else
  for log in "$work"/polkitd-*.log; do say "$log:"; cat "$log"; done
  say "$failures check(s) failed"
  exit 1
fi
