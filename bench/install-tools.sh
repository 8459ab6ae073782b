#!/usr/bin/env bash
# What `make bench` needs beyond the project's virtualenv, each only when missing:
#   - nginx (the limit, and the x-accel / signed-URL front) and wrk (the load generator),
#     from Debian packages (root or sudo for apt-get);
#   - granian (the Rust ASGI server measured beside uvicorn) into the project's virtualenv
#     ($1, default .venv), through the project's `granian` extra;
#   - the peer queues' own virtualenv, .venv-peers (arq needs redis-py < 6, callrec uses
#     8), when their harness is beside this checkout (../shared/peers; bench/peers.py
#     says how it is found). Versions as in the peers' README.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # Other jobs on the machine may hold dpkg's lock for a while: wait for it.
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package's own nginx service is not what the bench runs; it starts its own.
fi

if ! "$venv/bin/python" -c "import granian" 2>/dev/null; then
  echo "installing granian into $venv"
  "$venv/bin/pip" install -q -e '.[dev,test,granian]'
fi

peers=$("$venv/bin/python" -c "from bench.peers import peers_dir; print(peers_dir() or '')")
if [ -z "$peers" ]; then
  echo "the peers' harness (../shared/peers) is not beside this checkout: the bench runs without them"
elif ! .venv-peers/bin/python -c "import arq, dramatiq, hiredis" 2>/dev/null; then
  echo "making .venv-peers for the peer queues in $peers"
  python3 -m venv .venv-peers
  .venv-peers/bin/pip install -q 'dramatiq[redis]==2.2.1' 'arq==0.28.0' 'redis[hiredis]>=5,<6' \
    httpx 'uvicorn[standard]' starlette
fi
