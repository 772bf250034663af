#!/usr/bin/env bash
#: Benchmark of node preparation (swap off + fstab, modules-load file + modprobe, sysctl file + apply) on
#: 8 testbed hosts, done three ways:
#:   provision  its nodeprep builders + russh executor, all hosts in parallel (examples/bench_nodeprep.rs)
#:   ansible    ansible-playbook (ansible-core from PyPI in a venv), forks = number of hosts
#:   ssh        one plain OpenSSH `ssh` per host in parallel, running one equivalent shell script
#: Every tool is measured on a first run (hosts reset: swap line in fstab, swap.target unmasked, files
#: absent, net.ipv4.ip_forward=0) and on a re-run (nothing to change). Runs are interleaved
#: (provision, ssh, ansible, provision, ...) so machine load drifts hit all tools alike. Wall-clock time
#: of each whole command, process start included, measured from outside. Prints medians and ratios.
#:
#: usage: scripts/bench-nodeprep.sh [RUNS]      (root; default 5 runs)
#: Environment: BENCH_FIRST_HOST (default 41: hosts tb41..tb48), BENCH_HOSTS (default 8),
#:   BENCH_SKIP_ANSIBLE=1 to leave Ansible out, BENCH_ANSIBLE_PLAYBOOK=PATH to use an installed
#:   ansible-playbook instead of the venv under $TESTBED_DIR/cache, BENCH_KEEP_WORK=1 to keep the generated
#:   playbook, inventory, scripts and logs, TESTBED_DIR as for scripts/testbed.sh.
#: Only the hosts named above are started, reset and measured; no other testbed host is touched.
set -euo pipefail

RUNS=${1:-5}
FIRST=${BENCH_FIRST_HOST:-41}
COUNT=${BENCH_HOSTS:-8}
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$SCRIPT_DIR")"
TESTBED="$SCRIPT_DIR/testbed.sh"
eval "$("$TESTBED" env)"
CACHE="$TESTBED_DIR/cache"
WORK="$(mktemp -d)"
if [[ ${BENCH_KEEP_WORK:-} == 1 ]]; then echo "bench: work files in $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi

log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root (the testbed needs it)"
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 ]] || die "RUNS must be a positive number"

NAMES=()
ADDRS=()
for ((i = FIRST; i < FIRST + COUNT; i++)); do
    NAMES+=("tb$i")
    ADDRS+=("10.77.0.$((10 + i))")
done

