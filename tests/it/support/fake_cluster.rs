//! An in-memory k3s cluster for phase 2 tests: hosts with files and services behind a fake
//! [`RemoteExec`] (`FakeExec`), a cluster that answers `kubectl` and etcd like k3s does where
//! provision relies on it, and a [`World`] (profile, nodes, options, a workspace) to run phase 2
//! against it.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use provision::exec::phase2::{Connector, GuestNode, Phase2Options, Phase2Report, run};
use provision::k3s::release::Artifact;
use provision::nodeprep::batch::decode_batch;
use provision::nodeprep::{Step, sha256_hex};
use provision::profile::Profile;
use provision::ssh::{CommandOutput, RemoteExec, SshError};

#[derive(Default)]
pub struct Host {
    pub files: BTreeMap<String, (Vec<u8>, u32)>,
    pub seen_scripts: BTreeSet<String>,
    pub active: bool,
    pub has_data: bool,
    /// Fail the next service start (a host crashing mid-install).
    pub crash_on_start: bool,
}

/// (ready, etcd member, labels, taints)
pub type ClusterEntry = (bool, bool, BTreeMap<String, String>, Vec<String>);

#[derive(Default)]
pub struct Sim {
    pub hosts: BTreeMap<String, Host>,
    /// name → (ready, etcd member, labels, taints)
    pub cluster: BTreeMap<String, ClusterEntry>,
    pub events: Vec<String>,
    pub writes: usize,
    pub service_commands: usize,
    /// Batch scripts run (node preparation travels as one per host).
    pub batches: usize,
    /// Every command line sent (what `ps` on the guest would show).
    pub command_lines: Vec<String>,
    /// The cluster CA certificate, created at `cluster-init` (k3s's server-ca.crt).
    pub ca: Option<Vec<u8>>,
    /// kube-vip never takes the VIP.
    pub vip_down: bool,
    /// The API's pods, PodDisruptionBudgets, claims and volumes (`kubectl get … -o json` items).
    pub pods: Vec<serde_json::Value>,
    pub pdbs: Vec<serde_json::Value>,
    pub pvcs: Vec<serde_json::Value>,
    pub pvs: Vec<serde_json::Value>,
    /// Nodes with `spec.unschedulable` (cordoned).
    pub cordoned: BTreeSet<String>,
    /// Pods (`namespace/name`) whose eviction a PodDisruptionBudget refuses until drain's timeout.
    pub unevictable: BTreeSet<String>,
}

pub const CA_PATH: &str = "/var/lib/rancher/k3s/server/tls/server-ca.crt";

pub type Shared = Arc<Mutex<Sim>>;

pub struct FakeExec {
    pub host: String,
    pub sim: Shared,
}

pub fn ok(stdout: impl Into<String>) -> CommandOutput {
    CommandOutput {
        exit_status: 0,
        stdout: stdout.into().into_bytes(),
        stderr: Vec::new(),
    }
}

/// A scalar of config.yaml, unquoted.
pub fn config_value(config: &str, key: &str) -> String {
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(config).unwrap();
    document[key].as_str().unwrap().to_owned()
}

pub fn config_line<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
}

impl FakeExec {
    /// A batch script from `nodeprep::apply_steps`: each step goes through the same handling as when it
    /// arrives alone (files through `write_inline`), with the batch's markers and stop-at-first-failure.
    fn run_batch(
        &self,
        sim: &mut Sim,
        nonce: &str,
        steps: &[Step],
    ) -> Result<CommandOutput, SshError> {
        sim.batches += 1;
        let mut stdout = String::new();
        for (index, step) in steps.iter().enumerate() {
            stdout.push_str(&format!("provision-batch-{nonce}: begin {index}\n"));
            let output = match step {
                Step::Command { script, .. } => self.run_one(sim, script, None)?,
                Step::File {
                    path,
                    content,
                    mode,
                    ..
                } => self.write_inline(sim, path, content, *mode),
            };
            stdout.push_str(&String::from_utf8_lossy(&output.stdout));
            let status = output.exit_status;
            stdout.push_str(&format!("provision-batch-{nonce}: end {index} {status}\n"));
            if status != 0 {
                return Ok(CommandOutput {
                    exit_status: status,
                    stdout: stdout.into_bytes(),
                    stderr: output.stderr,
                });
            }
        }
        Ok(ok(stdout))
    }

