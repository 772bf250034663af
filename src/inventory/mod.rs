//! Read-only observation of Proxmox: what exists before anything is planned.
//!
//! [`observe`] makes only GET requests. The result, [`Inventory`], is plain data so the planner
//! stays pure and tests can build one in code.

pub mod tags;

use std::collections::{BTreeMap, BTreeSet};

use futures::future::try_join_all;
use serde::{Deserialize, Serialize};

use crate::profile::model::{HostTopology, Profile};
use crate::pve::types::{ClusterResource, PciDevice, PciMapping, StorageStatus, StorageVolume};
use crate::pve::{NodeName, Params, PveApi, PveError, VmId};

/// Errors while observing Proxmox.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read {what} from Proxmox")]
    Read {
        what: String,
        #[source]
        source: PveError,
    },
    #[error("Proxmox node `{node}` named in proxmox.nodes does not exist (cluster has: {known})")]
    UnknownNode { node: String, known: String },
}

/// How provision authenticates, which decides how GPUs may be passed through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum AuthKind {
    /// `root@pam` with a ticket: raw `hostpciN: 0000:41:00` is accepted.
    RootTicket,
    /// Another user with a ticket: needs resource mappings.
    Ticket { user: String },
    /// An API token (`user@realm!id`): needs resource mappings; `may_create_mappings` when it
    /// holds `Mapping.Modify` on `/mapping/pci`.
    Token {
        user: String,
        may_create_mappings: bool,
    },
    /// An API token for everything, plus a `root@pam` ticket used only for requests that carry
    /// keys only root may set (`hugepages`, `affinity` …). GPUs still go through mappings.
    TokenWithRoot { user: String },
}

impl AuthKind {
    /// Raw PCI ids in `hostpciN` are accepted only from `root@pam`.
    pub fn may_use_raw_pci(&self) -> bool {
        match self {
            AuthKind::RootTicket => true,
            AuthKind::Ticket { .. } | AuthKind::Token { .. } | AuthKind::TokenWithRoot { .. } => {
                false
            }
        }
    }

    /// Keys such as `hugepages`, `keephugepages`, `affinity` need a `root@pam` ticket.
    pub fn may_set_root_only_keys(&self) -> bool {
        match self {
            AuthKind::RootTicket | AuthKind::TokenWithRoot { .. } => true,
            AuthKind::Ticket { .. } | AuthKind::Token { .. } => false,
        }
    }

    /// Privileges are checked (everything but `root@pam` with a ticket).
    pub fn is_root_ticket(&self) -> bool {
        matches!(self, AuthKind::RootTicket)
    }

    pub fn may_create_mappings(&self) -> bool {
        match self {
            AuthKind::RootTicket | AuthKind::TokenWithRoot { .. } => true,
            AuthKind::Ticket { .. } => false,
            AuthKind::Token {
                may_create_mappings,
                ..
            } => *may_create_mappings,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            AuthKind::RootTicket => "root@pam (ticket)".to_owned(),
            AuthKind::Ticket { user } => format!("{user} (ticket)"),
            AuthKind::Token { user, .. } => format!("API token {user}"),
            AuthKind::TokenWithRoot { user } => {
                format!("API token {user} (root@pam ticket for root-only keys)")
            }
        }
    }
}

/// One Proxmox node as observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInventory {
    pub name: String,
    pub online: bool,
    /// Logical CPUs.
    pub cpus: u64,
    pub memory_total: u64,
    pub memory_free: u64,
    pub pci: Vec<PciDevice>,
    pub storages: Vec<StorageStatus>,
    /// Volumes already present on the images storage (`content=import`) and the ISO storage.
    pub volumes: Vec<StorageVolume>,
}

impl NodeInventory {
    pub fn storage(&self, id: &str) -> Option<&StorageStatus> {
        self.storages.iter().find(|storage| storage.storage == id)
    }

