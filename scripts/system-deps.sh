#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks drive, when missing.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail
want=()
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v chromedriver >/dev/null 2>&1 || want+=(chromium-driver)
command -v dockerd >/dev/null 2>&1 || want+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || want+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || want+=(debootstrap)
command -v iptables >/dev/null 2>&1 || want+=(iptables)
command -v wrk >/dev/null 2>&1 || want+=(wrk)
command -v ip >/dev/null 2>&1 || want+=(iproute2)
[ ${#want[@]} -eq 0 ] && exit 0
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "installing Debian packages: ${want[*]}"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
