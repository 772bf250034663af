//! `list` and `gc`: every provision cluster on the Proxmox, found by its VMs' tags alone (no
//! workspace state), and the destruction of the expired or old ones.
//!
//! Only VMs carrying both `provision` and a cluster tag are ever listed or touched; a cluster
//! is destroyed through the same down plan and steps as `down` (hard stop, then purge, each
//! only while the VM still carries the cluster's tag), so a dry run lists exactly what a real
//! run deletes.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;

use crate::inventory::ExistingVm;
use crate::inventory::tags::VmTags;
use crate::plan::{Action, Plan};
use crate::profile::model::Role;
use crate::pve::{Params, PveApi, PveError};
use crate::state::{StateStore, VmPhase, VmRecord};

use super::{DestroyReport, ExecOptions, ProgressSink};

/// One VM of a tagged cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaggedVm {
    pub name: String,
    pub vmid: u32,
    pub node: String,
    /// `running`, `stopped` …
    pub status: String,
}

/// A provision cluster as its VMs' tags describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaggedCluster {
    pub name: String,
    pub vms: Vec<TaggedVm>,
    /// Unix seconds (the earliest `provision-created-…` of its VMs), if tagged.
    pub created: Option<u64>,
    /// Unix seconds (the earliest `provision-exp-…`), when it has a TTL.
    pub expires: Option<u64>,
}

impl TaggedCluster {
    /// `running` (every VM), `stopped` (none), else `partial`.
    pub fn state(&self) -> &'static str {
        let running = self.vms.iter().filter(|vm| vm.status == "running").count();
        match running {
            0 => "stopped",
            n if n == self.vms.len() => "running",
            _ => "partial",
        }
    }

    pub fn expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|expires| expires <= now)
    }

    /// Created at least `age` seconds before `now`.
    pub fn older_than(&self, now: u64, age: u64) -> bool {
        self.created
            .is_some_and(|created| now.saturating_sub(created) >= age)
    }
}

/// Every provision cluster visible to these credentials, by name.
pub async fn tagged_clusters(api: &dyn PveApi) -> anyhow::Result<Vec<TaggedCluster>> {
    let resources = api
        .cluster_resources(Some("vm"))
        .await
        .context("listing the VMs of the Proxmox cluster")?;
    let mut clusters: BTreeMap<String, TaggedCluster> = BTreeMap::new();
    for resource in resources {
        let (Some(vmid), false) = (resource.vmid, resource.template.unwrap_or(0) == 1) else {
            continue;
        };
        let tags = VmTags::read(resource.tag_list());
        let Some(name) = tags.provision_cluster() else {
            continue;
        };
        let cluster = clusters
            .entry(name.to_owned())
            .or_insert_with(|| TaggedCluster {
                name: name.to_owned(),
                vms: Vec::new(),
                created: None,
                expires: None,
            });
        cluster.created = min_some(cluster.created, tags.created);
        cluster.expires = min_some(cluster.expires, tags.expires);
        cluster.vms.push(TaggedVm {
            name: resource.name.clone().unwrap_or_default(),
            vmid,
            node: resource.node.clone().unwrap_or_default(),
            status: resource.status.clone().unwrap_or_default(),
        });
    }
    let mut clusters: Vec<TaggedCluster> = clusters.into_values().collect();
    for cluster in &mut clusters {
        cluster.vms.sort_by_key(|vm| vm.vmid);
    }
    Ok(clusters)
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Which clusters `gc` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSelection {
    /// Clusters whose expiry tag is in the past.
    pub expired: bool,
    /// Clusters created at least this many seconds ago.
    pub older_than: Option<u64>,
}

impl GcSelection {
    /// Why `cluster` goes (`expired`, `older than …`), or `None` when it stays.
    pub fn reason(&self, cluster: &TaggedCluster, now: u64) -> Option<&'static str> {
        if self.expired && cluster.expired(now) {
            return Some("expired");
        }
        match self.older_than {
            Some(age) if cluster.older_than(now, age) => Some("older than --older-than"),
            Some(_) | None => None,
        }
    }
}

