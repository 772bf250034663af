//! `replace-node`'s preflight against a fake cluster (servers that answer `kubectl get nodes`,
//! `etcdctl member list` and `endpoint health` as a 3-server k3s does): every refusal says why
//! and what to do, and nothing but reads reached a node; the etcd steps run as k3s wants them.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use provision::exec::phase2::{Connector, GuestNode};
use provision::exec::replace::ReplaceContext;
use provision::k3s::drain::NodeName;
use provision::profile::model::Role;
use provision::ssh::{CommandOutput, RemoteExec, SshError};
use provision::state::{State, VmPhase, VmRecord};
use serde_json::json;

/// What the fake cluster looks like and every command it was sent.
#[derive(Default)]
struct Cluster {
    /// Server name → etcd answers healthy.
    healthy: BTreeMap<String, bool>,
    learner: bool,
    /// Hosts that refuse SSH.
    unreachable: Vec<String>,
    commands: Vec<(String, String)>,
}

type Shared = Arc<Mutex<Cluster>>;

fn address(name: &str) -> String {
    let index: u8 = name.rsplit('-').next().unwrap().parse().unwrap();
    let offset = if name.contains("server") { 10 } else { 20 };
    format!("10.0.0.{}", offset + index)
}

struct Exec {
    host: String,
    cluster: Shared,
}

fn answer(stdout: String, exit_status: u32) -> CommandOutput {
    CommandOutput {
        exit_status,
        stdout: stdout.into_bytes(),
        stderr: Vec::new(),
    }
}

impl Exec {
    fn respond(&self, cluster: &Cluster, command: &str) -> CommandOutput {
        let servers: Vec<&String> = cluster.healthy.keys().collect();
        if command == "k3s kubectl get nodes -o json" {
            let items: Vec<_> = servers
                .iter()
                .map(|name| json!({"metadata": {"name": name, "labels": {"node-role.kubernetes.io/etcd": "true"}},
                    "spec": {}, "status": {"conditions": [{"type": "Ready", "status": if cluster.healthy[*name] {"True"} else {"Unknown"}}]}}))
                .collect();
            return answer(json!({"items": items}).to_string(), 0);
        }
        if command.contains("member list -w json") {
            let mut members: Vec<_> = servers
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    json!({"ID": 1000 + i, "name": format!("{name}-0000000{i}"),
                    "clientURLs": [format!("https://{}:2379", address(name))]})
                })
                .collect();
            if cluster.learner {
                members.push(
                    json!({"ID": 77, "peerURLs": ["https://10.0.0.99:2380"], "isLearner": true}),
                );
            }
            return answer(json!({"members": members}).to_string(), 0);
        }
        if command.contains("endpoint health --cluster -w json") {
            let health: Vec<_> = servers
                .iter()
                .map(|name| json!({"endpoint": format!("https://{}:2379", address(name)), "health": cluster.healthy[*name]}))
                .collect();
            let status = u32::from(cluster.healthy.values().any(|healthy| !healthy));
            return answer(json!(health).to_string(), status);
        }
        if command == "true" {
            return answer(String::new(), 0);
        }
        answer(String::new(), 0)
    }
}

#[async_trait]
impl RemoteExec for Exec {
    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, command: &str, _stdin: Option<&[u8]>) -> Result<CommandOutput, SshError> {
        let mut cluster = self.cluster.lock().unwrap();
        cluster
            .commands
            .push((self.host.clone(), command.to_owned()));
        Ok(self.respond(&cluster, command))
    }

    async fn write_file(&self, path: &str, _data: &[u8], _mode: u32) -> Result<(), SshError> {
        panic!("{}: a refusal must write nothing, got {path}", self.host);
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SshError> {
        panic!("{}: unexpected read of {path}", self.host);
    }
}

struct FakeConnector(Shared);

