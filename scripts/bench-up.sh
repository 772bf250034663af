#!/usr/bin/env bash
#: Benchmark of `provision up` phase 1 (issue 4) against the Proxmox simulator run as a SEPARATE
#: process (`provision sim serve`, HTTPS on loopback, certificate fingerprint pinned, API token), in
#: release mode. Two cases:
#:   a100-8x   profiles/a100-8x.toml on inventory pve-a100-pcie (7 VMs, 8 GPUs)
#:   scale200  a generated profile: 3 servers + 197 agents (2 vCPU, 2 GiB, 10 GB), spread over
#:             pve1..pve4 of inventory pve-cluster-4, addresses from an address_range in a /16,
#:             with image.strategy = $BENCH_STRATEGY (default import)
#:   scale200-linked  the same with image.strategy = "linked-clone" (one template per node, each
#:             VM a linked clone of it)
#: For each case it prints: wall time of `up --vms-only`; the lower bound from the simulator's
#: storage model at the same time scale (see bound_model); their ratio; API requests per VM
#: from the simulator's request log, split into task polls, other reads and mutating requests;
#: CPU time (user+sys) and peak RSS of the provision process (GNU time); then a no-op re-run's
#: wall time and its requests (reads) per VM.
#:
#: usage: scripts/bench-up.sh [CASE...]        (default: a100-8x scale200)
#: Environment: BENCH_SCALE_A100 (time scale, default 0.1), BENCH_SCALE_200 (default 0.1),
#:   BENCH_VMS (VMs of the scale case, default 200), BENCH_STRATEGY (image.strategy of scale200:
#:   import, linked-clone or full-clone), BENCH_PORT (first port, default 18410),
#:   BENCH_NO_BUILD=1 to use target/release/provision (or BENCH_BIN=PATH) as it is, BENCH_UP_BIN=PATH to measure
#:   another build's `up` against this simulator, BENCH_KEEP_WORK=1 to keep the
#:   temporary workspaces, request logs and outputs.
#: Phase 2 is not run (`--vms-only`): the simulated guests have no SSH, and no traffic may leave
#: loopback.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(a100-8x scale200)
SCALE_A100=${BENCH_SCALE_A100:-0.1}
SCALE_200=${BENCH_SCALE_200:-0.1}
VMS=${BENCH_VMS:-200}
STRATEGY=${BENCH_STRATEGY:-import}
PORT=${BENCH_PORT:-18410}

TIME=/usr/bin/time
if ! "$TIME" -v true >/dev/null 2>&1; then
    echo "bench-up: GNU time (/usr/bin/time -v) is needed: apt-get install time" >&2
    exit 2
fi

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    echo "building (release)..." >&2
    cargo build --release --quiet