    /// An inline file of a batch: written (and counted as a write) only when content or mode differ.
    fn write_inline(&self, sim: &mut Sim, path: &str, content: &[u8], mode: u32) -> CommandOutput {
        let host = sim.hosts.entry(self.host.clone()).or_default();
        if host.files.get(path) == Some(&(content.to_vec(), mode)) {
            return ok("provision-outcome: unchanged\n");
        }
        host.files.insert(path.to_owned(), (content.to_vec(), mode));
        sim.writes += 1;
        ok("provision-outcome: changed\n")
    }

    // Over the size limit on purpose: one `if` per command shape the fake host understands,
    // in one place, so the fake's whole command table reads top to bottom (moved as it was).
    fn run_one(
        &self,
        sim: &mut Sim,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, SshError> {
        if let Some((nonce, steps)) = decode_batch(command, stdin.unwrap_or_default()) {
            return self.run_batch(sim, &nonce, &steps);
        }
        let host = sim.hosts.entry(self.host.clone()).or_default();
        if command == "cloud-init status --wait" {
            return Ok(ok("status: done\n"));
        }
        if let Some(rest) = command.strip_prefix("if [ -f ") {
            let path = rest.split(' ').next().unwrap();
            return Ok(ok(match host.files.get(path) {
                Some((content, mode)) => format!("present {mode:o} {}\n", sha256_hex(content)),
                None => "absent\n".to_owned(),
            }));
        }
        if command.contains("nvidia-gpus") {
            return Ok(ok("nvidia-gpus 0\navx512f no\n"));
        }
        if command.starts_with("read -r want") {
            assert_eq!(stdin.unwrap(), b"0123abcd\n", "token goes on stdin");
            let mut out = format!(
                "data {}\nactive {}\ntoken {}\n",
                if host.has_data { "yes" } else { "no" },
                if host.active { "yes" } else { "no" },
                if host.has_data { "match" } else { "none" }
            );
            if let Some((config, _)) = host.files.get("/etc/rancher/k3s/config.yaml") {
                let config = String::from_utf8_lossy(config);
                for key in ["cluster-init", "server"] {
                    if let Some(value) = config_line(&config, key) {
                        out.push_str(&format!("config {key}: {value}\n"));
                    }
                }
            }
            return Ok(ok(out));
        }
        if command.contains("provision-outcome") {
            let first = host.seen_scripts.insert(command.to_owned());
            return Ok(ok(if first {
                "provision-outcome: changed\n"
            } else {
                "provision-outcome: unchanged\n"
            }));
        }
        if command.starts_with("if systemctl is-active --quiet") {
            return Ok(ok(format!(
                "active {}\nenabled {}\n",
                if host.active { "yes" } else { "no" },
                if host.active { "yes" } else { "no" }
            )));
        }
        if command.contains("systemctl enable") {
            sim.service_commands += 1;
            if host.crash_on_start {
                host.crash_on_start = false;
                return Err(SshError::Channel {
                    host: self.host.clone(),
                    message: "connection reset: host went away".into(),
                });
            }
            let config =
                String::from_utf8_lossy(&host.files["/etc/rancher/k3s/config.yaml"].0).into_owned();
            let init = config_line(&config, "cluster-init").is_some();
            let server = config_line(&config, "server").map(str::to_owned);
            let is_server = config.contains("write-kubeconfig-mode");
            // The token as k3s checks it: a K10 token's hash must be the cluster CA's, or the node
            // refuses to join ("token CA hash does not match the Cluster CA certificate hash").
            let token = config_line(&config, "token")
                .unwrap()
                .trim_matches('"')
                .to_owned();
            if init {
                assert_eq!(
                    token, "0123abcd",
                    "the bootstrap server gets the bare secret"
                );
                let ca = sim.ca.get_or_insert_with(|| {
                    format!(
                        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                        self.host
                    )
                    .into_bytes()
                });
                let ca = ca.clone();
                sim.hosts
                    .get_mut(&self.host)
                    .unwrap()
                    .files
                    .insert(CA_PATH.into(), (ca, 0o644));
            } else {
                let want = format!(
                    "K10{}::server:0123abcd",
                    sha256_hex(sim.ca.as_ref().unwrap())
                );
                if token != want {
                    return Ok(CommandOutput {
                        exit_status: 1,
                        stdout: Vec::new(),
                        stderr: b"token CA hash does not match the Cluster CA certificate hash"
                            .to_vec(),
                    });
                }
                if is_server {
                    let ca = sim.ca.clone().unwrap();
                    sim.hosts
                        .get_mut(&self.host)
                        .unwrap()
                        .files
                        .insert(CA_PATH.into(), (ca, 0o644));
                }
            }
            let host = sim.hosts.get_mut(&self.host).unwrap();
            let verb = if command.contains("restart") {
                "restart"
            } else {
                "start"
            };
            host.active = true;
            host.has_data |= is_server;
            if is_server {
                host.files.insert(
                    "/etc/rancher/k3s/k3s.yaml".into(),
                    (
                        b"apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n- name: default\n  user:\n    token: t\n".to_vec(),
                        0o600,
                    ),
                );
            }
            let list = |key: &str| -> Vec<String> {
                config
                    .lines()
                    .skip_while(|l| *l != key)
                    .skip(1)
                    .take_while(|l| l.starts_with("  - "))
                    .map(|l| l.trim_start_matches("  - ").trim_matches('"').to_owned())
                    .collect()
            };
            let labels: BTreeMap<String, String> = list("node-label:")
                .iter()
                .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect();
            let taints = list("node-taint:");
            sim.events.push(format!(
                "{verb} {}{}",
                self.host,
                if init {
                    " cluster-init".to_owned()
                } else {
                    format!(" via {}", server.unwrap_or_default())
                }
            ));
            // Labels and taints in config.yaml only apply at first registration, like k3s.
            // A new node becomes Ready at the next look at the node list.
            sim.cluster
                .entry(self.host.clone())
                .or_insert((false, is_server, labels, taints));
            return Ok(ok(""));
        }
        if command == format!("cat -- {CA_PATH}") {
            return Ok(match host.files.get(CA_PATH) {
                Some((content, _)) => ok(String::from_utf8(content.clone()).unwrap()),
                None => CommandOutput {
                    exit_status: 1,
                    stdout: Vec::new(),
                    stderr: format!("cat: {CA_PATH}: No such file or directory").into_bytes(),
                },
            });
        }
        if let Some(rest) = command.strip_prefix("k3s kubectl --server ") {
            let url = rest.split(' ').next().unwrap().to_owned();
            assert!(
                rest.ends_with("get --raw /readyz"),
                "{}: unexpected kubectl {command}",
                self.host
            );
            // kube-vip holds the VIP once a server runs; the first look finds it not yet up.
            let up = sim.hosts.values().any(|h| h.active && h.has_data);
            let first_look = !sim.events.iter().any(|e| e.starts_with("vip not yet"));
            if !up || first_look || sim.vip_down {
                sim.events.push(format!("vip not yet {url}"));
                return Ok(CommandOutput {
                    exit_status: 1,
                    stdout: Vec::new(),
                    stderr: b"Unable to connect to the server: dial tcp: connect: no route to host"
                        .to_vec(),
                });
            }
            sim.events.push(format!("vip answers {url}"));
            return Ok(ok("ok"));
        }
        if command == "systemctl daemon-reload" {
            return Ok(ok(""));
        }
        if command == "k3s kubectl get nodes -o json" {
            let mut items = Vec::new();
            let mut became_ready = Vec::new();
            let Sim {
                cluster, cordoned, ..
            } = &mut *sim;
            for (name, (ready, etcd, labels, taints)) in cluster.iter_mut() {
                if !*ready {
                    *ready = true;
                    became_ready.push(format!("ready {name}"));
                }
                let mut labels = labels.clone();
                if *etcd {
                    labels.insert("node-role.kubernetes.io/etcd".into(), "true".into());
                }
                let taints: Vec<_> = taints
                    .iter()
                    .map(|t| {
                        let (kv, effect) = t.split_once(':').unwrap();
                        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
                        serde_json::json!({"key": key, "value": value, "effect": effect})
                    })
                    .collect();
                let unschedulable = cordoned.contains(name);
                items.push(serde_json::json!({
                    "metadata": {"name": name, "labels": labels},
                    "spec": {"taints": taints, "unschedulable": unschedulable},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}
                }));
            }
            // Report the state before this look: newly started nodes show NotReady once.
            let items: Vec<_> = items
                .into_iter()
                .filter(|item| {
                    !became_ready.contains(&format!(
                        "ready {}",
                        item["metadata"]["name"].as_str().unwrap()
                    ))
                })
                .collect();
            sim.events.extend(became_ready);
            return Ok(ok(serde_json::json!({ "items": items }).to_string()));
        }
        // The rolling gate's drain (`--timeout=…`); `provision drain`'s form goes to `kubectl_day2`.
        if let Some(rest) = command.strip_prefix("k3s kubectl drain ")
            && rest.contains(" --ignore-daemonsets --delete-emptydir-data --timeout=")
        {
            let node = rest.split(' ').next().unwrap();
            sim.events.push(format!("drain {node} from {}", self.host));
            return Ok(ok(format!("node/{node} drained")));
        }
        if let Some(node) = command.strip_prefix("k3s kubectl uncordon ") {
            sim.events
                .push(format!("uncordon {node} from {}", self.host));
            let was = sim.cordoned.remove(node);
            return Ok(ok(if was {
                format!("node/{node} uncordoned\n")
            } else {
                format!("node/{node} already uncordoned\n")
            }));
        }
        if command.starts_with("k3s kubectl label") || command.starts_with("k3s kubectl taint") {
            sim.events.push(command.to_owned());
            return Ok(ok(""));
        }
        if let Some(output) = kubectl_day2(sim, command) {
            return Ok(output);
        }
        panic!("{}: unexpected command {command}", self.host);
    }
}

