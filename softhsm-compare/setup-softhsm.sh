#!/usr/bin/env bash
# Builds the SoftHSM2 reference token that mirrors a simulated IoT SAFE card, in a private
# SOFTHSM2_CONF directory (nothing outside WORKDIR is touched).
#   bash softhsm-compare/setup-softhsm.sh WORKDIR PROFILE LABEL [P11_COMPARE]
# WORKDIR      emptied and filled: softhsm2.conf, tokens/
# PROFILE      the card's profile.toml (from `iotsafe-sim init-profile`; the stack's card is
#              target/stack/card/profile.toml)
# LABEL        token label (the module's label for that card: "IoT SAFE <first 8 hex digits of
#              the applet identifier>")
# P11_COMPARE  the p11-compare binary (default target/softhsm-compare/release/p11-compare)
# Then: SOFTHSM2_CONF=WORKDIR/softhsm2.conf pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so -O
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${1:?WORKDIR}
profile=${2:?PROFILE}
label=${3:?LABEL}
p11compare=${4:-$root/target/softhsm-compare/release/p11-compare}
softhsm=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

rm -rf "$work"
mkdir -p "$work/tokens"
work=$(cd "$work" && pwd)
# library.reset_on_fork stays at its default (false): how SoftHSM2 is normally used, and the
# fork checks record its behaviour as an intended difference.
cat > "$work/softhsm2.conf" <<CONF
directories.tokendir = $work/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
slots.mechanisms = ALL
library.reset_on_fork = false
CONF
export SOFTHSM2_CONF=$work/softhsm2.conf
softhsm2-util --module "$softhsm" --init-token --free --label "$label" --so-pin 12345678 --pin 1234 >/dev/null
"$p11compare" setup --module "$softhsm" --label "$label" --pin 1234 --profile "$profile"
