#!/usr/bin/env bash
# Installs the third-party Proxmox clients the simulator is checked against, from PyPI only:
#   proxmoxer + requests       (the Python API client most scripts use)
#   ansible-core + ansible     (ansible-playbook; the `ansible` package bundles community.general,
#                               whose proxmox_kvm/proxmox_disk/proxmox_nic redirect to the bundled
#                               community.proxmox; ansible-galaxy would need galaxy.ansible.com,
#                               which CI cannot reach)
# into one venv (proxmox_kvm imports proxmoxer and requests from the interpreter it runs with).
# The venv is ${PROVISION_CLIENTS_VENV:-$HOME/.cache/provision/clients-venv}; tests/it/third_party.rs
# looks there too. Idempotent: a venv whose stamp matches the pins below is left as it is (~0.1 s).
set -euo pipefail

venv="${PROVISION_CLIENTS_VENV:-$HOME/.cache/provision/clients-venv}"
# Pinned: a new release of a client is a deliberate change (edit here, re-run, fix what breaks).
pins=(
    proxmoxer==2.3.0
    requests==2.34.2
    ansible-core==2.19.14
    ansible==12.3.0
)
stamp="$venv/.provision-clients"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${pins[*]}" ] && [ -x "$venv/bin/ansible-playbook" ]; then
    echo "ci-setup-clients: ${pins[*]} already installed in $venv"
    exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "ci-setup-clients: $python is missing; install Python 3 (with venv) first" >&2
    exit 1
fi
if ! "$python" -m venv --help >/dev/null 2>&1; then
    # Debian splits venv out of python3.
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -q
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends python3-venv
fi

echo "ci-setup-clients: installing ${pins[*]} into $venv"
mkdir -p "$(dirname "$venv")"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
"$venv/bin/python" -c 'import proxmoxer, requests'
"$venv/bin/ansible-doc" --type module community.general.proxmox_kvm >/dev/null
printf '%s\n' "${pins[*]}" >"$stamp"
# The whole output read first: `| head -n 1` closes the pipe while ansible still writes, and
# ansible exits 250 on the broken pipe.
version=$("$venv/bin/ansible-playbook" --version)
printf '%s\n' "${version%%$'\n'*}"
