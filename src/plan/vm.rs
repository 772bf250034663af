//! The placement pass for one wanted VM: its node, VMID, GPUs and pinning (kept from the
//! existing VM or decided now), its image and seed ISO, its exact Proxmox parameters, and the
//! action that gets it there (create, replace, update, or none when converged).

use std::collections::{BTreeMap, BTreeSet};

use crate::inventory::ExistingVm;
use crate::profile::model::CloudInitMode;
use crate::pve::types::PciMapping;
use crate::pve::{NodeName, VmId};
use crate::state::VmPhase;

use super::diff::{layout_change, update_action};
use super::image::image_download;
use super::ledger::{
    Ledger, Pinning, allocate_vmid, existing_pinning, fit_kept, half_created, refund_existing,
    regrow_hugepages, resolve_target,
};
use super::placement::{pin_on_node, place};
use super::propstrings;
use super::vm_params::{gpu_params, vm_params};
use super::wanted::Wanted;
use super::{
    Action, ImageDownload, ImageSource, IsoUpload, PlanError, PlanInput, PlannedVm, Resize, VmRef,
    hostpci_targets,
};

/// What the placement pass carries from one wanted VM to the next.
pub(super) struct VmPass<'a, 'i> {
    pub(super) input: &'a PlanInput<'i>,
    pub(super) image: ImageSource,
    /// `net0` MAC per wanted VM.
    pub(super) macs: BTreeMap<String, String>,
    /// The existing VM each wanted VM is (match pass).
    pub(super) existing_for: BTreeMap<String, &'i ExistingVm>,
    /// Passthrough targets kept per wanted VM (keep-GPUs pass).
    pub(super) keep_gpus: BTreeMap<String, Vec<String>>,
    /// Image downloads by (node, storage).
    pub(super) downloads: BTreeMap<(NodeName, String), ImageDownload>,
    /// PCI resource mappings to create.
    pub(super) mappings: Vec<PciMapping>,
    /// The VMs that went through placement (they may use what leaving VMs release).
    pub(super) placed: BTreeSet<String>,
}

/// Where a wanted VM goes and what it holds there.
struct Placement {
    vmid: u32,
    node: String,
    gpu_devices: Vec<String>,
    pinning: Option<Pinning>,
}

impl VmPass<'_, '_> {
    /// The planned VM and its action (none when it exists and has converged).
    pub(super) fn plan_vm(
        &mut self,
        want: &Wanted<'_>,
        ledger: &mut Ledger,
    ) -> Result<(PlannedVm, Option<Action>), PlanError> {
        let PlanInput {
            profile, context, ..
        } = *self.input;
        let group = want.group;
        let existing = self.existing_for.get(&want.name).copied();
        let half = existing.is_some_and(|vm| half_created(vm, self.input.state));
        let kept_gpus = self.keep_gpus.get(&want.name).cloned();
        let placement = match existing.filter(|_| kept_gpus.is_some() && !half) {
            Some(vm) => self.keep_place(want, vm, kept_gpus.as_deref(), ledger)?,
            None => self.place_new(want, existing, ledger)?,
        };
        *ledger
            .per_group_node
            .entry((group.name.clone(), placement.node.clone()))
            .or_default() += 1;
        self.check_storages(&placement.node)?;
        let hostpci = match kept_gpus.filter(|_| !half && existing.is_some()) {
            Some(targets) => targets
                .iter()
                .map(|target| propstrings::hostpci_for_target(target))
                .collect(),
            None => gpu_params(
                profile,
                group,
                &placement.node,
                &placement.gpu_devices,
                self.input.inventory,
                &mut self.mappings,
            )?,
        };
        let (vm_image, image_key) = self.vm_image(&placement.node)?;
        let iso = self.iso(want);
        let prefix_len = profile.network.cidr.prefix();
        let mac = self.macs.get(&want.name).cloned().unwrap_or_default();
        let params = vm_params(
            profile,
            context,
            want,
            &mac,
            placement.vmid,
            &hostpci,
            placement.pinning.as_ref(),
            &vm_image,
            iso.as_ref(),
            prefix_len,
            crate::inventory::tags::cluster_created(
                &self.input.inventory.vms,
                &profile.cluster.name,
            )
            .unwrap_or(context.now),
        );
        let planned = PlannedVm {
            name: want.name.clone(),
            group: group.name.clone(),
            role: group.role,
            index: want.index,
            vmid: VmId(placement.vmid),
            node: NodeName(placement.node),
            address: want.address,
            prefix_len,
            mac,
            gpus: placement.gpu_devices,
            params,
            resize: vec![Resize {
                disk: "scsi0".to_owned(),
                size: format!("{}G", group.disks.os_gb),
            }],
            image: vm_image,
            iso,
            image_download: image_key,
            exists: false,
            converged: false,
        };
        Ok(self.action(want, existing, half, planned))
    }