#[async_trait]
impl Connector for FakeConnector {
    async fn connect(&self, node: &GuestNode) -> Result<Box<dyn RemoteExec>, SshError> {
        let cluster = self.0.lock().unwrap();
        let down = cluster.unreachable.contains(&node.name)
            || cluster.healthy.get(&node.name) == Some(&false);
        if down {
            return Err(SshError::Connect {
                host: node.name.clone(),
                message: "connection timed out".to_owned(),
            });
        }
        Ok(Box::new(Exec {
            host: node.name.clone(),
            cluster: Arc::clone(&self.0),
        }))
    }
}

fn guest(name: &str, role: Role) -> GuestNode {
    GuestNode {
        name: name.to_owned(),
        address: address(name).parse::<IpAddr>().unwrap(),
        role,
        group: if role == Role::Server {
            "server"
        } else {
            "agent"
        }
        .to_owned(),
        expected_host_keys: Vec::new(),
    }
}

fn nodes() -> Vec<GuestNode> {
    vec![
        guest("lab-server-1", Role::Server),
        guest("lab-server-2", Role::Server),
        guest("lab-server-3", Role::Server),
        guest("lab-agent-1", Role::Agent),
    ]
}

fn state(phases: &[(&str, VmPhase)]) -> State {
    let mut state = State::default();
    for (index, node) in nodes().iter().enumerate() {
        let phase = phases
            .iter()
            .find(|(name, _)| *name == node.name)
            .map_or(VmPhase::Ready, |(_, phase)| *phase);
        state.vms.insert(
            node.name.clone(),
            VmRecord {
                name: node.name.clone(),
                vmid: 7400 + u32::try_from(index).unwrap(),
                node: "pve1".to_owned(),
                group: node.group.clone(),
                role: node.role,
                phase,
                params_hash: String::new(),
                address: Some(node.address.to_string()),
                gpus: Vec::new(),
                iso: None,
            },
        );
    }
    state
}

fn cluster(down: &[&str], learner: bool) -> Shared {
    let healthy = (1..=3)
        .map(|i| format!("lab-server-{i}"))
        .map(|name| {
            let up = !down.contains(&name.as_str());
            (name, up)
        })
        .collect();
    Arc::new(Mutex::new(Cluster {
        healthy,
        learner,
        ..Cluster::default()
    }))
}

/// The preflight of replacing `node` on `cluster`; the error text, and every command sent.
async fn preflight(
    cluster: &Shared,
    node: &str,
    state: &State,
) -> (
    Result<provision::exec::replace::Preflight, String>,
    Vec<(String, String)>,
) {
    let nodes = nodes();
    let connector = FakeConnector(Arc::clone(cluster));
    let target = nodes.iter().find(|n| n.name == node).unwrap();
    let context = ReplaceContext {
        connector: &connector,
        nodes: &nodes,
        node: target,
        name: NodeName::new(node).unwrap(),
        timeout: Duration::from_secs(5),
        poll: Duration::from_millis(10),
    };
    let result = context
        .preflight(state, true)
        .await
        .map_err(|error| format!("{error:#}"));
    let commands = cluster.lock().unwrap().commands.clone();
    (result, commands)
}

/// Only reads reached the cluster: no drain, annotate, delete, systemctl, member remove.
fn assert_only_reads(commands: &[(String, String)]) {
    for (host, command) in commands {
        let read = command == "true"
            || command.starts_with("k3s kubectl get ")
            || command.contains("member list -w json")
            || command.contains("endpoint health");
        assert!(read, "{host}: a refusal ran `{command}`");
    }
}

#[tokio::test]
async fn a_second_server_down_refuses_with_the_reason_and_changes_nothing() {
    let cluster = cluster(&["lab-server-2"], false);
    let (result, commands) = preflight(&cluster, "lab-server-1", &state(&[])).await;
    let error = result.unwrap_err();
    assert!(error.contains("nothing was changed"), "{error}");
    assert!(error.contains("quorum of 2"), "{error}");
    assert!(error.contains("bring lab-server-2 back first"), "{error}");
    assert_only_reads(&commands);
    assert!(
        commands.iter().all(|(host, _)| host != "lab-server-1"),
        "the node being replaced is not asked: {commands:?}"
    );
}

