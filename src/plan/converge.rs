//! The [`Intent::Converge`] plan as named passes over one input, in order: match existing VMs
//! → keep GPUs → leaving VMs → ledger → placement (one wanted VM at a time, see `vm.rs`) →
//! scale-down → ordering. Each pass is a function of what the earlier ones decided.

use std::collections::{BTreeMap, BTreeSet};

use crate::inventory::{ExistingVm, cluster_tag};
use crate::pve::{NodeName, Params, VmId};
use crate::state::State;

use super::diff::check_root_only_keys;
use super::image::image_source;
use super::ledger::{Ledger, half_created};
use super::vm::VmPass;
use super::wanted::{Wanted, assign_macs, existing_vms};
use super::{
    Action, ActionKind, ImageDownload, Intent, Plan, PlanError, PlanInput, PlannedVm, VmRef,
    hostpci_targets,
};

/// The existing VMs that go away in this plan, by VMID: (name, VM).
pub(super) type Leaving<'i> = BTreeMap<u32, (String, &'i ExistingVm)>;

/// Plan the profile against what the input's inventory shows and its state remembers.
pub(super) fn converge(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let PlanInput {
        profile,
        inventory,
        state,
        ..
    } = *input;
    let cluster = &profile.cluster.name;
    let wanted = super::wanted::expand_observed(profile, inventory, state)?;
    super::rolling::check_server_count(input, &input.context.rolling)?;
    let wanted_names: BTreeSet<&str> = wanted.iter().map(|w| w.name.as_str()).collect();

    // Match existing VMs: which existing VM (if any) each wanted VM is.
    let existing_for = existing_vms(profile, &wanted, inventory, state);
    let adopt: Vec<String> = wanted
        .iter()
        .filter(|want| existing_for.contains_key(&want.name) && !state.vms.contains_key(&want.name))
        .map(|want| want.name.clone())
        .collect();
    let warnings = stray_warnings(input, &existing_for);
    let keep_gpus = keep_gpus(&wanted, &existing_for, state);
    let leaving = leaving_vms(input, &wanted, &wanted_names, &existing_for, &keep_gpus);
    let mut ledger = Ledger::observe(input, &wanted, &existing_for, &keep_gpus, &leaving)?;

    // Placement, one wanted VM at a time.
    let mut pass = VmPass {
        input,
        image: image_source(profile, inventory)?,
        macs: assign_macs(cluster, &wanted, &existing_for),
        existing_for,
        keep_gpus,
        downloads: BTreeMap::new(),
        mappings: Vec::new(),
        placed: BTreeSet::new(),
    };
    let mut vms = Vec::new();
    let mut actions = Vec::new();
    for want in &wanted {
        let (planned, action) = pass.plan_vm(want, &mut ledger)?;
        vms.push(planned);
        actions.extend(action);
    }
    actions.extend(scale_down(input, &wanted_names));
    order_after_leaving(&mut actions, &leaving, &pass.placed);

    let pool = profile
        .proxmox
        .pool
        .clone()
        .filter(|pool| !inventory.pools.contains(pool));
    let templates = super::template::plan_templates(input, &mut vms, &actions, &mut ledger)?;
    let downloads = needed_downloads(pass.downloads, &vms, &actions, &templates);
    check_root_only_keys(&actions, &inventory.auth)?;
    let rolling = super::rolling::waves(input, &actions, &input.context.rolling);
    let upgrade = super::upgrade::upgrade(input, &vms, &actions)?;
    Ok(Plan {
        intent: Intent::Converge,
        cluster: cluster.clone(),
        vms,
        actions,
        forget: Vec::new(),
        downloads,
        strategy: profile.image.strategy,
        templates,
        mappings: pass.mappings,
        pool,
        adopt,
        warnings,
        shared_storages: inventory
            .nodes
            .iter()
            .flat_map(|node| &node.storages)
            .filter(|storage| storage.shared == Some(1))
            .map(|storage| storage.storage.clone())
            .collect(),
        rolling,
        upgrade,
        replace: None,
    })
}

/// Tagged VMs that neither the state nor the profile knows: left alone, with a warning.
fn stray_warnings(
    input: &PlanInput<'_>,
    existing_for: &BTreeMap<String, &ExistingVm>,
) -> Vec<String> {
    let cluster = &input.profile.cluster.name;
    let tag = cluster_tag(cluster);
    let mut warnings = Vec::new();
    for vm in input.inventory.cluster_vms(cluster) {
        let known = input.state.vmids().any(|vmid| vmid == vm.vmid);
        let adopted = existing_for.values().any(|e| e.vmid == vm.vmid);
        if !known && !adopted {
            warnings.push(format!(
                "VM {} ({}) on {} carries tag {tag} but is neither in the state nor in the profile; left alone",
                vm.vmid, vm.name, vm.node
            ));
        }
    }
    warnings
}

