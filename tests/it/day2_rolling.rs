//! Rolling day-2 changes on the testbed: one cluster built as the e2e test builds it (3 servers +
//! 2 agents on real Debian hosts running the k3s stand-in, whose datastore is real etcd), then
//! the real `provision up` against it:
//!
//! - (a) a cores change on the servers rolls them one at a time: a watcher asks the servers (each
//!   in turn) for `k3s kubectl get nodes -o json` about once a second while `up` runs, and every
//!   sample shows at least 2 servers Ready; an etcd snapshot was saved first;
//! - (b) an agent count decrease drains the leaving agent (its ReplicaSet pod is evicted and
//!   recreated elsewhere) before its VM is destroyed; its Node and node-password Secret are gone;
//! - (c) a k3s_version patch upgrade (a copy of the stand-in reporting the new version, given as
//!   the air-gap binary) takes an etcd snapshot, upgrades the servers one at a time, then the
//!   agent: no sample shows an agent at the new version before every server is, and every node
//!   reports it after.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::e2e::{assert_five_ready_nodes, down_with_guests, provision, up_ok, write_profile};
use crate::support::testbed::{self, Testbed};

const OLD: &str = "v1.31.4+k3s1";
const NEW: &str = "v1.31.5+k3s1";
const LEAVING_AGENT: &str = "tbha-agent-2";

/// (name, Ready, kubelet version) of one node.
type NodeView = (String, bool, String);

/// What one look at the cluster showed (`at` after the watcher started): which server answered
/// and every node's view, or why no server answered.
#[derive(Debug)]
#[allow(dead_code)] // `at` is read through Debug, in the failure messages.
struct Sample {
    at: Duration,
    answer: Result<(String, Vec<NodeView>), String>,
}

impl Sample {
    fn ready_servers(&self) -> usize {
        match &self.answer {
            Ok((_, nodes)) => nodes
                .iter()
                .filter(|(name, ready, _)| name.contains("server") && *ready)
                .count(),
            Err(_) => 0,
        }
    }
}