    /// A kept existing VM stays where it is with its GPUs; its pinning and memory are checked
    /// against what it may grow into.
    fn keep_place(
        &self,
        want: &Wanted<'_>,
        vm: &ExistingVm,
        kept_gpus: Option<&[String]>,
        ledger: &mut Ledger,
    ) -> Result<Placement, PlanError> {
        let inventory = self.input.inventory;
        let node = vm.node.clone();
        let gpu_devices = kept_gpus
            .map(|targets| {
                targets
                    .iter()
                    .flat_map(|t| resolve_target(t, &node, inventory))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let pinning = match existing_pinning(vm, want.group) {
            Some(pinning) => {
                regrow_hugepages(want, vm, pinning.numa_node, ledger)?;
                Some(pinning)
            }
            None => {
                refund_existing(vm, inventory, ledger);
                pin_on_node(want, &node, &gpu_devices, inventory, ledger)?
            }
        };
        fit_kept(want, vm, inventory, ledger)?;
        Ok(Placement {
            vmid: vm.vmid,
            node,
            gpu_devices,
            pinning,
        })
    }

    /// A new (or replaced) VM: node, GPUs and pinning decided now; the VMID kept from the VM
    /// it replaces or from an earlier run's intent, else allocated.
    fn place_new(
        &mut self,
        want: &Wanted<'_>,
        existing: Option<&ExistingVm>,
        ledger: &mut Ledger,
    ) -> Result<Placement, PlanError> {
        let PlanInput {
            profile,
            inventory,
            state,
            ..
        } = *self.input;
        self.placed.insert(want.name.clone());
        let record = state.vms.get(&want.name);
        let reuse_vmid = existing.map(|vm| vm.vmid).or_else(|| {
            record
                .filter(|r| r.phase == VmPhase::Intent || inventory.vm(r.vmid).is_none())
                .filter(|r| inventory.vm(r.vmid).is_none_or(|vm| vm.name == want.name))
                .map(|r| r.vmid)
        });
        let (node, gpu_devices, pinning) = place(want, profile, inventory, ledger)?;
        let vmid = match reuse_vmid {
            Some(vmid) => vmid,
            None => allocate_vmid(profile, &want.name, ledger)?,
        };
        for device in &gpu_devices {
            ledger
                .used_devices
                .insert((node.clone(), device.clone()), vmid);
        }
        if existing.is_none() {
            *ledger.per_node.entry(node.clone()).or_default() += 1;
        }
        Ok(Placement {
            vmid,
            node,
            gpu_devices,
            pinning,
        })
    }

    /// The disks' and ISOs' storages exist on the chosen node.
    fn check_storages(&self, node: &str) -> Result<(), PlanError> {
        let storage = &self.input.profile.proxmox.storage;
        let Some(node_inventory) = self.input.inventory.node(node) else {
            return Ok(());
        };
        for name in [&storage.disks, &storage.iso] {
            if node_inventory.storage(name).is_none() {
                return Err(PlanError::StorageMissing {
                    storage: name.clone(),
                    node: node.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The image a VM on `node` is created from, and the download (if any) it waits for.
    fn vm_image(
        &mut self,
        node: &str,
    ) -> Result<(ImageSource, Option<(NodeName, String)>), PlanError> {
        let PlanInput {
            profile, inventory, ..
        } = *self.input;
        let ImageSource::Import { volid } = &self.image else {
            return Ok((self.image.clone(), None));
        };
        if let Some(download) = image_download(profile, node, volid, inventory) {
            let key = (download.node.clone(), download.storage.clone());
            self.downloads.entry(key.clone()).or_insert(download);
            return Ok((self.image.clone(), Some(key)));
        }
        if profile.image.url.is_none()
            && let Some(node_inventory) = inventory.node(node)
        {
            let storage = volid.split(':').next().unwrap_or_default();
            let shared = node_inventory
                .storage(storage)
                .is_some_and(|s| s.shared == Some(1));
            if !shared && !node_inventory.has_volume(volid) && !node_inventory.volumes.is_empty() {
                return Err(PlanError::ImageMissing {
                    volume: volid.clone(),
                    node: node.to_owned(),
                });
            }
        }
        Ok((self.image.clone(), None))
    }

    /// The NoCloud seed ISO of a VM (none with Proxmox's own cloud-init drive).
    fn iso(&self, want: &Wanted<'_>) -> Option<IsoUpload> {
        let PlanInput {
            profile, context, ..
        } = *self.input;
        match profile.proxmox.cloud_init {
            CloudInitMode::NocloudIso => {
                let file_name = context
                    .iso_files
                    .get(&want.name)
                    .cloned()
                    .unwrap_or_else(|| {
                        format!("provision-{}-{}.iso", profile.cluster.name, want.name)
                    });
                Some(IsoUpload {
                    storage: profile.proxmox.storage.iso.clone(),
                    volid: format!("{}:iso/{file_name}", profile.proxmox.storage.iso),
                    file_name,
                })
            }
            CloudInitMode::Proxmox => None,
        }
    }

    /// Create when nothing exists, replace when the VM cannot be changed in place (GPUs,
    /// layout, half-created), else update — or nothing when it has converged.
    fn action(
        &self,
        want: &Wanted<'_>,
        existing: Option<&ExistingVm>,
        half: bool,
        mut planned: PlannedVm,
    ) -> (PlannedVm, Option<Action>) {
        let PlanInput { profile, state, .. } = *self.input;
        let group = want.group;
        let record = state.vms.get(&want.name);
        let target = VmRef {
            name: planned.name.clone(),
            node: planned.node.clone(),
            vmid: planned.vmid,
        };
        let Some(vm) = existing else {
            let reason = record
                .filter(|r| r.phase == VmPhase::Intent)
                .map(|_| "an earlier run recorded the intent but the VM does not exist".to_owned());
            let action = Action::Create {
                target,
                params: planned.params.clone(),
                resize: planned.resize.clone(),
                reason,
                after: Vec::new(),
            };
            return (planned, Some(action));
        };
        let replace_reason = if half {
            Some("half-created by an interrupted run (locked or without its disks)".to_owned())
        } else if !self.keep_gpus.contains_key(&want.name) {
            Some(format!(
                "GPUs change ({} → {})",
                hostpci_targets(&vm.config).len(),
                group.gpus.as_ref().map_or(0, |g| g.count)
            ))
        } else {
            layout_change(&vm.config, &planned.params, profile, group)
        };
        if let Some(reason) = replace_reason {
            let action = Action::Replace {
                target,
                params: planned.params.clone(),
                resize: planned.resize.clone(),
                reason,
                after: Vec::new(),
            };
            return (planned, Some(action));
        }
        planned.exists = true;
        let update = update_action(vm, &planned, state);
        planned.converged = update.is_none();
        (planned, update)
    }
}
