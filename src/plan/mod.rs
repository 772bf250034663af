//! Pure planning: (profile, inventory, state) and an [`Intent`] → [`Plan`]. No IO, deterministic.
//!
//! [`plan`] is the one entry: every command states its intent and gets the actions `exec` carries
//! out. Every decision is made here (VMIDs, Proxmox node, GPUs, host cores, hugepages, the exact
//! Proxmox parameters) so that executing a plan leaves no choices. `provision plan` prints it.

mod action;
mod addresses;
mod converge;
mod diff;
mod down;
mod gpu;
mod image;
mod intent;
mod ledger;
mod numa;
mod params;
mod placement;
pub mod privileges;
mod propstrings;
mod render;
mod replace;
mod rolling;
mod template;
mod upgrade;
mod user_facing;
mod vm;
mod vm_params;
mod wanted;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::profile::model::{ImageStrategy, Role};
use crate::pve::types::PciMapping;
use crate::pve::{NodeName, Params, VmId};

pub use action::{Action, ActionKind, Resize, VmRef};
pub use down::by_tag as down_by_tag;
pub use gpu::{Rejection, candidates as gpu_candidates, is_nvidia_gpu, matches_filter};
pub use image::image_file_name;
pub use intent::{Intent, PlanInput};
pub use numa::{format_cpulist, parse_cpulist};
pub use params::{disk_size_gib, disk_storage, hostpci_targets, params_hash, same_value};
pub use render::{render_json, render_text};
pub use replace::{ReplaceSummary, describe_step, replace_steps};
pub use rolling::{RollingOptions, Wave, WaveVm, disrupts};
pub use template::{PlannedTemplate, TEMPLATE_TAG, TemplateAction, template_name};
pub use upgrade::{
    K3sUpgrade, K3sVersion, UpgradeStep, VersionError, check_cluster_upgrade, check_upgrade,
};
pub use wanted::{
    MAC_FIRST_OCTET, WantedVm, derived_mac, live_mac, wanted_vms, wanted_vms_observed,
};

