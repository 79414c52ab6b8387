#!/usr/bin/env bash
# Debian's Chromium for the console's browser tests (Playwright drives it; its own browser
# download cannot be had here). Does nothing when a Chromium is already there (or
# CFSTREAM_CHROMIUM names one); installs it as root or with passwordless sudo; otherwise says the
# one command to run and fails.
set -euo pipefail

if [[ -n "${CFSTREAM_CHROMIUM:-}" ]] || command -v chromium >/dev/null 2>&1 \
        || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [[ "$(id -u)" == 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "make test needs Chromium for the console's browser tests; run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y chromium" >&2
    echo "(or set CFSTREAM_CHROMIUM to a Chromium binary)" >&2
    exit 1
fi
echo "installing Debian's chromium for the browser tests" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
