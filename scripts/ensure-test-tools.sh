#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: Debian's chromium and
# chromium-driver for the HTML report test. Does nothing when they are already there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing chromium for the report test (Debian packages chromium, chromium-driver)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