/// Destroys one tagged cluster's VMs (hard stop, then purge; each only while it still carries
/// the cluster's tag). No workspace state is read or written: the run keeps its bookkeeping in
/// a scratch state that is dropped afterwards.
pub async fn destroy_tagged(
    api: Arc<dyn PveApi>,
    cluster: &TaggedCluster,
    events: Arc<dyn ProgressSink>,
    options: ExecOptions,
) -> anyhow::Result<DestroyReport> {
    let vms: Vec<ExistingVm> = cluster
        .vms
        .iter()
        .map(|vm| ExistingVm {
            vmid: vm.vmid,
            node: vm.node.clone(),
            name: vm.name.clone(),
            tags: Vec::new(),
            status: vm.status.clone(),
            lock: None,
            template: false,
            config: Params::new(),
        })
        .collect();
    let plan = crate::plan::down_by_tag(&cluster.name, &vms.iter().collect::<Vec<_>>());
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let mut store = StateStore::open(scratch.path(), "gc")?;
    record_found(api.as_ref(), &plan, &mut store).await?;
    let (report, _store) = super::destroy(api, &plan, store, events, options).await?;
    Ok(report)
}

/// Records the VMs a by-tag down plan destroys in `store`, each with the seed ISO its config
/// still mounts (a VM that never got ready keeps it, and it holds the VM's SSH host keys), so
/// that `destroy` removes those ISOs as it does for VMs it created: only ISOs named like
/// provision's seeds for this cluster (`provision-<cluster>-<vm>-…`).
pub async fn record_found(
    api: &dyn PveApi,
    plan: &Plan,
    store: &mut StateStore,
) -> anyhow::Result<()> {
    for action in &plan.actions {
        let Action::Destroy { target } = action else {
            continue;
        };
        let config = match api.vm_config(&target.node, target.vmid).await {
            Ok(config) => config,
            Err(PveError::NotFound { .. }) => continue,
            Err(error) => {
                return Err(error).context(format!("reading the config of {}", target.name));
            }
        };
        let iso = config
            .iter()
            .filter(|(key, _)| key.starts_with("ide") || key.starts_with("sata"))
            .filter_map(|(_, value)| value.split(',').next())
            .find(|volid| {
                volid.split_once(":iso/").is_some_and(|(_, file)| {
                    crate::cloudinit::is_seed_iso_of(&plan.cluster, &target.name, file)
                })
            })
            .map(str::to_owned);
        let tags = VmTags::read(config.get("tags").map_or("", String::as_str).split(';'));
        let role = if config
            .get("tags")
            .is_some_and(|tags| tags.split(';').any(|tag| tag == "role-server"))
        {
            Role::Server
        } else {
            Role::Agent
        };
        let record = VmRecord {
            name: target.name.clone(),
            vmid: target.vmid.0,
            node: target.node.0.clone(),
            group: String::new(),
            role,
            phase: VmPhase::Created,
            params_hash: String::new(),
            address: tags.address.map(|address| address.to_string()),
            gpus: Vec::new(),
            iso,
        };
        store.update(|state| {
            state.cluster.clone_from(&plan.cluster);
            state.vms.insert(record.name.clone(), record);
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(created: Option<u64>, expires: Option<u64>) -> TaggedCluster {
        TaggedCluster {
            name: "ci-1".to_owned(),
            vms: vec![TaggedVm {
                name: "ci-1-server-1".to_owned(),
                vmid: 100,
                node: "pve".to_owned(),
                status: "running".to_owned(),
            }],
            created,
            expires,
        }
    }

    #[test]
    fn selection_by_expiry_and_age() {
        let expired = GcSelection {
            expired: true,
            older_than: None,
        };
        assert_eq!(
            expired.reason(&cluster(Some(0), Some(100)), 100),
            Some("expired")
        );
        assert_eq!(expired.reason(&cluster(Some(0), Some(101)), 100), None);
        assert_eq!(expired.reason(&cluster(Some(0), None), 100), None);
        let old = GcSelection {
            expired: false,
            older_than: Some(3600),
        };
        assert!(old.reason(&cluster(Some(0), None), 3600).is_some());
        assert!(old.reason(&cluster(Some(1), None), 3600).is_none());
        assert!(old.reason(&cluster(None, None), 1_000_000).is_none());
        assert_eq!(cluster(None, None).state(), "running");
    }
}
