#!/usr/bin/env bash
# Installs the Debian packages the benchmark suite (bench/, `make bench`) needs:
# Kamailio (the C SIP server Conclave is compared with, with its TLS module),
# sipp (the load generator) and stunnel (TLS in front of sipp, which Debian
# builds without TLS). Idempotent: does nothing when everything is present.
# Needs root for apt-get; otherwise it only reports what is missing.
set -euo pipefail
missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v stunnel4 >/dev/null 2>&1 || missing+=(stunnel4)
[ -x /usr/sbin/kamailio ] || missing+=(kamailio)
# tls.so comes in its own package
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || \
  [ -n "$(find /usr/lib -path '*kamailio/modules/tls.so' -print -quit 2>/dev/null)" ] || \
  missing+=(kamailio-tls-modules)
if [ "${#missing[@]}" -eq 0 ]; then
  echo "benchmark tools present: kamailio (+tls), sipp, stunnel4"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "not root: cannot install ${missing[*]} (run: sudo bash scripts/install-bench.sh)" >&2
  exit 1
fi
echo "installing benchmark tools: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package enables a system Kamailio service; the suite runs its own
# instance in the foreground, so make sure no packaged one holds port 5060.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet kamailio 2>/dev/null; then
  systemctl stop kamailio || true
fi
