//! Which Proxmox privileges, on which ACL paths, a plan needs: the preflight compares them
//! with `GET /access/permissions` so a limited token is refused with one list of everything
//! missing before the first change, instead of failing halfway through `up`.
//!
//! The table follows qemu-server's `check_vm_modify_config_perm` (via
//! [`crate::pve::privileges::key_requirement`]) and the `permissions` of each route in the
//! official API schema.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Action, ActionKind, Plan, TemplateAction};
use crate::pve::privileges::{KeyRequirement, granted, key_requirement};
use crate::pve::types::Permissions;

/// One privilege on one ACL path, and why the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Requirement {
    pub path: String,
    pub privilege: String,
    pub why: String,
}

/// Collects requirements, one per (path, privilege), keeping the first reason.
#[derive(Default)]
struct Needs {
    seen: BTreeSet<(String, String)>,
    list: Vec<Requirement>,
}

impl Needs {
    fn add(&mut self, path: impl Into<String>, privilege: &str, why: impl Into<String>) {
        let path = path.into();
        if self.seen.insert((path.clone(), privilege.to_owned())) {
            self.list.push(Requirement {
                path,
                privilege: privilege.to_owned(),
                why: why.into(),
            });
        }
    }
}

/// Everything `plan` will ask of Proxmox, as privileges on ACL paths (observation included).
pub fn required_privileges(plan: &Plan, bridge: &str, vlan: Option<u16>) -> Vec<Requirement> {
    let mut needs = Needs::default();
    needs.add("/", "Sys.Audit", "read nodes, PCI devices and tasks");
    if let Some(pool) = &plan.pool {
        needs.add(
            format!("/pool/{pool}"),
            "Pool.Allocate",
            format!("create pool {pool}"),
        );
    }
    for mapping in &plan.mappings {
        needs.add(
            "/mapping/pci",
            "Mapping.Modify",
            format!("create PCI resource mapping {}", mapping.id),
        );
    }
    for download in &plan.downloads {
        let why = format!(
            "download the cloud image to {} on {}",
            download.storage, download.node
        );
        needs.add(
            format!("/storage/{}", download.storage),
            "Datastore.AllocateTemplate",
            &why,
        );
        // download-url: Sys.Audit + Sys.Modify on / (or Sys.AccessNetwork on the node).
        needs.add("/", "Sys.Modify", &why);
    }
    let creates = plan
        .actions
        .iter()
        .any(|action| matches!(action.kind(), ActionKind::Create | ActionKind::Replace));
    if creates {
        let zone = match vlan {
            Some(tag) => format!("/sdn/zones/localnetwork/{bridge}/{tag}"),
            None => format!("/sdn/zones/localnetwork/{bridge}"),
        };
        needs.add(zone, "SDN.Use", format!("attach VMs to bridge {bridge}"));
    }
    for vm in &plan.vms {
        if let (Some(iso), false) = (&vm.iso, vm.converged) {
            let path = format!("/storage/{}", iso.storage);
            needs.add(
                &path,
                "Datastore.AllocateTemplate",
                "upload the cloud-init seed ISOs",
            );
            needs.add(
                &path,
                "Datastore.Allocate",
                "delete seed ISOs no longer used",
            );
        }
    }
    template_needs(plan, &mut needs);
    for action in &plan.actions {
        action_needs(action, plan.pool.as_deref(), &mut needs);
    }
    needs.list
}

/// The clone strategies: creating a template (a VM import, `template: 1`), cloning it
/// (qemu-server `clone_vm`: `VM.Clone` on the template, `VM.Allocate` on the new id — listed
/// per VM — and `Datastore.AllocateSpace` on the storage the clone's disks go to), and
/// destroying it at `down`.
fn template_needs(plan: &Plan, needs: &mut Needs) {
    for template in &plan.templates {
        let path = format!("/vms/{}", template.vmid);
        let name = &template.name;
        match template.action {
            TemplateAction::Create => {
                needs.add(&path, "VM.Allocate", format!("create template {name}"));
                for (key, value) in &template.params {
                    let why = format!("set {key} on template {name}");
                    match key_requirement(key, value) {
                        KeyRequirement::Vm(privilege) => needs.add(&path, privilege, why),
                        KeyRequirement::Storage => {
                            needs.add(&path, "VM.Config.Disk", &why);
                            if let Some(storage) = new_volume_storage(value) {
                                needs.add(
                                    format!("/storage/{storage}"),
                                    "Datastore.AllocateSpace",
                                    &why,
                                );
                            }
                        }
                        KeyRequirement::Mapping(_) | KeyRequirement::RootOnly => {}
                    }
                }
                clone_needs(template, needs);
            }
            TemplateAction::Keep => clone_needs(template, needs),
            TemplateAction::Destroy => {
                needs.add(&path, "VM.Allocate", format!("destroy template {name}"));
                needs.add(&path, "VM.PowerMgmt", format!("stop template {name}"));
            }
        }
    }
}

