//! Day 2 on the testbed: one cluster built as the e2e test builds it (3 servers + 2 agents on real
//! Debian hosts running the k3s stand-in, whose datastore is real etcd), then the real `provision`
//! binary against it:
//!
//! - `status` of the converged cluster: exit 0, every node Ready, three etcd members, etcd ok;
//! - `drain` of an agent carrying a ReplicaSet pod held by a PodDisruptionBudget, a DaemonSet pod, a
//!   bare pod, a pod with an emptyDir and a pod on a local-path volume pinned to the agent: the dry
//!   run gives each pod its fate and changes nothing, a drain without flags is refused and changes
//!   nothing, a drain with every flag runs out of time on the PDB's pod and leaves the node
//!   cordoned (`status`: degraded), the drain succeeds once the PDB is gone, `uncordon` gives the
//!   node back;
//! - a server whose k3s is stopped: once the stand-in marks it NotReady (40 s without heartbeat),
//!   `status` exits 3 naming it.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::e2e::{assert_five_ready_nodes, down_with_guests, provision, up_ok, write_profile};
use crate::support::testbed::Testbed;

const AGENT: &str = "tbha-agent-1";

/// `provision --output json ARGS --profile PROFILE [SIM]`: exit code, stdout as JSON (Null when
/// empty), stderr.
fn run_json(workspace: &Path, profile: &Path, args: &[&str], sim: bool) -> (i32, Value, String) {
    let profile = profile.display().to_string();
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--profile", &profile]);
    if sim {
        all.extend_from_slice(&[
            "--simulate",
            "--sim-inventory",
            "pve-homelab",
            "--guests",
            "testbed",
        ]);
    }
    let started = Instant::now();
    let output: Output = provision(workspace, &all, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!(
        "provision {} took {:.1}s, exit {:?}\n{stderr}",
        args.join(" "),
        started.elapsed().as_secs_f64(),
        output.status.code()
    );
    let stdout = if output.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&output.stdout)))
    };
    (output.status.code().unwrap(), stdout, stderr)
}

fn status(workspace: &Path, profile: &Path) -> (i32, Value, String) {
    run_json(workspace, profile, &["status"], true)
}

/// The objects a workload would leave on the agent (the local-path provisioner's PVC and PV
/// included), as one List for `k3s kubectl apply -f -`.
fn workload() -> Value {
    let pod = |name: &str, owner: Option<(&str, &str)>, volumes: Value| {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name.split('-').next().unwrap()}},
            "spec": {"nodeName": AGENT, "containers": [{"name": "main", "image": "busybox"}], "volumes": volumes},
        });
        if let Some((kind, owner)) = owner {
            pod["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": format!("uid-{owner}"), "controller": true,
            }]);
        }
        pod
    };
    json!({"apiVersion": "v1", "kind": "List", "items": [
        pod("web-7c9f4-abcde", Some(("ReplicaSet", "web-7c9f4")), json!([])),
        pod("svclb-x7k2p", Some(("DaemonSet", "svclb")), json!([])),
        pod("debug", None, json!([])),
        pod("scratch-5d8f7-qwert", Some(("ReplicaSet", "scratch-5d8f7")), json!([{"name": "cache", "emptyDir": {}}])),
        pod("db-0", Some(("StatefulSet", "db")), json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}])),
        {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data-db-0", "namespace": "default",
                         "annotations": {"volume.kubernetes.io/selected-node": AGENT}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                     "resources": {"requests": {"storage": "1Gi"}}, "volumeName": "pvc-5e1d0c2a"},
            "status": {"phase": "Bound"},
        },
        {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pvc-5e1d0c2a"},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                "hostPath": {"path": "/var/lib/rancher/k3s/storage/pvc-5e1d0c2a_default_data-db-0", "type": "DirectoryOrCreate"},
                "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "data-db-0"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [AGENT]}]}]}},
            },
            "status": {"phase": "Bound"},
        },
        {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        },
    ]})
}

/// `k3s kubectl ARGS` on the first server, through OpenSSH.
fn kubectl(testbed: &Testbed, args: &str) -> String {
    testbed.ssh_ok(&testbed.hosts[0].name, &format!("k3s kubectl {args}"))
}