fn failed(stderr: String) -> CommandOutput {
    CommandOutput {
        exit_status: 1,
        stdout: Vec::new(),
        stderr: stderr.into_bytes(),
    }
}

fn pod_id(pod: &serde_json::Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap(),
        pod["metadata"]["name"].as_str().unwrap()
    )
}

/// kubectl's day-2 verbs: the lists the drain preflight reads, `drain` with kubectl's own checks
/// (unmanaged pods need `--force`, emptyDir `--delete-emptydir-data`; DaemonSet and mirror pods
/// stay; a pod in `unevictable` holds until the timeout); `uncordon` is answered above, for both.
fn kubectl_day2(sim: &mut Sim, command: &str) -> Option<CommandOutput> {
    let list = |items: &[serde_json::Value]| {
        ok(serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string())
    };
    if let Some(node) =
        command.strip_prefix("k3s kubectl get pods -A -o json --field-selector spec.nodeName=")
    {
        let on_node: Vec<_> = sim
            .pods
            .iter()
            .filter(|pod| pod["spec"]["nodeName"] == node)
            .cloned()
            .collect();
        return Some(list(&on_node));
    }
    match command {
        "k3s kubectl get pdb -A -o json" => return Some(list(&sim.pdbs)),
        "k3s kubectl get pvc -A -o json" => return Some(list(&sim.pvcs)),
        "k3s kubectl get pv -o json" => return Some(list(&sim.pvs)),
        _ => {}
    }
    let rest = command.strip_prefix("k3s kubectl drain ")?;
    let words: Vec<&str> = rest.split(' ').collect();
    let node = words[0];
    assert!(words.contains(&"--ignore-daemonsets"), "{command}");
    let timeout = words[words.iter().position(|w| *w == "--timeout").unwrap() + 1];
    let force = words.contains(&"--force");
    let emptydir = words.contains(&"--delete-emptydir-data");
    sim.events.push(command.to_owned());
    sim.cordoned.insert(node.to_owned());
    let on_node = |pod: &serde_json::Value| pod["spec"]["nodeName"] == node;
    let stays = |pod: &serde_json::Value| {
        pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string()
            || pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    };
    for pod in sim.pods.iter().filter(|p| on_node(p) && !stays(p)) {
        if pod["metadata"]["ownerReferences"].is_null() && !force {
            return Some(failed(format!(
                "error: unable to drain node \"{node}\" due to error: cannot delete Pods that declare no controller (use --force to override): {}",
                pod_id(pod)
            )));
        }
        let has_emptydir = pod["spec"]["volumes"]
            .as_array()
            .is_some_and(|volumes| volumes.iter().any(|v| v["emptyDir"].is_object()));
        if has_emptydir && !emptydir {
            return Some(failed(format!(
                "error: unable to drain node \"{node}\" due to error: cannot delete Pods with local storage (use --delete-emptydir-data to override): {}",
                pod_id(pod)
            )));
        }
    }
    let unevictable = sim.unevictable.clone();
    let before = sim.pods.len();
    sim.pods
        .retain(|pod| !on_node(pod) || stays(pod) || unevictable.contains(&pod_id(pod)));
    let evicted = before - sim.pods.len();
    sim.events.push(format!("evicted {evicted} from {node}"));
    if let Some(stuck) = sim
        .pods
        .iter()
        .find(|pod| on_node(pod) && unevictable.contains(&pod_id(pod)))
    {
        let name = stuck["metadata"]["name"].as_str().unwrap();
        return Some(failed(format!(
            "error when evicting pods/\"{name}\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.\nThere are pending pods in node \"{node}\" when an error occurred: error when waiting for pod \"{name}\" terminating: global timeout reached: {timeout}"
        )));
    }
    Some(ok(format!("node/{node} cordoned\nnode/{node} drained\n")))
}

