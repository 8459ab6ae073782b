#!/usr/bin/env bash
# A Docker engine for the container tests (tests/containers.py), on a machine where none
# runs yet: Debian's docker.io (and debootstrap, for the base image), then
# `dockerd --bridge=none`, since every container here uses host networking and no
# image registry is reachable (every image is built locally: tests/images.py).
#
# Idempotent, and safe when two runs race (flock): an engine that already answers is used
# as it is. Where no engine can be had (not root, no apt), it says so on one line and
# exits 0: the container tests then fail with that reason, the rest of the suite runs.
set -uo pipefail

log=${DOCKERD_LOG:-/var/log/callrec-dockerd.log}

engine_up() { docker info >/dev/null 2>&1; }

if engine_up && command -v debootstrap >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    engine_up || echo "tests/docker-up.sh: no Docker engine and not root: container tests will fail (deselect with -m 'not containers')"
    exit 0
fi

exec 9>/run/callrec-docker-up.lock
flock 9

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (apt-get)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null; }; then
        echo "tests/docker-up.sh: apt-get install ${missing[*]} failed: container tests will fail"
        exit 0
    fi
fi

if ! engine_up; then
    echo "starting dockerd --bridge=none (log: $log)"
    nohup dockerd --bridge=none >>"$log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
        engine_up && break
        sleep 0.5
    done
fi
if ! engine_up; then
    echo "tests/docker-up.sh: dockerd did not start (see $log): container tests will fail"
fi
exit 0
