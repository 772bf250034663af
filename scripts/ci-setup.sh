#!/usr/bin/env bash
# Installs what the test suite needs; idempotent, safe to run on every CI start.
# Extend it here (apt packages, tools) rather than in .ci/run.
set -euo pipefail

need_apt=()
# Packages the tests need from the distribution (none yet for the foundation).
apt_packages=()
for package in "${apt_packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || need_apt+=("$package")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "ci-setup: cargo is missing; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# rustfmt and clippy: present on most toolchains; add them through rustup when they are not.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add "$component"
    else
      echo "ci-setup: cargo $component is missing and rustup is not available" >&2
      exit 1
    fi
  fi
done

# cargo-audit for .ci/run's advisory step: used when already installed (cached in ~/.cargo/bin).
# Building it takes minutes, so it is not installed here; .ci/run then skips the audit loudly.
if ! cargo audit --version >/dev/null 2>&1; then
  echo "ci-setup: cargo-audit is not installed: the advisory audit will be SKIPPED (install it once with \`cargo install --locked cargo-audit\`)" >&2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Real tools the generated files are checked with: cloud-init, isoinfo, xorriso, blkid.
bash "$here/ci-setup-cloudinit.sh"
# Real third-party Proxmox clients (proxmoxer, ansible-playbook with community.general's
# proxmox_kvm) from PyPI, for the tests that drive `provision sim serve` with them.
bash "$here/ci-setup-clients.sh"
# Real Debian test hosts (systemd-nspawn + network namespaces + OpenSSH) for the SSH, node-prep
# and k3s tests. Needs root; elsewhere those tests skip with a loud message.
if [ "$(id -u)" -eq 0 ]; then
  bash "$here/ci-setup-testbed.sh"
else
  echo "ci-setup: not root: the testbed tests will be skipped (they need root for network namespaces)" >&2
fi
