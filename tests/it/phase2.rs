//! Phase 2 ordering and idempotency against in-memory hosts (`FakeExec`): bootstrap first with
//! `cluster-init`, servers one at a time, agents after; a re-run writes nothing and restarts nothing;
//! a rebuilt first server joins the healthy ones; a crash mid-install names the host and the next run converges.
#![allow(clippy::unwrap_used)]

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
struct Host {
    files: BTreeMap<String, (Vec<u8>, u32)>,
    seen_scripts: BTreeSet<String>,
    active: bool,
    has_data: bool,
    /// Fail the next service start (a host crashing mid-install).
    crash_on_start: bool,
}

/// (ready, etcd member, labels, taints)
type ClusterEntry = (bool, bool, BTreeMap<String, String>, Vec<String>);

#[derive(Default)]
struct Sim {
    hosts: BTreeMap<String, Host>,
    /// name → (ready, etcd member, labels, taints)
    cluster: BTreeMap<String, ClusterEntry>,
    events: Vec<String>,
    writes: usize,
    service_commands: usize,
    /// Batch scripts run (node preparation travels as one per host).
    batches: usize,
    /// Every command line sent (what `ps` on the guest would show).
    command_lines: Vec<String>,
    /// The cluster CA certificate, created at `cluster-init` (k3s's server-ca.crt).
    ca: Option<Vec<u8>>,
    /// kube-vip never takes the VIP.
    vip_down: bool,
}

const CA_PATH: &str = "/var/lib/rancher/k3s/server/tls/server-ca.crt";

type Shared = Arc<Mutex<Sim>>;

struct FakeExec {
    host: String,
    sim: Shared,
}

fn ok(stdout: impl Into<String>) -> CommandOutput {
    CommandOutput {
        exit_status: 0,
        stdout: stdout.into().into_bytes(),
        stderr: Vec::new(),
    }
}

/// A scalar of config.yaml, unquoted.
fn config_value(config: &str, key: &str) -> String {
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(config).unwrap();
    document[key].as_str().unwrap().to_owned()
}