/// A plan refused before anything is changed; every variant names what and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "IOMMU is off on {node} (GPU {device} has IOMMU group -1): enable intel_iommu=on (Intel) or amd_iommu=on (AMD) plus iommu=pt on the kernel command line of {node} and reboot it"
    )]
    IommuOff { node: String, device: String },
    #[error(
        "GPU {device} on {node} shares IOMMU group {group} with {others}: it cannot be passed through safely; move the card to another slot or enable ACS on that PCIe root port"
    )]
    SharedIommuGroup {
        node: String,
        device: String,
        group: i64,
        others: String,
    },
    #[error(
        "not enough GPUs for {vm} (group `{group}` wants {needed} matching {filter}): {details}"
    )]
    NotEnoughGpus {
        vm: String,
        group: String,
        needed: u32,
        filter: String,
        details: String,
    },
    #[error(
        "{auth} cannot pass raw PCI device {device} on {node}: Proxmox accepts raw hostpci ids only from root@pam; create a PCI resource mapping (Datacenter → Resource Mappings) and set gpus.mapping, or grant the token Mapping.Modify so provision creates one"
    )]
    RawPciNotAllowed {
        auth: String,
        node: String,
        device: String,
    },
    #[error(
        "PCI resource mapping `{mapping}` (group `{group}`) does not exist on this Proxmox cluster"
    )]
    UnknownMapping { group: String, mapping: String },
    #[error(
        "hugepages do not fit for {vm} on {node} NUMA node {numa}: needs {needed} × {size_mib} MiB pages, {free} free; reserve more hugepages or lower memory_mib"
    )]
    HugepagesDoNotFit {
        vm: String,
        node: String,
        numa: u32,
        needed: u64,
        size_mib: u32,
        free: u64,
    },
    #[error(
        "cores do not fit for {vm} on {node}: needs {needed} host CPUs on one NUMA node, the most free is {free}; lower cores or spread over more nodes"
    )]
    CoresDoNotFit {
        vm: String,
        node: String,
        needed: usize,
        free: usize,
    },
    #[error(
        "group `{group}` uses numa_pinning/hugepages but proxmox.topology has no entry for {node}; add [[proxmox.topology]] node = \"{node}\" with its NUMA nodes"
    )]
    MissingTopology { group: String, node: String },
    #[error(
        "cannot replace {node}: the state knows no VM of that name (known: {known}); give the name of one of the cluster's VMs"
    )]
    ReplaceUnknownNode { node: String, known: String },
    #[error(
        "cannot replace {node}: the profile no longer has it; the replacement is built from the profile (put it back, or scale down with `up`)"
    )]
    ReplaceNotInProfile { node: String },
    #[error(
        "cannot replace {node}: the cluster does not match the profile ({others}); run `provision up` first, so that only {node} changes"
    )]
    ReplacePendingChanges { node: String, others: String },
    #[error(
        "cannot replace {node}: the replacement of {other} is unfinished; run `provision replace-node {other}` again to finish it first"
    )]
    ReplaceInProgress { node: String, other: String },
    #[error("proxmox.topology for {node} has an invalid cpus list `{cpus}`")]
    BadTopology { node: String, cpus: String },
    #[error("no Proxmox node can host {vm} (group `{group}`): {details}")]
    NoNodeFits {
        vm: String,
        group: String,
        details: String,
    },
    #[error("proxmox.vmid_range {start}-{end} has no free id left for {vm}; widen the range")]
    VmidRangeExhausted { start: u32, end: u32, vm: String },
    #[error(
        "group `{group}` needs {needed} addresses but the profile gives {given}; add addresses or widen address_range"
    )]
    NotEnoughAddresses {
        group: String,
        needed: u32,
        given: usize,
    },
    #[error("group `{group}`: invalid address_range `{range}` (expected `10.0.0.21-10.0.0.29`)")]
    BadAddressRange { group: String, range: String },
    #[error(
        "there is no state for cluster {cluster}, and the VMs its tag finds on Proxmox are not all this profile's: {vms}; nothing was destroyed (a VM without the `provision` tag, or one the profile does not describe, may be another workspace's cluster of the same name); run `down` from the workspace that created them, or remove those VMs or their tag by hand"
    )]
    AmbiguousTags { cluster: String, vms: String },
    #[error(
        "{vm} would get address {address}, which {user} already uses; give group `{group}` other addresses or an address_range (clusters side by side then take free ones)"
    )]
    AddressTaken {
        vm: String,
        group: String,
        address: IpAddr,
        user: String,
    },
    #[error(
        "image volume `{volume}` is not on {node} (storage not shared); import it there or use image.url"
    )]
    ImageMissing { volume: String, node: String },
    #[error("template VM {vmid} (image.template_vmid) does not exist")]
    TemplateMissing { vmid: u32 },
    #[error(
        "VM {vmid} on {node} is named `{name}` and carries tag {tag}, but the state file does not know it; another workspace may own it. Remove the tag or the VM, or re-run from that workspace"
    )]
    ForeignClusterVm {
        vmid: u32,
        node: String,
        name: String,
        tag: String,
    },
    #[error(
        "image.strategy = \"linked-clone\" needs a storage that makes linked clones, but storage `{storage}` on {node} is `{kind}`; use an lvmthin, zfspool, rbd or directory storage for proxmox.storage.disks, or strategy = \"full-clone\""
    )]
    StorageCannotLink {
        storage: String,
        kind: String,
        node: String,
    },
    #[error("storage `{storage}` is not available on {node}")]
    StorageMissing { storage: String, node: String },
    #[error(
        "memory does not fit for {vm} on {node}: needs {needed_mib} MiB more, the node has {free_mib} MiB free and {planned_mib} MiB already planned for other VMs; lower memory_mib, stop other VMs or spread over more nodes"
    )]
    MemoryDoesNotFit {
        vm: String,
        node: String,
        needed_mib: u64,
        free_mib: u64,
        planned_mib: u64,
    },
    #[error(
        "{vm} wants {needed} vCPUs but {node} has only {cpus} logical CPUs (Proxmox refuses to start it); lower cores/sockets"
    )]
    TooManyVcpus {
        vm: String,
        node: String,
        needed: u64,
        cpus: u64,
    },
    #[error(
        "{auth} cannot set keys only root@pam may set (Proxmox: \"only root can set 'KEY' config\"): {vms}; {remedy}",
        remedy = crate::pve::privileges::ROOT_ONLY_REMEDY
    )]
    RootOnlyKeys { auth: String, vms: String },
    #[error(
        "node_groups[{group}].count: scaling the servers down from {from} to {to} leaves an even number, and etcd with {to} members tolerates no more failures than with {lower}; use an odd count",
        lower = to.saturating_sub(1)
    )]
    EvenServerScaleDown { from: u32, to: u32, group: usize },
    #[error(
        "node_groups[{group}].count: scaling the servers down from {from} to 1 ends high availability (one server, no etcd quorum to lose); pass --force to do it anyway"
    )]
    SingleServerScaleDown { from: u32, group: usize },
    #[error("{0}")]
    K3sVersion(#[from] VersionError),
}

/// Where a VM's OS disk comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ImageSource {
    /// Imported from a volume (`import-from=`), downloaded first when `download` is set.
    Import { volid: String },
    /// Full clone of a template VM, then reconfigured.
    Clone {
        template: VmId,
        template_node: NodeName,
    },
    /// Clone (linked or full, per `image.strategy`) of the cluster's own template of the image
    /// on the VM's node ([`PlannedTemplate`]), then reconfigured.
    Template {
        template: VmId,
        name: String,
        strategy: ImageStrategy,
    },
}

/// A cloud image download (`download-url`, content `import`) on one node/storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageDownload {
    pub node: NodeName,
    pub storage: String,
    pub volid: String,
    pub params: Params,
}

/// The cloud-init ISO of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IsoUpload {
    pub storage: String,
    pub file_name: String,
    pub volid: String,
}

