//! Rolling changes against the simulator: servers one at a time (etcd keeps its quorum),
//! each disruption behind the gate, scale-down through the gate before the destroy.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use provision::exec::RollingGate;
use provision::plan::{RollingOptions, WaveVm};
use provision::profile::model::Role;
use provision::pve::{NodeName, PveApi, VmId};

use provision::exec::phase2::{GuestNode, K3sGate, Phase2Options};

use crate::support::fake_cluster::{Shared, world};
use crate::support::fake_etcd::EtcdConnector;
use crate::support::sim::{SimWorkspace, builtin, exec_options, fast};

/// Records what exec asked, and at each `before` how many servers Proxmox shows running.
struct RecordingGate {
    api: Arc<dyn PveApi>,
    servers: Vec<(NodeName, VmId)>,
    /// Every VM of the cluster by name.
    vms: BTreeMap<String, (NodeName, VmId)>,
    events: Mutex<Vec<String>>,
}

impl RecordingGate {
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

#[async_trait]
impl RollingGate for RecordingGate {
    async fn before_disruption(&self, vm: &WaveVm) -> anyhow::Result<()> {
        let mut running = 0;
        for (node, vmid) in &self.servers {
            if self.api.vm_status(node, *vmid).await?.status == "running" {
                running += 1;
            }
        }
        let (node, vmid) = &self.vms[&vm.vm];
        let itself = self.api.vm_status(node, *vmid).await?.status;
        self.events.lock().unwrap().push(format!(
            "before {} ({running} servers running, it is {itself})",
            vm.vm
        ));
        Ok(())
    }

    async fn after_recovery(&self, vm: &WaveVm) -> anyhow::Result<()> {
        self.events.lock().unwrap().push(format!("after {}", vm.vm));
        Ok(())
    }
}

async fn running_homelab() -> (provision::profile::Profile, SimWorkspace, RecordingGate) {
    let profile = builtin("homelab-ha");
    let workspace = SimWorkspace::start(&profile, None, fast()).await;
    workspace.up(&profile, exec_options()).await.unwrap();
    let state = workspace.state();
    let servers = state
        .vms
        .values()
        .filter(|record| record.role == Role::Server)
        .map(|record| (NodeName(record.node.clone()), VmId(record.vmid)))
        .collect();
    let vms = state
        .vms
        .values()
        .map(|record| {
            (
                record.name.clone(),
                (NodeName(record.node.clone()), VmId(record.vmid)),
            )
        })
        .collect();
    let gate = RecordingGate {
        api: Arc::clone(&workspace.api),
        servers,
        vms,
        events: Mutex::new(Vec::new()),
    };
    (profile, workspace, gate)
}

#[tokio::test]
async fn a_cores_change_on_three_servers_keeps_two_running_at_every_moment() {
    let (mut profile, workspace, gate) = running_homelab().await;
    let server = profile
        .node_groups
        .iter()
        .position(|group| group.role == Role::Server)
        .unwrap();
    profile.node_groups[server].cores += 2;
    let since = workspace.log().len();
    let gate = Arc::new(gate);
    let (plan, _) = workspace
        .up_rolling(
            &profile,
            exec_options(),
            RollingOptions::default(),
            Arc::clone(&gate) as Arc<dyn RollingGate>,
        )
        .await
        .unwrap();
    assert_eq!(plan.rolling.len(), 3);
    let names: Vec<String> = plan
        .rolling
        .iter()
        .map(|wave| wave.vms[0].vm.clone())
        .collect();
    let expected: Vec<String> = names
        .iter()
        .flat_map(|name| {
            [
                format!("before {name} (3 servers running, it is running)"),
                format!("after {name}"),
            ]
        })
        .collect();
    assert_eq!(gate.events(), expected);

    // From Proxmox's side: at most one server is between its shutdown and its start.
    let state = workspace.state();
    let server_vmids: Vec<String> = state
        .vms
        .values()
        .filter(|record| record.role == Role::Server)
        .map(|record| record.vmid.to_string())
        .collect();
    let mut down: Vec<String> = Vec::new();
    let mut shutdowns = 0;
    for request in workspace.mutating_since(since) {
        let parts: Vec<&str> = request.path.split('/').collect();
        let (Some(vmid), Some(verb)) = (parts.get(4), parts.last()) else {
            continue;
        };
        if !server_vmids.iter().any(|id| id == vmid) || request.status != 200 {
            continue;
        }
        match *verb {
            "shutdown" | "stop" => {
                shutdowns += 1;
                down.push((*vmid).to_owned());
                assert!(down.len() <= 1, "two servers down at once: {down:?}");
            }
            "start" => down.retain(|id| id != vmid),
            _ => {}
        }
    }
    assert_eq!(shutdowns, 3);
    assert!(down.is_empty());
}

#[tokio::test]
async fn a_count_decrease_goes_through_the_gate_before_the_destroy() {
    let (mut profile, workspace, gate) = running_homelab().await;
    let agents = profile
        .node_groups
        .iter()
        .position(|group| group.role == Role::Agent)
        .unwrap();
    profile.node_groups[agents].count -= 1;
    let since = workspace.log().len();
    let gate = Arc::new(gate);
    let (plan, report) = workspace
        .up_rolling(
            &profile,
            exec_options(),
            RollingOptions::default(),
            Arc::clone(&gate) as Arc<dyn RollingGate>,
        )
        .await
        .unwrap();
    assert_eq!(report.destroyed.len(), 1);
    let removed = &report.destroyed[0];
    assert_eq!(plan.rolling[0].vms[0].vm, *removed);
    assert_eq!(
        gate.events(),
        [format!(
            "before {removed} (3 servers running, it is running)"
        )],
        "asked while the VM still ran, and not again: a destroyed VM does not come back"
    );
    assert!(
        workspace
            .mutating_since(since)
            .iter()
            .any(|request| request.method == "DELETE" && request.path.contains("/qemu/"))
    );
}

/// The k3s gate on the fake cluster, and what Proxmox shows of the VM at each call.
struct ObservedK3sGate {
    inner: K3sGate<EtcdConnector>,
    api: Arc<dyn PveApi>,
    vms: BTreeMap<String, (NodeName, VmId)>,
    sim: Shared,
}

impl ObservedK3sGate {
    async fn status(&self, vm: &str) -> String {
        let (node, vmid) = &self.vms[vm];
        self.api.vm_status(node, *vmid).await.unwrap().status
    }
}

#[async_trait]
impl RollingGate for ObservedK3sGate {
    async fn before_disruption(&self, vm: &WaveVm) -> anyhow::Result<()> {
        self.inner.before_disruption(vm).await?;
        let status = self.status(&vm.vm).await;
        self.sim
            .lock()
            .unwrap()
            .events
            .push(format!("{} is {status} after the drain", vm.vm));
        Ok(())
    }

