//! The [`Intent::Down`] plan: which of the state's VMs `down` destroys and which it only
//! forgets; without a state (a CI runner that lost `.provision/`), the VMs the cluster's tags
//! find on Proxmox. `exec` carries the list out as it is; `plan --destroy` prints it.

use std::collections::BTreeSet;

use crate::inventory::cluster_tag;
use crate::pve::{NodeName, VmId};

use crate::inventory::ExistingVm;
use crate::inventory::tags::VmTags;

use super::{Action, Forget, Intent, Plan, PlanError, PlanInput, VmRef};

/// Destroy every VM the state records that Proxmox still shows with the cluster's tag and the
/// recorded name (on the node it is on now); forget the others (gone, renamed or no longer
/// tagged: not ours to delete), deleting only the seed ISO provision uploaded for them.
pub(super) fn plan_down(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    if input.state.vms.is_empty() {
        return plan_down_by_tag(input);
    }
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
    Ok(Plan {
        intent: Intent::Down,
        cluster: cluster.clone(),
        vms: Vec::new(),
        actions,
        forget,
        downloads: Vec::new(),
        strategy: input.profile.image.strategy,
        templates: super::template::down_templates(input),
        mappings: Vec::new(),
        pool: None,
        adopt: Vec::new(),
        warnings: Vec::new(),
        shared_storages: BTreeSet::new(),
        rolling: Vec::new(),
        replace: None,
        upgrade: None,
    })
}

/// No state: the VMs carrying both `provision` and the cluster's tag. Refused (nothing
/// destroyed) when a VM has the cluster's tag without `provision`'s, or has both but is not a
/// VM the profile describes (another workspace's cluster of the same name, or a VM someone
/// tagged by hand): the tags alone do not say it is this cluster's.
fn plan_down_by_tag(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let cluster = &input.profile.cluster.name;
    let tag = cluster_tag(cluster);
    let described: BTreeSet<String> = super::wanted::expand(input.profile)?
        .into_iter()
        .map(|want| want.name)
        .collect();
    let mut ours = Vec::new();
    let mut doubtful = Vec::new();
    for vm in input.inventory.vms.iter().filter(|vm| vm.has_tag(&tag)) {
        let tags = VmTags::of(vm);
        let our_template = vm.template && vm.has_tag(super::TEMPLATE_TAG);
        if tags.provision && (described.contains(&vm.name) && !vm.template || our_template) {
            ours.push(vm);
        } else {
            doubtful.push(format!("{} (VMID {} on {})", vm.name, vm.vmid, vm.node));
        }
    }
    if !doubtful.is_empty() {
        return Err(PlanError::AmbiguousTags {
            cluster: cluster.clone(),
            vms: doubtful.join(", "),
        });
    }
    Ok(by_tag(cluster, &ours))
}

/// A down plan destroying `vms` (found by tag) of `cluster`: `gc` and a stateless `down`.
/// Templates among them (a clone strategy's) go after the VMs, as in a down with a state.
pub fn by_tag(cluster: &str, vms: &[&ExistingVm]) -> Plan {
    let (templates, vms): (Vec<&ExistingVm>, Vec<&ExistingVm>) =
        vms.iter().partition(|vm| vm.template);
    Plan {
        intent: Intent::Down,
        cluster: cluster.to_owned(),
        vms: Vec::new(),
        strategy: crate::profile::model::ImageStrategy::default(),
        templates: templates
            .iter()
            .map(|vm| super::PlannedTemplate {
                name: vm.name.clone(),
                node: NodeName(vm.node.clone()),
                vmid: VmId(vm.vmid),
                image: String::new(),
                storage: String::new(),
                action: super::TemplateAction::Destroy,
                params: crate::pve::Params::new(),
                image_download: None,
            })
            .collect(),
        actions: vms
            .iter()
            .map(|vm| Action::Destroy {
                target: VmRef {
                    name: vm.name.clone(),
                    node: NodeName(vm.node.clone()),
                    vmid: VmId(vm.vmid),
                },
            })
            .collect(),
        forget: Vec::new(),
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
