#!/usr/bin/env bash
# Install Debian's chromium package (the headless browser the report test renders the HTML report
# with) when it is missing and we are root, as on a fresh CI machine. Quiet unless it fails.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium.sh: chromium is not installed (apt-get install chromium); the report rendering test will skip" >&2
  exit 0
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