    async fn after_recovery(&self, vm: &WaveVm) -> anyhow::Result<()> {
        let status = self.status(&vm.vm).await;
        // A restarted node registers NotReady first.
        {
            let mut sim = self.sim.lock().unwrap();
            sim.events
                .push(format!("{} is {status} before the uncordon", vm.vm));
            sim.cluster.get_mut(&vm.vm).unwrap().0 = false;
        }
        self.inner.after_recovery(vm).await
    }
}

/// A fake k3s cluster whose nodes are the workspace's VMs, all Ready.
fn fake_cluster_of(workspace: &SimWorkspace) -> (Vec<GuestNode>, Shared) {
    let state = workspace.state();
    let sim = Shared::default();
    let mut nodes = Vec::new();
    for record in state.vms.values() {
        sim.lock().unwrap().cluster.insert(
            record.name.clone(),
            (
                true,
                record.role == Role::Server,
                BTreeMap::new(),
                Vec::new(),
            ),
        );
        nodes.push(GuestNode {
            name: record.name.clone(),
            address: record.address.as_ref().unwrap().parse().unwrap(),
            role: record.role,
            group: record.group.clone(),
            expected_host_keys: Vec::new(),
        });
    }
    (nodes, sim)
}

fn gate_options() -> Phase2Options {
    let mut options = Phase2Options::new(std::path::Path::new("."));
    options.poll_interval = std::time::Duration::from_millis(5);
    options.ready_timeout = std::time::Duration::from_secs(5);
    options
}

#[tokio::test]
async fn each_server_is_drained_while_running_and_uncordoned_once_ready_again() {
    let (mut profile, workspace, recording) = running_homelab().await;
    let server = profile
        .node_groups
        .iter()
        .position(|group| group.role == Role::Server)
        .unwrap();
    profile.node_groups[server].cores += 2;
    let (nodes, sim) = fake_cluster_of(&workspace);
    let gate = ObservedK3sGate {
        inner: K3sGate::new(nodes, EtcdConnector::new(sim.clone()), gate_options()),
        api: Arc::clone(&workspace.api),
        vms: recording.vms,
        sim: sim.clone(),
    };
    let rolling = RollingOptions {
        cluster_running: true,
        ..RollingOptions::default()
    };
    let (plan, _) = workspace
        .up_rolling(&profile, exec_options(), rolling, Arc::new(gate))
        .await
        .unwrap();
    assert!(plan.rolling.iter().all(|wave| wave.vms[0].drain));
    let events = snapshot_names_without_time(std::mem::take(&mut sim.lock().unwrap().events));
    let servers: Vec<&str> = plan
        .rolling
        .iter()
        .map(|wave| wave.vms[0].vm.as_str())
        .collect();
    let mut expected = Vec::new();
    for name in &servers {
        let from = servers.iter().find(|other| *other != name).unwrap();
        if name == &servers[0] {
            expected.push(format!("snapshot provision-pre-roll-T on {from}"));
        }
        expected.push(format!("drain {name} from {from}"));
        expected.push(format!("{name} is running after the drain"));
        expected.push(format!("{name} is running before the uncordon"));
        expected.push(format!("ready {name}"));
        expected.push(format!("uncordon {name} from {from}"));
    }
    assert_eq!(events, expected);
}

#[tokio::test]
async fn a_count_decrease_drains_the_agent_before_it_is_destroyed() {
    let (mut profile, workspace, recording) = running_homelab().await;
    let agents = profile
        .node_groups
        .iter()
        .position(|group| group.role == Role::Agent)
        .unwrap();
    profile.node_groups[agents].count -= 1;
    let (nodes, sim) = fake_cluster_of(&workspace);
    let gate = ObservedK3sGate {
        inner: K3sGate::new(nodes, EtcdConnector::new(sim.clone()), gate_options()),
        api: Arc::clone(&workspace.api),
        vms: recording.vms,
        sim: sim.clone(),
    };
    let rolling = RollingOptions {
        cluster_running: true,
        ..RollingOptions::default()
    };
    let (_, report) = workspace
        .up_rolling(&profile, exec_options(), rolling, Arc::new(gate))
        .await
        .unwrap();
    let removed = &report.destroyed[0];
    let events = std::mem::take(&mut sim.lock().unwrap().events);
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(events[0].starts_with(&format!("drain {removed} from ")));
    assert_eq!(events[1], format!("stop k3s-agent.service on {removed}"));
    assert!(events[2].starts_with(&format!("delete node {removed} from ")));
    assert_eq!(
        events[3],
        format!("delete secret {removed}.node-password.k3s")
    );
    assert_eq!(events[4], format!("{removed} is running after the drain"));
    assert!(!sim.lock().unwrap().cluster.contains_key(removed));
}

/// The snapshot names carry the time of the run: `provision-pre-roll-T`.
fn snapshot_names_without_time(events: Vec<String>) -> Vec<String> {
    events
        .into_iter()
        .map(|event| match event.split_once("provision-pre-roll-") {
            Some((head, tail)) => {
                let rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
                format!("{head}provision-pre-roll-T{rest}")
            }
            None => event,
        })
        .collect()
}

#[tokio::test]
async fn a_server_is_not_taken_down_while_another_is_not_ready() {
    let world = world();
    world
        .sim
        .lock()
        .unwrap()
        .cluster
        .extend(world.nodes.iter().map(|node| {
            (
                node.name.clone(),
                (true, node.role == Role::Server, BTreeMap::new(), Vec::new()),
            )
        }));
    world
        .sim
        .lock()
        .unwrap()
        .cluster
        .get_mut("server-2")
        .unwrap()
        .0 = false;
    let gate = K3sGate::new(
        world.nodes.clone(),
        EtcdConnector::new(world.sim.clone()),
        world.opts.clone(),
    );
    let member = WaveVm {
        vm: "server-1".into(),
        role: Role::Server,
        action: provision::plan::ActionKind::Update,
        why: "restart: cores 2 → 4".into(),
        drain: true,
    };
    let error = gate.before_disruption(&member).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("refusing to take server server-1 down: server-2 not Ready"),
        "{message}"
    );
    assert!(
        !world
            .take_events()
            .iter()
            .any(|event| event.starts_with("drain")),
        "nothing drained"
    );
}

