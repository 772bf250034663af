//! The NoCloud seed ISO of a VM: uploaded before create, ejected and deleted after first boot
//! (it holds the VM's private SSH host key).
//!
//! Which volumes a storage holds is read once per node and storage per run ([`KnownVolumes`]:
//! the seed ISOs, and the cloud image a download checks for), then kept up to date by this
//! run's own uploads, downloads and deletes: the seed ISOs' names carry the cluster, the VM and
//! a hash of the content, so no other run changes them while the state is locked. A step that
//! failed and is retried lists the storage again before acting.

use std::collections::BTreeSet;

use anyhow::{Context as _, anyhow};

use crate::plan::PlannedVm;
use crate::pve::types::UploadContent;
use crate::pve::{NodeName, Params, PveError, VolumeId};

use super::runner::Runner;

/// The volumes of one storage as seen from one node: `None` until listed.
pub(super) type KnownVolumes = tokio::sync::Mutex<Option<BTreeSet<String>>>;

/// A delete of a volume that is already gone: Proxmox answers 500 `volume 'V' does not exist`.
fn is_gone(error: &PveError) -> bool {
    match error {
        PveError::NotFound { .. } => true,
        PveError::Server { message, .. } => message.contains("does not exist"),
        PveError::NeverSent { .. }
        | PveError::OutcomeUnknown { .. }
        | PveError::FingerprintMismatch { .. }
        | PveError::Unauthorized { .. }
        | PveError::Forbidden { .. }
        | PveError::BadRequest { .. }
        | PveError::LockTimeout { .. }
        | PveError::TaskFailed { .. }
        | PveError::Timeout { .. }
        | PveError::Decode { .. }
        | PveError::Config { .. } => false,
    }
}

impl Runner {
    /// Whether `volid` is on `storage` of `node`: from this run's one listing of it (`reread`
    /// lists it again, for a step that failed and may have half-happened).
    pub(super) async fn volume_present(
        &self,
        node: &NodeName,
        storage: &str,
        volid: &str,
        reread: bool,
    ) -> Result<bool, PveError> {
        let volumes = self.known_volumes(node, storage);
        let mut volumes = volumes.lock().await;
        if volumes.is_none() || reread {
            let listed = self
                .api
                .storage_content(node, storage, None)
                .await?
                .into_iter()
                .map(|volume| volume.volid)
                .collect();
            *volumes = Some(listed);
        }
        Ok(volumes
            .as_ref()
            .is_some_and(|listed| listed.contains(volid)))
    }

    /// Record that this run uploaded or downloaded (`present`) or deleted `volid`.
    pub(super) async fn volume_changed(
        &self,
        node: &NodeName,
        storage: &str,
        volid: &str,
        present: bool,
    ) {
        let volumes = self.known_volumes(node, storage);
        let mut volumes = volumes.lock().await;
        if let Some(listed) = volumes.as_mut() {
            if present {
                listed.insert(volid.to_owned());
            } else {
                listed.remove(volid);
            }
        }
    }

    pub(super) async fn ensure_iso(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        let Some(iso) = &vm.iso else {
            return Ok(());
        };
        self.step(&vm.name, "iso");
        let seeds = self
            .seeds
            .as_ref()
            .ok_or_else(|| anyhow!("internal: this run has no seeds, yet {} needs one", vm.name))?;
        let bytes = seeds
            .iso(vm)
            .with_context(|| format!("building the cloud-init seed of {}", vm.name))?;
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let first = std::sync::atomic::AtomicBool::new(true);
        self.retrying(&vm.name, "iso", || async {
            let node = vm.node.clone();
            let reread = !first.swap(false, std::sync::atomic::Ordering::SeqCst);
            if self
                .volume_present(&node, &iso.storage, &iso.volid, reread)
                .await?
            {
                return Ok(());
            }
            let _slot = self.node_slot(&vm.node).await?;
            self.mutated();
            let upid = self
                .api
                .upload(
                    &node,
                    &iso.storage,
                    UploadContent::Iso,
                    &iso.file_name,
                    bytes.clone(),
                    &sha256,
                )
                .await?;
            self.wait_task(&vm.node.0, &upid).await?;
            self.volume_changed(&node, &iso.storage, &iso.volid, true)
                .await;
            Ok(())
        })
        .await
    }
    /// The seed ISO holds the VM's private SSH host key: after first boot it is ejected and
    /// deleted from Proxmox storage.
    /// `known`: the VM's config as an earlier step of this attempt saw it (`None`: read it, and
    /// list the storage again).
    pub(super) async fn cleanup_seed(
        &self,
        vm: &PlannedVm,
        known: Option<Params>,
    ) -> anyhow::Result<()> {
        let Some(iso) = &vm.iso else {
            return Ok(());
        };
        let node = vm.node.clone();
        let reread = known.is_none();
        let config = match known {
            Some(config) => config,
            None => self.api.vm_config(&node, vm.vmid).await?,
        };
        if config
            .get("ide2")
            .is_some_and(|value| value.starts_with(&iso.volid))
        {
            let mut eject = Params::new();
            eject.insert("ide2".into(), "none,media=cdrom".into());
            self.mutated();
            self.api.vm_config_put(&node, vm.vmid, &eject).await?;
        }
        self.delete_iso(&vm.node, &iso.storage, &iso.volid, reread)
            .await
    }

    /// Delete `volid` unless this run knows it is gone (`reread`: list the storage again
    /// first).
    pub(super) async fn delete_iso(
        &self,
        node: &NodeName,
        storage: &str,
        volid: &str,
        reread: bool,
    ) -> anyhow::Result<()> {
        if !self.volume_present(node, storage, volid, reread).await? {
            return Ok(());
        }
        self.mutated();
        match self
            .api
            .delete_volume(node, &VolumeId(volid.to_owned()))
            .await
        {
            Ok(Some(upid)) => self.wait_task(&node.0, &upid).await?,
            Ok(None) => {}
            Err(error) if is_gone(&error) => {}
            Err(error) => return Err(error.into()),
        }
        self.volume_changed(node, storage, volid, false).await;
        Ok(())
    }
}
