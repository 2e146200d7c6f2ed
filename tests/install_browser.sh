#!/bin/sh
# Install Debian's Chromium for the browser tests (Playwright drives it as its
# executable; no browser is downloaded by Playwright). Idempotent: does nothing
# when /usr/bin/chromium exists. Needs root (or sudo) the first time. Run by the
# Makefile's test-deps target.
set -eu

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_browser.sh: need root or sudo to apt-get install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

test -x /usr/bin/chromium