/// The servers of the workspace, newest first (the order a scale-down removes them).
fn servers_newest_first(workspace: &SimWorkspace) -> Vec<String> {
    let mut servers: Vec<String> = workspace
        .state()
        .vms
        .values()
        .filter(|record| record.role == Role::Server)
        .map(|record| record.name.clone())
        .collect();
    servers.reverse();
    servers
}

#[tokio::test]
async fn a_server_scale_down_removes_the_etcd_member_before_the_vm_is_destroyed() {
    let (mut profile, workspace, recording) = running_homelab().await;
    let servers = servers_newest_first(&workspace);
    let group = profile
        .node_groups
        .iter()
        .position(|group| group.role == Role::Server)
        .unwrap();
    profile.node_groups[group].count = 1;
    let (nodes, sim) = fake_cluster_of(&workspace);
    let connector = EtcdConnector::new(sim.clone());
    let gate = ObservedK3sGate {
        inner: K3sGate::new(nodes, connector.clone(), gate_options()),
        api: Arc::clone(&workspace.api),
        vms: recording.vms,
        sim: sim.clone(),
    };
    let rolling = RollingOptions {
        cluster_running: true,
        force: true,
        ..RollingOptions::default()
    };
    let since = workspace.log().len();
    let (plan, report) = workspace
        .up_rolling(&profile, exec_options(), rolling, Arc::new(gate))
        .await
        .unwrap();
    assert_eq!(report.destroyed, [servers[0].clone(), servers[1].clone()]);
    assert_eq!(plan.rolling.len(), 2, "one server per wave");
    let kept = &servers[2];
    let mut expected = vec![format!("snapshot provision-pre-roll-T on {kept}")];
    for removed in &servers[..2] {
        expected.extend([
            format!("drain {removed} from {kept}"),
            format!("stop k3s.service on {removed}"),
            format!("remove etcd member of {removed} from {kept}"),
            format!("delete node {removed} from {kept}"),
            format!("delete secret {removed}.node-password.k3s"),
            // Said by the observing gate once the k3s gate is done: the VM still ran.
            format!("{removed} is running after the drain"),
        ]);
    }
    assert_eq!(snapshot_names_without_time(connector.events()), expected);
    // Proxmox destroyed both VMs, after the gate (a DELETE each).
    let deletes = workspace
        .mutating_since(since)
        .iter()
        .filter(|request| request.method == "DELETE" && request.path.contains("/qemu/"))
        .count();
    assert_eq!(deletes, 2);
    let etcd = connector.etcd.lock().unwrap();
    assert!(
        servers[..2]
            .iter()
            .all(|name| etcd.removed.contains(name) && !etcd.secrets.contains(name))
    );
    assert!(!sim.lock().unwrap().cluster.contains_key(&servers[0]));
}

