#!/usr/bin/env bash
#: Real Debian test hosts for provision: systemd-nspawn containers with systemd as PID 1, OpenSSH,
#: real cloud-init, each in its own network namespace on bridge tb0, sharing one debootstrapped base
#: through overlayfs. Used by the integration tests and CI (root only).
#:
#: usage: scripts/testbed.sh <command> [args]
#:   setup N            build (or reuse) the base, the bridge and hosts tb1..tbN, and boot them (idempotent)
#:   start NAME         boot a host (creates it if needed); a supervisor restarts it on reboot (exit 133)
#:   stop NAME          clean shutdown (SIGTERM to systemd-nspawn)
#:   crash NAME         power loss: SIGKILL the container's PID 1
#:   partition NAME     cut the network cable (veth down, permanent neighbour entry so traffic times out)
#:   heal NAME          reconnect the cable
#:   seed NAME DIR      install a NoCloud seed (user-data, meta-data[, network-config]) into a stopped host so
#:                      real cloud-init applies it on next boot; `seed NAME DIR --wipe` resets the host first
#:   wipe NAME          stop a host and throw away its overlay (a freshly "reinstalled" machine)
#:   status             one line per host: name address state pid
#:   name ADDRESS       print the name of the host that has ADDRESS (10.77.0.11 -> tb1)
#:   ssh NAME CMD...    run a command on a host with the test client key
#:   wait NAME [SECS]   wait until sshd on the host accepts connections
#:   env                print shell variables describing the testbed (dir, client key, hosts)
#:   teardown [--all]   stop everything, remove overlays, netns, bridge; --all also removes the base
#:
#: Environment: TESTBED_DIR (default /var/lib/provision-testbed), TESTBED_MIRROR (default: from apt sources),
#: TESTBED_SUITE (default bookworm).
#: Hosts: tbI has address 10.77.0.(10+I)/24, default route via 10.77.0.1 (the machine; no forwarding).
#: Hosts without a seed get per-host ed25519 host keys at first start and cloud-init disabled; seeded hosts get
#: their keys and users from cloud-init. The stand-in k3s (scripts/k3s-standin/k3s) is installed in the base at
#: /usr/local/lib/k3s-standin/k3s -- not at /usr/local/bin/k3s, which is provision's to install -- with Debian's
#: etcd-server and etcd-client for its datastore (the package's own etcd.service is masked).
set -euo pipefail

TESTBED_DIR="${TESTBED_DIR:-/var/lib/provision-testbed}"
SUITE="${TESTBED_SUITE:-bookworm}"
BRIDGE=tb0
BRIDGE_ADDR=10.77.0.1
PREFIX=24
BASE="$TESTBED_DIR/base"
# Bump when the base's content changes: an older base is rebuilt (when no host runs on it).
BASE_VERSION=5
HOSTS_DIR="$TESTBED_DIR/hosts"
CLIENT_KEY="$TESTBED_DIR/client_key"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STANDIN="$SCRIPT_DIR/k3s-standin/k3s"
BASE_PACKAGES=systemd,systemd-sysv,dbus,openssh-server,iproute2,procps,kmod,ca-certificates,python3,python3-yaml,python3-cffi-backend,sudo,cloud-init,locales,util-linux,e2fsprogs,qemu-guest-agent,etcd-server,etcd-client
# Packages provision's cloud-init user-data asks for: the hosts have no network, so cloud-init's package
# module only succeeds when they are already installed (as on an image with the guest agent baked in).
# A base built before they were added gets them in place (see ensure_base_extras).
BASE_EXTRAS=(qemu-guest-agent)
# locales: cloud-init's locale module runs update-locale, as on Debian's cloud images.
# etcd-server, etcd-client: the stand-in k3s keeps its datastore in a real etcd cluster (a member per
# server, started by the stand-in itself: the package's own etcd.service is disabled in the base).
# python3-cffi-backend: debootstrap does not resolve virtual packages (python3-cryptography needs its api-min/max).

log() { echo "testbed: $*" >&2; }
die() { echo "testbed: error: $*" >&2; exit 1; }