SSH_OPTS=(-i "$TESTBED_CLIENT_KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o LogLevel=ERROR -o ConnectTimeout=5 -o BatchMode=yes -o ControlMaster=no -o ControlPath=none)

# --- hosts ---------------------------------------------------------------------------------------------
[[ -s $TESTBED_DIR/base/.testbed-base-ok ]] || "$TESTBED" setup 1 >/dev/null # base, bridge, client key
for name in "${NAMES[@]}"; do "$TESTBED" start "$name"; done
for name in "${NAMES[@]}"; do "$TESTBED" wait "$name" 60; done

# The content every tool must leave on the hosts (the same bytes provision's builders produce).
MODULES_FILE=/etc/modules-load.d/provision-k3s.conf
SYSCTL_FILE=/etc/sysctl.d/90-provision-k3s.conf
MODULES=(overlay br_netfilter)
SYSCTLS=(net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
    fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=524288 vm.overcommit_memory=1
    kernel.panic=10 kernel.panic_on_oops=1)
{
    echo "# Written by provision: kernel modules K3s needs."
    printf '%s\n' "${MODULES[@]}"
} >"$WORK/modules.conf"
{
    echo "# Written by provision: kernel parameters for K3s."
    for kv in "${SYSCTLS[@]}"; do echo "${kv%%=*} = ${kv#*=}"; done
} >"$WORK/sysctl.conf"

# Undo node preparation (not timed): a swap line in fstab, swap.target unmasked, files gone, forwarding off.
cat >"$WORK/reset.sh" <<EOF
rm -f $MODULES_FILE $SYSCTL_FILE
systemctl unmask swap.target >/dev/null 2>&1 || true
printf '# UNCONFIGURED FSTAB FOR BASE SYSTEM\n/swapfile none swap sw 0 0\n' >/etc/fstab
sysctl -q -w net.ipv4.ip_forward=0
EOF

# What a careful admin writes for one plain ssh per host: the same checks and changes, idempotent.
cat >"$WORK/plain.sh" <<EOF
set -u
changed=0
swap_line='^[^#[:space:]][^[:space:]]*[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]]'
if grep -Eq "\$swap_line" /etc/fstab; then
  sed -i -E "s/(\$swap_line.*)\\\$/# provision: swap off: \\1/" /etc/fstab; changed=\$((changed + 1))
fi
for unit in swap.target \$(systemctl list-units --type=swap --all --plain --no-legend 2>/dev/null | awk '{print \$1}'); do
  if [ "\$(systemctl is-enabled "\$unit" 2>/dev/null || true)" != masked ]; then
    systemctl mask "\$unit" >/dev/null 2>&1; changed=\$((changed + 1))
  fi
done
if [ "\$(wc -l < /proc/swaps)" -gt 1 ]; then swapoff -a; changed=\$((changed + 1)); fi
put() { # put PATH MODE: stdin becomes PATH unless identical
  mkdir -p "\$(dirname "\$1")"
  tmp="\$1.bench-\$\$"; cat >"\$tmp"
  if cmp -s "\$tmp" "\$1" && [ "\$(stat -c %a "\$1")" = "\$2" ]; then rm -f "\$tmp"
  else chmod "\$2" "\$tmp"; mv -f "\$tmp" "\$1"; changed=\$((changed + 1)); fi
}
put $MODULES_FILE 644 <<'CONTENT'
$(cat "$WORK/modules.conf")
CONTENT
container="\$(systemd-detect-virt --container 2>/dev/null || true)"
for m in ${MODULES[*]}; do
  if [ -d "/sys/module/\$m" ]; then :
  elif [ -n "\$container" ] && [ "\$container" != none ]; then echo "\$m: cannot load in a container" >&2
  else modprobe "\$m" && changed=\$((changed + 1)); fi
done
put $SYSCTL_FILE 644 <<'CONTENT'
$(cat "$WORK/sysctl.conf")
CONTENT
for kv in ${SYSCTLS[*]}; do
  key="\${kv%%=*}"; want="\${kv#*=}"; proc="/proc/sys/\$(echo "\$key" | tr . /)"
  [ -e "\$proc" ] || continue
  [ "\$(cat "\$proc")" = "\$want" ] && continue
  sysctl -q -w "\$key=\$want" 2>/dev/null && changed=\$((changed + 1))
done
echo "\$(hostname): \$changed changed"
EOF

# --- ansible -------------------------------------------------------------------------------------------
ANSIBLE=""
if [[ ${BENCH_SKIP_ANSIBLE:-} != 1 ]]; then
    venv="$CACHE/ansible-venv"
    if [[ -n ${BENCH_ANSIBLE_PLAYBOOK:-} ]]; then
        ANSIBLE=$BENCH_ANSIBLE_PLAYBOOK
    elif [[ ! -x $venv/bin/ansible-playbook ]]; then
        log "installing ansible-core into $venv"
        mkdir -p "$CACHE"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --retries 2 ansible-core >"$CACHE/ansible-pip.log" 2>&1 || true
    fi
    if [[ -n $ANSIBLE ]]; then
        :
    elif [[ -x $venv/bin/ansible-playbook ]]; then
        ANSIBLE="$venv/bin/ansible-playbook"
    else
        log "!!!!!!!! ansible-core could not be installed (see $CACHE/ansible-pip.log): Ansible is left out !!!!!!!!"
    fi
fi
{
    echo "[bench]"
    for idx in "${!NAMES[@]}"; do echo "${NAMES[$idx]} ansible_host=${ADDRS[$idx]}"; done
    echo "[bench:vars]"
    echo "ansible_user=root"
    echo "ansible_ssh_private_key_file=$TESTBED_CLIENT_KEY"
    echo "ansible_python_interpreter=/usr/bin/python3"
} >"$WORK/inventory"
# Ansible at its fastest usual settings: pipelining, no fact gathering, its default ControlPersist.
cat >"$WORK/ansible.cfg" <<EOF
[defaults]
forks = $COUNT
host_key_checking = False
gathering = explicit
interpreter_python = /usr/bin/python3
stdout_callback = default
[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
EOF
indent() { sed 's/^/          /' "$1"; }
cat >"$WORK/playbook.yml" <<EOF
- hosts: bench
  gather_facts: false
  tasks:
    - name: swap lines in fstab commented out
      ansible.builtin.replace:
        path: /etc/fstab
        regexp: '^([^#\s]\S*\s+\S+\s+swap\s.*)$'
        replace: '# provision: swap off: \1'
    - name: swap.target masked
      ansible.builtin.systemd_service:
        name: swap.target
        masked: true
    - name: swap off now
      ansible.builtin.shell: if [ "\$(wc -l < /proc/swaps)" -gt 1 ]; then swapoff -a; echo changed; fi
      register: swapoff
      changed_when: "'changed' in swapoff.stdout"
    - name: kernel modules persisted
      ansible.builtin.copy:
        dest: $MODULES_FILE
        mode: "0644"
        content: |
$(indent "$WORK/modules.conf")
    - name: kernel modules loaded (a container cannot load them)
      ansible.builtin.shell: |
        if [ -d /sys/module/{{ item }} ]; then exit 0; fi
        virt="\$(systemd-detect-virt --container || true)"
        if [ -n "\$virt" ] && [ "\$virt" != none ]; then echo "cannot load in a container"; exit 0; fi
        modprobe {{ item }} && echo changed
      loop: [$(IFS=,; echo "${MODULES[*]}")]
      register: modprobe
      changed_when: "'changed' in modprobe.stdout"
    - name: sysctls persisted
      ansible.builtin.copy:
        dest: $SYSCTL_FILE
        mode: "0644"
        content: |
$(indent "$WORK/sysctl.conf")
    - name: sysctls applied (only net.* are writable in a container)
      ansible.builtin.shell: |
        proc="/proc/sys/\$(echo {{ item.split('=')[0] }} | tr . /)"
        [ -e "\$proc" ] || exit 0
        [ "\$(cat "\$proc")" = "{{ item.split('=')[1] }}" ] && exit 0
        sysctl -q -w "{{ item }}" 2>/dev/null && echo changed || true
      loop: [$(IFS=,; echo "${SYSCTLS[*]}")]
      register: sysctl
      changed_when: "'changed' in sysctl.stdout"
EOF

# --- the three ways ------------------------------------------------------------------------------------
log "building examples/bench_nodeprep (release)"
(cd "$REPO" && cargo build -q --release --example bench_nodeprep)
PROVISION="$REPO/target/release/examples/bench_nodeprep"
PROVISION_HOSTS=()
for idx in "${!NAMES[@]}"; do
    PROVISION_HOSTS+=("${NAMES[$idx]}=${ADDRS[$idx]}=$TESTBED_DIR/hosts/${NAMES[$idx]}/merged/etc/ssh/ssh_host_ed25519_key.pub")
done

parallel_ssh() { # parallel_ssh SCRIPT: one ssh per host, all at once; fails if any fails
    local pids=() addr rc=0 pid
    for addr in "${ADDRS[@]}"; do
        ssh "${SSH_OPTS[@]}" "root@$addr" sh -s <"$1" >>"$WORK/ssh.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    return $rc
}

run_tool() {
    case $1 in
        provision) "$PROVISION" "$TESTBED_CLIENT_KEY" "${PROVISION_HOSTS[@]}" >>"$WORK/provision.log" 2>&1 ;;
        ssh) parallel_ssh "$WORK/plain.sh" ;;
        ansible) ANSIBLE_CONFIG="$WORK/ansible.cfg" "$ANSIBLE" -i "$WORK/inventory" "$WORK/playbook.yml" \
            >>"$WORK/ansible.log" 2>&1 ;;
    esac
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Every host must end with exactly the expected files, whoever wrote them.
check_hosts() {
    local want got
    want="$(sha256sum <"$WORK/modules.conf" | cut -d' ' -f1) $(sha256sum <"$WORK/sysctl.conf" | cut -d' ' -f1) 644 644 masked 0"
    for addr in "${ADDRS[@]}"; do
        got=$(ssh "${SSH_OPTS[@]}" "root@$addr" "echo \$(sha256sum <$MODULES_FILE | cut -d' ' -f1) \
            \$(sha256sum <$SYSCTL_FILE | cut -d' ' -f1) \$(stat -c %a $MODULES_FILE) \$(stat -c %a $SYSCTL_FILE) \
            \$(systemctl is-enabled swap.target) \$(grep -Ec '^[^#].*[[:space:]]swap[[:space:]]' /etc/fstab)") || true
        [[ $got == "$want" ]] || die "$1 left $addr in the wrong state: '$got' (want '$want'); logs in $WORK"
    done
}

