#!/usr/bin/env bash
# Installs the Debian packages of target/debian/ (scripts/package.sh) on this machine and uses
# them as a service user, then removes them: what a gateway's package manager and its daemons do.
# Root only (dpkg, useradd). Needs the running test stack (bash scripts/stack.sh start): the
# system pcscd with the simulated card behind vpcd.
#   1. an older version (the same files, version 0.0.0~old) is installed, the user edits the
#      conffile, the new version is installed over it: the edit is kept;
#   2. p11-kit list-modules shows the module;
#   3. a system user in the group "iotsafe" only signs over the system pcscd through the p11-kit
#      proxy module, and over a simulated modem whose tty belongs to the group "iotsafe"
#      (root:iotsafe 0660, as a udev GROUP= rule makes it); both signatures verify with openssl
#      against the card's certificate;
#      `iotsafe-pkcs11 doctor` run by that user passes every step over both;
#   4. a system user outside the group gets CKR_DEVICE_ERROR on the modem slot, with a log line
#      naming the permission, in bounded time, and the doctor names the permission and the fix;
#      the installed polkit rule lets the group (and only it) use pcscd, asked of the real polkitd;
#   5. dpkg -r removes every file but the conffile; dpkg -P removes that too.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[ "$(id -u)" = 0 ] || { echo "test-packages: run as root" >&2; exit 2; }
[ -f target/stack/env ] || { echo "test-packages: no stack (bash scripts/stack.sh start)" >&2; exit 2; }
# shellcheck disable=SC1091
. target/stack/env

arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
deb=$(ls target/debian/iotsafe-pkcs11_*_"$arch".deb)
sim_deb=$(ls target/debian/iotsafe-sim_*_"$arch".deb)
work=$(mktemp -d /tmp/iotsafe-packages.XXXXXX)
chmod 0755 "$work"
user=iotsafe-svc
outsider=iotsafe-outsider
sim_pid=
say() { echo "test-packages: $*"; }
fail() { echo "test-packages: FAIL: $*" >&2; exit 1; }
cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  dpkg -P iotsafe-pkcs11 iotsafe-sim >/dev/null 2>&1 || true
  userdel "$user" 2>/dev/null || true
  userdel "$outsider" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
dpkg -P iotsafe-pkcs11 iotsafe-sim >/dev/null 2>&1 || true

# 1. An older version, a user's edit, the upgrade.
old=$work/old
dpkg-deb -R "$deb" "$old"
sed -i 's/^Version: .*/Version: 0.0.0~old/' "$old/DEBIAN/control"
dpkg-deb --root-owner-group --build "$old" "$work/iotsafe-pkcs11_old.deb" >/dev/null
dpkg -i "$work/iotsafe-pkcs11_old.deb" >/dev/null
getent group iotsafe >/dev/null || fail "postinst made no group iotsafe"
sed -i 's/^# log = "warn"$/log = "warn" # edited by the user/' /etc/iotsafe-pkcs11/config.toml
grep -q 'edited by the user' /etc/iotsafe-pkcs11/config.toml || fail "the example config has no '# log = \"warn\"' line"
dpkg -i "$deb" "$sim_deb" >/dev/null
grep -q 'edited by the user' /etc/iotsafe-pkcs11/config.toml || fail "the upgrade lost the user's config"
say "upgrade from 0.0.0~old to $(dpkg-query -W -f='${Version}' iotsafe-pkcs11) kept the edited conffile"

# 2. p11-kit sees the module.
p11-kit list-modules | grep -q '^iotsafe-pkcs11: libiotsafe_pkcs11.so' || fail "p11-kit list-modules does not show iotsafe-pkcs11"
say "p11-kit list-modules shows iotsafe-pkcs11"