#[tokio::test]
async fn a_learner_refuses() {
    let cluster = cluster(&[], true);
    let (result, commands) = preflight(&cluster, "lab-server-3", &state(&[])).await;
    let error = result.unwrap_err();
    assert!(error.contains("learner"), "{error}");
    assert!(error.contains("another server is still joining"), "{error}");
    assert_only_reads(&commands);
}

#[tokio::test]
async fn another_server_being_changed_refuses_before_any_command() {
    let cluster = cluster(&[], false);
    let (result, commands) = preflight(
        &cluster,
        "lab-server-1",
        &state(&[("lab-server-3", VmPhase::Created)]),
    )
    .await;
    let error = result.unwrap_err();
    assert!(error.contains("lab-server-3 are being changed"), "{error}");
    assert!(commands.is_empty(), "{commands:?}");
}

#[tokio::test]
async fn a_dead_server_with_a_healthy_quorum_is_replaced_without_drain() {
    let cluster = cluster(&["lab-server-1"], false);
    let (result, commands) = preflight(&cluster, "lab-server-1", &state(&[])).await;
    let preflight = result.unwrap();
    assert!(preflight.dead.unwrap().contains("SSH"));
    assert_eq!(preflight.members, 3);
    assert_ne!(preflight.server, "lab-server-1");
    assert_only_reads(&commands);
}

#[tokio::test]
async fn an_agent_needs_no_etcd_check() {
    let cluster = cluster(&[], false);
    let (result, commands) = preflight(&cluster, "lab-agent-1", &state(&[])).await;
    let preflight = result.unwrap();
    assert!(preflight.dead.is_none());
    assert_eq!(preflight.members, 0);
    assert!(
        !commands.iter().any(|(_, c)| c.contains("etcdctl")),
        "{commands:?}"
    );
}

/// The whole command against the simulator (no guests): the preview, the refusals that come
/// before any remote step, and `up` over an unfinished replacement.
#[test]
fn replace_node_cli_previews_and_refuses_without_changing_anything() {
    use crate::support::cli::BinaryWorkspace;
    let binary = BinaryWorkspace::new();
    binary.user_key();
    let sim = ["--simulate", "--sim-inventory", "pve-homelab"];
    let with_sim = |args: &[&str]| -> (i32, String, String) {
        let mut all = args.to_vec();
        all.extend_from_slice(&sim);
        binary.run(&all)
    };
    // Hostile or unknown names: refused before anything is read.
    let (code, _, stderr) = with_sim(&["replace-node", "--profile", "homelab-ha", "A;id"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not a valid node name"), "{stderr}");
    let (code, _, stderr) = with_sim(&["replace-node", "--profile", "homelab-ha", "x"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("simulated VMs have no guests"), "{stderr}");

    let (code, _, stderr) = with_sim(&["up", "--profile", "homelab-ha"]);
    assert_eq!(code, 0, "{stderr}");
    let state_path = binary.workspace().join(".provision/state.json");
    let state_before = std::fs::read(&state_path).unwrap();
    let (code, stdout, stderr) = with_sim(&[
        "plan",
        "--profile",
        "homelab-ha",
        "--replace-node",
        "homelab-server-1",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("-/+ homelab-server-1"), "{stdout}");
    assert!(
        stdout.contains("Replace node homelab-server-1 (server): 9 steps"),
        "{stdout}"
    );
    assert!(stdout.contains("remove-member"), "{stdout}");
    let (code, stdout, stderr) =
        with_sim(&["plan", "--profile", "homelab-ha", "--replace-node", "nope"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("known: homelab-agent-1"), "{stderr}");
    assert_eq!(std::fs::read(&state_path).unwrap(), state_before);

    // An unfinished replacement in the state: `up` stops and says how to finish it.
    let mut state: serde_json::Value = serde_json::from_slice(&state_before).unwrap();
    state["replacing"] = json!({"node": "homelab-server-1", "role": "server", "step": "join"});
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let (code, _, stderr) = with_sim(&["up", "--profile", "homelab-ha"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("replacement of homelab-server-1 is unfinished"),
        "{stderr}"
    );
    assert!(
        stderr.contains("provision replace-node --profile homelab-ha homelab-server-1"),
        "{stderr}"
    );
}
