//! The [`Intent::Down`] plan: which of the state's VMs `down` destroys and which it only
//! forgets. `exec` carries the list out as it is; `plan --destroy` prints it.

use std::collections::BTreeSet;

use crate::inventory::cluster_tag;
use crate::pve::{NodeName, VmId};

use super::{Action, Forget, Intent, Plan, PlanInput, VmRef};

/// Destroy every VM the state records that Proxmox still shows with the cluster's tag and the
/// recorded name (on the node it is on now); forget the others (gone, renamed or no longer
/// tagged: not ours to delete), deleting only the seed ISO provision uploaded for them.
pub(super) fn plan_down(input: &PlanInput<'_>) -> Plan {
    let cluster = &input.profile.cluster.name;
    let tag = cluster_tag(cluster);
    let mut actions = Vec::new();
    let mut forget = Vec::new();
    for record in input.state.vms.values() {
        let live = input
            .inventory
            .vm(record.vmid)
            .filter(|vm| vm.has_tag(&tag) && vm.name == record.name);
        match live {
            Some(vm) => actions.push(Action::Destroy {
                target: VmRef {
                    name: record.name.clone(),
                    node: NodeName(if vm.node.is_empty() {
                        record.node.clone()
                    } else {
                        vm.node.clone()
                    }),
                    vmid: VmId(record.vmid),
                },
            }),
            None => forget.push(Forget {
                vm: record.name.clone(),
                vmid: VmId(record.vmid),
                node: NodeName(record.node.clone()),
                iso: record.iso.clone(),
            }),
        }
    }
    Plan {
        intent: Intent::Down,
        cluster: cluster.clone(),
        vms: Vec::new(),
        actions,
        forget,
        downloads: Vec::new(),
        mappings: Vec::new(),
        pool: None,
        adopt: Vec::new(),
        warnings: Vec::new(),
        shared_storages: BTreeSet::new(),
        rolling: Vec::new(),
        upgrade: None,
        replace: None,
    }
}