#[async_trait]
impl RemoteExec for FakeExec {
    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, command: &str, stdin: Option<&[u8]>) -> Result<CommandOutput, SshError> {
        let mut sim = self.sim.lock().unwrap();
        sim.command_lines.push(command.to_owned());
        self.run_one(&mut sim, command, stdin)
    }

    async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<(), SshError> {
        let mut sim = self.sim.lock().unwrap();
        sim.writes += 1;
        sim.hosts
            .entry(self.host.clone())
            .or_default()
            .files
            .insert(path.to_owned(), (data.to_vec(), mode));
        Ok(())
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SshError> {
        let sim = self.sim.lock().unwrap();
        sim.hosts
            .get(&self.host)
            .and_then(|h| h.files.get(path))
            .map(|(content, _)| content.clone())
            .ok_or_else(|| SshError::Channel {
                host: self.host.clone(),
                message: format!("{path}: no such file"),
            })
    }
}

pub struct FakeConnector(pub Shared);

#[async_trait]
impl Connector for FakeConnector {
    async fn connect(&self, node: &GuestNode) -> Result<Box<dyn RemoteExec>, SshError> {
        Ok(Box::new(FakeExec {
            host: node.name.clone(),
            sim: self.0.clone(),
        }))
    }
}

pub struct World {
    pub profile: Profile,
    pub nodes: Vec<GuestNode>,
    pub sim: Shared,
    _dir: tempfile::TempDir,
    pub opts: Phase2Options,
}

