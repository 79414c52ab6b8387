#!/usr/bin/env bash
# promtool checks the chart's alert rules (scripts/check-deploy.sh, tests/deploy). It comes with
# Debian's `prometheus` package (no daemon is started without an init system). Idempotent: does
# nothing when promtool is on PATH. Installs as root; otherwise says what to run.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "install-promtool: apt-get install prometheus (for promtool)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    command -v promtool >/dev/null
    exit 0
fi
echo "install-promtool: promtool is missing; run: sudo apt-get install prometheus" >&2
exit 1