    pub fn has_volume(&self, volid: &str) -> bool {
        self.volumes.iter().any(|volume| volume.volid == volid)
    }
}

/// A VM found on Proxmox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExistingVm {
    pub vmid: u32,
    pub node: String,
    pub name: String,
    pub tags: Vec<String>,
    /// `running` | `stopped`.
    pub status: String,
    /// A Proxmox config lock (`create`, `clone`, `migrate` …) when one is held.
    pub lock: Option<String>,
    pub template: bool,
    /// The VM's config (read only for VMs on the profile's nodes).
    pub config: Params,
}

impl ExistingVm {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|candidate| candidate == tag)
    }

    /// Whole PCI devices this VM passes through by raw id (`hostpciN: 0000:41:00…`), and the
    /// mapping ids it uses (`mapping=…`).
    pub fn hostpci(&self) -> (Vec<String>, Vec<String>) {
        let mut raw = Vec::new();
        let mut mappings = Vec::new();
        for (key, value) in &self.config {
            if !key.starts_with("hostpci") {
                continue;
            }
            for (index, part) in value.split(',').enumerate() {
                if let Some(mapping) = part.strip_prefix("mapping=") {
                    mappings.push(mapping.to_owned());
                } else if let Some(host) = part.strip_prefix("host=") {
                    raw.extend(host.split(';').map(whole_device));
                } else if index == 0 && !part.contains('=') {
                    raw.extend(part.split(';').map(whole_device));
                }
            }
        }
        (raw, mappings)
    }
}

/// `41:00.0` / `0000:41:00.0` / `0000:41:00` → `0000:41:00`.
pub fn whole_device(id: &str) -> String {
    let device = id.rsplit_once('.').map_or(id, |(device, _)| device);
    if device.matches(':').count() == 1 {
        format!("0000:{device}")
    } else {
        device.to_owned()
    }
}

/// Everything the planner needs to know about the world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub nodes: Vec<NodeInventory>,
    pub mappings: Vec<PciMapping>,
    /// Every VM and template of the Proxmox cluster (all nodes, any tag).
    pub vms: Vec<ExistingVm>,
    pub pools: Vec<String>,
    pub auth: AuthKind,
    /// Host NUMA topology per node.
    // TODO-completeness: Proxmox's API does not expose NUMA topology or free hugepages; it comes
    // from the profile's `proxmox.topology`. Reading it over SSH from the Proxmox host
    // (`/sys/devices/system/node/node*/{cpulist,hugepages}`) when a host login is configured is
    // future work.
    pub topology: Vec<HostTopology>,
}

impl Inventory {
    pub fn node(&self, name: &str) -> Option<&NodeInventory> {
        self.nodes.iter().find(|node| node.name == name)
    }

    pub fn vm(&self, vmid: u32) -> Option<&ExistingVm> {
        self.vms.iter().find(|vm| vm.vmid == vmid)
    }

    pub fn used_vmids(&self) -> BTreeSet<u32> {
        self.vms.iter().map(|vm| vm.vmid).collect()
    }

    /// VMs carrying `cluster-<name>`.
    pub fn cluster_vms<'a>(&'a self, cluster: &str) -> impl Iterator<Item = &'a ExistingVm> {
        let tag = cluster_tag(cluster);
        self.vms.iter().filter(move |vm| vm.has_tag(&tag))
    }

    /// Whole PCI devices in use, by node, with the VM using them (raw ids and mapped ids
    /// resolved through the mappings).
    pub fn used_devices(&self) -> BTreeMap<(String, String), u32> {
        let mut used = BTreeMap::new();
        for vm in &self.vms {
            let (raw, mappings) = vm.hostpci();
            for device in raw {
                used.insert((vm.node.clone(), device), vm.vmid);
            }
            for mapping_id in mappings {
                if let Some(mapping) = self.mappings.iter().find(|m| m.id == mapping_id) {
                    // A mapping with several paths on one node hands out the first free one;
                    // count the mapping's paths on this node as used only when there is one.
                    let paths: Vec<String> = mapping_paths(mapping)
                        .into_iter()
                        .filter(|(node, _)| *node == vm.node)
                        .map(|(_, path)| path)
                        .collect();
                    if let [path] = paths.as_slice() {
                        used.insert((vm.node.clone(), path.clone()), vm.vmid);
                    }
                }
            }
        }
        used
    }
}

