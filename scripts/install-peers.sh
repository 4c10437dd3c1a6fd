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
  [dot]=graphviz          # renders `conclave topology diagram` (SVG, PNG)
  [rsyslogd]=rsyslog      # syslog receiver: tests/e2e/test_logging_rsyslog.py
  [linphonec]=linphone-cli  # Linphone's console client: tests/e2e/test_linphone.py
  [turnserver]=coturn     # TURN media relay: tests/e2e/test_media_relay.py
  [svwar]=sipvicious      # SIP user enumeration scanner: tests/security/test_enumeration.py
  [dnsmasq]=dnsmasq-base  # DNS server for published zones: tests/e2e/dnsmasq.py
  [kamailio]=kamailio     # a federated partner that is not Conclave: test_federation_kamailio.py
  [redis-server]=redis-server  # private Redis and Sentinel instances: tests/cluster/redis_servers.py
  [patroni]=patroni       # fails a pool's PostgreSQL over: tests/e2e/test_pool_patroni.py
  [etcd]=etcd-server      # Patroni's leader lock: tests/e2e/patroni_cluster.py
  [node]=nodejs           # runs JsSIP (web/package.json): tests/e2e/test_jssip.py
  [npm]=npm               # installs web/node_modules (make web/node_modules/.installed)
  [chromium]=chromium     # the browser client in a real browser (Playwright): test_browser_client.py
)
# packages with no tool of their own on PATH (checked with dpkg)
also=(
  rsyslog-gnutls          # rsyslog's TLS stream driver (RFC 5425)
  kamailio-tls-modules    # Kamailio's tls module (mutual TLS with the partner)
  postgresql              # server binaries for a private primary and standby: tests/e2e/postgres_cluster.py
)
missing=()
for tool in "${!want[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("${want[$tool]}")
done
for package in "${also[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "test peers present: ${!want[*]} ${also[*]}"
  exit 0
fi
echo "installing test peers: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
