#!/usr/bin/env bash
# Debian's Chromium for the page's browser tests (Playwright drives it through
# executable_path; `playwright install` and its downloads are never used), with fonts so
# screenshots show text. Only when missing. Needs root or sudo for apt-get.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing chromium (apt-get)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