/// The agent's pods (sorted names) and whether it is cordoned, as the cluster says.
fn agent_view(testbed: &Testbed) -> (Vec<String>, bool) {
    let pods: Value = serde_json::from_str(&kubectl(testbed, "get pods -A -o json")).unwrap();
    let mut names: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["spec"]["nodeName"] == AGENT)
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    let node: Value =
        serde_json::from_str(&kubectl(testbed, &format!("get node {AGENT} -o json"))).unwrap();
    (names, node["spec"]["unschedulable"] == true)
}

/// name → (fate, reason kinds) from a drain report.
fn fates(report: &Value) -> BTreeMap<String, (String, Vec<String>)> {
    report["preflight"]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let kinds = p["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["kind"].as_str().unwrap().to_owned())
                .collect();
            (
                p["name"].as_str().unwrap().to_owned(),
                (p["fate"].as_str().unwrap().to_owned(), kinds),
            )
        })
        .collect()
}

fn fate(name: &str, fate: &str, kinds: &[&str]) -> (String, (String, Vec<String>)) {
    (
        name.to_owned(),
        (
            fate.to_owned(),
            kinds.iter().map(|k| (*k).to_owned()).collect(),
        ),
    )
}

fn finding_kinds(status: &Value) -> Vec<(String, String)> {
    status["cluster"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["node"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
fn day2_status_drain_uncordon_on_the_testbed() {
    let Some(testbed) = Testbed::exclusive_stopped(5) else {
        return;
    };
    let scenario = Instant::now();
    let workspace = tempfile::tempdir().unwrap();
    let workspace = workspace.path();
    let profile = write_profile(&testbed, workspace);
    up_ok(workspace, &profile);
    assert_five_ready_nodes(&testbed);
    eprintln!("converged after {:.1}s", scenario.elapsed().as_secs_f64());

    // 1. status of the converged cluster.
    let (code, report, stderr) = status(workspace, &profile);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    let cluster = &report["cluster"];
    assert_eq!(cluster["state"], "reached", "{report:#}");
    assert_eq!(cluster["health"], "healthy", "{report:#}");
    assert_eq!(cluster["etcd"]["state"], "ok", "{report:#}");
    assert_eq!(cluster["findings"], json!([]), "{report:#}");
    let nodes = cluster["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5, "{report:#}");
    assert!(
        nodes
            .iter()
            .all(|n| n["ready"] == true && n["cordoned"] == false),
        "{report:#}"
    );
    let members: Vec<&str> = nodes
        .iter()
        .filter(|n| !n["etcd"].is_null())
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        ["tbha-server-1", "tbha-server-2", "tbha-server-3"],
        "{report:#}"
    );

    // 2. drain: pods and a PDB on the agent.
    let server = testbed.hosts[0].name.clone();
    let applied = testbed.ssh_ok(
        &server,
        &format!("k3s kubectl apply -f - <<'EOF'\n{}\nEOF", workload()),
    );
    assert!(
        applied.contains("poddisruptionbudget.policy/web created"),
        "{applied}"
    );
    let before = agent_view(&testbed);
    assert_eq!(
        before,
        (
            vec![
                "db-0".to_owned(),
                "debug".to_owned(),
                "scratch-5d8f7-qwert".to_owned(),
                "svclb-x7k2p".to_owned(),
                "web-7c9f4-abcde".to_owned()
            ],
            false
        )
    );
    let all_flags = [
        "--force",
        "--delete-emptydir-data",
        "--allow-local-volumes",
        "--timeout",
        "15s",
    ];

    // The dry run: every pod's fate, nothing changed.
    let (code, report, stderr) =
        run_json(workspace, &profile, &["drain", AGENT, "--dry-run"], false);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["outcome"], "dry-run", "{report:#}");
    assert_ne!(report["server"], AGENT);
    assert_eq!(report["preflight"]["node"], AGENT);
    assert_eq!(
        fates(&report),
        BTreeMap::from([
            fate("db-0", "refuse", &["local-volume"]),
            fate("debug", "refuse", &["unmanaged"]),
            fate("scratch-5d8f7-qwert", "refuse", &["empty-dir"]),
            fate("svclb-x7k2p", "skip", &["daemon-set"]),
            fate("web-7c9f4-abcde", "evict", &["pdb-blocked"]),
        ]),
        "{report:#}"
    );
    let db = report["preflight"]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "db-0")
        .unwrap();
    assert_eq!(
        db["reasons"][0],
        json!({"kind": "local-volume", "claim": "data-db-0", "volume": "pvc-5e1d0c2a", "allowed": false})
    );
    let mut dry_flags = vec!["drain", AGENT, "--dry-run"];
    dry_flags.extend_from_slice(&all_flags);
    let (code, report, stderr) = run_json(workspace, &profile, &dry_flags, false);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        fates(&report).iter().all(|(name, (fate, _))| fate
            == if name.starts_with("svclb") {
                "skip"
            } else {
                "evict"
            }),
        "{report:#}"
    );
    assert_eq!(
        agent_view(&testbed),
        before,
        "a dry run changed the cluster"
    );

    // Without flags: refused, nothing changed (not even a cordon).
    let (code, _, stderr) = run_json(workspace, &profile, &["drain", AGENT], false);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("refusing to drain tbha-agent-1"),
        "{stderr}"
    );
    for needle in [
        "default/debug",
        "default/scratch-5d8f7-qwert",
        "default/db-0",
        "--force",
        "--delete-emptydir-data",
        "--allow-local-volumes",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert_eq!(
        agent_view(&testbed),
        before,
        "a refused drain changed the cluster"
    );

    // Every flag: the PDB holds web until the timeout; the node stays cordoned.
    let mut drain_flags = vec!["drain", AGENT];
    drain_flags.extend_from_slice(&all_flags);
    let started = Instant::now();
    let (code, report, stderr) = run_json(workspace, &profile, &drain_flags, false);
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "kubectl's timeout was not waited for"
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("default/web-7c9f4-abcde"), "{stderr}");
    assert!(stderr.contains("the node stays cordoned"), "{stderr}");
    if !report.is_null() {
        assert_eq!(report["outcome"], "incomplete", "{report:#}");
        assert_eq!(
            report["still_on_node"],
            json!(["default/web-7c9f4-abcde"]),
            "{report:#}"
        );
    }
    let (pods, cordoned) = agent_view(&testbed);
    assert!(cordoned);
    assert_eq!(pods, ["svclb-x7k2p", "web-7c9f4-abcde"]);
    let (code, report, stderr) = status(workspace, &profile);
    assert_eq!(
        code, 0,
        "a cordoned node is degraded, not unhealthy: {stderr}"
    );
    assert_eq!(report["cluster"]["health"], "degraded", "{report:#}");
    assert_eq!(
        finding_kinds(&report),
        [("cordoned".to_owned(), AGENT.to_owned())],
        "{report:#}"
    );

    // Without the PDB the drain completes.
    kubectl(&testbed, "delete pdb web");
    let (code, report, stderr) = run_json(workspace, &profile, &drain_flags, false);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["outcome"], "drained", "{report:#}");
    assert_eq!(agent_view(&testbed), (vec!["svclb-x7k2p".to_owned()], true));

    // uncordon gives the node back.
    let (code, _, stderr) = run_json(workspace, &profile, &["uncordon", AGENT], false);
    assert_eq!(code, 0, "{stderr}");
    assert!(!agent_view(&testbed).1);
    let (code, report, stderr) = status(workspace, &profile);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["cluster"]["health"], "healthy", "{report:#}");

    // 3. A server whose k3s stops is NotReady once its heartbeat has been silent for 40 s.
    let stopped = testbed.hosts[2].name.clone();
    testbed.ssh_ok(&stopped, "systemctl stop k3s");
    let deadline = Instant::now() + Duration::from_secs(90);
    let (code, report, stderr) = loop {
        let (code, report, stderr) = status(workspace, &profile);
        if code != 0 || Instant::now() > deadline {
            break (code, report, stderr);
        }
        std::thread::sleep(Duration::from_secs(5));
    };
    assert_eq!(code, 3, "{report:#}\n{stderr}");
    assert_eq!(report["cluster"]["health"], "unhealthy", "{report:#}");
    assert!(
        finding_kinds(&report).contains(&("not-ready".to_owned(), "tbha-server-3".to_owned())),
        "{report:#}"
    );
    assert!(
        report["cluster"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["message"] == "tbha-server-3 is NotReady"),
        "{report:#}"
    );

    // The hosts are stopped with the VMs.
    let output = down_with_guests(workspace, &profile);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("whole scenario: {:.1}s", scenario.elapsed().as_secs_f64());
}