require_root() { [[ $EUID -eq 0 ]] || die "must run as root (systemd-nspawn, network namespaces, overlayfs)"; }

valid_name() { [[ $1 =~ ^tb[0-9]+$ ]] || die "host name must look like tb1, tb2, ... (got '$1')"; }
host_index() { echo "${1#tb}"; }
host_addr() { echo "10.77.0.$((10 + $(host_index "$1")))"; }
host_dir() { echo "$HOSTS_DIR/$1"; }
netns_name() { echo "tb-$1"; }
veth_name() { echo "v$1"; }

mirror() {
    if [[ -n ${TESTBED_MIRROR:-} ]]; then echo "$TESTBED_MIRROR"; return; fi
    local uri=""
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z $uri && -f /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

ensure_packages() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
    command -v ssh-keygen >/dev/null || missing+=(openssh-client)
    command -v ssh >/dev/null || missing+=(openssh-client)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v setsid >/dev/null || missing+=(util-linux)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
            || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
    fi
}

ensure_client_key() {
    mkdir -p "$TESTBED_DIR"
    [[ -f $CLIENT_KEY ]] || ssh-keygen -q -t ed25519 -N '' -C provision-testbed-client -f "$CLIENT_KEY"
}

ensure_base() {
    if [[ $(cat "$BASE/.testbed-base-ok" 2>/dev/null) != "$BASE_VERSION" ]]; then
        if [[ -d $BASE ]] && [[ -n $(cmd_status | awk '$3 ~ /^running/') ]]; then
            die "the base in $BASE is outdated and hosts run on it: run 'scripts/testbed.sh teardown' first"
        fi
        rm -rf "$BASE"
        mkdir -p "$BASE"
        local started=$SECONDS
        log "debootstrap $SUITE from $(mirror) (about a minute)"
        debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$BASE" "$(mirror)" \
            >"$TESTBED_DIR/debootstrap.log" 2>&1 || die "debootstrap failed, see $TESTBED_DIR/debootstrap.log"
        # One machine-id per host: empty in the base, systemd fills it in at first boot.
        : >"$BASE/etc/machine-id"
        mkdir -p "$BASE/var/lib/dbus"
        ln -sf /etc/machine-id "$BASE/var/lib/dbus/machine-id"
        # cloud-init's locale module sets LANG=en_US.UTF-8 (Debian's locale-gen takes no argument): have it.
        sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' "$BASE/etc/locale.gen"
        chroot "$BASE" locale-gen >/dev/null
        # The machine's name leaked in by debootstrap; without the file nspawn's -M name becomes the hostname.
        rm -f "$BASE/etc/hostname"
        # Host keys are per host (generated at first start, or by cloud-init from the seed).
        rm -f "$BASE"/etc/ssh/ssh_host_*
        # cloud-init: NoCloud only (seed directory); the network stage is disabled because the testbed
        # configures host0 from outside the container (address, route) before boot.
        mkdir -p "$BASE/etc/cloud/cloud.cfg.d"
        cat >"$BASE/etc/cloud/cloud.cfg.d/90-testbed.cfg" <<'EOF'
# provision testbed: NoCloud seed in /var/lib/cloud/seed/nocloud only; the testbed owns the network.
datasource_list: [NoCloud, None]
network: {config: disabled}
# As on Debian's cloud images: the host name resolves locally (sudo looks it up).
manage_etc_hosts: true
EOF
        # The stand-in k3s starts and supervises its own etcd member: the package's unit must not run.
        rm -f "$BASE"/etc/systemd/system/*.wants/etcd.service
        ln -sf /dev/null "$BASE/etc/systemd/system/etcd.service"
        ln -sf /dev/null "$BASE/etc/systemd/system/etcd2.service"
        # No DNS on the testbed: with no nameserver, lookups fail at once instead of timing out.
        rm -f "$BASE/etc/resolv.conf"
        : >"$BASE/etc/resolv.conf"
        log "base built in $((SECONDS - started))s"
        echo "$BASE_VERSION" >"$BASE/.testbed-base-ok"
    fi
    ensure_base_extras
    # The guest agent needs the virtio port a VM has and a container has not (its unit BindsTo that
    # device, so `systemctl enable --now qemu-guest-agent` from provision's user-data would wait 90 s and
    # fail): the testbed's unit, which takes precedence over the package's, only reports itself active.
    local agent_unit="$BASE/etc/systemd/system/qemu-guest-agent.service"
    local agent_text
    agent_text=$(printf '%s\n' '[Unit]' \
        'Description=QEMU Guest Agent (testbed: no virtio port in a container, nothing to run)' \
        '[Service]' 'Type=oneshot' 'ExecStart=/bin/true' 'RemainAfterExit=yes' \
        '[Install]' 'WantedBy=multi-user.target')
    [[ $(cat "$agent_unit" 2>/dev/null) == "$agent_text" ]] || echo "$agent_text" >"$agent_unit"
    # Refreshed on every setup (cheap) so the base always carries the current client key and stand-in.
    # Copied only when changed: running hosts have the base mounted as their lower layer.
    install -d -m 0700 "$BASE/root/.ssh"
    cmp -s "$CLIENT_KEY.pub" "$BASE/root/.ssh/authorized_keys" \
        || install -m 0600 "$CLIENT_KEY.pub" "$BASE/root/.ssh/authorized_keys"
    if [[ -f $STANDIN ]] && ! cmp -s "$STANDIN" "$BASE/usr/local/lib/k3s-standin/k3s"; then
        install -D -m 0755 "$STANDIN" "$BASE/usr/local/lib/k3s-standin/k3s"
    fi
}

# A base built before BASE_EXTRAS joined BASE_PACKAGES lacks them, and the machine may have no package
# mirror any more: such a base gets a placeholder package of the same name (TESTBED PLACEHOLDER in its
# description, no files), which satisfies cloud-init's `apt-get install` exactly as the preinstalled real
# package would. It only adds files, so hosts running on the base are not disturbed.
ensure_base_extras() {
    local package work
    for package in "${BASE_EXTRAS[@]}"; do
        chroot "$BASE" dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' && continue
        log "base lacks $package: installing a placeholder package"
        work=$(mktemp -d)
        mkdir -p "$work/pkg/DEBIAN"
        cat >"$work/pkg/DEBIAN/control" <<EOF_CONTROL
Package: $package
Version: 99:0~testbed
Architecture: all
Maintainer: provision testbed <testbed@localhost>
Description: TESTBED PLACEHOLDER for $package
 Installed by scripts/testbed.sh into an old base so that cloud-init's package module finds it
 (epoch 99: apt must not see the real package as an upgrade).
EOF_CONTROL
        dpkg-deb --build "$work/pkg" "$work/$package.deb" >/dev/null
        cp "$work/$package.deb" "$BASE/tmp/$package.deb"
        chroot "$BASE" dpkg -i "/tmp/$package.deb" >/dev/null
        rm -rf "$work" "$BASE/tmp/$package.deb"
    done
}

ensure_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$BRIDGE_ADDR/$PREFIX" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
}

ensure_network() {
    local name=$1 ns veth addr
    ns=$(netns_name "$name"); veth=$(veth_name "$name"); addr=$(host_addr "$name")
    ensure_bridge
    [[ -e /run/netns/$ns ]] || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
        ip link add "$veth" type veth peer name host0 netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" addr add "$addr/$PREFIX" dev host0
        ip -n "$ns" link set host0 up
        ip -n "$ns" link set lo up
        ip -n "$ns" route add default via "$BRIDGE_ADDR"
    fi
}

ensure_overlay() {
    local name=$1 dir
    dir=$(host_dir "$name")
    mkdir -p "$dir/upper" "$dir/work" "$dir/merged"
    mountpoint -q "$dir/merged" \
        || mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$dir/upper,workdir=$dir/work" "$dir/merged"
}

# First-boot preparation of an unseeded host: own host keys, cloud-init off.
prepare_unseeded() {
    local name=$1 merged
    merged="$(host_dir "$name")/merged"
    if [[ ! -f $(host_dir "$name")/seeded ]]; then
        touch "$merged/etc/cloud/cloud-init.disabled"
        if [[ ! -f $merged/etc/ssh/ssh_host_ed25519_key ]]; then
            ssh-keygen -q -t ed25519 -N '' -C "root@$name" -f "$merged/etc/ssh/ssh_host_ed25519_key"
        fi
    fi
}

supervisor_pid() { cat "$(host_dir "$1")/supervisor.pid" 2>/dev/null || true; }
nspawn_pid() { cat "$(host_dir "$1")/nspawn.pid" 2>/dev/null || true; }
alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }
running() { alive "$(nspawn_pid "$1")"; }

# Runs detached (setsid): boots the host, and boots it again when it reboots (nspawn exit 133).
supervise() {
    local name=$1 dir rc
    dir=$(host_dir "$name")
    echo $$ >"$dir/supervisor.pid"
    while true; do
        ensure_overlay "$name"
        SYSTEMD_NSPAWN_API_VFS_WRITABLE=network systemd-nspawn --boot --register=no --keep-unit --resolv-conf=off \
            --capability=CAP_NET_ADMIN --network-namespace-path="/run/netns/$(netns_name "$name")" \
            -M "$name" -D "$dir/merged" </dev/null >>"$dir/console.log" 2>&1 &
        echo $! >"$dir/nspawn.pid"
        rc=0
        wait $! || rc=$?
        echo "$(date +%s) nspawn exited $rc" >>"$dir/supervisor.log"
        [[ $rc -eq 133 ]] || break
    done
    rm -f "$dir/nspawn.pid" "$dir/supervisor.pid"
}

# Each host's systemd holds several inotify instances; the kernel's default of 128 per user runs out
# with a few dozen hosts on the machine, and systemd then dies at boot ("Failed to allocate manager
# object: Too many open files" on the console): raise the limit before starting a host.
INOTIFY_INSTANCES_MIN=8192

ensure_inotify_limit() {
    local limit=/proc/sys/fs/inotify/max_user_instances current
    current=$(cat "$limit" 2>/dev/null || echo 0)
    if ((current < INOTIFY_INSTANCES_MIN)); then
        echo "$INOTIFY_INSTANCES_MIN" >"$limit" 2>/dev/null ||
            die "fs.inotify.max_user_instances is $current, too low for many hosts, and cannot be raised (root?)"
    fi
}

# The last error lines of a host's console, for messages about a host that did not come up.
console_errors() {
    local console=$1/console.log
    [[ -f $console ]] || return 0
    tail -n 40 "$console" | sed 's/\x1b\[[0-9;]*m//g' | grep -E 'Failed|[Ee]rror|failed' | tail -n 3 | paste -sd ';' -
}

cmd_start() {
    local name=$1 dir
    valid_name "$name"
    [[ -s $BASE/.testbed-base-ok ]] || die "no base yet: run 'scripts/testbed.sh setup N' first"
    dir=$(host_dir "$name")
    if running "$name"; then return 0; fi
    mkdir -p "$dir"
    ensure_inotify_limit
    ensure_network "$name"
    ensure_overlay "$name"
    prepare_unseeded "$name"
    # The supervisor outlives this command: it must not keep a caller's descriptors open, or a
    # `flock LOCKFILE …` around the caller would stay held by the running host.
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            if ((fd > 2)); then eval "exec $fd>&-"; fi
        done
        exec setsid "$SCRIPT_DIR/testbed.sh" _supervise "$name" </dev/null >>"$dir/supervisor.log" 2>&1
    ) &
    local deadline=$((SECONDS + 10))
    until running "$name"; do
        ((SECONDS < deadline)) ||
            die "$name: systemd-nspawn did not start within 10s ($(console_errors "$dir")), see $dir/console.log"
        sleep 0.1
    done
}

wait_stopped() {
    local name=$1 seconds=$2 deadline
    deadline=$((SECONDS + seconds))
    while alive "$(supervisor_pid "$name")" || running "$name"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

cmd_stop() {
    local name=$1 pid
    valid_name "$name"
    pid=$(nspawn_pid "$name")
    if alive "$pid"; then
        kill -TERM "$pid"
        if ! wait_stopped "$name" 15; then
            log "$name: no clean shutdown within 15s, killing"
            kill -KILL "$pid" 2>/dev/null || true
            wait_stopped "$name" 5 || die "$name: still running after SIGKILL"
        fi
    fi
    local dir
    dir=$(host_dir "$name")
    if mountpoint -q "$dir/merged"; then umount "$dir/merged"; fi
}

container_pid1() {
    local pid
    pid=$(nspawn_pid "$1")
    alive "$pid" || return 1
    # nspawn's child in a new PID namespace is the container's init.
    local child
    for child in $(pgrep -P "$pid"); do
        if [[ $(readlink "/proc/$child/ns/pid") != $(readlink "/proc/$pid/ns/pid") ]]; then
            echo "$child"; return 0
        fi
    done
    return 1
}

cmd_crash() {
    local name=$1 init
    valid_name "$name"
    init=$(container_pid1 "$name") || die "$name is not running"
    kill -KILL "$init"
    wait_stopped "$name" 10 || die "$name: nspawn did not exit after its init was killed"
}

cmd_partition() {
    local name=$1 veth addr mac
    valid_name "$name"
    veth=$(veth_name "$name"); addr=$(host_addr "$name")
    mac=$(ip -n "$(netns_name "$name")" -br link show host0 | awk '{print $3}')
    # A permanent neighbour entry keeps the machine sending into the dead link: connections time out
    # like a cut cable instead of failing fast with "no route to host".
    ip neigh replace "$addr" lladdr "$mac" dev "$BRIDGE" nud permanent
    ip link set "$veth" down
}

cmd_heal() {
    local name=$1
    valid_name "$name"
    ip link set "$(veth_name "$name")" up
    ip neigh del "$(host_addr "$name")" dev "$BRIDGE" 2>/dev/null || true
}

cmd_seed() {
    local name=$1 src=$2 wipe=${3:-} dir
    valid_name "$name"
    [[ -f $src/user-data && -f $src/meta-data ]] || die "$src must contain user-data and meta-data"
    if [[ $wipe == --wipe ]]; then cmd_wipe "$name"; fi
    running "$name" && die "$name is running: stop it (or use --wipe) before seeding"
    dir=$(host_dir "$name")
    mkdir -p "$dir"
    ensure_overlay "$name"
    local seed="$dir/merged/var/lib/cloud/seed/nocloud"
    rm -rf "$seed"
    install -d -m 0700 "$seed"
    local f
    for f in user-data meta-data network-config vendor-data; do
        if [[ -f $src/$f ]]; then install -m 0600 "$src/$f" "$seed/$f"; fi
    done
    rm -f "$dir/merged/etc/cloud/cloud-init.disabled"
    # cloud-init runs once per instance-id: forget earlier runs so the new seed is applied.
    rm -rf "$dir/merged/var/lib/cloud/instance" "$dir/merged/var/lib/cloud/instances"
    touch "$dir/seeded"
    umount "$dir/merged"
}

cmd_wipe() {
    local name=$1 dir
    valid_name "$name"
    cmd_stop "$name"
    dir=$(host_dir "$name")
    rm -rf "$dir/upper" "$dir/work" "$dir/seeded" "$dir/console.log" "$dir/supervisor.log"
}

cmd_name() {
    local address=$1 last
    [[ $address =~ ^10\.77\.0\.([0-9]+)$ ]] || die "$address is not a testbed address (10.77.0.11-10.77.0.210)"
    last=${BASH_REMATCH[1]}
    ((last >= 11 && last <= 210)) || die "$address is not a testbed address (10.77.0.11-10.77.0.210)"
    echo "tb$((last - 10))"
}

cmd_status() {
    local dir name state
    for dir in "$HOSTS_DIR"/tb*; do
        [[ -d $dir ]] || continue
        name=$(basename "$dir")
        if running "$name"; then state=running; else state=stopped; fi
        if [[ $(ip -br link show "$(veth_name "$name")" 2>/dev/null | awk '{print $2}') == DOWN ]]; then
            state="$state,partitioned"
        fi
        echo "$name $(host_addr "$name") $state $(nspawn_pid "$name")"
    done
}

ssh_opts() {
    echo -i "$CLIENT_KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
        -o ConnectTimeout=5 -o BatchMode=yes
}

cmd_ssh() {
    local name=$1; shift
    valid_name "$name"
    # shellcheck disable=SC2046
    exec ssh $(ssh_opts) "root@$(host_addr "$name")" "$@"
}

cmd_wait() {
    local name=$1 seconds=${2:-30} deadline
    valid_name "$name"
    deadline=$((SECONDS + seconds))
    # shellcheck disable=SC2046
    until ssh $(ssh_opts) -o ConnectTimeout=2 "root@$(host_addr "$name")" true 2>/dev/null; do
        ((SECONDS < deadline)) || die "timed out after ${seconds}s waiting for ssh on $name ($(host_addr "$name"):22)"
        sleep 0.2
    done
}

cmd_setup() {
    local count=$1 i started=$SECONDS
    [[ $count =~ ^[0-9]+$ && $count -ge 1 && $count -le 200 ]] || die "setup N: N must be 1..200"
    ensure_packages
    ensure_client_key
    ensure_base
    ensure_bridge
    for ((i = 1; i <= count; i++)); do cmd_start "tb$i"; done
    for ((i = 1; i <= count; i++)); do
        # Only unseeded hosts accept the client key before cloud-init runs.
        [[ -f $(host_dir "tb$i")/seeded ]] || cmd_wait "tb$i" 60
    done
    log "$count hosts ready in $((SECONDS - started))s"
}

cmd_env() {
    echo "TESTBED_DIR=$TESTBED_DIR"
    echo "TESTBED_CLIENT_KEY=$CLIENT_KEY"
    echo "TESTBED_BRIDGE_ADDR=$BRIDGE_ADDR"
    echo "TESTBED_STANDIN_K3S=$STANDIN"
}

cmd_teardown() {
    local dir name
    for dir in "$HOSTS_DIR"/tb*; do
        [[ -d $dir ]] || continue
        name=$(basename "$dir")
        cmd_stop "$name" || log "$name: stop failed"
        ip link del "$(veth_name "$name")" 2>/dev/null || true
        ip netns del "$(netns_name "$name")" 2>/dev/null || true
        rm -rf "$dir"
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    if [[ ${1:-} == --all ]]; then rm -rf "$TESTBED_DIR"; fi
}

main() {
    local command=${1:-}
    [[ -n $command ]] || { sed -n 's/^#: \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2; }
    shift
    case $command in
        -h | --help | help) sed -n 's/^#: \{0,1\}//p' "${BASH_SOURCE[0]}" ;;
        env) cmd_env ;;
        setup) require_root; cmd_setup "${1:?setup N}" ;;
        start) require_root; cmd_start "${1:?start NAME}" ;;
        stop) require_root; cmd_stop "${1:?stop NAME}" ;;
        crash) require_root; cmd_crash "${1:?crash NAME}" ;;
        partition) require_root; cmd_partition "${1:?partition NAME}" ;;
        heal) require_root; cmd_heal "${1:?heal NAME}" ;;
        seed) require_root; cmd_seed "${1:?seed NAME DIR}" "${2:?seed NAME DIR}" "${3:-}" ;;
        wipe) require_root; cmd_wipe "${1:?wipe NAME}" ;;
        status) cmd_status ;;
        name) cmd_name "${1:?name ADDRESS}" ;;
        ssh) cmd_ssh "${1:?ssh NAME CMD}" "${@:2}" ;;
        wait) cmd_wait "${1:?wait NAME}" "${2:-30}" ;;
        teardown) require_root; cmd_teardown "${1:-}" ;;
        _supervise) supervise "$1" ;;
        *) die "unknown command '$command' (try --help)" ;;
    esac
}

main "$@"