fn config_line<'a>(config: &'a str, key: &str) -> Option<&'a str> {
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
            for (name, (ready, etcd, labels, taints)) in sim.cluster.iter_mut() {
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
                items.push(serde_json::json!({
                    "metadata": {"name": name, "labels": labels},
                    "spec": {"taints": taints},
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
        if command.starts_with("k3s kubectl label") || command.starts_with("k3s kubectl taint") {
            sim.events.push(command.to_owned());
            return Ok(ok(""));
        }
        panic!("{}: unexpected command {command}", self.host);
    }
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

struct FakeConnector(Shared);

#[async_trait]
impl Connector for FakeConnector {
    async fn connect(&self, node: &GuestNode) -> Result<Box<dyn RemoteExec>, SshError> {
        Ok(Box::new(FakeExec {
            host: node.name.clone(),
            sim: self.0.clone(),
        }))
    }
}

struct World {
    profile: Profile,
    nodes: Vec<GuestNode>,
    sim: Shared,
    _dir: tempfile::TempDir,
    opts: Phase2Options,
}

fn world() -> World {
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
    async fn up(&self) -> anyhow::Result<Phase2Report> {
        run(
            &self.profile,
            &self.nodes,
            &FakeConnector(self.sim.clone()),
            &self.opts,
        )
        .await
    }

    fn config(&self, host: &str) -> String {
        let sim = self.sim.lock().unwrap();
        String::from_utf8(
            sim.hosts[host].files["/etc/rancher/k3s/config.yaml"]
                .0
                .clone(),
        )
        .unwrap()
    }

    fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut self.sim.lock().unwrap().events)
    }
}

#[tokio::test]
async fn fresh_cluster_bootstraps_then_joins_servers_one_at_a_time_then_agents() {
    let world = world();
    let report = world.up().await.unwrap();
    assert_eq!(report.bootstrap, "server-1");
    assert!(!report.existing_cluster);
    let events = world.take_events();
    let vip = "https://10.77.0.5:6443";
    let via = format!("via \"{vip}\"");
    assert_eq!(
        events[..8],
        [
            "start server-1 cluster-init".to_owned(),
            "ready server-1".to_owned(),
            // kube-vip runs only once the bootstrap server is up: wait for the VIP, then join through it.
            format!("vip not yet {vip}"),
            format!("vip answers {vip}"),
            format!("start server-2 {via}"),
            "ready server-2".to_owned(),
            format!("start server-3 {via}"),
            "ready server-3".to_owned(),
        ]
    );
    let agent_starts: BTreeSet<_> = events[8..10].iter().cloned().collect();
    assert_eq!(
        agent_starts,
        BTreeSet::from([
            format!("start worker-1 {via}"),
            format!("start worker-2 {via}")
        ])
    );
    // The bootstrap server starts with the bare secret; every joiner pins the cluster CA.
    let ca_hash = sha256_hex(world.sim.lock().unwrap().ca.as_ref().unwrap());
    assert_eq!(config_value(&world.config("server-1"), "token"), "0123abcd");
    for host in ["server-2", "server-3", "worker-1", "worker-2"] {
        assert_eq!(
            config_value(&world.config(host), "token"),
            format!("K10{ca_hash}::server:0123abcd"),
            "{host}"
        );
    }
    assert!(world.config("server-1").contains("cluster-init: true"));
    for host in ["server-2", "server-3", "worker-1"] {
        assert!(!world.config(host).contains("cluster-init"), "{host}");
    }
    assert!(
        world
            .config("worker-2")
            .contains("node-taint:\n  - \"dedicated=batch:NoSchedule\"")
    );
    {
        let sim = world.sim.lock().unwrap();
        let manifests = |host: &str| {
            sim.hosts[host]
                .files
                .keys()
                .filter(|p| p.starts_with("/var/lib/rancher/k3s/server/manifests/"))
                .count()
        };
        assert_eq!(manifests("server-1"), 4, "kube-vip, nfs, flux, flux-sync");
        assert!(
            sim.batches >= 5,
            "node preparation is batched: {}",
            sim.batches
        );
        assert_eq!(manifests("server-2"), 0);
        assert_eq!(sim.hosts["worker-1"].files["/usr/local/bin/k3s"].1, 0o755);
        assert_eq!(
            sim.hosts["server-1"].files["/etc/rancher/k3s/config.yaml"].1,
            0o600
        );
    }
    let kubeconfig = std::fs::read_to_string(&report.kubeconfig).unwrap();
    assert!(
        kubeconfig.contains("https://10.77.0.5:6443"),
        "{kubeconfig}"
    );
    assert!(kubeconfig.contains("name: homelab"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&report.kubeconfig)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(report.changed());
    assert!(report.nodes.iter().all(|n| n.started && !n.restarted));
}

#[tokio::test]
async fn no_file_content_or_token_travels_on_a_command_line() {
    use base64::Engine as _;
    let world = world();
    world.up().await.unwrap();
    let config = world.config("server-1");
    let sim = world.sim.lock().unwrap();
    let encoded_config = base64::engine::general_purpose::STANDARD.encode(config.as_bytes());
    assert!(sim.batches > 0);
    for command in &sim.command_lines {
        assert!(
            !command.contains("0123abcd"),
            "token on a command line: {command}"
        );
        assert!(
            !command.contains(&encoded_config[..40]),
            "config.yaml on a command line: {command}"
        );
        assert!(!command.contains("base64 -d"), "{command}");
    }
}

#[tokio::test]
async fn second_run_writes_nothing_and_restarts_nothing() {
    let world = world();
    world.up().await.unwrap();
    world.take_events();
    let (writes, services) = {
        let sim = world.sim.lock().unwrap();
        (sim.writes, sim.service_commands)
    };
    let report = world.up().await.unwrap();
    let sim = world.sim.lock().unwrap();
    assert_eq!(sim.writes, writes, "second run wrote files");
    assert_eq!(
        sim.service_commands, services,
        "second run touched services"
    );
    assert!(
        sim.events
            .iter()
            .all(|e| !e.starts_with("start") && !e.starts_with("restart"))
    );
    drop(sim);
    assert!(report.existing_cluster);
    assert!(!report.changed(), "{report:#?}");
    assert!(report.restarted().is_empty());
    assert!(report.api_commands.is_empty());
}

#[tokio::test]
async fn rebuilt_first_server_joins_the_healthy_servers_instead_of_cluster_init() {
    let world = world();
    world.up().await.unwrap();
    world.take_events();
    {
        let mut sim = world.sim.lock().unwrap();
        sim.hosts.insert("server-1".into(), Host::default());
        sim.cluster.remove("server-1");
    }
    let report = world.up().await.unwrap();
    assert_eq!(report.bootstrap, "server-2");
    assert!(report.existing_cluster);
    let events = world.take_events();
    let starts: Vec<&String> = events.iter().filter(|e| e.starts_with("start")).collect();
    assert_eq!(starts[0], "start server-1 via \"https://10.77.0.5:6443\"");
    assert!(
        events.iter().all(|e| !e.contains("cluster-init")),
        "{events:?}"
    );
    assert!(!world.config("server-1").contains("cluster-init"));
    assert!(
        report.restarted().is_empty(),
        "healthy members were restarted"
    );
}

#[tokio::test]
async fn crash_mid_install_names_the_host_and_next_run_converges() {
    let world = world();
    world
        .sim
        .lock()
        .unwrap()
        .hosts
        .entry("server-2".into())
        .or_default()
        .crash_on_start = true;
    let error = world.up().await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("server-2"), "{message}");
    assert!(message.contains("host went away"), "{message}");
    let report = world.up().await.unwrap();
    assert_eq!(report.bootstrap, "server-1");
    {
        let sim = world.sim.lock().unwrap();
        assert_eq!(sim.cluster.len(), 5);
        assert!(sim.cluster.values().all(|(ready, _, _, _)| *ready));
    }
    // And it stays converged.
    assert!(!world.up().await.unwrap().changed());
}

#[tokio::test]
async fn profile_label_changes_go_through_the_api() {
    let mut world = world();
    world.up().await.unwrap();
    world.take_events();
    world.profile.node_groups[1]
        .labels
        .insert("tier".into(), "batch".into());
    let report = world.up().await.unwrap();
    assert_eq!(
        report.api_commands,
        [
            "k3s kubectl label node worker-1 --overwrite tier=batch",
            "k3s kubectl label node worker-2 --overwrite tier=batch"
        ]
    );
    // The config changed too (for a future re-registration), so the agents restart once.
    assert_eq!(report.restarted(), ["worker-1", "worker-2"]);
}

/// Records every operation like `--print-commands` does, then forwards it to a [`FakeExec`].
struct RecordingConnector(Shared, provision::ssh::recording::CommandLog);

#[async_trait]
impl Connector for RecordingConnector {
    async fn connect(&self, node: &GuestNode) -> Result<Box<dyn RemoteExec>, SshError> {
        let inner: Arc<dyn RemoteExec> = Arc::new(FakeExec {
            host: node.name.clone(),
            sim: self.0.clone(),
        });
        Ok(Box::new(provision::ssh::recording::RecordingExec::new(
            inner,
            self.1.clone(),
        )))
    }
}

#[tokio::test]
async fn gitops_credentials_reach_the_bootstrap_server_0600_and_are_never_printed() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut world = world();
    let workspace = world.opts.workspace.clone();
    std::fs::create_dir_all(workspace.join("secrets")).unwrap();
    let password = "s3cret-token-value-42";
    let credentials_file = workspace.join("secrets/git");
    std::fs::write(
        &credentials_file,
        format!("username=deploy-bot\npassword={password}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&credentials_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    world.profile.gitops.credentials = Some(provision::profile::model::GitOpsCredentials {
        kind: provision::profile::model::GitCredentialsKind::Https,
        file: "secrets/git".to_owned(),
        known_hosts_file: None,
        known_hosts: None,
    });
    let log = provision::ssh::recording::CommandLog::new();
    run(
        &world.profile,
        &world.nodes,
        &RecordingConnector(world.sim.clone(), log.clone()),
        &world.opts,
    )
    .await
    .unwrap();

    {
        let path = "/var/lib/rancher/k3s/server/manifests/provision-gitops-credentials.yaml";
        let sim = world.sim.lock().unwrap();
        let (content, mode) = &sim.hosts["server-1"].files[path];
        assert_eq!(*mode, 0o600);
        let content = String::from_utf8(content.clone()).unwrap();
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(password);
        assert!(content.contains(&encoded), "{content}");
        assert!(
            sim.hosts
                .iter()
                .filter(|(name, _)| name.as_str() != "server-1")
                .all(|(_, host)| !host.files.contains_key(path)),
            "only the bootstrap server holds the manifests"
        );
        let printed: Vec<String> = log.ops().iter().map(ToString::to_string).collect();
        assert!(!printed.is_empty());
        for line in printed.iter().chain(&sim.command_lines) {
            assert!(!line.contains(password), "secret printed: {line}");
            assert!(!line.contains(&encoded), "secret printed: {line}");
        }
    }

    // A credential file others can read stops phase 2 with an error that names the fix.
    std::fs::set_permissions(&credentials_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = format!("{:#}", world.up().await.unwrap_err());
    assert!(error.contains("chmod 600"), "{error}");
    assert!(!error.contains(password), "{error}");
}

#[tokio::test]
async fn without_a_vip_nodes_join_through_the_bootstrap_server_with_the_secure_token() {
    let mut world = world();
    world.profile.cluster.api_vip = None;
    world.up().await.unwrap();
    let events = world.take_events();
    assert!(
        events.iter().all(|e| !e.starts_with("vip")),
        "no VIP to wait for: {events:?}"
    );
    let via = "via \"https://10.77.0.11:6443\"";
    let starts: Vec<&String> = events.iter().filter(|e| e.starts_with("start")).collect();
    assert_eq!(starts[0], "start server-1 cluster-init");
    assert!(starts[1..].iter().all(|e| e.ends_with(via)), "{starts:?}");
    assert_eq!(starts.len(), 5);
    let ca_hash = sha256_hex(world.sim.lock().unwrap().ca.as_ref().unwrap());
    assert_eq!(
        config_value(&world.config("worker-1"), "token"),
        format!("K10{ca_hash}::server:0123abcd")
    );
    // The CA is read once per run, never re-created: a re-run changes nothing.
    assert!(!world.up().await.unwrap().changed());
}

#[tokio::test]
async fn a_vip_that_never_answers_stops_before_any_node_joins() {
    let mut world = world();
    world.sim.lock().unwrap().vip_down = true;
    world.opts.ready_timeout = Duration::from_millis(200);
    let error = world.up().await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("API VIP 10.77.0.5"), "{message}");
    assert!(message.contains("timed out"), "{message}");
    assert!(message.contains("kube-vip"), "{message}");
    let events = world.take_events();
    let starts: Vec<&String> = events.iter().filter(|e| e.starts_with("start")).collect();
    assert_eq!(starts, ["start server-1 cluster-init"], "{events:?}");
}
