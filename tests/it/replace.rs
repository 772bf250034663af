//! `provision replace-node` on the testbed: a cluster built as the e2e test builds it (3 servers +
//! 2 agents on real Debian hosts running the k3s stand-in, whose datastore is real etcd), then the
//! real binary against it.
//!
//! - refused, changing nothing (same VMIDs, same etcd members, no journal), while a second server
//!   is down (quorum would be lost) and while etcd has a learner;
//! - the bootstrap (first) server replaced: 3 voting members after, every server's member list
//!   agrees, the kubeconfig still reaches the cluster, the node keeps its name, address, labels;
//! - an agent replaced: Ready again with its labels and taints; a dead agent (its machine off)
//!   replaced without a drain, after a confirmation that says so;
//! - `replace-node` SIGKILLed at 12 points spread over the whole operation, each re-run resuming:
//!   3 voting members, no duplicate member, no VM Proxmox shows that the state does not know.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use provision::k3s::etcd::{EtcdMember, parse_member_list};
use serde_json::Value;

use crate::e2e::{assert_five_ready_nodes, down_with_guests, provision, up_ok, write_profile};
use crate::support::testbed::Testbed;

const SERVER: &str = "tbha-server-1";
const AGENT: &str = "tbha-agent-1";
const DEAD_AGENT: &str = "tbha-agent-2";
const MEMBER_LIST: &str =
    "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 member list -w json";

