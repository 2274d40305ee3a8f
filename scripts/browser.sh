#!/usr/bin/env bash
# Installs what the browser tests drive: Debian's Chromium and ChromeDriver
# (/usr/bin/chromium, /usr/bin/chromedriver), if missing.
#
#   scripts/browser.sh
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "browser: $(chromium --version 2>/dev/null | head -n 1); $(chromedriver --version | head -n 1)"
    exit 0
fi

SUDO=
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
echo "browser: apt-get install chromium chromium-driver"
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver
fi
chromium --version
chromedriver --version
