//! `drain` and `uncordon` end to end against the in-memory cluster (`support::fake_cluster`):
//! a dry run and a refusal change nothing (not even a cordon), a drain cordons and evicts on a
//! Ready server other than the node, a drain that runs out of time leaves the node cordoned and
//! names the pods still on it, and uncordon is idempotent. The CLI refuses unknown nodes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use provision::error::UserFacing;
use provision::exec::drain::{self, DrainOutcome, DrainRequest};
use provision::exit::ExitStatus;
use provision::k3s::drain::{DrainError, DrainFlags, Fate, NodeName};
use serde_json::{Value, json};

use crate::support::cli::Provision;
use crate::support::fake_cluster::{FakeConnector, World, world};

const NODE: &str = "server-1";

fn pod(name: &str, owner: Option<&str>, node: &str) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running"}
    });
    if let Some(kind) = owner {
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": format!("{name}-owner"), "uid": "1", "controller": true}]);
    }
    pod
}

/// A running cluster: every node Ready, a DaemonSet pod, a ReplicaSet pod and a bare pod on
/// server-1, and a pod elsewhere.
fn cluster() -> World {
    let world = world();
    {
        let mut sim = world.sim.lock().unwrap();
        for node in &world.nodes {
            let etcd = node.name.starts_with("server");
            sim.cluster
                .insert(node.name.clone(), (true, etcd, BTreeMap::new(), Vec::new()));
        }
        sim.pods = vec![
            pod("svclb", Some("DaemonSet"), NODE),
            pod("web", Some("ReplicaSet"), NODE),
            pod("debug", None, NODE),
            pod("api", Some("ReplicaSet"), "worker-1"),
        ];
    }
    world
}

fn request(flags: DrainFlags, dry_run: bool) -> DrainRequest {
    DrainRequest {
        node: NodeName::new(NODE).unwrap(),
        flags,
        timeout: Duration::from_secs(30),
        dry_run,
    }
}

fn force() -> DrainFlags {
    DrainFlags {
        force: true,
        ..DrainFlags::default()
    }
}

/// Commands that change the cluster (everything but reads).
fn changes(world: &World) -> Vec<String> {
    world
        .sim
        .lock()
        .unwrap()
        .command_lines
        .iter()
        .filter(|c| !c.starts_with("k3s kubectl get "))
        .cloned()
        .collect()
}

async fn run(world: &World, request: &DrainRequest) -> drain::DrainReport {
    drain::drain(&world.nodes, &FakeConnector(world.sim.clone()), request)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_dry_run_shows_every_pod_and_changes_nothing() {
    let world = cluster();
    let report = run(&world, &request(DrainFlags::default(), true)).await;
    assert_eq!(report.outcome, DrainOutcome::DryRun);
    assert!(report.error().is_none());
    let fates: Vec<(&str, Fate)> = report
        .preflight
        .pods
        .iter()
        .map(|p| (p.name.as_str(), p.fate))
        .collect();
    assert_eq!(
        fates,
        [
            ("debug", Fate::Refuse),
            ("svclb", Fate::Skip),
            ("web", Fate::Evict)
        ]
    );
    // Read through another server than the node being drained.
    assert_eq!(report.server, "server-2");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["outcome"], "dry-run");
    assert_eq!(json["server"], "server-2");
    assert_eq!(json["preflight"]["node"], NODE);
    assert_eq!(json["preflight"]["pods"][0]["fate"], "refuse");
    assert_eq!(
        json["preflight"]["pods"][0]["reasons"],
        json!([{"kind": "unmanaged", "allowed": false}])
    );
    assert!(changes(&world).is_empty(), "{:?}", changes(&world));
    let sim = world.sim.lock().unwrap();
    assert!(sim.cordoned.is_empty());
    assert_eq!(sim.pods.len(), 4);
}

