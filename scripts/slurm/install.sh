#!/usr/bin/env bash
# Install what the one-node test cluster needs (Debian/Ubuntu, root): slurm-wlm and munge. Installing starts nothing.
set -euo pipefail
if command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ]; then
  if command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ]; then exit 0; fi
fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq slurm-wlm munge >/dev/null
echo "installed slurm-wlm and munge"
