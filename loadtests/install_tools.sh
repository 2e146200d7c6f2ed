#!/bin/sh
# Install the HTTP load generators the benchmark uses: wrk (throughput) and hey
# (latency percentiles), from Debian packages. Idempotent: does nothing when both are
# already on PATH. Needs root (or sudo) the first time. Called by `make bench`.
set -eu

if command -v wrk >/dev/null 2>&1 && command -v hey >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_tools.sh: need root or sudo to apt-get install wrk hey" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends wrk hey >/dev/null

command -v wrk >/dev/null 2>&1 && command -v hey >/dev/null 2>&1
