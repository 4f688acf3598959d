#!/usr/bin/env bash
# The differential run: the same checklist against SoftHSM2 (reference) and against our module on
# the simulated card, then a diff that fails on any difference not listed, with its reason, in
# softhsm-compare/intended-differences.toml.
#   bash softhsm-compare/compare.sh            # needs the stack: bash scripts/stack.sh start
# Environment: IOTSAFE_STACK_DIR (default target/stack), IOTSAFE_MODULE (default
# target/release/libiotsafe_pkcs11.so). Output in target/softhsm-compare/work/: softhsm.txt,
# iotsafe.txt (one line per check), diff.txt.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
stack_dir=${IOTSAFE_STACK_DIR:-$root/target/stack}
module=${IOTSAFE_MODULE:-$root/target/release/libiotsafe_pkcs11.so}
softhsm=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
out=$root/target/softhsm-compare/work
bin=$root/target/softhsm-compare/release/p11-compare
profile=$stack_dir/card/profile.toml
limit=${P11_COMPARE_TIMEOUT:-300}

[ -f "$profile" ] || { echo "compare: $profile not found: start the stack (bash scripts/stack.sh start)" >&2; exit 2; }
[ -f "$module" ] || { echo "compare: $module not found: cargo build --release" >&2; exit 2; }
[ -f "$softhsm" ] || { echo "compare: $softhsm not found: bash scripts/install-deps.sh (softhsm2)" >&2; exit 2; }

echo "compare: building p11-compare (softhsm-compare/, target dir target/softhsm-compare)"
cargo build --quiet --release --manifest-path softhsm-compare/Cargo.toml --target-dir target/softhsm-compare

# The module's token label for this card: "IoT SAFE " + the first 8 hex digits of the applet ID.
applet=$(sed -n 's/^applet_id *= *"\([0-9A-Fa-f]\{8\}\).*/\1/p' "$profile" | head -n 1)
label="IoT SAFE $applet"
mkdir -p "$out"
echo "compare: SoftHSM2 reference token \"$label\" from $profile"
bash softhsm-compare/setup-softhsm.sh "$out/softhsm" "$profile" "$label" "$bin"

echo "compare: checklist against $softhsm"
SOFTHSM2_CONF=$out/softhsm/softhsm2.conf timeout -k 5 "$limit" \
  "$bin" run --module "$softhsm" --label "$label" --pin 1234 --out "$out/softhsm.txt"
echo "compare: checklist against $module"
timeout -k 5 "$limit" "$bin" run --module "$module" --label "$label" --pin 1234 --out "$out/iotsafe.txt"

rc=0
"$bin" diff --reference "$out/softhsm.txt" --ours "$out/iotsafe.txt" \
  --intended softhsm-compare/intended-differences.toml \
  --known softhsm-compare/known-module-issues.toml > "$out/diff.txt" || rc=$?
cat "$out/diff.txt"
exit "$rc"
