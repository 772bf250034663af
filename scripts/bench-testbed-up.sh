#!/usr/bin/env bash
#: Benchmark of a whole `provision up --simulate --guests testbed` (phase 1 against the embedded
#: simulator, phase 2 over SSH on real testbed hosts with the stand-in k3s, see scripts/testbed.sh)
#: from a fresh workspace, against the k3s-side critical path. Cases:
#:   testbed-ha  tests/fixtures/profiles/testbed-ha.toml: 3 servers + 2 agents
#:   hosts8      the same profile with 5 agents: 3 servers + 5 agents
#: For each run it prints the wall time of the `up` process, phase 1 (`seconds` of `up --output
#: json`), the testbed's host boots, phase 2, the critical path computed from the step durations
#: phase 2 reports per node (see critical_path below), the ratio wall / critical path, and a table
#: of every host's steps (duration @ start, seconds since phase 2 started). Then `down --guests
#: testbed` destroys the VMs, and the hosts are stopped and wiped.
#:
#: usage: scripts/bench-testbed-up.sh [CASE...]    (root; default: testbed-ha hosts8)
#: Environment: BENCH_BIN=PATH to measure that provision binary (default: `cargo build --release`,
#:   then target/release/provision), BENCH_RUNS (runs per case, default 1), BENCH_FIRST_HOST
#:   (default 61: hosts tb61..tb68, which no test reserves), BENCH_KEEP_WORK=1 to keep the
#:   workspaces, outputs and logs, TESTBED_DIR as for scripts/testbed.sh.
#: Only the hosts named above are wiped, started and stopped; no other testbed host is touched.
#: Other sessions may use the testbed: run it under the testbed lock, e.g.
#:   flock /var/lock/provision-testbed.lock scripts/bench-testbed-up.sh
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$SCRIPT_DIR")"
TESTBED="$SCRIPT_DIR/testbed.sh"
CASES=("$@")
[[ ${#CASES[@]} -gt 0 ]] || CASES=(testbed-ha hosts8)
RUNS=${BENCH_RUNS:-1}
FIRST=${BENCH_FIRST_HOST:-61}

log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root (the testbed needs it)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive number"
[[ $FIRST =~ ^[1-9][0-9]*$ && $FIRST -le 236 ]] || die "BENCH_FIRST_HOST must be a number from 1 to 236"
for case_name in "${CASES[@]}"; do
    case $case_name in
        testbed-ha | hosts8) ;;
        *) die "unknown case '$case_name' (cases: testbed-ha hosts8)" ;;
    esac
done
command -v python3 >/dev/null || die "python3 is needed to read provision's JSON"

eval "$("$TESTBED" env)"
WORK="$(mktemp -d)"
if [[ ${BENCH_KEEP_WORK:-} == 1 ]]; then echo "bench: work files in $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi

if [[ -n ${BENCH_BIN:-} ]]; then
    BIN=$BENCH_BIN
else
    log "building provision (release)"
    (cd "$REPO" && cargo build -q --release --bin provision)
    BIN="$REPO/target/release/provision"
fi
[[ -x $BIN ]] || die "$BIN is not an executable"
STANDIN="$REPO/scripts/k3s-standin/k3s"
FIXTURE="$REPO/tests/fixtures/profiles/testbed-ha.toml"

[[ -s $TESTBED_DIR/base/.testbed-base-ok ]] || "$TESTBED" setup 1 >/dev/null # base, bridge, client key

# host_names COUNT: tbFIRST.. for COUNT hosts.
host_names() {
    local i
    for ((i = FIRST; i < FIRST + $1; i++)); do echo "tb$i"; done
}

# Stopped and wiped: `up` seeds and boots them as the simulated VMs start, like fresh VMs.
wipe_hosts() {
    local name
    for name in $(host_names "$1"); do "$TESTBED" wipe "$name" >/dev/null; done
}

# write_profile AGENTS PATH: the fixture with our hosts' addresses, AGENTS agents, the stand-in k3s
# and its sha256, and the testbed's client key.
write_profile() {
    python3 - "$FIXTURE" "$2" "$1" "$FIRST" "$STANDIN" "$(sha256sum <"$STANDIN" | cut -d' ' -f1)" \
        "$TESTBED_CLIENT_KEY" <<'EOF'
import json, re, sys
fixture, out, agents, first, standin, sha256, key = sys.argv[1:]
agents, first = int(agents), int(first)
text = open(fixture).read()
addresses = [f"10.77.0.{10 + i}" for i in range(first, first + 3 + agents)]
groups = [addresses[:3], addresses[3:]]
def replace_addresses(match):
    return "addresses = " + json.dumps(groups.pop(0))
text, count = re.subn(r"(?m)^addresses = \[.*\]$", replace_addresses, text)
assert count == 2, "the fixture has two node groups with addresses"
text, count = re.subn(r"(?m)^(\[\[node_groups\]\]\nname = \"agent\"\nrole = \"agent\"\ncount = )\d+$",
                      lambda m: m.group(1) + str(agents), text)
assert count == 1, "the fixture's agent group"
for key_name, value in (("k3s_binary", standin), ("k3s_sha256", sha256), ("private_key", key)):
    text, count = re.subn(rf"(?m)^{key_name} = .*$", lambda m: f"{key_name} = {json.dumps(value)}", text)
    assert count == 1, key_name
open(out, "w").write(text)
EOF
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# The figures of one run from `up --output json` (see the header): critical path =
#   slowest VM ready: the slowest VM of phase 1 + the testbed's host boots
#   + phase 2's inputs (token, binary read and checked)
#   + the later of: the slowest node's connect + cloud-init + probe (the join plan needs every
#     node's k3s state) and the bootstrap server's own connect + cloud-init + probe + prepare +
#     upload (each node is prepared as soon as it is reached)
#   + the bootstrap server: join token + install + ready
#   + every further server, one at a time: join token + install + ready (its own preparation
#     is done long before)
#   + the slowest agent: join token + install + ready (agents join in parallel)
#   + labels and taints + kubeconfig (cluster-wide, at the end).
report() {
    python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
path, wall_ms, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
up = json.load(open(path))
wall = wall_ms / 1000
phase1 = up["seconds"]
phase2 = up["phase2"]
boot = phase2.get("testbed_boot_seconds", 0.0)
role = {vm["name"]: vm["role"] for vm in up["vms"]}
host = {vm["name"]: "tb%d" % (int(vm["address"].rsplit(".", 1)[1]) - 10) for vm in up["vms"]}
nodes = {node["name"]: node for node in phase2["nodes"]}
def dur(node, *steps):
    return sum(t["seconds"] for t in nodes[node]["timeline"] if t["step"] in steps)
cluster = {t["step"]: t["seconds"] for t in phase2["timeline"]}
slowest_vm = max(vm["seconds"] for vm in up["vms"])
reach = ("connect", "cloud-init", "probe")
reachable = max(dur(n, *reach) for n in nodes)
bootstrap = phase2["bootstrap"]
bootstrap_prepared = dur(bootstrap, *reach, "prepare", "upload")
servers = [n for n in nodes if role[n] == "server" and n != bootstrap]
agents = [n for n in nodes if role[n] == "agent"]
parts = [
    ("slowest VM (phase 1)", slowest_vm),
    ("testbed host boots", boot),
    ("phase 2 inputs", cluster.get("inputs", 0.0)),
    ("slowest node reachable", reachable),
    ("bootstrap prepared after that", max(0.0, bootstrap_prepared - reachable)),
    ("bootstrap " + bootstrap + " install to Ready", dur(bootstrap, "join token", "install", "ready")),
]
parts += [("server " + n, dur(n, "join token", "install", "ready")) for n in servers]
if agents:
    slowest = max(agents, key=lambda n: dur(n, "join token", "install", "ready"))
    parts.append(("slowest agent " + slowest, dur(slowest, "join token", "install", "ready")))
parts.append(("labels, taints, kubeconfig", cluster.get("labels and taints", 0.0) + cluster.get("kubeconfig", 0.0)))
critical = sum(seconds for _, seconds in parts)
print(f"== {label}: {len(role)} VMs ({len(servers) + 1} servers, {len(agents)} agents)")
print(f"wall {wall:.2f} s   phase 1 {phase1:.2f} s   testbed boots {boot:.2f} s   phase 2 {phase2['seconds']:.2f} s   "
      f"other {wall - phase1 - boot - phase2['seconds']:.2f} s (process, preflight, output)")
print(f"critical path {critical:.2f} s   wall / critical path = {wall / critical:.2f} (target <= 1.2)")
for name, seconds in parts:
    print(f"  {name:<40} {seconds:6.2f} s")
steps = ["connect", "cloud-init", "probe", "prepare", "upload", "join token", "install", "ready"]
print(f"{'node':<16} {'host':<5} {'role':<6} {'phase 1':>8}  " + " ".join(f"{s:>12}" for s in steps))
for vm in up["vms"]:
    name = vm["name"]
    cells = []
    for step in steps:
        timed = [t for t in nodes[name]["timeline"] if t["step"] == step]
        cells.append(f"{timed[0]['seconds']:5.2f}@{timed[0]['start']:6.2f}" if timed else "-")
    print(f"{name:<16} {host[name]:<5} {role[name]:<6} {vm['seconds']:8.2f}  " + " ".join(f"{c:>12}" for c in cells))
print("cluster-wide: " + ", ".join(f"{t['step']} {t['seconds']:.2f}@{t['start']:.2f}" for t in phase2["timeline"]))
print("(step cells: seconds@start, both in seconds since phase 2 started)")
EOF
}

run_case() { # run_case CASE RUN
    local case_name=$1 run=$2 agents dir profile start wall rc=0 count name
    case $case_name in
        testbed-ha) agents=2 ;;
        hosts8) agents=5 ;;
    esac
    count=$((3 + agents))
    dir="$WORK/$case_name-$run"
    mkdir -p "$dir/workspace"
    profile="$dir/profile.toml"
    write_profile "$agents" "$profile"
    wipe_hosts "$count"
    local common=(--profile "$profile" --simulate --sim-inventory pve-homelab --guests testbed)
    log "$case_name run $run/$RUNS: up on $(host_names "$count" | paste -sd' ' -)"
    start=$(now_ms)
    PROVISION_TESTBED_SCRIPT="$TESTBED" "$BIN" --workspace "$dir/workspace" --output json up "${common[@]}" \
        >"$dir/up.json" 2>"$dir/up.log" || rc=$?
    wall=$(($(now_ms) - start))
    if [[ $rc -eq 0 ]]; then
        report "$dir/up.json" "$wall" "$case_name run $run/$RUNS" || rc=$?
    else
        log "up failed (exit $rc):"
        tail -n 20 "$dir/up.log" >&2
    fi
    PROVISION_TESTBED_SCRIPT="$TESTBED" "$BIN" --workspace "$dir/workspace" down "${common[@]}" --yes \
        >"$dir/down.log" 2>&1 || log "down failed, see $dir/down.log"
    for name in $(host_names "$count"); do "$TESTBED" stop "$name" >/dev/null; done
    wipe_hosts "$count"
    return $rc
}

status=0
for case_name in "${CASES[@]}"; do
    for ((run = 1; run <= RUNS; run++)); do
        run_case "$case_name" "$run" || status=1
        echo
    done
done
exit $status
