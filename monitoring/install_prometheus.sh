#!/bin/sh
# Install Prometheus and promtool from Debian's `prometheus` package, if missing.
# Idempotent: does nothing when promtool is already on PATH. Needs root (or sudo)
# the first time. Used by the Makefile before the monitoring tests and `make monitor`.
set -eu

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_prometheus.sh: need root or sudo to apt-get install prometheus" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps out the node exporter and other extras.
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null

# The package may start a system-wide server on :9090 where an init system runs;
# this project starts its own on 127.0.0.1, so stop that one if it is running.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl disable --now prometheus || true
fi

command -v promtool >/dev/null 2>&1
