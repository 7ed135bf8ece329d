#!/usr/bin/env bash
# Install the browser the gallery tests drive (`make test` runs this first; safe to re-run): Debian's chromium,
# run headless by Playwright (the Python package, a dev dependency, drives it; no browser is downloaded).
# apt-get needs root, as in CI; elsewhere: sudo apt-get install chromium.
set -euo pipefail

command -v chromium > /dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "browser-setup: chromium is missing; run as root, or: sudo apt-get install chromium" >&2
  exit 1
fi
echo "== apt-get install chromium"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium > /dev/null
chromium --version