/// Poll the servers (each in turn, the next one when one does not answer) about once a second
/// until `stop`; every sample is kept.
fn watch(testbed: &Testbed, servers: &[String], stop: &AtomicBool) -> Vec<Sample> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut turn = 0;
    while !stop.load(Ordering::SeqCst) {
        let mut errors = Vec::new();
        let mut answer = None;
        for offset in 0..servers.len() {
            let server = &servers[(turn + offset) % servers.len()];
            let output = testbed.ssh(
                server,
                "timeout 20 k3s kubectl get nodes -o json --request-timeout=15s",
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            match serde_json::from_str::<Value>(&stdout) {
                Ok(list) if output.status.success() => {
                    answer = Some((server.clone(), node_view(&list)));
                    break;
                }
                Ok(_) | Err(_) => errors.push(format!(
                    "{server}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )),
            }
        }
        turn += 1;
        samples.push(Sample {
            at: started.elapsed(),
            answer: answer.ok_or_else(|| errors.join("; ")),
        });
        std::thread::sleep(Duration::from_secs(1));
    }
    samples
}

/// (name, Ready, kubelet version) of every node in a node list.
fn node_view(list: &Value) -> Vec<NodeView> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let ready = item["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            (
                item["metadata"]["name"].as_str().unwrap().to_owned(),
                ready,
                item["status"]["nodeInfo"]["kubeletVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// `provision --output json up --yes` of `profile` on the testbed while a watcher samples the
/// cluster; the up's JSON and the samples.
fn up_watched(
    testbed: &Testbed,
    workspace: &Path,
    profile: &Path,
    servers: &[String],
) -> (Value, Vec<Sample>) {
    let stop = AtomicBool::new(false);
    let profile = profile.display().to_string();
    let (output, samples) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch(testbed, servers, &stop));
        let started = Instant::now();
        let output = provision(
            workspace,
            &[
                "--output",
                "json",
                "up",
                "--profile",
                &profile,
                "--simulate",
                "--sim-inventory",
                "pve-homelab",
                "--guests",
                "testbed",
                "--yes",
            ],
            &[],
        );
        eprintln!(
            "up took {:.1}s, exit {:?}\n{}",
            started.elapsed().as_secs_f64(),
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        );
        stop.store(true, Ordering::SeqCst);
        (output, watcher.join().unwrap())
    });
    assert!(
        output.status.success(),
        "up failed:\n{}\n{}\nsamples: {samples:#?}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (serde_json::from_slice(&output.stdout).unwrap(), samples)
}

/// Every sample shows at least two servers Ready (the samples are in the message otherwise).
fn assert_quorum_kept(samples: &[Sample]) {
    assert!(!samples.is_empty());
    let bad: Vec<&Sample> = samples.iter().filter(|s| s.ready_servers() < 2).collect();
    assert!(
        bad.is_empty(),
        "{} of {} samples show fewer than 2 servers Ready: {bad:#?}\nall samples: {samples:#?}",
        bad.len(),
        samples.len()
    );
}

/// Change the profile file in place.
fn edit_profile(profile: &Path, change: impl FnOnce(&mut toml_edit::DocumentMut)) {
    let mut document: toml_edit::DocumentMut =
        std::fs::read_to_string(profile).unwrap().parse().unwrap();
    change(&mut document);
    std::fs::write(profile, document.to_string()).unwrap();
}

fn kubectl(testbed: &Testbed, args: &str) -> String {
    testbed.ssh_ok(&testbed.hosts[0].name, &format!("k3s kubectl {args}"))
}

/// A copy of the stand-in whose built-in version is `version`: another binary (another sha256)
/// for the profile's air-gap k3s.
fn standin_at(version: &str, workspace: &Path) -> (std::path::PathBuf, String) {
    let text = std::fs::read_to_string(testbed::standin_k3s()).unwrap();
    let default = format!("os.environ.get(\"K3S_STANDIN_VERSION\", \"{OLD}\")");
    assert!(text.contains(&default), "the stand-in's version line moved");
    let text = text.replace(
        &default,
        &format!("os.environ.get(\"K3S_STANDIN_VERSION\", \"{version}\")"),
    );
    let path = workspace.join(format!("k3s-{version}"));
    std::fs::write(&path, &text).unwrap();
    (path, provision::nodeprep::sha256_hex(text.as_bytes()))
}

#[test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
fn day2_rolling_cores_scale_down_and_upgrade_on_the_testbed() {
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
    let servers: Vec<String> = testbed.hosts[..3].iter().map(|h| h.name.clone()).collect();

    // (a) More cores for the servers: one at a time, quorum kept at every sample.
    edit_profile(&profile, |document| {
        let group = &mut document["node_groups"][0];
        let cores = group["cores"].as_integer().unwrap();
        group["cores"] = toml_edit::value(cores + 1);
    });
    let (report, samples) = up_watched(&testbed, workspace, &profile, &servers);
    eprintln!("(a) {} samples", samples.len());
    assert_quorum_kept(&samples);
    assert_eq!(report["destroyed"], json!([]), "{report:#}");
    assert_five_ready_nodes(&testbed);
    // The roll saved an etcd snapshot before the first server went down.
    let rolled = servers.iter().any(|server| {
        testbed
            .ssh_ok(server, "k3s etcd-snapshot ls")
            .contains("provision-pre-roll-")
    });
    assert!(rolled, "no provision-pre-roll snapshot on any server");

    // (b) One agent fewer: drained (its pod evicted and recreated elsewhere) before its VM goes.
    let workload = json!({"apiVersion": "v1", "kind": "List", "items": [{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-5f7d9-zxcvb", "namespace": "default", "labels": {"app": "web"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5f7d9",
                                          "uid": "uid-web", "controller": true}]},
        "spec": {"nodeName": LEAVING_AGENT, "containers": [{"name": "main", "image": "busybox"}]},
    }]});
    testbed.ssh_ok(
        &servers[0],
        &format!("k3s kubectl apply -f - <<'EOF'\n{workload}\nEOF"),
    );
    edit_profile(&profile, |document| {
        let agents = &mut document["node_groups"][1];
        agents["count"] = toml_edit::value(1);
        // One address per VM: the leaving agent's goes with it.
        let first = agents["addresses"]
            .as_array()
            .unwrap()
            .get(0)
            .unwrap()
            .clone();
        agents["addresses"] = toml_edit::value(toml_edit::Array::from_iter([first]));
    });
    let (report, samples) = up_watched(&testbed, workspace, &profile, &servers);
    assert_quorum_kept(&samples);
    assert_eq!(report["destroyed"], json!([LEAVING_AGENT]), "{report:#}");
    let pods: Value = serde_json::from_str(&kubectl(&testbed, "get pods -A -o json")).unwrap();
    let web: Vec<&Value> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pod| pod["metadata"]["labels"]["app"] == "web")
        .collect();
    assert_eq!(web.len(), 1, "{pods:#}");
    assert_ne!(
        web[0]["spec"]["nodeName"], LEAVING_AGENT,
        "the pod was not evicted before the agent went: {pods:#}"
    );
    let nodes = kubectl(&testbed, "get nodes -o name");
    assert!(!nodes.contains(LEAVING_AGENT), "{nodes}");
    let secrets = kubectl(&testbed, "get secrets -n kube-system -o name");
    assert!(
        !secrets.contains(&format!("{LEAVING_AGENT}.node-password.k3s")),
        "{secrets}"
    );
    assert!(
        secrets.contains("tbha-agent-1.node-password.k3s"),
        "{secrets}"
    );

    // (c) A patch upgrade: snapshot, servers one at a time, then the agent.
    let (binary, sha256) = standin_at(NEW, workspace);
    edit_profile(&profile, |document| {
        document["cluster"]["k3s_version"] = toml_edit::value(NEW);
        document["airgap"]["k3s_binary"] = toml_edit::value(binary.display().to_string());
        document["airgap"]["k3s_sha256"] = toml_edit::value(sha256);
    });
    let (report, samples) = up_watched(&testbed, workspace, &profile, &servers);
    assert_quorum_kept(&samples);
    let upgrade = &report["phase2"]["upgrade"];
    assert_eq!(upgrade["from"], OLD, "{report:#}");
    assert_eq!(upgrade["to"], NEW, "{report:#}");
    assert_eq!(
        upgrade["upgraded"],
        json!([
            "tbha-server-1",
            "tbha-server-2",
            "tbha-server-3",
            "tbha-agent-1"
        ]),
        "{report:#}"
    );
    for sample in &samples {
        let Ok((_, nodes)) = &sample.answer else {
            continue;
        };
        let at_new = |server: bool| {
            nodes
                .iter()
                .filter(|(name, _, version)| name.contains("server") == server && version == NEW)
                .count()
        };
        assert!(
            at_new(false) == 0 || at_new(true) == 3,
            "an agent ran {NEW} before every server did: {sample:?}\nall samples: {samples:#?}"
        );
    }
    let after: Value = serde_json::from_str(&kubectl(&testbed, "get nodes -o json")).unwrap();
    let view = node_view(&after);
    assert_eq!(view.len(), 4, "{after:#}");
    assert!(
        view.iter()
            .all(|(_, ready, version)| *ready && version == NEW),
        "{view:?}"
    );
    let snapshots = testbed.ssh_ok(&servers[0], "k3s etcd-snapshot ls");
    let snapshot = upgrade["snapshot"].as_str().unwrap();
    assert!(
        snapshot.starts_with("provision-pre-upgrade-v1-31-5-k3s1-"),
        "{report:#}"
    );
    let listed = servers.iter().any(|server| {
        testbed
            .ssh_ok(server, "k3s etcd-snapshot ls")
            .contains(snapshot)
    });
    assert!(listed, "{snapshot} not listed on any server: {snapshots}");

    let output = down_with_guests(workspace, &profile);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("whole scenario: {:.1}s", scenario.elapsed().as_secs_f64());
}
