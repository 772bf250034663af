//! The NoCloud seed ISO of a VM: uploaded before create, ejected and deleted after first boot
//! (it holds the VM's private SSH host key).

use anyhow::{Context as _, anyhow};

use crate::plan::PlannedVm;
use crate::pve::types::UploadContent;
use crate::pve::{NodeName, Params, PveError, VolumeId};

use super::runner::Runner;

impl Runner {
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
        self.retrying(&vm.name, "iso", || async {
            let node = vm.node.clone();
            let present = self
                .api
                .storage_content(&node, &iso.storage, Some("iso"))
                .await?
                .iter()
                .any(|volume| volume.volid == iso.volid);
            if present {
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
            Ok(())
        })
        .await
    }
    /// The seed ISO holds the VM's private SSH host key: after first boot it is ejected and
    /// deleted from Proxmox storage.
    pub(super) async fn cleanup_seed(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        let Some(iso) = &vm.iso else {
            return Ok(());
        };
        let node = vm.node.clone();
        let config = self.api.vm_config(&node, vm.vmid).await?;
        if config
            .get("ide2")
            .is_some_and(|value| value.starts_with(&iso.volid))
        {
            let mut eject = Params::new();
            eject.insert("ide2".into(), "none,media=cdrom".into());
            self.mutated();
            self.api.vm_config_put(&node, vm.vmid, &eject).await?;
        }
        self.delete_iso(&vm.node, &iso.storage, &iso.volid).await
    }

    pub(super) async fn delete_iso(
        &self,
        node: &NodeName,
        storage: &str,
        volid: &str,
    ) -> anyhow::Result<()> {
        let present = self
            .api
            .storage_content(node, storage, Some("iso"))
            .await?
            .iter()
            .any(|volume| volume.volid == volid);
        if !present {
            return Ok(());
        }
        self.mutated();
        match self
            .api
            .delete_volume(node, &VolumeId(volid.to_owned()))
            .await
        {
            Ok(Some(upid)) => self.wait_task(&node.0, &upid).await?,
            Ok(None) | Err(PveError::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }
}