fn clone_needs(template: &super::PlannedTemplate, needs: &mut Needs) {
    let name = &template.name;
    needs.add(
        format!("/vms/{}", template.vmid),
        "VM.Clone",
        format!("clone the VMs from template {name}"),
    );
    needs.add(
        format!("/storage/{}", template.storage),
        "Datastore.AllocateSpace",
        format!("clone the VMs' disks from template {name}"),
    );
}

fn action_needs(action: &Action, pool: Option<&str>, needs: &mut Needs) {
    let vm_path = format!("/vms/{}", action.vmid());
    let vm = action.vm();
    match action {
        Action::Destroy { .. } => {
            needs.add(&vm_path, "VM.PowerMgmt", format!("stop {vm}"));
            needs.add(&vm_path, "VM.Allocate", format!("destroy {vm}"));
            return;
        }
        Action::Create { .. } | Action::Replace { .. } => {
            needs.add(&vm_path, "VM.Allocate", format!("create {vm}"));
            if let Some(pool) = pool {
                needs.add(
                    format!("/pool/{pool}"),
                    "VM.Allocate",
                    format!("create {vm} in pool {pool}"),
                );
            }
            needs.add(&vm_path, "VM.PowerMgmt", format!("start {vm}"));
            needs.add(
                &vm_path,
                "VM.GuestAgent.Audit",
                format!("wait for {vm}'s guest agent"),
            );
            if action.kind() == ActionKind::Replace {
                needs.add(&vm_path, "VM.PowerMgmt", format!("stop {vm}"));
            }
        }
        Action::Update { restart, .. } => {
            if *restart {
                needs.add(&vm_path, "VM.PowerMgmt", format!("restart {vm}"));
            }
        }
    }
    if !action.resize().is_empty() {
        needs.add(&vm_path, "VM.Config.Disk", format!("resize {vm}'s disks"));
    }
    for (key, value) in action.params().into_iter().flatten() {
        let why = format!("set {key} on {vm}");
        match key_requirement(key, value) {
            KeyRequirement::Vm(privilege) => needs.add(&vm_path, privilege, why),
            KeyRequirement::Storage => {
                needs.add(&vm_path, "VM.Config.Disk", &why);
                if let Some(storage) = new_volume_storage(value) {
                    needs.add(
                        format!("/storage/{storage}"),
                        "Datastore.AllocateSpace",
                        &why,
                    );
                }
            }
            KeyRequirement::Mapping(id) => {
                needs.add(format!("/mapping/pci/{id}"), "Mapping.Use", &why);
                needs.add(&vm_path, "VM.Config.HWType", &why);
            }
            // Refused by the plan itself unless root@pam sets them.
            KeyRequirement::RootOnly => {}
        }
    }
}

/// The storage a drive value allocates on (`local-lvm:32,…`, `local-lvm:cloudinit`), not an
/// existing volume (`local:iso/seed.iso,media=cdrom`).
fn new_volume_storage(value: &str) -> Option<&str> {
    let volume = value.split(',').next()?;
    let (storage, rest) = volume.split_once(':')?;
    (rest == "cloudinit" || rest.parse::<u64>().is_ok()).then_some(storage)
}

/// The requirements `permissions` do not grant.
pub fn missing<'a>(
    permissions: &Permissions,
    requirements: &'a [Requirement],
) -> Vec<&'a Requirement> {
    requirements
        .iter()
        .filter(|need| !granted(permissions, &need.path, &need.privilege))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn new_volumes_name_their_storage() {
        assert_eq!(
            new_volume_storage("local-lvm:0,import-from=local:import/x.qcow2"),
            Some("local-lvm")
        );
        assert_eq!(
            new_volume_storage("local-lvm:1,efitype=4m"),
            Some("local-lvm")
        );
        assert_eq!(new_volume_storage("local-lvm:cloudinit"), Some("local-lvm"));
        assert_eq!(new_volume_storage("local:iso/seed.iso,media=cdrom"), None);
    }
}
