#!/bin/sh
# Enables the Debian backports suite of this machine's release in apt, then refreshes apt's lists.
# Same job as ../shared/tools/apt-backports, carried here so a clone works on its own.
# No archive address is written: the one already configured for the main suite is reused.
# Usage (as root): sh scripts/apt-backports.sh
set -eu
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
if grep -rqs -- "${codename}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "apt-backports: ${codename}-backports already configured"
else
  # deb822 style (Debian 12 default): copy the first stanza (the main archive) of the first
  # .sources file, with its Suites line replaced by the backports suite.
  src=$(ls /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 || true)
  if [ -n "$src" ]; then
    awk 'BEGIN { RS = ""; ORS = "\n" } NR == 1 { print; exit }' "$src" \
      | sed "s/^Suites:.*/Suites: ${codename}-backports/" \
      > /etc/apt/sources.list.d/backports.sources
  else
    # one-line style: reuse the URI of the first "deb" line.
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | sed -E 's/\[[^]]*\]//' | awk '$1 == "deb" { print $2; exit }')
    if [ -z "$uri" ]; then
      echo "apt-backports: no configured Debian archive found to reuse" >&2
      exit 1
    fi
    echo "deb $uri ${codename}-backports main" > /etc/apt/sources.list.d/backports.list
  fi
  echo "apt-backports: added ${codename}-backports"
fi
apt-get update -qq