pub fn world() -> World {
    let path = format!(
        "{}/tests/fixtures/k3s/profiles/homelab-ha.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let profile: Profile = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut nodes = Vec::new();
    for group in &profile.node_groups {
        for (index, address) in group.addresses.iter().enumerate() {
            nodes.push(GuestNode {
                name: format!("{}-{}", group.name, index + 1),
                address: *address,
                role: group.role,
                group: group.name.clone(),
                expected_host_keys: vec![],
            });
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("k3s");
    std::fs::write(&binary, b"#!/bin/sh\n# stand-in\n").unwrap();
    let mut opts = Phase2Options::new(dir.path());
    std::fs::create_dir_all(&opts.secrets_dir).unwrap();
    std::fs::write(opts.secrets_dir.join("k3s-token"), "0123abcd\n").unwrap();
    opts.binary = Some(Artifact {
        path: binary,
        sha256: sha256_hex(b"#!/bin/sh\n# stand-in\n"),
    });
    opts.poll_interval = Duration::from_millis(5);
    opts.ready_timeout = Duration::from_secs(5);
    World {
        profile,
        nodes,
        sim: Shared::default(),
        _dir: dir,
        opts,
    }
}

impl World {
    pub async fn up(&self) -> anyhow::Result<Phase2Report> {
        run(
            &self.profile,
            &self.nodes,
            &FakeConnector(self.sim.clone()),
            &self.opts,
        )
        .await
    }

    pub fn config(&self, host: &str) -> String {
        let sim = self.sim.lock().unwrap();
        String::from_utf8(
            sim.hosts[host].files["/etc/rancher/k3s/config.yaml"]
                .0
                .clone(),
        )
        .unwrap()
    }

    pub fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut self.sim.lock().unwrap().events)
    }
}

/// `provision status`'s view of the fake cluster, wrapped around [`FakeExec`]: the node list gains
/// what real k3s adds and status reads (the etcd annotations of members, `nodeInfo.kubeletVersion`,
/// `spec.unschedulable`), nodes in `not_ready` report `Ready=False`, `/readyz?verbose` answers like
/// the API server (etcd ok once a server runs), and servers in `unreachable` refuse SSH.
#[derive(Clone, Default)]
pub struct StatusConnector {
    pub sim: Shared,
    pub not_ready: BTreeSet<String>,
    pub cordoned: BTreeSet<String>,
    pub unreachable: BTreeSet<String>,
    /// Every node's kubelet version.
    pub version: String,
}

pub const READYZ_COMMAND: &str = "k3s kubectl get --raw '/readyz?verbose'";

#[async_trait]
impl Connector for StatusConnector {
    async fn connect(&self, node: &GuestNode) -> Result<Box<dyn RemoteExec>, SshError> {
        if self.unreachable.contains(&node.name) {
            return Err(SshError::Connect {
                host: node.name.clone(),
                message: "connection refused".into(),
            });
        }
        Ok(Box::new(StatusExec {
            inner: FakeExec {
                host: node.name.clone(),
                sim: self.sim.clone(),
            },
            connector: self.clone(),
        }))
    }
}

pub struct StatusExec {
    inner: FakeExec,
    connector: StatusConnector,
}

impl StatusExec {
    fn enrich(&self, list: &str) -> String {
        let mut list: serde_json::Value = serde_json::from_str(list).unwrap();
        for item in list["items"].as_array_mut().unwrap() {
            let name = item["metadata"]["name"].as_str().unwrap().to_owned();
            let member = item["metadata"]["labels"]["node-role.kubernetes.io/etcd"] == "true";
            let mut annotations = serde_json::json!({"k3s.io/node-args": "[]"});
            if member {
                annotations["etcd.k3s.cattle.io/node-name"] = format!("{name}-0a1b2c3d").into();
                annotations["etcd.k3s.cattle.io/node-address"] = "10.77.0.11".into();
            }
            item["metadata"]["annotations"] = annotations;
            item["spec"]["unschedulable"] = self.connector.cordoned.contains(&name).into();
            item["status"]["nodeInfo"] =
                serde_json::json!({"kubeletVersion": self.connector.version});
            if self.connector.not_ready.contains(&name) {
                item["status"]["conditions"] = serde_json::json!([
                    {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}
                ]);
            }
        }
        list.to_string()
    }
}

#[async_trait]
impl RemoteExec for StatusExec {
    fn host(&self) -> &str {
        &self.inner.host
    }

    async fn run(&self, command: &str, stdin: Option<&[u8]>) -> Result<CommandOutput, SshError> {
        if command == READYZ_COMMAND {
            let sim = self.inner.sim.lock().unwrap();
            let up = sim.hosts.values().any(|h| h.active && h.has_data);
            return Ok(if up {
                ok("[+]ping ok\n[+]log ok\n[+]etcd ok\n[+]etcd-readiness ok\nreadyz check passed\n")
            } else {
                CommandOutput {
                    exit_status: 1,
                    stdout: Vec::new(),
                    stderr: b"The connection to the server 127.0.0.1:6443 was refused".to_vec(),
                }
            });
        }
        let output = self.inner.run(command, stdin).await?;
        if command == "k3s kubectl get nodes -o json" && output.exit_status == 0 {
            let list = self.enrich(&String::from_utf8_lossy(&output.stdout));
            return Ok(ok(list));
        }
        Ok(output)
    }

    async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<(), SshError> {
        self.inner.write_file(path, data, mode).await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SshError> {
        self.inner.read_file(path).await
    }
}