TOOLS=(provision ssh)
[[ -n $ANSIBLE ]] && TOOLS+=(ansible)
declare -A TIMES
for ((run = 1; run <= RUNS; run++)); do
    for tool in "${TOOLS[@]}"; do
        parallel_ssh "$WORK/reset.sh" || die "reset failed"
        start=$(now_ms)
        run_tool "$tool" || die "$tool failed on the first run; logs in $WORK"
        first=$(($(now_ms) - start))
        start=$(now_ms)
        run_tool "$tool" || die "$tool failed on the re-run; logs in $WORK"
        again=$(($(now_ms) - start))
        check_hosts "$tool"
        TIMES[$tool.first]+="$first "
        TIMES[$tool.rerun]+="$again "
        log "run $run/$RUNS $tool: first ${first} ms, re-run ${again} ms"
    done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

echo
echo "node preparation on $COUNT hosts (${NAMES[0]}..${NAMES[-1]}), median of $RUNS runs, wall-clock ms"
printf '%-10s %10s %10s   %s\n' tool first-run re-run "all first-run / re-run samples"
declare -A MED
for tool in "${TOOLS[@]}"; do
    for kind in first rerun; do MED[$tool.$kind]=$(median "${TIMES[$tool.$kind]}"); done
    printf '%-10s %10s %10s   %s/ %s\n' "$tool" "${MED[$tool.first]}" "${MED[$tool.rerun]}" \
        "${TIMES[$tool.first]}" "${TIMES[$tool.rerun]}"
done
echo
for kind in first rerun; do
    line="$kind: provision/ssh = $(ratio "${MED[provision.$kind]}" "${MED[ssh.$kind]}") (target <= 1.2)"
    if [[ -n $ANSIBLE ]]; then
        line="$line, ansible/provision = $(ratio "${MED[ansible.$kind]}" "${MED[provision.$kind]}") (target >= 10)"
    fi
    echo "$line"
done