/// The tag every VM of a cluster carries.
pub fn cluster_tag(cluster: &str) -> String {
    format!("cluster-{cluster}")
}

/// `(node, whole device)` entries of a mapping's `map` lines
/// (`node=pve1,path=0000:41:00,id=10de:20b0`; several paths are `;`-separated).
pub fn mapping_paths(mapping: &PciMapping) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    for line in &mapping.map {
        let mut node = None;
        let mut paths = Vec::new();
        for part in line.split(',') {
            if let Some(value) = part.strip_prefix("node=") {
                node = Some(value.to_owned());
            } else if let Some(value) = part.strip_prefix("path=") {
                paths.extend(value.split(';').map(whole_device));
            }
        }
        if let Some(node) = node {
            entries.extend(paths.into_iter().map(|path| (node.clone(), path)));
        }
    }
    entries
}

/// The read error for one API path.
fn read_error(what: &str) -> impl FnOnce(PveError) -> InventoryError + use<> {
    let what = what.to_owned();
    move |source| InventoryError::Read { what, source }
}

/// Observe Proxmox for `profile`: nodes, storages, PCI devices, mappings, pools and every VM
/// (configs of VMs on the profile's nodes). Only GET requests.
pub async fn observe(
    api: &dyn PveApi,
    profile: &Profile,
    auth: AuthKind,
) -> Result<Inventory, InventoryError> {
    let summaries = api.nodes().await.map_err(read_error("/nodes"))?;
    for wanted in &profile.proxmox.nodes {
        if !summaries.iter().any(|summary| &summary.node == wanted) {
            return Err(InventoryError::UnknownNode {
                node: wanted.clone(),
                known: summaries
                    .iter()
                    .map(|summary| summary.node.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let wanted_storages: BTreeSet<&str> = [
        profile.proxmox.storage.images.as_str(),
        profile.proxmox.storage.iso.as_str(),
    ]
    .into_iter()
    .collect();
    let nodes = try_join_all(profile.proxmox.nodes.iter().map(|name| {
        let summary = summaries.iter().find(|summary| &summary.node == name);
        let online = summary.is_some_and(|summary| summary.status == "online");
        observe_node(api, name, online, &wanted_storages)
    }))
    .await?;
    let mappings = api
        .pci_mappings()
        .await
        .map_err(read_error("/cluster/mapping/pci"))?;
    let pools = api
        .pools()
        .await
        .map_err(read_error("/pools"))?
        .into_iter()
        .map(|pool| pool.poolid)
        .collect();
    let resources = api
        .cluster_resources(Some("vm"))
        .await
        .map_err(read_error("/cluster/resources?type=vm"))?;
    let guests: Vec<_> = resources
        .into_iter()
        .filter(|resource| resource.kind == "qemu" || resource.kind == "lxc")
        .filter_map(|resource| resource.vmid.map(|vmid| (vmid, resource)))
        .collect();
    let vms = try_join_all(
        guests
            .into_iter()
            .map(|(vmid, resource)| observe_vm(api, profile, vmid, resource)),
    )
    .await?
    .into_iter()
    .flatten()
    .collect();
    Ok(Inventory {
        nodes,
        mappings,
        vms,
        pools,
        auth,
        topology: profile.proxmox.topology.clone(),
    })
}

/// One Proxmox node: status, PCI devices, storages and the volumes on the profile's storages.
/// An offline node is recorded with nothing else.
async fn observe_node(
    api: &dyn PveApi,
    name: &str,
    online: bool,
    wanted_storages: &BTreeSet<&str>,
) -> Result<NodeInventory, InventoryError> {
    let node = NodeName(name.to_owned());
    if !online {
        return Ok(NodeInventory {
            name: name.to_owned(),
            online,
            cpus: 0,
            memory_total: 0,
            memory_free: 0,
            pci: Vec::new(),
            storages: Vec::new(),
            volumes: Vec::new(),
        });
    }
    let (status, pci, storages) = futures::try_join!(
        async {
            api.node_status(&node)
                .await
                .map_err(read_error(&format!("/nodes/{name}/status")))
        },
        async {
            api.pci_devices(&node)
                .await
                .map_err(read_error(&format!("/nodes/{name}/hardware/pci")))
        },
        async {
            api.storages(&node)
                .await
                .map_err(read_error(&format!("/nodes/{name}/storage")))
        },
    )?;
    let mut volumes = Vec::new();
    for storage in wanted_storages {
        if storages.iter().any(|s| s.storage == *storage) {
            volumes.extend(
                api.storage_content(&node, storage, None)
                    .await
                    .map_err(read_error(&format!(
                        "/nodes/{name}/storage/{storage}/content"
                    )))?,
            );
        }
    }
    Ok(NodeInventory {
        name: name.to_owned(),
        online,
        cpus: status.cpuinfo.cpus,
        memory_total: status.memory.total,
        memory_free: status.memory.free,
        pci,
        storages,
        volumes,
    })
}

/// One guest from the cluster resource list, with its config when it is a QEMU VM (not a
/// template) on one of the profile's nodes. `None` when it was deleted in between.
async fn observe_vm(
    api: &dyn PveApi,
    profile: &Profile,
    vmid: u32,
    resource: ClusterResource,
) -> Result<Option<ExistingVm>, InventoryError> {
    let node = resource.node.clone().unwrap_or_default();
    let on_our_nodes = profile.proxmox.nodes.contains(&node);
    let template = resource.template.unwrap_or(0) == 1;
    let config = if on_our_nodes && resource.kind == "qemu" && !template {
        match api.vm_config(&NodeName(node.clone()), VmId(vmid)).await {
            Ok(config) => config,
            // Deleted between the listing and the read.
            Err(PveError::NotFound { .. }) => return Ok(None),
            Err(source) => {
                return Err(InventoryError::Read {
                    what: format!("/nodes/{node}/qemu/{vmid}/config"),
                    source,
                });
            }
        }
    } else {
        Params::new()
    };
    let tags = resource.tag_list().into_iter().map(str::to_owned).collect();
    Ok(Some(ExistingVm {
        vmid,
        node,
        name: resource.name.clone().unwrap_or_default(),
        tags,
        status: resource.status.clone().unwrap_or_default(),
        lock: resource
            .lock
            .clone()
            .or_else(|| config.get("lock").cloned()),
        template,
        config,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_device_normalizes_all_spellings() {
        assert_eq!(whole_device("41:00.0"), "0000:41:00");
        assert_eq!(whole_device("0000:41:00.1"), "0000:41:00");
        assert_eq!(whole_device("0000:41:00"), "0000:41:00");
    }

    #[test]
    fn hostpci_reads_raw_and_mapped_devices() {
        let mut config = Params::new();
        config.insert("hostpci0".into(), "0000:41:00,pcie=1".into());
        config.insert("hostpci1".into(), "host=81:00.0;81:00.1,pcie=1".into());
        config.insert("hostpci2".into(), "mapping=gpu-a,pcie=1".into());
        let vm = ExistingVm {
            vmid: 1,
            node: "pve1".into(),
            name: "x".into(),
            tags: vec![],
            status: "running".into(),
            lock: None,
            template: false,
            config,
        };
        let (raw, mappings) = vm.hostpci();
        assert_eq!(raw, vec!["0000:41:00", "0000:81:00", "0000:81:00"]);
        assert_eq!(mappings, vec!["gpu-a"]);
    }
}