# 3. A service user in the group "iotsafe" only.
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
  --gid iotsafe "$user"
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$outsider"
groups=$(id -Gn "$user")
[ "$groups" = iotsafe ] || fail "$user is in: $groups"
as_user() { local who=$1; shift; runuser -u "$who" -- env -i PATH=/usr/bin:/bin "$@"; }
openssl x509 -in "$IOTSAFE_CARD_DIR/client.pem" -pubkey -noout > "$work/client-pub.pem"
printf 'signed by a service user\n' > "$work/data"
chmod 0644 "$work"/*
out=$work/out   # where the service users write
mkdir -m 1777 "$out"

proxy=/usr/lib/$multiarch/p11-kit-proxy.so
slot_of() { # the slot id of the first token whose label contains $2, for user $1
  as_user "$1" pkcs11-tool --module "$proxy" -L 2>/dev/null \
    | awk -v want="$2" '/^Slot [0-9]+ \(0x[0-9a-f]+\)/ {slot=$3} /token label/ && index($0, want) {gsub(/[():]/, "", slot); print slot; exit}'
}
slot=$(slot_of "$user" "IoT SAFE")
[ -n "$slot" ] || fail "$user sees no IoT SAFE token through the p11-kit proxy"
as_user "$user" pkcs11-tool --module "$proxy" --slot "$slot" --sign --mechanism ECDSA-SHA256 \
  --signature-format openssl --id 01 --input-file "$work/data" --output-file "$out/sig-pcscd" \
  2> "$work/err-pcscd" || { cat "$work/err-pcscd" >&2; fail "$user could not sign over pcscd"; }
openssl dgst -sha256 -verify "$work/client-pub.pem" -signature "$out/sig-pcscd" "$work/data" >/dev/null \
  || fail "the pcscd signature does not verify against the card's certificate"
say "$user signed over the system pcscd through p11-kit-proxy (slot $slot); the signature verifies"

# The simulated modem: its tty root:iotsafe 0660, the module configured with it only.
sim_dir=$work/modem
mkdir -p "$sim_dir"
iotsafe-sim init-profile "$sim_dir/profile.toml" >/dev/null
iotsafe-sim modem --no-persist --link "$sim_dir/tty" --profile "$sim_dir/profile.toml" 2> "$sim_dir/log" &
sim_pid=$!
for _ in $(seq 100); do [ -e "$sim_dir/tty" ] && break; sleep 0.1; done
[ -e "$sim_dir/tty" ] || fail "the simulated modem did not start"
tty=$(readlink -f "$sim_dir/tty")
chown root:iotsafe "$tty"
chmod 0660 "$tty"
# Lock files an earlier root process left for an earlier pseudo-terminal of this number carry
# that one's group; an administrator who regroups a port removes them (the doctor says so).
rdev=$(stat -c '%t %T' "$tty")
rm -f /run/lock/iotsafe-pkcs11.tty-$((16#${rdev% *}))-$((16#${rdev#* })).*
openssl x509 -in "$sim_dir/client.pem" -pubkey -noout > "$work/client-pub.pem"
printf '[pcsc]\nenabled = false\n[[modem]]\ndevice = "%s"\ntimeout_ms = 3000\n' "$tty" > "$work/modem.toml"
chmod a+r "$work/modem.toml" "$work/client-pub.pem"
module=/usr/lib/$multiarch/pkcs11/libiotsafe_pkcs11.so
as_modem() { local who=$1; shift; runuser -u "$who" -- env -i PATH=/usr/bin:/bin \
  IOTSAFE_PKCS11_CONFIG="$work/modem.toml" IOTSAFE_PKCS11_LOG=warn "$@"; }
as_modem "$user" pkcs11-tool --module "$module" --sign --mechanism ECDSA-SHA256 \
  --signature-format openssl --id 01 --input-file "$work/data" --output-file "$out/sig-modem" \
  2> "$work/err-modem" || { cat "$work/err-modem" >&2; fail "$user could not sign over the modem"; }
openssl dgst -sha256 -verify "$work/client-pub.pem" -signature "$out/sig-modem" "$work/data" >/dev/null \
  || fail "the modem signature does not verify against the modem card's certificate"
say "$user signed over the simulated modem (tty root:iotsafe 0660); the signature verifies"

# The field diagnosis, as the service user: every step passes over the modem and over pcscd.
finding() { # the verdict of check $2 in the doctor's JSON report $1 (the first such finding)
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(next((f["verdict"]+" "+f["detail"]+" | fix: "+f.get("fix","") for f in r["findings"] if f["check"]==sys.argv[2]), "none"))' "$1" "$2"
}
as_modem "$user" iotsafe-pkcs11 doctor --json > "$work/doctor-modem.json" \
  || { as_modem "$user" iotsafe-pkcs11 doctor >&2; fail "iotsafe-pkcs11 doctor failed for $user over the modem"; }
for check in modem-port modem-turns modem-at applet signature tokens; do
  case $(finding "$work/doctor-modem.json" $check) in ok*) ;; *) fail "doctor, $user, modem: $check: $(finding "$work/doctor-modem.json" $check)" ;; esac
done
as_user "$user" iotsafe-pkcs11 doctor --json > "$work/doctor-pcscd.json" \
  || { as_user "$user" iotsafe-pkcs11 doctor >&2; fail "iotsafe-pkcs11 doctor failed for $user over pcscd (/etc/iotsafe-pkcs11/config.toml)"; }
for check in configuration pcscd signature tokens; do
  case $(finding "$work/doctor-pcscd.json" $check) in ok*) ;; *) fail "doctor, $user, pcscd: $check: $(finding "$work/doctor-pcscd.json" $check)" ;; esac
done
say "iotsafe-pkcs11 doctor as $user: every step ok over the modem and over the system pcscd ($(finding "$work/doctor-pcscd.json" signature | cut -c1-60)...)"

# 4. A user outside the group: CKR_DEVICE_ERROR and a log line naming the permission, in
# bounded time; the doctor names the permission and the group to join.
start=$(date +%s)
set +e
as_modem "$outsider" timeout 30 pkcs11-tool --module "$module" -O > "$work/out-outsider" 2> "$work/err-outsider"
rc=$?
set -e
took=$(( $(date +%s) - start ))
[ "$rc" != 124 ] || fail "pkcs11-tool hung for $outsider"
grep -q 'CKR_DEVICE_ERROR' "$work/out-outsider" "$work/err-outsider" || { cat "$work/out-outsider" "$work/err-outsider" >&2; fail "no CKR_DEVICE_ERROR for $outsider"; }
grep -qi 'permission denied' "$work/err-outsider" || { cat "$work/err-outsider" >&2; fail "no log line names the permission for $outsider"; }
say "$outsider: $(grep -h -m1 -o 'error: .*CKR_DEVICE_ERROR.*' "$work/out-outsider" "$work/err-outsider" | head -1); log: $(grep -i -m1 'permission denied' "$work/err-outsider") (${took} s)"
set +e
as_modem "$outsider" timeout 30 iotsafe-pkcs11 doctor --json > "$work/doctor-outsider.json"
rc=$?
set -e
[ "$rc" = 1 ] || fail "iotsafe-pkcs11 doctor for $outsider exited $rc, not 1"
case $(finding "$work/doctor-outsider.json" modem-port) in
  "fail permission denied"*"usermod -aG iotsafe $outsider"*) ;;
  *) fail "doctor, $outsider: modem-port: $(finding "$work/doctor-outsider.json" modem-port)" ;;
esac
say "iotsafe-pkcs11 doctor as $outsider: $(finding "$work/doctor-outsider.json" modem-port)"

# The installed polkit rule, asked of the real polkitd (Debian 12's pcscd does not ask polkit:
# scripts/test-polkit-rule.sh says why and what it checks).
bash scripts/test-polkit-rule.sh /usr/share/polkit-1/rules.d/60-iotsafe-pkcs11.rules > "$work/polkit.log" 2>&1 \
  || { cat "$work/polkit.log" >&2; fail "the installed polkit rule"; }
say "polkit rule: $(grep -c 'PASS:' "$work/polkit.log") checks passed with the real polkitd (scripts/test-polkit-rule.sh)"

# 5. Removal.
kill "$sim_pid"; wait "$sim_pid" 2>/dev/null || true; sim_pid=
files=$(dpkg -L iotsafe-pkcs11 iotsafe-sim | sort -u)
dpkg -r iotsafe-pkcs11 iotsafe-sim >/dev/null
left=$(for f in $files; do [ -f "$f" ] && echo "$f"; done; true)
[ "$left" = /etc/iotsafe-pkcs11/config.toml ] || fail "after dpkg -r these files remain: $left"
dpkg -P iotsafe-pkcs11 iotsafe-sim >/dev/null 2>&1
[ ! -e /etc/iotsafe-pkcs11 ] || fail "dpkg -P left /etc/iotsafe-pkcs11"
say "dpkg -r removed every file but the conffile; dpkg -P removed that too"
say "all package checks passed"