#[tokio::test]
async fn a_refusal_changes_nothing_not_even_a_cordon() {
    let world = cluster();
    let report = run(&world, &request(DrainFlags::default(), false)).await;
    assert_eq!(report.outcome, DrainOutcome::Refused);
    let error = report.error().unwrap();
    assert_eq!(error.exit_status(), ExitStatus::UserError);
    let DrainError::Refused { pods, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(pods, "  default/debug: needs --force");
    assert!(changes(&world).is_empty(), "{:?}", changes(&world));
    assert!(world.sim.lock().unwrap().cordoned.is_empty());
}

#[tokio::test]
async fn a_drain_cordons_and_evicts_all_but_daemonset_pods() {
    let world = cluster();
    let report = run(&world, &request(force(), false)).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report:?}");
    assert_eq!(
        changes(&world),
        ["k3s kubectl drain server-1 --ignore-daemonsets --force --timeout 30s"]
    );
    let sim = world.sim.lock().unwrap();
    assert!(sim.cordoned.contains(NODE));
    let left: Vec<&str> = sim
        .pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["svclb", "api"]);
}

#[tokio::test]
async fn a_drain_that_runs_out_of_time_names_the_pods_and_stays_cordoned() {
    let world = cluster();
    world
        .sim
        .lock()
        .unwrap()
        .unevictable
        .insert("default/web".to_owned());
    let report = run(&world, &request(force(), false)).await;
    let DrainOutcome::Incomplete {
        still_on_node,
        kubectl,
    } = &report.outcome
    else {
        panic!("{report:?}");
    };
    assert_eq!(still_on_node, &["default/web"]);
    assert!(kubectl.contains("global timeout reached: 30s"), "{kubectl}");
    let error = report.error().unwrap();
    assert_eq!(error.exit_status(), ExitStatus::Failure);
    assert!(error.to_string().contains("default/web"), "{error}");
    assert!(
        error
            .hint()
            .unwrap()
            .contains("provision uncordon --profile P server-1")
    );
    assert!(world.sim.lock().unwrap().cordoned.contains(NODE));
}

#[tokio::test]
async fn uncordon_gives_the_node_back_and_is_idempotent() {
    let world = cluster();
    run(&world, &request(force(), false)).await;
    let connector = FakeConnector(world.sim.clone());
    let node = NodeName::new(NODE).unwrap();
    let first = drain::uncordon(&world.nodes, &connector, &node)
        .await
        .unwrap();
    assert!(first.was_cordoned);
    assert!(world.sim.lock().unwrap().cordoned.is_empty());
    let second = drain::uncordon(&world.nodes, &connector, &node)
        .await
        .unwrap();
    assert!(!second.was_cordoned);
    assert!(
        changes(&world)
            .iter()
            .filter(|c| c.starts_with("k3s kubectl uncordon"))
            .all(|c| c == "k3s kubectl uncordon server-1")
    );
}

#[tokio::test]
async fn draining_an_unregistered_node_is_an_error_before_any_change() {
    let world = cluster();
    world.sim.lock().unwrap().cluster.remove(NODE);
    let error = drain::drain(
        &world.nodes,
        &FakeConnector(world.sim.clone()),
        &request(force(), false),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("not registered"), "{error}");
    assert!(changes(&world).is_empty());
}

#[test]
fn an_unknown_node_is_a_user_error_listing_the_known_ones() {
    let world = world();
    let error = drain::find_node(&world.nodes, "server-9", "profiles/homelab.toml").unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("\"server-9\" is not a node of this cluster"),
        "{text}"
    );
    assert!(
        text.contains("server-1, server-2, server-3, worker-1, worker-2"),
        "{text}"
    );
}

