#!/usr/bin/env bash
# Installs the Debian packages ghostnn needs to build and test, when any is missing.
# As root it runs apt-get; otherwise it lists what to install and fails.
set -euo pipefail
packages=(cmake ninja-build g++ make pkg-config ccache
          libdnnl-dev ocl-icd-opencl-dev libfmt-dev
          libgtest-dev libgmock-dev libbenchmark-dev
          libturbojpeg0-dev libpng-dev zlib1g-dev libcli11-dev nlohmann-json3-dev
          python3 python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ghostnn needs these Debian packages: ${missing[*]}" >&2
  echo "install them as root:  apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "ghostnn: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