/// The desired end state of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedVm {
    pub name: String,
    pub group: String,
    pub role: Role,
    /// 1-based index in its group.
    pub index: u32,
    pub vmid: VmId,
    pub node: NodeName,
    pub address: IpAddr,
    pub prefix_len: u8,
    /// MAC of `net0` (see [`derived_mac`]); the NoCloud network-config matches the interface by it.
    pub mac: String,
    /// Whole PCI devices passed through (`0000:41:00`).
    pub gpus: Vec<String>,
    /// Create parameters (`POST /nodes/{node}/qemu`, `vmid` included).
    pub params: Params,
    pub resize: Vec<Resize>,
    pub image: ImageSource,
    pub iso: Option<IsoUpload>,
    /// The download (node, storage) whose image this VM's create imports, if one is planned.
    #[serde(skip)]
    pub image_download: Option<(NodeName, String)>,
    /// Already exists on Proxmox and is kept (possibly updated).
    pub exists: bool,
    /// Exists, kept, and nothing to do except maybe recording it in the state.
    pub converged: bool,
}

/// A VM the state records that is no longer this cluster's on Proxmox (gone, renamed or
/// untagged): dropped from the state, only its seed ISO deleted ([`Intent::Down`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forget {
    pub vm: String,
    pub vmid: VmId,
    /// The node the state recorded (where its seed ISO was uploaded).
    pub node: NodeName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iso: Option<String>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// What the plan was made for.
    #[serde(skip)]
    pub intent: Intent,
    pub cluster: String,
    pub vms: Vec<PlannedVm>,
    pub actions: Vec<Action>,
    /// State records to drop without touching their VM ([`Intent::Down`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forget: Vec<Forget>,
    pub downloads: Vec<ImageDownload>,
    /// How VMs get their OS disk (`image.strategy`); shown when it is not `import`.
    #[serde(skip_serializing_if = "ImageStrategy::is_import")]
    pub strategy: ImageStrategy,
    /// The templates the clone strategies build, keep or (`down`) destroy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<PlannedTemplate>,
    /// PCI resource mappings to create before the VMs.
    pub mappings: Vec<PciMapping>,
    /// A pool to create (`proxmox.pool` missing).
    pub pool: Option<String>,
    /// VMs found on Proxmox (tagged, matching a planned name) that the state does not know.
    pub adopt: Vec<String>,
    pub warnings: Vec<String>,
    /// Storages Proxmox reports as shared (one storage for the whole cluster); any other storage
    /// is a separate one on each node. Bounds concurrent disk allocations in `exec`.
    #[serde(skip)]
    pub shared_storages: BTreeSet<String>,
    /// The disruptive actions in waves (see [`Wave`]); empty when nothing running is disrupted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rolling: Vec<Wave>,
    /// A `cluster.k3s_version` change on the running cluster, rolled in phase 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<K3sUpgrade>,
    /// The k3s/etcd steps around the VM ([`Intent::ReplaceNode`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace: Option<ReplaceSummary>,
}

impl Plan {
    /// The wave of a disruptive action on `vm` (1-based), if it has one.
    pub fn wave_of(&self, vm: &str) -> Option<u32> {
        self.rolling
            .iter()
            .find(|wave| wave.vms.iter().any(|member| member.vm == vm))
            .map(|wave| wave.number)
    }

    /// Nothing on Proxmox changes when this plan runs.
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty()
            && self.downloads.is_empty()
            && self
                .templates
                .iter()
                .all(|t| t.action == TemplateAction::Keep)
            && self.mappings.is_empty()
            && self.pool.is_none()
    }

    /// Running this plan changes something: Proxmox, the records a down plan forgets, or the
    /// k3s version of the running cluster.
    pub fn has_changes(&self) -> bool {
        !self.is_noop() || !self.forget.is_empty() || self.upgrade.is_some()
    }

    pub fn count(&self, kind: ActionKind) -> usize {
        self.actions.iter().filter(|a| a.kind() == kind).count()
    }

    pub fn vm(&self, name: &str) -> Option<&PlannedVm> {
        self.vms.iter().find(|vm| vm.name == name)
    }
}

/// Inputs that are neither profile nor observation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanContext {
    /// Named in each VM's description.
    pub workspace: String,
    /// Public key for Proxmox's built-in cloud-init drive (`cloud_init = "proxmox"`).
    pub ssh_public_key: Option<String>,
    /// NoCloud seed ISO file name per VM name (it hashes the seed content, see
    /// `cloudinit::iso_file_name`); VMs not listed get `provision-<cluster>-<vm>.iso`.
    pub iso_files: BTreeMap<String, String>,
    /// How disruptions of running VMs roll.
    pub rolling: RollingOptions,
    /// Now, in seconds since the Unix epoch: the creation time a new cluster's VMs are tagged
    /// with (an existing cluster keeps the time its VMs carry).
    pub now: u64,
}

/// Plan `intent` against what the input's inventory shows and its state remembers.
pub fn plan(input: &PlanInput<'_>, intent: Intent) -> Result<Plan, PlanError> {
    match intent {
        Intent::Converge => converge::converge(input),
        Intent::Down => down::plan_down(input),
        Intent::ReplaceNode { node } => replace::plan_replace(input, &node),
    }
}

#[cfg(test)]
mod tests;
