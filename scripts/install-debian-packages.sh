#!/usr/bin/env bash
# Install the Debian packages the test suite needs, only those missing (needs root or sudo):
# the real Fashion-MNIST files, Slurm + munge for the local test cluster (tests start and
# stop its daemons themselves; nothing is started here), and chromium, in which the tests open
# the HTML reports headless.
set -euo pipefail
PACKAGES=(dataset-fashion-mnist slurm-wlm munge chromium)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
