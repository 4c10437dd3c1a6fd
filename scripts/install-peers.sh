#!/usr/bin/env bash
# Installs the Debian packages the test suite talks to as real peers
# (tests/e2e/peers.py; notes in docs/testing-peers.md).
# Idempotent: does nothing when every tool is already on PATH.
set -euo pipefail
# tool on PATH -> Debian package that provides it
declare -A want=(
  [sipp]=sip-tester       # 3.6.1 on Debian 12, built without TLS
  [sipsak]=sipsak
  [baresip]=baresip-core  # the core only: "baresip" pulls in GTK, X11, FFmpeg
  [stdbuf]=coreutils      # line-buffers baresip's stdout into the harness
  [testssl]=testssl.sh    # TLS scanner: tests/e2e/test_tls_testssl.py
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
