#!/usr/bin/env bash
# Installs the Debian packages the test suite talks to as real peers.
# Idempotent: does nothing when every tool is already on PATH.
set -euo pipefail
declare -A want=(
  [sipp]=sip-tester
  [sipsak]=sipsak
)
missing=()
for tool in "${!want[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${want[$tool]}")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "test peers present: ${!want[*]}"
  exit 0
fi
echo "installing test peers: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
