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
