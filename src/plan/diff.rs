//! What differs between an existing VM and its plan: a layout change that forces a replace,
//! the in-place update of a kept VM, and the root-only keys check over all actions.

use crate::inventory::{AuthKind, ExistingVm};
use crate::profile::model::{NodeGroup, Profile};
use crate::pve::Params;
use crate::state::{State, VmPhase};

use super::{
    Action, PlanError, PlannedVm, Resize, VmRef, disk_size_gib, disk_storage, hostpci_targets,
    params, same_value,
};

/// Refuse, before anything changes, a plan whose requests carry keys only `root@pam` may set
/// (`hugepages`, `keephugepages`, `affinity` …) when the credentials cannot set them: Proxmox
/// would refuse each VM halfway through `up`. Names every VM and key.
pub(super) fn check_root_only_keys(actions: &[Action], auth: &AuthKind) -> Result<(), PlanError> {
    if auth.may_set_root_only_keys() {
        return Ok(());
    }
    let offending: Vec<String> = actions
        .iter()
        .filter_map(|action| {
            let keys = crate::pve::privileges::root_only_keys(action.params()?);
            (!keys.is_empty()).then(|| format!("{} ({})", action.vm(), keys.join(", ")))
        })
        .collect();
    if offending.is_empty() {
        return Ok(());
    }
    Err(PlanError::RootOnlyKeys {
        auth: auth.describe(),
        vms: offending.join(", "),
    })
}

/// A change that needs destroying the VM: machine, bios, disk layout.
pub(super) fn layout_change(
    live: &Params,
    desired: &Params,
    profile: &Profile,
    group: &NodeGroup,
) -> Option<String> {
    for key in params::LAYOUT {
        if let Some(want) = desired.get(*key)
            && live.get(*key).is_some_and(|have| have != want)
        {
            return Some(format!(
                "{key} changes ({} → {want})",
                live.get(*key).map_or("", |v| v)
            ));
        }
    }
    let os = live.get("scsi0")?;
    if disk_storage(os) != profile.proxmox.storage.disks {
        return Some(format!(
            "OS disk moves to storage {} (is on {})",
            profile.proxmox.storage.disks,
            disk_storage(os)
        ));
    }
    if disk_size_gib(os).is_some_and(|size| size > u64::from(group.disks.os_gb)) {
        return Some(format!(
            "OS disk shrinks to {} GB (disks cannot shrink)",
            group.disks.os_gb
        ));
    }
    match (live.get("scsi1"), desired.get("scsi1")) {
        (None, None) => None,
        (Some(_), None) => Some("scratch disk removed".to_owned()),
        (None, Some(_)) => Some("scratch disk added".to_owned()),
        (Some(have), Some(want)) => {
            let want_gb = group.disks.scratch_gb.map(u64::from);
            if disk_storage(have) != disk_storage(want) {
                Some("scratch disk moves to another storage".to_owned())
            } else if disk_size_gib(have)
                .zip(want_gb)
                .is_some_and(|(h, w)| h != w)
            {
                Some("scratch disk size changes".to_owned())
            } else {
                None
            }
        }
    }
}

/// In-place changes of a kept VM, plus finishing work (resize, start) of an unfinished one.
pub(super) fn update_action(vm: &ExistingVm, planned: &PlannedVm, state: &State) -> Option<Action> {
    let mut changed = Params::new();
    for key in params::UPDATABLE {
        if let Some(want) = planned.params.get(*key)
            && !same_value(key, vm.config.get(*key).map(String::as_str), want)
        {
            changed.insert((*key).to_owned(), want.clone());
        }
    }
    for (key, want) in &planned.params {
        if key.starts_with("hostpci")
            && !vm.config.get(key).is_some_and(|have| {
                hostpci_targets(&Params::from([(key.clone(), have.clone())]))
                    == hostpci_targets(&Params::from([(key.clone(), want.clone())]))
            })
        {
            changed.insert(key.clone(), want.clone());
        }
    }
    let mut delete: Vec<String> = ["affinity", "numa0", "hugepages", "keephugepages"]
        .iter()
        .filter(|key| vm.config.contains_key(**key) && !planned.params.contains_key(**key))
        .map(|key| (*key).to_owned())
        .collect();
    delete.sort();
    let resize: Vec<Resize> = planned
        .resize
        .iter()
        .filter(|r| {
            vm.config
                .get(&r.disk)
                .and_then(|v| disk_size_gib(v))
                .is_none_or(|have| have < r.size.trim_end_matches('G').parse().unwrap_or(0))
        })
        .cloned()
        .collect();
    let running = vm.status == "running";
    let ready = state
        .vms
        .get(&planned.name)
        .is_some_and(|r| r.phase == VmPhase::Ready);
    let restart = running
        && (changed
            .keys()
            .any(|k| !params::METADATA.contains(&k.as_str()))
            || !delete.is_empty());
    if changed.is_empty() && delete.is_empty() && resize.is_empty() && running && ready {
        return None;
    }
    let reason = if changed.is_empty() && delete.is_empty() && resize.is_empty() {
        Some(if running {
            "resume: wait for the guest agent".to_owned()
        } else {
            "resume: start the VM".to_owned()
        })
    } else {
        None
    };
    let was = changed
        .keys()
        .filter_map(|key| Some((key.clone(), vm.config.get(key)?.clone())))
        .collect();
    Some(Action::Update {
        target: VmRef {
            name: planned.name.clone(),
            node: planned.node.clone(),
            vmid: planned.vmid,
        },
        changes: changed,
        was,
        delete,
        resize,
        reason,
        restart,
    })
}