#[tokio::test]
async fn a_server_scale_down_is_refused_with_a_learner_or_an_unhealthy_member_and_nothing_changes()
{
    for trouble in ["learner", "unhealthy"] {
        let (mut profile, workspace, recording) = running_homelab().await;
        let servers = servers_newest_first(&workspace);
        let group = profile
            .node_groups
            .iter()
            .position(|group| group.role == Role::Server)
            .unwrap();
        profile.node_groups[group].count = 1;
        let (nodes, sim) = fake_cluster_of(&workspace);
        let connector = EtcdConnector::new(sim.clone());
        match trouble {
            "learner" => {
                connector
                    .etcd
                    .lock()
                    .unwrap()
                    .learners
                    .insert(servers[2].clone());
            }
            _ => {
                // k3s is down on the server that would stay: its member does not answer.
                connector
                    .etcd
                    .lock()
                    .unwrap()
                    .down
                    .insert(servers[2].clone());
            }
        }
        let gate = ObservedK3sGate {
            inner: K3sGate::new(nodes, connector.clone(), gate_options()),
            api: Arc::clone(&workspace.api),
            vms: recording.vms,
            sim: sim.clone(),
        };
        let rolling = RollingOptions {
            cluster_running: true,
            force: true,
            ..RollingOptions::default()
        };
        let before = workspace.state();
        let since = workspace.log().len();
        let error = workspace
            .up_rolling(&profile, exec_options(), rolling, Arc::new(gate))
            .await
            .unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains(&format!(
                "refusing to take server {} out of etcd",
                servers[0]
            )),
            "{trouble}: {message}"
        );
        assert!(
            message.contains(if trouble == "learner" {
                "are learners"
            } else {
                "fewer than a quorum"
            }),
            "{trouble}: {message}"
        );
        assert_eq!(connector.events(), Vec::<String>::new(), "{trouble}");
        assert_eq!(
            workspace.mutating_since(since).len(),
            0,
            "{trouble}: Proxmox was changed"
        );
        assert_eq!(workspace.state().vms, before.vms, "{trouble}");
        let etcd = connector.etcd.lock().unwrap();
        assert!(etcd.removed.is_empty() && etcd.snapshots.is_empty());
    }
}
