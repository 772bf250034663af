//! The clone strategies at run time: each planned template built at most once (intent in the
//! state first, then a create with `template: 1` importing the image), clones of one template
//! a bounded few at a time (`ExecOptions::clones_per_template`), each clone then given the VM's
//! own config; `down` destroys the templates
//! after the VMs.

use std::sync::Arc;

use anyhow::bail;
use tokio::sync::{OnceCell, Semaphore};

use crate::inventory::cluster_tag;
use crate::plan::{ImageSource, PlannedTemplate, PlannedVm, TemplateAction};
use crate::profile::model::ImageStrategy;
use crate::pve::{Params, PveError, VmId};
use crate::state::{TemplateRecord, VmPhase};

use super::ExecEvent;
use super::runner::Runner;

/// One planned template in a run: built at most once, cloned a bounded few clones at a time.
pub(super) struct TemplateSlot {
    pub(super) template: PlannedTemplate,
    built: OnceCell<()>,
    /// Clones of one template in flight. Proxmox runs clones of a stopped template side by side
    /// (qemu-server `clone_vm` takes a shared lock on it), but each then takes the storage's
    /// lock (`vdisk_clone`: `/var/lock/pve-manager/pve-storage-ID`, 10 s timeout) for its
    /// snapshot ([`super::ExecOptions::clones_per_template`] keeps that queue below the
    /// timeout), and a clone that still meets a lock is retried.
    clones: Arc<Semaphore>,
}

impl TemplateSlot {
    pub(super) fn new(template: &PlannedTemplate, clones_at_once: usize) -> Self {
        Self {
            template: template.clone(),
            built: OnceCell::new(),
            clones: Arc::new(Semaphore::new(clones_at_once.max(1))),
        }
    }
}

