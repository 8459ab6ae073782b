#!/usr/bin/env bash
# Debian's Chromium for the page's browser tests (Playwright drives it through
# executable_path; `playwright install` and its downloads are never used), with fonts so
# screenshots show text; and Debian's nginx, which tests/test_signed_urls.py runs with
# deploy/nginx.conf. Only when missing. Needs root or sudo for apt-get.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
# Other jobs on the machine may hold dpkg's lock for a while: wait for it.
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