#[test]
fn the_cli_refuses_unknown_nodes_and_bad_timeouts_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let output = Provision::new(&["drain", "--profile", "homelab-ha", "no-such-node"])
        .cwd(dir.path())
        .output();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a node of this cluster"), "{stderr}");
    assert!(stderr.contains("known nodes:"), "{stderr}");
    let output = Provision::new(&["uncordon", "--profile", "homelab-ha", "no-such-node"])
        .cwd(dir.path())
        .output();
    assert_eq!(output.status.code(), Some(1));
    let output = Provision::new(&[
        "drain",
        "--profile",
        "homelab-ha",
        "x",
        "--timeout",
        "10 minutes",
    ])
    .cwd(dir.path())
    .output();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a duration like 90s"), "{stderr}");
}

#[test]
fn timeouts_read_like_kubectls() {
    use provision::cli::parse_timeout;
    let secs = |s: u64| Ok(Duration::from_secs(s));
    assert_eq!(parse_timeout("90s"), secs(90));
    assert_eq!(parse_timeout("10m"), secs(600));
    assert_eq!(parse_timeout("1h30m"), secs(5400));
    assert_eq!(parse_timeout("45"), secs(45));
    for bad in [
        "",
        "0",
        "0s",
        "m",
        "10x",
        "1.5h",
        "-5s",
        "99999999999999999999h",
    ] {
        assert!(parse_timeout(bad).is_err(), "{bad:?}");
    }
}

/// Connects like [`FakeConnector`], except to the hosts in `down`.
struct PartlyDown(crate::support::fake_cluster::Shared, Vec<&'static str>);

#[async_trait::async_trait]
impl provision::exec::phase2::Connector for PartlyDown {
    async fn connect(
        &self,
        node: &provision::exec::phase2::GuestNode,
    ) -> Result<Box<dyn provision::ssh::RemoteExec>, provision::ssh::SshError> {
        if self.1.contains(&node.name.as_str()) {
            return Err(provision::ssh::SshError::Connect {
                host: node.name.clone(),
                message: "no route to host".to_owned(),
            });
        }
        FakeConnector(self.0.clone()).connect(node).await
    }
}

#[tokio::test]
async fn with_the_other_servers_down_the_node_itself_answers() {
    let world = cluster();
    let connector = PartlyDown(world.sim.clone(), vec!["server-2", "server-3"]);
    let report = drain::drain(&world.nodes, &connector, &request(force(), true))
        .await
        .unwrap();
    assert_eq!(report.server, "server-1");
    let nobody = PartlyDown(world.sim.clone(), vec!["server-1", "server-2", "server-3"]);
    let error = drain::drain(&world.nodes, &nobody, &request(force(), true))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("no server answers"), "{error}");
    assert!(error.contains("server-3: "), "{error}");
}

#[test]
fn nodes_the_state_still_records_can_be_drained() {
    let world = world();
    let mut state = provision::state::State {
        cluster: world.profile.cluster.name.clone(),
        ..provision::state::State::default()
    };
    state.vms.insert(
        "homelab-old-1".to_owned(),
        provision::state::VmRecord {
            name: "homelab-old-1".to_owned(),
            vmid: 150,
            node: "pve1".to_owned(),
            group: "old".to_owned(),
            role: provision::profile::model::Role::Agent,
            phase: provision::state::VmPhase::Ready,
            params_hash: String::new(),
            address: Some("10.77.0.99".to_owned()),
            gpus: Vec::new(),
            iso: None,
        },
    );
    let keys = tempfile::tempdir().unwrap();
    let nodes = drain::known_nodes(&world.profile, &state, keys.path()).unwrap();
    let last = nodes.last().unwrap();
    assert_eq!(last.name, "homelab-old-1");
    assert_eq!(last.address.to_string(), "10.77.0.99");
    assert!(nodes.iter().any(|n| n.name.contains("server")));
    // Another cluster's state adds nothing.
    state.cluster = "elsewhere".to_owned();
    let nodes = drain::known_nodes(&world.profile, &state, keys.path()).unwrap();
    assert!(nodes.iter().all(|n| n.name != "homelab-old-1"));
}
