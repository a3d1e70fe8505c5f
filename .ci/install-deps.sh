#!/usr/bin/env bash
# Installs what cmds needs to build and test on Debian 12, only what is missing
# (fast and quiet when everything is there). Runs apt-get as root or through sudo.
set -euo pipefail
pkgs=(build-essential cmake pkg-config git
      libopenmpi-dev openmpi-bin
      libhdf5-openmpi-dev hdf5-tools
      libzstd-dev libpng-dev libtiff-dev libyaml-dev libopenblas-dev
      libopenblas0-openmp   # not the default: the CPU tests run once against it too (kernels.nn.*_openblas_openmp)
      gnuplot-nox
      slurmctld slurmd slurm-client munge)   # the one-node Slurm of tests/slurm
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