fi
BIN=${BENCH_BIN:-$ROOT/target/release/provision}
# The client measured; BENCH_UP_BIN=another build measures it against this simulator.
UP_BIN=${BENCH_UP_BIN:-$BIN}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-up.XXXXXX")
SIM_PID=
cleanup() {
    if [ -n "$SIM_PID" ]; then
        kill "$SIM_PID" 2>/dev/null || true
        wait "$SIM_PID" 2>/dev/null || true
    fi
    if [ "${BENCH_KEEP_WORK:-0}" = 1 ]; then
        echo "work files kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# The lower bound comes from the simulator's storage model (crates/pve-sim/README.md, "Storage
# model"; numbers from crates/pve-sim/src/state/{mod,bandwidth}.rs, at time scale 1):
# local-lvm (lvmthin) 500 MiB/s + 1 s per operation, of which 0.3 s per allocated volume holds
# the storage's lock (allocations take turns), local (dir) 450 MiB/s + 0.5 s, downloads cross
# the internet at 25 MiB/s, an import writes the image's virtual size (2252 MiB), create 3 s of
# its own, clone 2 s, config 1 s, start 4 s, guest agent 15 s after start, ISO delete 1 s. Each
# VM allocates or clones as many volumes on local-lvm as its config shows (read from the
# simulator after the run: scsi0, and efidisk0 for an OVMF VM).
# Per node: chain = download + upload + create/import + resize + start + agent + ISO delete (one
# VM alone), and storage = download + create's own time + every VM's turn on local-lvm (its
# bytes, or its lock hold when that is longer) + the rest of the VM whose turn ends last
# (resize, start, agent, delete; a clone's own work and config first); the bound is the
# cluster's maximum of max(chain, storage).
bound_model() { # SCALE NODE_COUNTS_JSON WIRE_BYTES STRATEGY VOLUMES_PER_VM
    python3 - "$@" <<'PY'
import json, sys
scale, counts, wire = float(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
strategy, volumes = sys.argv[4], int(sys.argv[5])
MIB = 1 << 20
lvm_bw, lvm_over = 500 * MIB, 1.0
dir_bw, dir_over = 450 * MIB, 0.5
wan = 25 * MIB
import_bytes, iso_bytes = 2252 * MIB, 1 * MIB
lock_hold = volumes * 0.3
create, start, boot, iso_delete = 3.0, 4.0, 15.0, 1.0
download = wire / wan + dir_over + wire / dir_bw
upload = dir_over + iso_bytes / dir_bw
create_alone = create + max(lvm_over, lock_hold) + import_bytes / lvm_bw
tail = lvm_over + start + boot + iso_delete
# A clone: the storage's lock for its two disks, the storage's overhead, 2 s of its own, and
# (full) its disks' bytes; then the VM's own config (1 s). A template conversion 1 s. With a
# template, each VM's chain is template + one clone + config.
clone, template, config = 2.0, 1.0, 1.0
if strategy == "import":
    chain = download + upload + create_alone + tail
    turn = max(import_bytes / lvm_bw, lock_hold)
    first = download + create + lvm_over
    rest = tail
elif strategy == "full-clone":
    chain = download + upload + create_alone + template + clone + lvm_over + import_bytes / lvm_bw + config + tail
    turn = max(import_bytes / lvm_bw, lock_hold)
    first = download + create_alone + template + clone + lvm_over
    rest = config + tail
else:
    chain = download + upload + create_alone + template + clone + max(lvm_over, lock_hold) + config + tail
    turn = lock_hold
    first = download + create_alone + template
    rest = max(lvm_over, lock_hold) - lock_hold + clone + config + tail
worst = ("", 0.0, 0.0)
for node, n in counts.items():
    storage = first + n * turn + rest
    if max(chain, storage) > worst[1]:
        worst = (node, max(chain, storage), storage)
node, bound, storage = worst
print(f"{scale * bound:.3f} {scale * chain:.3f} {scale * storage:.3f} {node} {counts[node]}")
PY
}

write_scale_profile() { # FILE VMS KEY STRATEGY
    local file=$1 vms=$2 agents=$(($2 - 3)) # $3: the SSH private key, $4: image.strategy
    cat >"$file" <<EOF
# Generated by scripts/bench-up.sh: $vms small VMs spread over a 4-node cluster.
description = "benchmark: 3 servers + $agents agents over pve1..pve4"

[cluster]
name = "scale"
k3s_version = "v1.31.4+k3s1"
api_vip = "10.60.0.10"

[network]
cidr = "10.60.0.0/16"
gateway = "10.60.0.1"
dns = ["10.60.0.1"]

[proxmox]
nodes = ["pve1", "pve2", "pve3", "pve4"]
placement = "spread"
vmid_range = { start = 20000, end = 20999 }

[proxmox.storage]
disks = "local-lvm"
iso = "local"
images = "local"

[image]
url = "https://cloud.debian.org/images/cloud/bookworm/20250210-2019/debian-12-genericcloud-amd64-20250210-2019.qcow2"
sha256 = "5da221d8f7434ee86145e78a2c60ca45eb4ef8296535e04f6f333193225792aa"
strategy = "$4"

[[node_groups]]
name = "server"
role = "server"
count = 3
cores = 2
memory_mib = 4096
addresses = ["10.60.0.11", "10.60.0.12", "10.60.0.13"]
disks = { os_gb = 20 }

[[node_groups]]
name = "agent"
role = "agent"
count = $agents
cores = 2
memory_mib = 2048
address_range = "10.60.1.1-10.60.3.254"
disks = { os_gb = 10 }

[ssh]
user = "provision"
private_key = "$3"
EOF
}

# seconds since the epoch with nanoseconds
now() { date +%s.%N; }
fmt() { awk -v x="$1" 'BEGIN { printf "%.3f", x }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

run_case() { # NAME INVENTORY PROFILE SCALE [STRATEGY]
    local name=$1 inventory=$2 profile=$3 scale=$4 strategy=${5:-import}
    local ws=$WORK/$name log=$WORK/$name.requests.log out=$WORK/$name.sim.out
    mkdir -p "$ws"
    "$BIN" --quiet --workspace "$ws" init >/dev/null
    mkdir -p "$ws/profiles"
    # A throw-away key: the seeds carry its public half.
    ssh-keygen -q -t ed25519 -N '' -C bench-up -f "$ws/id_ed25519"
    if [ "$profile" = generated ]; then
        profile=scale$VMS
        write_scale_profile "$ws/profiles/$profile.toml" "$VMS" "$ws/id_ed25519" "$strategy"
    else
        sed "s|^private_key = .*|private_key = \"$ws/id_ed25519\"|" "profiles/$profile.toml" \
            >"$ws/profiles/$profile.toml"
    fi

    # No --state-file: each run measures a fresh cluster. The credentials are random per start
    # and read back from the lines the simulator prints.
    "$BIN" sim serve --listen "127.0.0.1:$PORT" --inventory "$inventory" --time-scale "$scale" \
        --request-log "$log" >"$out" 2>&1 &
    SIM_PID=$!
    local tries=0
    until grep -q '^export PROXMOX_VE_API_TOKEN=' "$out" 2>/dev/null; do
        tries=$((tries + 1))
        if [ $tries -gt 300 ] || ! kill -0 "$SIM_PID" 2>/dev/null; then
            echo "bench-up: the simulator did not start:" >&2
            cat "$out" >&2
            exit 1
        fi
        sleep 0.1
    done
    local fingerprint token
    fingerprint=$(sed -n 's/^certificate fingerprint (SHA-256): //p' "$out")
    token=$(sed -n "s/^export PROXMOX_VE_API_TOKEN='\(.*\)'$/\1/p" "$out")
    umask 077
    printf '%s\n' "$token" >"$ws/proxmox.token"
    # root@pam for the keys only root may set (hugepages, affinity of a100-8x); the token does
    # everything else.
    sed -n 's/^user: root@pam password //p' "$out" >"$ws/proxmox.password"
    cat >"$ws/provision.toml" <<EOF
[proxmox]
endpoint = "https://127.0.0.1:$PORT"
api_token_file = "proxmox.token"
username = "root@pam"
password_file = "proxmox.password"
fingerprint = "$fingerprint"
EOF
    # The workspace file is the only source of endpoint and credentials.
    unset PROXMOX_VE_ENDPOINT PROXMOX_VE_API_TOKEN PROXMOX_VE_USERNAME PROXMOX_VE_PASSWORD PROXMOX_VE_INSECURE

    # The image's size on the wire, as the simulator will download it (for the bound).
    local url wire
    url=$(sed -n 's/^url = "\(.*\)"$/\1/p' "$ws/profiles/$profile.toml" | head -n 1)
    wire=$(curl -sk -H "Authorization: PVEAPIToken=$token" --get \
        --data-urlencode "url=$url" \
        "https://127.0.0.1:$PORT/api2/json/nodes/pve1/query-url-metadata" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["size"])')
    : >"$log"

    local t0 t1 wall
    t0=$(now)
    if ! "$TIME" -v -o "$WORK/$name.time" "$UP_BIN" --quiet --workspace "$ws" --output json up \
        --profile "$profile" --vms-only >"$WORK/$name.up.out" 2>"$WORK/$name.up.err"; then
        echo "bench-up: up failed for $name:" >&2
        cat "$WORK/$name.up.err" >&2
        exit 1
    fi
    t1=$(now)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    local vms requests mutating user sys rss
    vms=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["vms"]))' <"$WORK/$name.up.out")
    requests=$(wc -l <"$log")
    mutating=$(grep -E '"method":"(POST|PUT|DELETE)"' "$log" | grep -vc '/agent/' || true)
    user=$(sed -n 's/^\tUser time (seconds): //p' "$WORK/$name.time")
    sys=$(sed -n 's/^\tSystem time (seconds): //p' "$WORK/$name.time")
    rss=$(sed -n 's/^\tMaximum resident set size (kbytes): //p' "$WORK/$name.time")

    cp "$log" "$WORK/$name.up.requests.log"
    : >"$log"
    local r0 r1 rerun
    r0=$(now)
    "$UP_BIN" --quiet --workspace "$ws" up --profile "$profile" --vms-only >"$WORK/$name.rerun.out" 2>&1
    r1=$(now)
    rerun=$(awk -v a="$r0" -v b="$r1" 'BEGIN { print b - a }')
    local rerun_requests rerun_mutating rerun_vm_reads
    rerun_requests=$(wc -l <"$log")
    rerun_vm_reads=$(grep -c '"path":"/nodes/[^/]*/qemu/[0-9]' "$log" || true)
    rerun_mutating=$(grep -E '"method":"(POST|PUT|DELETE)"' "$log" | grep -vc '/agent/' || true)

    # The volumes one VM has on local-lvm (each one allocation under the storage's lock).
    local volumes
    volumes=$(python3 -c 'import json,sys; vm=json.load(sys.stdin)["vms"][0]; print(vm["node"], vm["vmid"])' \
        <"$WORK/$name.up.out" | {
        read -r node vmid
        curl -sk -H "Authorization: PVEAPIToken=$token" \
            "https://127.0.0.1:$PORT/api2/json/nodes/$node/qemu/$vmid/config" |
            python3 -c 'import json, sys
config = json.load(sys.stdin)["data"]
print(sum(1 for v in config.values() if isinstance(v, str) and v.startswith("local-lvm:")
          and "media=cdrom" not in v and "cloudinit" not in v))'
    })

    kill "$SIM_PID" 2>/dev/null || true
    wait "$SIM_PID" 2>/dev/null || true
    SIM_PID=
    PORT=$((PORT + 1))

    local counts model bound chain storage busiest busiest_vms
    counts=$(python3 -c 'import collections, json, sys
print(json.dumps(collections.Counter(vm["node"] for vm in json.load(sys.stdin)["vms"])))' \
        <"$WORK/$name.up.out")
    model=$(bound_model "$scale" "$counts" "$wire" "$strategy" "$volumes")
    read -r bound chain storage busiest busiest_vms <<<"$model"
    local polls reads
    polls=$(grep -cE '"method":"GET","path":"/nodes/[^/]*/tasks(/[^"]*/status)?"' \
        "$WORK/$name.up.requests.log" || true)
    reads=$(grep -c '"method":"GET"' "$WORK/$name.up.requests.log" || true)
    echo "== $name: $vms VMs, inventory $inventory, time scale $scale, image strategy $strategy"
    echo "  up wall time          $(fmt "$wall") s"
    echo "  lower bound (model)   $(fmt "$bound") s   = max(one VM's chain $(fmt "$chain") s, $busiest: $busiest_vms VMs (their turns, $volumes volume(s) each) on local-lvm $(fmt "$storage") s)"
    echo "  ratio wall/bound      $(div "$wall" "$bound")"
    echo "  API requests          $requests ($(div "$requests" "$vms") per VM): task polls $polls ($(div "$polls" "$vms")), other reads $((reads - polls)) ($(div $((reads - polls)) "$vms")), mutating $mutating ($(div "$mutating" "$vms"))"
    echo "  provision CPU time    $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }') s (user $user + sys $sys)"
    echo "  provision peak RSS    $(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }') MiB"
    echo "  no-op re-run          $(fmt "$rerun") s, $rerun_requests requests ($(div "$rerun_requests" "$vms") per VM: $rerun_vm_reads on VM paths = $(div "$rerun_vm_reads" "$vms") per VM, $((rerun_requests - rerun_vm_reads)) cluster-wide), mutating $rerun_mutating"
}

for c in "${CASES[@]}"; do
    case $c in
    a100-8x) run_case a100-8x pve-a100-pcie a100-8x "$SCALE_A100" ;;
    scale200) run_case scale200 pve-cluster-4 generated "$SCALE_200" "$STRATEGY" ;;
    scale200-linked) run_case scale200-linked pve-cluster-4 generated "$SCALE_200" linked-clone ;;
    *)
        echo "bench-up: unknown case $c (a100-8x, scale200, scale200-linked)" >&2
        exit 2
        ;;
    esac
done