/// Keep GPUs: the existing VMs that keep their passthrough targets (they reserve them before
/// anything is placed), in key order (hostpci0, hostpci1 …) so kept values line up with the
/// live keys. A VM whose GPU count changes, or that is half-created, keeps none.
pub(super) fn keep_gpus(
    wanted: &[Wanted<'_>],
    existing_for: &BTreeMap<String, &ExistingVm>,
    state: &State,
) -> BTreeMap<String, Vec<String>> {
    let mut keep = BTreeMap::new();
    for want in wanted {
        let Some(vm) = existing_for.get(&want.name) else {
            continue;
        };
        let targets: Vec<String> = vm
            .config
            .iter()
            .filter(|(key, _)| key.starts_with("hostpci"))
            .flat_map(|(key, value)| hostpci_targets(&Params::from([(key.clone(), value.clone())])))
            .collect();
        let wanted_count = want.group.gpus.as_ref().map_or(0, |g| g.count) as usize;
        if targets.len() == wanted_count && !half_created(vm, state) {
            keep.insert(want.name.clone(), targets);
        }
    }
    keep
}

/// Leaving VMs: existing ones replaced because their GPUs change (or they are half-created),
/// and scaled-down ones. Their GPUs, pinned host cores, hugepages and memory are released for
/// new placements; a VM placed on their node is created only after their removal
/// ([`Action::after`]), so no device is ever held by two VMs at once.
fn leaving_vms<'i>(
    input: &PlanInput<'i>,
    wanted: &[Wanted<'_>],
    wanted_names: &BTreeSet<&str>,
    existing_for: &BTreeMap<String, &'i ExistingVm>,
    keep_gpus: &BTreeMap<String, Vec<String>>,
) -> Leaving<'i> {
    let tag = cluster_tag(&input.profile.cluster.name);
    let mut leaving = BTreeMap::new();
    for want in wanted {
        if let Some(vm) = existing_for.get(&want.name)
            && !keep_gpus.contains_key(&want.name)
        {
            leaving.insert(vm.vmid, (want.name.clone(), *vm));
        }
    }
    for (name, record) in &input.state.vms {
        if !wanted_names.contains(name.as_str())
            && let Some(vm) = input
                .inventory
                .vm(record.vmid)
                .filter(|vm| vm.has_tag(&tag))
        {
            leaving.insert(vm.vmid, (name.clone(), vm));
        }
    }
    leaving
}

/// Scale down: VMs in the state (and carrying the tag on Proxmox) that the profile no longer has.
fn scale_down(input: &PlanInput<'_>, wanted_names: &BTreeSet<&str>) -> Vec<Action> {
    let tag = cluster_tag(&input.profile.cluster.name);
    input
        .state
        .vms
        .iter()
        .filter(|(name, _)| !wanted_names.contains(name.as_str()))
        .filter_map(|(name, record)| {
            let vm = input
                .inventory
                .vm(record.vmid)
                .filter(|vm| vm.has_tag(&tag))?;
            Some(Action::Destroy {
                target: VmRef {
                    name: name.clone(),
                    node: NodeName(vm.node.clone()),
                    vmid: VmId(vm.vmid),
                },
            })
        })
        .collect()
}

/// Ordering: a VM placed on a node where others leave waits for them to be gone.
pub(super) fn order_after_leaving(
    actions: &mut [Action],
    leaving: &Leaving<'_>,
    placed: &BTreeSet<String>,
) {
    let mut leaving_on: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, vm) in leaving.values() {
        leaving_on
            .entry(vm.node.as_str())
            .or_default()
            .insert(name.as_str());
    }
    for action in actions {
        let target = action.target().clone();
        if placed.contains(&target.name)
            && let Some(names) = leaving_on.get(target.node.0.as_str())
            && let Some(after) = action.after_mut()
        {
            *after = names
                .iter()
                .filter(|name| **name != target.name)
                .map(|name| (*name).to_owned())
                .collect();
        }
    }
}

/// The downloads some created or replaced VM, or a created template, imports from (the
/// others are not needed).
fn needed_downloads(
    downloads: BTreeMap<(NodeName, String), ImageDownload>,
    vms: &[PlannedVm],
    actions: &[Action],
    templates: &[super::PlannedTemplate],
) -> Vec<ImageDownload> {
    let creating: BTreeSet<&str> = actions
        .iter()
        .filter(|a| matches!(a.kind(), ActionKind::Create | ActionKind::Replace))
        .map(Action::vm)
        .collect();
    let needed: BTreeSet<&(NodeName, String)> = vms
        .iter()
        .filter(|vm| creating.contains(vm.name.as_str()))
        .filter_map(|vm| vm.image_download.as_ref())
        .chain(templates.iter().filter_map(|t| t.image_download.as_ref()))
        .collect();
    downloads
        .into_iter()
        .filter(|(key, _)| needed.contains(key))
        .map(|(_, download)| download)
        .collect()
}