/// Disk keys: re-applying one a clone already has would allocate another disk.
fn is_disk_key(key: &str) -> bool {
    ["scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"]
        .iter()
        .any(|prefix| {
            key.strip_prefix(prefix)
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
}

impl Runner {
    /// The template `vm` is cloned from, built once for all its clones (concurrent callers
    /// wait): its intent is recorded before the create, its phase set once the create ended.
    pub(super) async fn ensure_template(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        let ImageSource::Template { name, .. } = &vm.image else {
            return Ok(());
        };
        let Some(slot) = self.templates.get(name) else {
            bail!(
                "internal: {} clones template {name}, which is not planned",
                vm.name
            );
        };
        let template = &slot.template;
        match template.action {
            TemplateAction::Create => {}
            // Built by an earlier run, which may have stopped before it recorded it ready.
            TemplateAction::Keep => {
                slot.built
                    .get_or_try_init(|| self.record_template(template, VmPhase::Ready))
                    .await?;
                return Ok(());
            }
            TemplateAction::Destroy => return Ok(()),
        }
        self.step(&vm.name, "template");
        slot.built
            .get_or_try_init(|| async {
                self.events.event(ExecEvent::Global {
                    what: format!(
                        "template {} (vmid {}) on {}",
                        template.name, template.vmid, template.node
                    ),
                });
                self.record_template(template, VmPhase::Intent).await?;
                self.retrying(&template.name, "template", || {
                    self.create_template(template)
                })
                .await?;
                self.record_template(template, VmPhase::Ready).await
            })
            .await?;
        Ok(())
    }

    async fn record_template(
        &self,
        template: &PlannedTemplate,
        phase: VmPhase,
    ) -> anyhow::Result<()> {
        self.record(|state| {
            state.templates.insert(
                template.name.clone(),
                TemplateRecord {
                    name: template.name.clone(),
                    vmid: template.vmid.0,
                    node: template.node.0.clone(),
                    image: template.image.clone(),
                    storage: template.storage.clone(),
                    phase,
                },
            );
        })
        .await?;
        Ok(())
    }

    /// Create the template unless it exists: one still being created (an interrupted run)
    /// is waited for through the retry; an id taken by another VM is an error.
    async fn create_template(&self, template: &PlannedTemplate) -> anyhow::Result<()> {
        let tag = cluster_tag(&self.cluster);
        if let Some(existing) = self
            .api
            .cluster_resources(Some("vm"))
            .await?
            .into_iter()
            .find(|r| r.vmid == Some(template.vmid.0))
        {
            if existing.name.as_deref() != Some(template.name.as_str())
                || !existing.tag_list().contains(&tag.as_str())
            {
                // Another cluster planned at the same moment: `up` plans again and the next
                // plan sees it (the record's id is no longer free, so a new one is taken).
                return Err(super::race::RaceError::VmidTaken {
                    vmid: template.vmid.0,
                    by: existing.name.unwrap_or_default(),
                    node: existing.node.unwrap_or_default(),
                }
                .into());
            }
            if existing.lock.is_some() {
                return Err(PveError::LockTimeout {
                    path: format!("/nodes/{}/qemu/{}", template.node, template.vmid),
                    message: "the template is still being created".to_owned(),
                }
                .into());
            }
            return Ok(());
        }
        let _storage_slot = self.storage_slot(&template.node, &template.storage).await?;
        let _node_slot = self.node_slot(&template.node).await?;
        self.mutated();
        let upid = self.api.vm_create(&template.node, &template.params).await?;
        self.wait_task(&template.node.0, &upid).await?;
        Ok(())
    }

    /// Clone `vm` from its template (a bounded few clones of one template at a time), then
    /// give it its own config; returns that config.
    pub(super) async fn clone_from_template(
        &self,
        vm: &PlannedVm,
        template: VmId,
        name: &str,
        strategy: ImageStrategy,
    ) -> anyhow::Result<Params> {
        let Some(slot) = self.templates.get(name) else {
            bail!(
                "internal: {} clones template {name}, which is not planned",
                vm.name
            );
        };
        let mut clone = Params::new();
        clone.insert("newid".into(), vm.vmid.to_string());
        clone.insert("name".into(), vm.name.clone());
        let full = strategy == ImageStrategy::FullClone;
        clone.insert("full".into(), if full { "1" } else { "0" }.into());
        if full {
            clone.insert("storage".into(), slot.template.storage.clone());
        }
        if let Some(pool) = vm.params.get("pool") {
            clone.insert("pool".into(), pool.clone());
        }
        {
            let _clone_slot = Arc::clone(&slot.clones).acquire_owned().await?;
            // A linked clone is a thin snapshot: no bytes, no load on the node worth a slot
            // the starts and creates need. A full clone copies the disk.
            let _node_slot = if full {
                Some(self.node_slot(&vm.node).await?)
            } else {
                self.check_interrupt()?;
                None
            };
            self.mutated();
            let upid = self.api.vm_clone(&vm.node, template, &clone).await?;
            self.wait_task(&vm.node.0, &upid).await?;
        }
        self.configure_clone(vm).await
    }

    /// The VM's own config on its clone (cores, memory, GPUs, cloud-init drive, NIC, tags …):
    /// only the keys that differ, and no disk it already has (an interrupted run may have
    /// applied part of it). Returns the config the VM has then, as far as the next steps read
    /// it (the disks they resize, the CD-ROM).
    pub(super) async fn configure_clone(&self, vm: &PlannedVm) -> anyhow::Result<Params> {
        let mut live = self.api.vm_config(&vm.node, vm.vmid).await?;
        let mut config = Params::new();
        for (key, value) in &vm.params {
            if key == "vmid" || key == "pool" || (is_disk_key(key) && live.contains_key(key)) {
                continue;
            }
            if !crate::plan::same_value(key, live.get(key).map(String::as_str), value) {
                config.insert(key.clone(), value.clone());
            }
        }
        if config.is_empty() {
            return Ok(live);
        }
        self.mutated();
        let upid = self.api.vm_config_post(&vm.node, vm.vmid, &config).await?;
        self.wait_task(&vm.node.0, &upid).await?;
        // Proxmox stores what was sent, except a new disk (allocated, then named and sized),
        // which the next steps read only when they resize it: then read the config again.
        if config
            .keys()
            .any(|key| vm.resize.iter().any(|resize| &resize.disk == key))
        {
            return Ok(self.api.vm_config(&vm.node, vm.vmid).await?);
        }
        live.extend(config);
        Ok(live)
    }

    /// `down`, after every VM is gone: the cluster's templates (only while they carry its
    /// tag), each then dropped from the state.
    pub(super) async fn destroy_templates(
        &self,
        templates: &[PlannedTemplate],
    ) -> anyhow::Result<Vec<String>> {
        let mut destroyed = Vec::new();
        for template in templates
            .iter()
            .filter(|t| t.action == TemplateAction::Destroy)
        {
            self.events.event(ExecEvent::Global {
                what: format!(
                    "destroy template {} (vmid {})",
                    template.name, template.vmid
                ),
            });
            self.destroy_vm_only(&template.name, &template.node, template.vmid)
                .await?;
            self.record(|state| {
                state.templates.remove(&template.name);
            })
            .await?;
            destroyed.push(template.name.clone());
        }
        Ok(destroyed)
    }
}
