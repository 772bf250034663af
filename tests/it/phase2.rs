//! Phase 2 ordering and idempotency against in-memory hosts (`support::fake_cluster`): bootstrap first with
//! `cluster-init`, servers one at a time, agents after; a re-run writes nothing and restarts nothing;
//! a rebuilt first server joins the healthy ones; a crash mid-install names the host and the next run converges.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use provision::exec::phase2::{Connector, GuestNode, run};
use provision::nodeprep::sha256_hex;
use provision::ssh::{RemoteExec, SshError};

use crate::support::fake_cluster::{FakeExec, Host, Shared, config_value, world};

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

/// What a [`HeldExec`] holds until an event of the fake cluster.
#[derive(Clone, Copy, PartialEq)]
enum Hold {
    Nothing,
    /// Node preparation (its batch script), until the bootstrap server is Ready.
    Preparation,
    /// `cloud-init status --wait`, until the bootstrap server is prepared.
    CloudInit,
}

/// A [`FakeExec`] that holds one step as [`Hold`] says, and records `prepared NODE` when a
/// node's preparation batch has run.
struct HeldExec {
    inner: FakeExec,
    hold: Hold,
}

impl HeldExec {
    /// Waits (at most 5 s) until the fake cluster has recorded `event`.
    async fn until(&self, event: &str) -> Result<(), SshError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !(self.inner.sim.lock().unwrap().events).contains(&event.to_owned()) {
            if std::time::Instant::now() > deadline {
                return Err(SshError::Channel {
                    host: self.inner.host.clone(),
                    message: format!("held until `{event}`, which never came"),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

#[async_trait]
impl RemoteExec for HeldExec {
    fn host(&self) -> &str {
        self.inner.host()
    }

    async fn run(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> Result<provision::ssh::CommandOutput, SshError> {
        let batch = provision::nodeprep::batch::decode_batch(command, stdin.unwrap_or_default());
        if self.hold == Hold::Preparation && batch.is_some() {
            self.until("ready server-1").await?;
        }
        if self.hold == Hold::CloudInit && command == "cloud-init status --wait" {
            self.until("prepared server-1").await?;
        }
        let output = self.inner.run(command, stdin).await;
        if batch.is_some() {
            let event = format!("prepared {}", self.inner.host);
            self.inner.sim.lock().unwrap().events.push(event);
        }
        output
    }

    async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<(), SshError> {
        self.inner.write_file(path, data, mode).await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SshError> {
        self.inner.read_file(path).await
    }
}

/// Connects every node through a [`HeldExec`] holding what `hold` says for it.
struct HoldingConnector(Shared, fn(&str) -> Hold);

#[async_trait]
impl Connector for HoldingConnector {
    async fn connect(&self, node: &GuestNode) -> Result<Box<dyn RemoteExec>, SshError> {
        Ok(Box::new(HeldExec {
            inner: FakeExec {
                host: node.name.clone(),
                sim: self.0.clone(),
            },
            hold: (self.1)(&node.name),
        }))
    }
}

/// Node preparation on the other nodes does not wait for the bootstrap server's install: held
/// until the bootstrap server is Ready, it still lets phase 2 converge (serialised before the
/// install, it would never be released), and every other node is prepared before the next server
/// joins.
#[tokio::test]
async fn other_nodes_are_prepared_while_the_bootstrap_server_installs() {
    let world = world();
    let report = run(
        &world.profile,
        &world.nodes,
        &HoldingConnector(world.sim.clone(), |name| {
            if name == "server-1" {
                Hold::Nothing
            } else {
                Hold::Preparation
            }
        }),
        &world.opts,
    )
    .await
    .unwrap();
    assert_eq!(report.bootstrap, "server-1");
    let events = world.take_events();
    let position = |event: &str| events.iter().position(|e| e == event).unwrap();
    let bootstrap_ready = position("ready server-1");
    assert!(position("prepared server-1") < position("start server-1 cluster-init"));
    let server_2_joins = events
        .iter()
        .position(|e| e.starts_with("start server-2"))
        .unwrap();
    for node in ["server-2", "server-3", "worker-1", "worker-2"] {
        let prepared = position(&format!("prepared {node}"));
        assert!(
            bootstrap_ready < prepared && prepared < server_2_joins,
            "{node}: {events:?}"
        );
    }
}

/// The bootstrap server's preparation does not wait for the slowest node's cloud-init (only its
/// install waits for the join plan): a node whose cloud-init is held until the bootstrap server is
/// prepared still lets phase 2 converge.
#[tokio::test]
async fn the_bootstrap_server_is_prepared_while_another_node_is_still_booting() {
    let world = world();
    let report = run(
        &world.profile,
        &world.nodes,
        &HoldingConnector(world.sim.clone(), |name| {
            if name == "worker-2" {
                Hold::CloudInit
            } else {
                Hold::Nothing
            }
        }),
        &world.opts,
    )
    .await
    .unwrap();
    assert_eq!(report.bootstrap, "server-1");
    let events = world.take_events();
    let position = |event: &str| events.iter().position(|e| e == event).unwrap();
    assert!(position("prepared server-1") < position("prepared worker-2"));
}

/// Every node reports its phase 2 steps in the order they ran, timed from the start of phase 2
/// and within it; the cluster-wide steps too.
#[tokio::test]
async fn every_node_reports_its_timed_steps() {
    let world = world();
    let report = world.up().await.unwrap();
    for node in &report.nodes {
        let steps: Vec<&str> = node.timeline.iter().map(|timing| timing.step).collect();
        assert_eq!(
            steps,
            [
                "connect",
                "cloud-init",
                "probe",
                "prepare",
                "upload",
                "join token",
                "install",
                "ready"
            ],
            "{}",
            node.name
        );
        for pair in node.timeline.windows(2) {
            assert!(
                pair[0].start + pair[0].duration <= pair[1].start,
                "{}: {pair:?}",
                node.name
            );
        }
        let last = node.timeline.last().unwrap();
        assert!(
            last.start + last.duration <= report.elapsed,
            "{}",
            node.name
        );
    }
    let steps: Vec<&str> = report.timeline.iter().map(|timing| timing.step).collect();
    assert_eq!(steps, ["inputs", "labels and taints", "kubeconfig"]);
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

/// The progress display follows each node through phase 2: cloud-init, preparation, its k3s
/// install, ready, then done; the run announces every node and its planned steps first.
#[tokio::test]
async fn phase2_reports_each_nodes_steps_to_the_progress_display() {
    use provision::exec::{CollectProgress, Events, ExecEvent};
    let mut world = world();
    let progress = Arc::new(CollectProgress::default());
    world.opts.events = Events(progress.clone());
    world.up().await.unwrap();
    let events = progress.0.lock().unwrap().clone();
    let names: Vec<String> = world.nodes.iter().map(|node| node.name.clone()).collect();
    assert_eq!(events[0], ExecEvent::Started { vms: names.clone() });
    assert!(matches!(&events[1], ExecEvent::Planned { steps } if steps.len() == names.len()));
    for node in &world.nodes {
        let steps: Vec<&str> = events
            .iter()
            .filter_map(|event| match event {
                ExecEvent::Step { vm, step } if *vm == node.name => Some(*step),
                _ => None,
            })
            .collect();
        let install = match node.role {
            provision::profile::model::Role::Server => "k3s server",
            provision::profile::model::Role::Agent => "k3s agent",
        };
        assert_eq!(
            steps,
            ["cloud-init", "prepare", install, "ready"],
            "{}",
            node.name
        );
        let done = events
            .iter()
            .filter(|event| matches!(event, ExecEvent::VmDone { vm, .. } if *vm == node.name))
            .count();
        assert_eq!(done, 1, "{}", node.name);
    }
}