/// `provision [--output json] replace-node --profile P NODE --yes --simulate … --guests testbed`,
/// with `env`; prints what it said and how long it took.
fn replace_node(workspace: &Path, profile: &Path, node: &str, env: &[(&str, &Path)]) -> Output {
    let profile = profile.display().to_string();
    let args = [
        "--output",
        "json",
        "replace-node",
        "--profile",
        &profile,
        node,
        "--yes",
        "--simulate",
        "--sim-inventory",
        "pve-homelab",
        "--guests",
        "testbed",
    ];
    let started = Instant::now();
    let output = provision(workspace, &args, env);
    eprintln!(
        "replace-node {node} took {:.1}s, {:?}\n{}\n{}",
        started.elapsed().as_secs_f64(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn replace_ok(workspace: &Path, profile: &Path, node: &str) -> Value {
    let output = replace_node(workspace, profile, node, &[]);
    assert!(output.status.success(), "replace-node {node} failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The state file: VM name → VMID, and whether a replacement is journaled.
fn state(workspace: &Path) -> (Vec<(String, u64)>, bool) {
    let state: Value =
        serde_json::from_slice(&std::fs::read(workspace.join(".provision/state.json")).unwrap())
            .unwrap();
    let vms = state["vms"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, vm)| (name.clone(), vm["vmid"].as_u64().unwrap()))
        .collect();
    (vms, !state["replacing"].is_null())
}

/// The etcd members as the server on test host `host` lists them.
fn members(testbed: &Testbed, host: &str) -> Vec<EtcdMember> {
    parse_member_list(&testbed.ssh_ok(host, MEMBER_LIST)).unwrap()
}

/// (node name, learner) of each member, sorted.
fn member_nodes(members: &[EtcdMember]) -> Vec<(String, bool)> {
    let mut nodes: Vec<(String, bool)> = members
        .iter()
        .map(|member| (member.node_name().to_owned(), member.is_learner))
        .collect();
    nodes.sort();
    nodes
}

/// Every server lists the same three voting members, one per server.
fn assert_three_voting_members_everywhere(testbed: &Testbed) {
    let want: Vec<(String, bool)> = (1..=3)
        .map(|i| (format!("tbha-server-{i}"), false))
        .collect();
    let mut ids = None;
    for host in &testbed.hosts[..3] {
        let listed = members(testbed, &host.name);
        assert_eq!(member_nodes(&listed), want, "{}: {listed:?}", host.name);
        let these: BTreeSet<u64> = listed.iter().map(|m| m.id).collect();
        assert_eq!(*ids.get_or_insert(these.clone()), these, "{}", host.name);
    }
}

/// Polls until every server's etcd member answers healthy (after a server came back).
fn wait_etcd_healthy(testbed: &Testbed) {
    let check = "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 endpoint health --cluster";
    for _ in 0..60 {
        if testbed.ssh(&testbed.hosts[0].name, check).status.success() {
            return;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    panic!("etcd did not become healthy again");
}

/// The kubeconfig's API server answers `/readyz` (the stand-in serves plain HTTP where k3s
/// serves TLS) and its CA is the one every server (the new one included) hands out.
fn assert_kubeconfig_works(testbed: &Testbed, workspace: &Path) {
    let text = std::fs::read_to_string(workspace.join(".provision/kubeconfig")).unwrap();
    let address = &testbed.hosts[0].address;
    assert!(text.contains(&format!("https://{address}:6443")), "{text}");
    let ca_of = |text: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix("certificate-authority-data:"))
            .map(|data| data.trim().to_owned())
            .unwrap()
    };
    for host in &testbed.hosts[..3] {
        let served = testbed.ssh_ok(&host.name, "cat /etc/rancher/k3s/k3s.yaml");
        assert_eq!(
            ca_of(&text),
            ca_of(&served),
            "{}: another cluster CA",
            host.name
        );
    }
    let mut stream = std::net::TcpStream::connect((address.as_str(), 6443)).unwrap();
    stream
        .write_all(format!("GET /readyz HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
}

/// Name, Ready, labels and taints of `node` as the third server sees it.
fn node_view(testbed: &Testbed, node: &str) -> Value {
    let json = testbed.ssh_ok(
        &testbed.hosts[2].name,
        &format!("k3s kubectl get node {node} -o json"),
    );
    let value: Value = serde_json::from_str(&json).unwrap();
    serde_json::json!({
        "name": value["metadata"]["name"],
        "ready": value["status"]["conditions"].as_array().unwrap().iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        "labels": value["metadata"]["labels"],
        "taints": value["spec"]["taints"],
    })
}

/// The refusal changed nothing: the same VMIDs, no journal, the same etcd members.
fn assert_refused_unchanged(
    output: &Output,
    workspace: &Path,
    testbed: &Testbed,
    before: &(Vec<(String, u64)>, BTreeSet<u64>),
    says: &str,
) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(says), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    let (vms, journaled) = state(workspace);
    assert_eq!(vms, before.0);
    assert!(!journaled);
    let ids: BTreeSet<u64> = members(testbed, &testbed.hosts[2].name)
        .iter()
        .map(|m| m.id)
        .collect();
    assert!(ids.is_superset(&before.1), "{ids:?} vs {:?}", before.1);
}

#[test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
fn replace_node_refusals_bootstrap_server_and_agent_on_the_testbed() {
    let Some(testbed) = Testbed::exclusive_stopped(5) else {
        return;
    };
    let workspace = tempfile::tempdir().unwrap();
    let workspace = workspace.path();
    let profile = write_profile(&testbed, workspace);
    up_ok(workspace, &profile);
    assert_five_ready_nodes(&testbed);
    let before = (
        state(workspace).0,
        members(&testbed, &testbed.hosts[0].name)
            .iter()
            .map(|m| m.id)
            .collect::<BTreeSet<u64>>(),
    );

    // 1. A second server down: replacing the first would leave 1 of 2 members. Refused.
    let second = &testbed.hosts[1].name;
    testbed.ssh_ok(second, "systemctl stop k3s");
    let refused = replace_node(workspace, &profile, SERVER, &[]);
    assert_refused_unchanged(&refused, workspace, &testbed, &before, "quorum");
    testbed.ssh_ok(second, "systemctl start k3s");
    wait_etcd_healthy(&testbed);

    // 2. A learner pending (an etcd member added as a learner, never started). Refused.
    // etcd refuses a reconfiguration until every member has been connected for a while.
    let first = &testbed.hosts[0].name;
    let add = "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 member add ghost \
         --peer-urls=http://10.77.0.250:2380 --learner";
    let added = (0..30).any(|_| {
        let done = testbed.ssh(first, add).status.success();
        if !done {
            std::thread::sleep(Duration::from_secs(2));
        }
        done
    });
    assert!(added, "etcd never accepted the learner");
    let refused = replace_node(workspace, &profile, SERVER, &[]);
    assert_refused_unchanged(&refused, workspace, &testbed, &before, "learner");
    let ghost = members(&testbed, first)
        .into_iter()
        .find(|m| m.is_learner)
        .unwrap();
    testbed.ssh_ok(
        first,
        &format!(
            "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 member remove {:x}",
            ghost.id
        ),
    );

    // 3. The bootstrap server.
    let server_before = node_view(&testbed, SERVER);
    let started = Instant::now();
    let report = replace_ok(workspace, &profile, SERVER);
    eprintln!(
        "TIMING replace-node server: {:.1}s {report}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(report["etcd_members"], 3, "{report:#}");
    assert_eq!(report["dead"], false, "{report:#}");
    assert!(report["snapshot"].is_string(), "{report:#}");
    assert_three_voting_members_everywhere(&testbed);
    assert!(
        !members(&testbed, first)
            .iter()
            .any(|m| before.1.contains(&m.id) && m.node_name() == SERVER),
        "the old member of {SERVER} is still listed"
    );
    assert_kubeconfig_works(&testbed, workspace);
    assert_eq!(node_view(&testbed, SERVER), server_before);
    assert_five_ready_nodes(&testbed);
    assert!(!state(workspace).1, "journal left behind");

    // 4. An agent.
    let agent_before = node_view(&testbed, AGENT);
    let started = Instant::now();
    let report = replace_ok(workspace, &profile, AGENT);
    eprintln!(
        "TIMING replace-node agent: {:.1}s {report}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(node_view(&testbed, AGENT), agent_before);
    assert_five_ready_nodes(&testbed);
    assert_three_voting_members_everywhere(&testbed);

    // 5. A dead agent (its machine is off, SSH does not answer): replaced without a drain.
    let dead_before = node_view(&testbed, DEAD_AGENT);
    testbed.stop(&testbed.hosts[4].name);
    let started = Instant::now();
    let output = replace_node(workspace, &profile, DEAD_AGENT, &[]);
    eprintln!(
        "TIMING replace-node dead agent: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["dead"], true, "{report:#}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tbha-agent-2 is dead"), "{stderr}");
    assert!(testbed.is_running(&testbed.hosts[4].name));
    assert_eq!(node_view(&testbed, DEAD_AGENT), dead_before);
    assert_five_ready_nodes(&testbed);
    assert!(down_with_guests(workspace, &profile).status.success());
}

/// The kill points of the crash test, in the order the steps reach them (`<step>` once the
/// journal names the step, `<step>-done` after its action).
const KILL_POINTS: [&str; 12] = [
    "snapshot",
    "snapshot-done",
    "drain-done",
    "stop-k3s-done",
    "remove-member",
    "remove-member-done",
    "delete-node-done",
    "destroy-vm",
    "destroy-vm-done",
    "create-vm-done",
    "join",
    "join-done",
];

#[test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
fn replace_node_killed_at_twelve_points_converges_on_the_testbed() {
    let Some(testbed) = Testbed::exclusive_stopped(5) else {
        return;
    };
    let workspace = tempfile::tempdir().unwrap();
    let workspace = workspace.path();
    let profile = write_profile(&testbed, workspace);
    up_ok(workspace, &profile);
    let mut reached = Vec::new();
    for point in KILL_POINTS {
        // Each run resumes where the last one was killed and is killed at the next point.
        let output = replace_node(
            workspace,
            &profile,
            SERVER,
            &[(provision::exec::replace::KILL_AT_ENV, Path::new(point))],
        );
        assert_eq!(output.status.signal(), Some(9), "not killed at {point}");
        assert!(state(workspace).1, "killed at {point} without a journal");
        reached.push(point);
    }
    assert_eq!(reached.len(), KILL_POINTS.len());
    let report = replace_ok(workspace, &profile, SERVER);
    assert_eq!(report["etcd_members"], 3, "{report:#}");
    assert_three_voting_members_everywhere(&testbed);
    assert_five_ready_nodes(&testbed);
    assert!(!state(workspace).1);
    // No orphan VM: the plan has nothing to do and warns of no stray tagged VM.
    let profile_text = profile.display().to_string();
    let plan = provision(
        workspace,
        &[
            "--output",
            "json",
            "plan",
            "--profile",
            &profile_text,
            "--simulate",
            "--sim-inventory",
            "pve-homelab",
        ],
        &[],
    );
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["actions"], serde_json::json!([]), "{plan:#}");
    assert_eq!(plan["warnings"], serde_json::json!([]), "{plan:#}");
    assert_eq!(state(workspace).0.len(), 5);
    assert!(down_with_guests(workspace, &profile).status.success());
}
