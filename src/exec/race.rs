//! Clusters created side by side on one Proxmox: two planners that looked at the same moment
//! may pick the same VMID or address. Proxmox makes a VMID unique (a create of a taken one
//! fails); an address is made unique here, right after the VM is created and before it ever
//! boots: when another provision cluster's VM carries the same address tag, this run gives its
//! new VM up (purges it) and `up` plans again, now seeing the other VM. Whichever of two racing
//! checks runs last sees both VMs, so two clusters never keep one address; both giving up is
//! resolved by the jittered retry in `up`. The checks of VMs created at about the same moment
//! share one listing, as long as it was sent after each of them asked.

use std::sync::Arc;

use anyhow::Context as _;

use crate::inventory::tags::VmTags;
use crate::plan::PlannedVm;
use crate::pve::PveError;
use crate::pve::types::ClusterResource;

use super::runner::Runner;

/// Another cluster took what this run planned: planning again resolves it.
#[derive(Debug, thiserror::Error)]
pub enum RaceError {
    #[error("VMID {vmid} was taken by `{by}` on {node} (not this cluster's) after the plan")]
    VmidTaken { vmid: u32, by: String, node: String },
    #[error(
        "address {address} of {vm} was taken by `{by}` (VMID {vmid}, cluster {cluster}) at the same time; {vm} was purged before it booted"
    )]
    AddressTaken {
        vm: String,
        address: std::net::IpAddr,
        by: String,
        vmid: u32,
        cluster: String,
    },
}

/// Whether `error` is a [`RaceError`] (anywhere in its chain).
pub fn is_race(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<RaceError>())
}

/// The last listing of the cluster's VMs and when it was sent.
pub(super) type SharedListing =
    tokio::sync::Mutex<Option<(tokio::time::Instant, Arc<Vec<ClusterResource>>)>>;

impl Runner {
    /// The cluster's VMs as listed by a request sent at `asked` or later: the one a concurrent
    /// caller is already waiting for when it qualifies, else a new one.
    async fn resources_since(
        &self,
        asked: tokio::time::Instant,
    ) -> Result<Arc<Vec<ClusterResource>>, PveError> {
        let mut last = self.vm_listing.lock().await;
        if let Some((sent, listing)) = last.as_ref()
            && *sent >= asked
        {
            return Ok(Arc::clone(listing));
        }
        let sent = tokio::time::Instant::now();
        let listing = Arc::new(self.api.cluster_resources(Some("vm")).await?);
        *last = Some((sent, Arc::clone(&listing)));
        Ok(listing)
    }

    /// After `vm` was created (not yet started): give it up when another provision cluster's
    /// VM carries the same address tag.
    pub(super) async fn claim_address(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        let resources = self
            .resources_since(tokio::time::Instant::now())
            .await
            .context("listing VMs to check the address")?;
        let rival = resources.iter().cloned().find_map(|resource| {
            let tags = VmTags::read(resource.tag_list());
            let cluster = tags.provision_cluster()?.to_owned();
            (resource.vmid != Some(vm.vmid.0)
                && tags.address == Some(vm.address)
                && cluster != self.cluster)
                .then_some((resource, cluster))
        });
        let Some((rival, cluster)) = rival else {
            return Ok(());
        };
        self.destroy_vm_only(&vm.name, &vm.node, vm.vmid).await?;
        {
            self.record(|state| {
                state.vms.remove(&vm.name);
            })
            .await?;
        }
        Err(RaceError::AddressTaken {
            vm: vm.name.clone(),
            address: vm.address,
            by: rival.name.unwrap_or_default(),
            vmid: rival.vmid.unwrap_or_default(),
            cluster,
        }
        .into())
    }
}
