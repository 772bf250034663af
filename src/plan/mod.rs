//! Pure planning: (profile, inventory, state) and an [`Intent`] → [`Plan`]. No IO, deterministic.
//!
//! [`plan`] is the one entry: every command states its intent and gets the actions `exec` carries
//! out. Every decision is made here (VMIDs, Proxmox node, GPUs, host cores, hugepages, the exact
//! Proxmox parameters) so that executing a plan leaves no choices. `provision plan` prints it.

mod down;
mod gpu;
mod intent;
mod numa;
mod params;
pub mod privileges;
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::inventory::{AuthKind, ExistingVm, Inventory, cluster_tag, mapping_paths};
use crate::profile::model::{Bios, CloudInitMode, NodeGroup, Placement, Profile, Role};
use crate::pve::Params;
use crate::pve::types::PciMapping;
use crate::state::{State, VmPhase};

pub use gpu::{Rejection, candidates as gpu_candidates, is_nvidia_gpu, matches_filter};
pub use intent::{Intent, PlanInput};
pub use numa::{format_cpulist, parse_cpulist};
pub use params::{disk_size_gib, disk_storage, hostpci_targets, params_hash, same_value};
pub use render::{render_json, render_text};

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
}

/// What the plan does to one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    Create,
    Update,
    Replace,
    Destroy,
}

impl ActionKind {
    pub fn symbol(self) -> &'static str {
        match self {
            ActionKind::Create => "+",
            ActionKind::Update => "~",
            ActionKind::Replace => "-/+",
            ActionKind::Destroy => "-",
        }
    }
}

impl Action {
    /// Whether the action removes a VM first (destroy, or the destroy half of a replace).
    pub fn removes_vm(&self) -> bool {
        matches!(self.action, ActionKind::Destroy | ActionKind::Replace)
    }
}

/// A disk to grow after create (`PUT …/resize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resize {
    pub disk: String,
    /// Proxmox size string (`64G`).
    pub size: String,
}

/// One line of the diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    pub action: ActionKind,
    pub vm: String,
    pub node: String,
    pub vmid: u32,
    /// Exactly what is sent: create parameters (`POST /nodes/{node}/qemu`) for create and
    /// replace, the changed keys (`PUT …/config`) for update, nothing for destroy.
    pub params: Params,
    /// Keys removed from the config (update only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resize: Vec<Resize>,
    /// Why (replace, repair, resume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the update needs a restart to take effect (non-metadata keys on a running VM).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub restart: bool,
    /// VMs whose removal (destroy, or the destroy half of a replace) must finish before this
    /// VM is created: it may get GPUs, host cores, hugepages or memory they release.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

/// Where a VM's OS disk comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ImageSource {
    /// Imported from a volume (`import-from=`), downloaded first when `download` is set.
    Import { volid: String },
    /// Full clone of a template VM, then reconfigured.
    Clone {
        template: u32,
        template_node: String,
    },
}

/// A cloud image download (`download-url`, content `import`) on one node/storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageDownload {
    pub node: String,
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
    pub vmid: u32,
    pub node: String,
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
    pub image_download: Option<(String, String)>,
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
    pub vmid: u32,
    /// The node the state recorded (where its seed ISO was uploaded).
    pub node: String,
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
}

impl Plan {
    /// Nothing on Proxmox changes when this plan runs.
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty()
            && self.downloads.is_empty()
            && self.mappings.is_empty()
            && self.pool.is_none()
    }

    pub fn count(&self, kind: ActionKind) -> usize {
        self.actions.iter().filter(|a| a.action == kind).count()
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
}

/// A VM the profile asks for (names and addresses decided, placement not yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WantedVm {
    pub name: String,
    pub group: String,
    pub role: Role,
    pub index: u32,
    pub address: IpAddr,
    pub prefix_len: u8,
    /// `net0`'s MAC, as [`plan`] decides it for the same inventory and state.
    pub mac: String,
}

/// The VMs `profile` describes, in plan order, as if none existed yet (every MAC derived).
pub fn wanted_vms(profile: &Profile) -> Result<Vec<WantedVm>, PlanError> {
    let wanted = expand(profile)?;
    wanted_from(profile, wanted, &BTreeMap::new())
}

/// The VMs `profile` describes, in plan order, with the MACs [`plan`] gives them for this inventory and
/// state (existing VMs keep their live MAC): for preparing seeds before planning.
pub fn wanted_vms_observed(
    profile: &Profile,
    inventory: &Inventory,
    state: &State,
) -> Result<Vec<WantedVm>, PlanError> {
    let wanted = expand(profile)?;
    let existing_for = existing_vms(profile, &wanted, inventory, state);
    wanted_from(profile, wanted, &existing_for)
}

fn wanted_from(
    profile: &Profile,
    wanted: Vec<Wanted<'_>>,
    existing_for: &BTreeMap<String, &ExistingVm>,
) -> Result<Vec<WantedVm>, PlanError> {
    let mut macs = assign_macs(&profile.cluster.name, &wanted, existing_for);
    Ok(wanted
        .into_iter()
        .map(|want| WantedVm {
            mac: macs.remove(&want.name).unwrap_or_default(),
            name: want.name,
            group: want.group.name.clone(),
            role: want.group.role,
            index: want.index,
            address: want.address,
            prefix_len: profile.network.cidr.prefix(),
        })
        .collect())
}

/// The existing VM (if any) each wanted VM is: the state's VMID when it still carries the name and the
/// cluster tag, else a VM of the cluster with that name.
fn existing_vms<'i>(
    profile: &Profile,
    wanted: &[Wanted<'_>],
    inventory: &'i Inventory,
    state: &State,
) -> BTreeMap<String, &'i ExistingVm> {
    let cluster = &profile.cluster.name;
    let tag = cluster_tag(cluster);
    let mut existing_for = BTreeMap::new();
    for want in wanted {
        let from_state = state.vms.get(&want.name).and_then(|record| {
            inventory
                .vm(record.vmid)
                .filter(|vm| vm.name == want.name && vm.has_tag(&tag))
        });
        let found = from_state.or_else(|| {
            inventory
                .cluster_vms(cluster)
                .find(|vm| vm.name == want.name && !vm.template)
        });
        if let Some(vm) = found {
            existing_for.insert(want.name.clone(), vm);
        }
    }
    existing_for
}

/// First octet of the MACs provision derives: locally administered (bit 1) and unicast (bit 0 clear), so
/// they can never be a vendor's address, nor Proxmox's own random ones (`BC:24:11`, Proxmox's OUI).
pub const MAC_FIRST_OCTET: u8 = 0x02;

/// The MAC derived for `vm` of `cluster` (attempt 0; a later attempt only after a collision):
/// `02:` + 5 bytes of SHA-256 over cluster and VM name, upper-case as Proxmox writes MACs.
pub fn derived_mac(cluster: &str, vm: &str, attempt: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"provision-mac\0");
    hasher.update(cluster.as_bytes());
    hasher.update([0]);
    hasher.update(vm.as_bytes());
    if attempt > 0 {
        hasher.update([0]);
        hasher.update(attempt.to_be_bytes());
    }
    let digest = hasher.finalize();
    let mut octets = vec![MAC_FIRST_OCTET];
    octets.extend_from_slice(&digest[..5]);
    octets
        .iter()
        .map(|octet| format!("{octet:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC in a live `net0` (`virtio=BC:24:11:…,bridge=…` or `macaddr=…`), upper-case.
pub fn live_mac(net0: &str) -> Option<String> {
    net0.split(',').find_map(|part| {
        let (key, value) = part.split_once('=')?;
        let is_mac = value.len() == 17
            && value
                .split(':')
                .all(|octet| octet.len() == 2 && octet.bytes().all(|b| b.is_ascii_hexdigit()));
        (matches!(key, "virtio" | "e1000" | "vmxnet3" | "rtl8139" | "macaddr") && is_mac)
            .then(|| value.to_ascii_uppercase())
    })
}

/// Every wanted VM's `net0` MAC. A VM that exists keeps the MAC its live config has (changing it would
/// rename the guest's interface under its network config, and is no reason to replace a VM); every
/// other VM gets [`derived_mac`], deterministic across runs, re-derived on the rare collision with a MAC
/// already taken in the cluster.
fn assign_macs(
    cluster: &str,
    wanted: &[Wanted<'_>],
    existing_for: &BTreeMap<String, &ExistingVm>,
) -> BTreeMap<String, String> {
    let mut macs = BTreeMap::new();
    for want in wanted {
        if let Some(mac) = existing_for
            .get(&want.name)
            .and_then(|vm| vm.config.get("net0"))
            .and_then(|net0| live_mac(net0))
        {
            macs.insert(want.name.clone(), mac);
        }
    }
    for want in wanted {
        if macs.contains_key(&want.name) {
            continue;
        }
        let mac = (0..)
            .map(|attempt| derived_mac(cluster, &want.name, attempt))
            .find(|mac| !macs.values().any(|taken| taken == mac))
            .unwrap_or_default();
        macs.insert(want.name.clone(), mac);
    }
    macs
}

/// One VM the profile asks for, before placement.
struct Wanted<'a> {
    group: &'a NodeGroup,
    index: u32,
    name: String,
    address: IpAddr,
}

fn expand(profile: &Profile) -> Result<Vec<Wanted<'_>>, PlanError> {
    let mut wanted = Vec::new();
    for group in &profile.node_groups {
        let addresses = group_addresses(group)?;
        if addresses.len() < group.count as usize {
            return Err(PlanError::NotEnoughAddresses {
                group: group.name.clone(),
                needed: group.count,
                given: addresses.len(),
            });
        }
        for index in 1..=group.count {
            wanted.push(Wanted {
                group,
                index,
                name: group
                    .name_pattern
                    .replace("{cluster}", &profile.cluster.name)
                    .replace("{group}", &group.name)
                    .replace("{index}", &index.to_string()),
                address: addresses[(index - 1) as usize],
            });
        }
    }
    Ok(wanted)
}

fn group_addresses(group: &NodeGroup) -> Result<Vec<IpAddr>, PlanError> {
    if !group.addresses.is_empty() {
        return Ok(group.addresses.clone());
    }
    let Some(range) = &group.address_range else {
        return Ok(Vec::new());
    };
    let bad = || PlanError::BadAddressRange {
        group: group.name.clone(),
        range: range.clone(),
    };
    let (first, last) = range.split_once('-').ok_or_else(bad)?;
    let first: std::net::Ipv4Addr = first.trim().parse().map_err(|_| bad())?;
    let last: std::net::Ipv4Addr = last.trim().parse().map_err(|_| bad())?;
    let (first, last) = (u32::from(first), u32::from(last));
    if last < first {
        return Err(bad());
    }
    let needed = u64::from(group.count);
    Ok((first..=last)
        .take(usize::try_from(needed).unwrap_or(usize::MAX))
        .map(|ip| IpAddr::V4(ip.into()))
        .collect())
}

/// NUMA capacity left on one host NUMA node.
#[derive(Debug, Clone)]
struct NumaCapacity {
    id: u32,
    /// Every CPU the topology lists for this NUMA node.
    all_cpus: BTreeSet<u32>,
    free_cpus: BTreeSet<u32>,
    hugepages_1g: Option<u64>,
    hugepages_2m: Option<u64>,
    pci: Vec<String>,
}

impl NumaCapacity {
    fn has_device(&self, device: &str) -> bool {
        self.pci
            .iter()
            .any(|prefix| device == prefix || device.starts_with(&format!("{prefix}:")))
    }

    fn free_pages(&self, size_mib: u32) -> Option<u64> {
        if size_mib == 1024 {
            self.hugepages_1g
        } else {
            self.hugepages_2m
        }
    }

    fn take_pages(&mut self, size_mib: u32, pages: u64) {
        let slot = if size_mib == 1024 {
            &mut self.hugepages_1g
        } else {
            &mut self.hugepages_2m
        };
        if let Some(free) = slot {
            *free = free.saturating_sub(pages);
        }
    }
}

/// Mutable bookkeeping while placing VMs.
struct Ledger {
    /// (node, device) → vmid using it.
    used_devices: BTreeMap<(String, String), u32>,
    /// (node, device) → name of the VM that goes away and frees it.
    released_devices: BTreeMap<(String, String), String>,
    numa: BTreeMap<String, Vec<NumaCapacity>>,
    /// VMs placed per node, per (group, node).
    per_node: BTreeMap<String, usize>,
    per_group_node: BTreeMap<(String, String), usize>,
    /// Memory (bytes) promised per node: to new VMs and to the growth of kept ones.
    new_memory: BTreeMap<String, u64>,
    /// The part of `new_memory` promised to kept VMs (they may change before anything leaves).
    kept_memory: BTreeMap<String, u64>,
    /// Memory (bytes) of running VMs that go away, per node.
    released_memory: BTreeMap<String, u64>,
    /// Hugepages charged to existing VMs: vmid → (host NUMA node, page size MiB, pages).
    hugepage_charges: BTreeMap<u32, (u32, u32, u64)>,
    used_vmids: BTreeSet<u32>,
}

struct Pinning {
    affinity: String,
    numa_node: u32,
}

/// Plan `intent` against what the input's inventory shows and its state remembers.
pub fn plan(input: &PlanInput<'_>, intent: Intent) -> Result<Plan, PlanError> {
    match intent {
        Intent::Converge => converge(input),
        Intent::Down => Ok(down::plan_down(input)),
    }
}

/// The [`Intent::Converge`] plan: make Proxmox match the profile.
fn converge(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let PlanInput {
        profile,
        inventory,
        state,
        context,
    } = *input;
    let cluster = &profile.cluster.name;
    let tag = cluster_tag(cluster);
    let wanted = expand(profile)?;
    let wanted_names: BTreeSet<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
    let mut warnings = Vec::new();

    // Which existing VM (if any) each wanted VM is.
    let existing_for = existing_vms(profile, &wanted, inventory, state);
    let adopt: Vec<String> = wanted
        .iter()
        .filter(|want| existing_for.contains_key(&want.name) && !state.vms.contains_key(&want.name))
        .map(|want| want.name.clone())
        .collect();
    let macs = assign_macs(cluster, &wanted, &existing_for);
    for vm in inventory.cluster_vms(cluster) {
        let known = state.vms.values().any(|record| record.vmid == vm.vmid);
        let adopted = existing_for.values().any(|e| e.vmid == vm.vmid);
        if !known && !adopted {
            warnings.push(format!(
                "VM {} ({}) on {} carries tag {tag} but is neither in the state nor in the profile; left alone",
                vm.vmid, vm.name, vm.node
            ));
        }
    }

    // Pass 1 decides which existing VMs keep their GPUs (they reserve them first).
    let mut keep_gpus: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for want in &wanted {
        let Some(vm) = existing_for.get(&want.name) else {
            continue;
        };
        // In key order (hostpci0, hostpci1 …) so kept values line up with the live keys.
        let targets: Vec<String> = vm
            .config
            .iter()
            .filter(|(key, _)| key.starts_with("hostpci"))
            .flat_map(|(key, value)| hostpci_targets(&Params::from([(key.clone(), value.clone())])))
            .collect();
        let wanted_count = want.group.gpus.as_ref().map_or(0, |g| g.count) as usize;
        if targets.len() == wanted_count && !half_created(vm, state) {
            keep_gpus.insert(want.name.clone(), targets);
        }
    }

    // VMs that go away in this plan: existing ones replaced because their GPUs change (or they
    // are half-created), and scaled-down ones. Their GPUs, pinned host cores, hugepages and
    // memory are released for new placements; a VM placed on their node is created only after
    // their removal (`Action::after`), so no device is ever held by two VMs at once.
    let mut leaving: BTreeMap<u32, (String, &ExistingVm)> = BTreeMap::new();
    for want in &wanted {
        if let Some(vm) = existing_for.get(&want.name)
            && !keep_gpus.contains_key(&want.name)
        {
            leaving.insert(vm.vmid, (want.name.clone(), vm));
        }
    }
    for (name, record) in &state.vms {
        if !wanted_names.contains(name.as_str())
            && let Some(vm) = inventory.vm(record.vmid).filter(|vm| vm.has_tag(&tag))
        {
            leaving.insert(vm.vmid, (name.clone(), vm));
        }
    }

    let mut ledger = Ledger {
        used_devices: inventory.used_devices(),
        released_devices: BTreeMap::new(),
        numa: BTreeMap::new(),
        per_node: BTreeMap::new(),
        per_group_node: BTreeMap::new(),
        new_memory: BTreeMap::new(),
        kept_memory: BTreeMap::new(),
        released_memory: BTreeMap::new(),
        hugepage_charges: BTreeMap::new(),
        used_vmids: inventory.used_vmids(),
    };
    for (vmid, (name, vm)) in &leaving {
        let released: Vec<(String, String)> = ledger
            .used_devices
            .iter()
            .filter(|(_, user)| *user == vmid)
            .map(|(key, _)| key.clone())
            .collect();
        for key in released {
            ledger.used_devices.remove(&key);
            ledger.released_devices.insert(key, name.clone());
        }
        if vm.status == "running" && !vm.config.contains_key("hugepages") {
            let released = ledger.released_memory.entry(vm.node.clone()).or_default();
            *released = released.saturating_add(config_memory_bytes(vm));
        }
    }
    for topology in &inventory.topology {
        let mut nodes = Vec::new();
        for numa_node in &topology.numa_nodes {
            let cpus = parse_cpulist(&numa_node.cpus).ok_or_else(|| PlanError::BadTopology {
                node: topology.node.clone(),
                cpus: numa_node.cpus.clone(),
            })?;
            nodes.push(NumaCapacity {
                id: numa_node.id,
                all_cpus: cpus.clone(),
                free_cpus: cpus,
                hugepages_1g: numa_node.hugepages_1g.map(u64::from),
                hugepages_2m: numa_node.hugepages_2m.map(u64::from),
                pci: numa_node.pci_devices.clone(),
            });
        }
        ledger.numa.insert(topology.node.clone(), nodes);
    }
    // State intents reserve their VMIDs even when the VM does not exist (yet).
    ledger.used_vmids.extend(state.vmids());
    // Host cores pinned by any VM on our nodes are taken (except by VMs that go away).
    for vm in &inventory.vms {
        if leaving.contains_key(&vm.vmid) {
            continue;
        }
        if let (Some(affinity), Some(numa)) =
            (vm.config.get("affinity"), ledger.numa.get_mut(&vm.node))
            && let Some(cpus) = parse_cpulist(affinity)
        {
            for capacity in numa.iter_mut() {
                capacity.free_cpus.retain(|cpu| !cpus.contains(cpu));
            }
        }
    }
    // Hugepages: the topology lists what is free for provision's VMs, so our own existing
    // pinned VMs are charged against it (keeps re-plans stable).
    for vm in existing_for.values() {
        if !leaving.contains_key(&vm.vmid) {
            charge_existing_hugepages(vm, &mut ledger);
        }
        *ledger.per_node.entry(vm.node.clone()).or_default() += 1;
    }
    // Kept GPUs stay with their VM.
    for want in &wanted {
        if let (Some(vm), Some(targets)) = (existing_for.get(&want.name), keep_gpus.get(&want.name))
        {
            for target in targets {
                for device in resolve_target(target, &vm.node, inventory) {
                    ledger
                        .used_devices
                        .insert((vm.node.clone(), device), vm.vmid);
                }
            }
        }
    }
    // Which VMs went through placement (they may use what leaving VMs release).
    let mut placed: BTreeSet<String> = BTreeSet::new();

    let image = image_source(profile, inventory)?;
    let mut downloads: BTreeMap<(String, String), ImageDownload> = BTreeMap::new();
    let mut mappings_to_create: Vec<PciMapping> = Vec::new();
    let mut vms = Vec::new();
    let mut actions = Vec::new();

    for want in &wanted {
        let group = want.group;
        let existing = existing_for.get(&want.name).copied();
        let record = state.vms.get(&want.name);
        let half = existing.is_some_and(|vm| half_created(vm, state));
        let kept_gpus = keep_gpus.get(&want.name);
        // Node and VMID: kept from the existing VM, else from an intent, else decided now.
        let (vmid, node, gpu_devices, pinning);
        if let Some(vm) = existing.filter(|_| kept_gpus.is_some() && !half) {
            vmid = vm.vmid;
            node = vm.node.clone();
            gpu_devices = kept_gpus
                .map(|targets| {
                    targets
                        .iter()
                        .flat_map(|t| resolve_target(t, &node, inventory))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            pinning = match existing_pinning(vm, group) {
                Some(pinning) => {
                    regrow_hugepages(want, vm, pinning.numa_node, &mut ledger)?;
                    Some(pinning)
                }
                None => {
                    refund_existing(vm, inventory, &mut ledger);
                    pin_on_node(want, &node, &gpu_devices, inventory, &mut ledger)?
                }
            };
            fit_kept(want, vm, inventory, &mut ledger)?;
        } else {
            placed.insert(want.name.clone());
            let reuse_vmid = existing.map(|vm| vm.vmid).or_else(|| {
                record
                    .filter(|r| r.phase == VmPhase::Intent || inventory.vm(r.vmid).is_none())
                    .filter(|r| inventory.vm(r.vmid).is_none_or(|vm| vm.name == want.name))
                    .map(|r| r.vmid)
            });
            let (chosen_node, devices, chosen_pinning) =
                place(want, profile, inventory, &mut ledger)?;
            vmid = match reuse_vmid {
                Some(vmid) => vmid,
                None => allocate_vmid(profile, &want.name, &mut ledger)?,
            };
            for device in &devices {
                ledger
                    .used_devices
                    .insert((chosen_node.clone(), device.clone()), vmid);
            }
            if existing.is_none() {
                *ledger.per_node.entry(chosen_node.clone()).or_default() += 1;
            }
            node = chosen_node;
            gpu_devices = devices;
            pinning = chosen_pinning;
        }
        *ledger
            .per_group_node
            .entry((group.name.clone(), node.clone()))
            .or_default() += 1;

        let node_inventory = inventory.node(&node);
        for storage in [&profile.proxmox.storage.disks, &profile.proxmox.storage.iso] {
            if let Some(node_inventory) = node_inventory
                && node_inventory.storage(storage).is_none()
            {
                return Err(PlanError::StorageMissing {
                    storage: storage.clone(),
                    node: node.clone(),
                });
            }
        }

        // GPU parameters.
        let hostpci = match kept_gpus.filter(|_| !half && existing.is_some()) {
            Some(targets) => targets.iter().map(|t| format!("{t},pcie=1")).collect(),
            None => gpu_params(
                profile,
                group,
                &node,
                &gpu_devices,
                inventory,
                &mut mappings_to_create,
            )?,
        };

        // Image per node, and the download (if any) this VM's create waits for.
        let mut image_key = None;
        let vm_image = match &image {
            ImageSource::Import { volid } => {
                if let Some(download) = image_download(profile, &node, volid, inventory) {
                    image_key = Some((download.node.clone(), download.storage.clone()));
                    downloads
                        .entry((download.node.clone(), download.storage.clone()))
                        .or_insert(download);
                } else if profile.image.url.is_none()
                    && let Some(node_inventory) = node_inventory
                {
                    let storage = volid.split(':').next().unwrap_or_default();
                    let shared = node_inventory
                        .storage(storage)
                        .is_some_and(|s| s.shared == Some(1));
                    if !shared
                        && !node_inventory.has_volume(volid)
                        && !node_inventory.volumes.is_empty()
                    {
                        return Err(PlanError::ImageMissing {
                            volume: volid.clone(),
                            node: node.clone(),
                        });
                    }
                }
                image.clone()
            }
            ImageSource::Clone { .. } => image.clone(),
        };

        let iso = match profile.proxmox.cloud_init {
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
        };
        let prefix_len = profile.network.cidr.prefix();
        let mac = macs.get(&want.name).cloned().unwrap_or_default();
        let params = vm_params(
            profile,
            context,
            want,
            &mac,
            vmid,
            &hostpci,
            pinning.as_ref(),
            &vm_image,
            iso.as_ref(),
            prefix_len,
        );
        let resize = vec![Resize {
            disk: "scsi0".to_owned(),
            size: format!("{}G", group.disks.os_gb),
        }];

        let mut planned = PlannedVm {
            name: want.name.clone(),
            group: group.name.clone(),
            role: group.role,
            index: want.index,
            vmid,
            node: node.clone(),
            address: want.address,
            prefix_len,
            mac,
            gpus: gpu_devices.clone(),
            params: params.clone(),
            resize: resize.clone(),
            image: vm_image,
            iso,
            image_download: image_key,
            exists: false,
            converged: false,
        };

        match existing {
            None => actions.push(Action {
                action: ActionKind::Create,
                vm: want.name.clone(),
                node: node.clone(),
                vmid,
                params,
                delete: Vec::new(),
                resize,
                reason: record.filter(|r| r.phase == VmPhase::Intent).map(|_| {
                    "an earlier run recorded the intent but the VM does not exist".to_owned()
                }),
                restart: false,
                after: Vec::new(),
            }),
            Some(vm) => {
                let replace_reason = if half {
                    Some(
                        "half-created by an interrupted run (locked or without its disks)"
                            .to_owned(),
                    )
                } else if kept_gpus.is_none() {
                    Some(format!(
                        "GPUs change ({} → {})",
                        hostpci_targets(&vm.config).len(),
                        group.gpus.as_ref().map_or(0, |g| g.count)
                    ))
                } else {
                    layout_change(&vm.config, &params, profile, group)
                };
                if let Some(reason) = replace_reason {
                    actions.push(Action {
                        action: ActionKind::Replace,
                        vm: want.name.clone(),
                        node: node.clone(),
                        vmid,
                        params,
                        delete: Vec::new(),
                        resize,
                        reason: Some(reason),
                        restart: false,
                        after: Vec::new(),
                    });
                } else {
                    planned.exists = true;
                    let update = update_action(vm, &planned, state);
                    match update {
                        Some(action) => actions.push(action),
                        None => planned.converged = true,
                    }
                }
            }
        }
        vms.push(planned);
    }

    // Scale down: VMs in the state (and carrying the tag on Proxmox) that the profile no longer has.
    for (name, record) in &state.vms {
        if wanted_names.contains(name.as_str()) {
            continue;
        }
        if let Some(vm) = inventory.vm(record.vmid).filter(|vm| vm.has_tag(&tag)) {
            actions.push(Action {
                action: ActionKind::Destroy,
                vm: name.clone(),
                node: vm.node.clone(),
                vmid: vm.vmid,
                params: Params::new(),
                delete: Vec::new(),
                resize: Vec::new(),
                reason: None,
                restart: false,
                after: Vec::new(),
            });
        }
    }

    // A placed VM on a node where others leave waits for them to be gone.
    let mut leaving_on: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, vm) in leaving.values() {
        leaving_on
            .entry(vm.node.as_str())
            .or_default()
            .insert(name.as_str());
    }
    for action in &mut actions {
        if matches!(action.action, ActionKind::Create | ActionKind::Replace)
            && placed.contains(&action.vm)
            && let Some(names) = leaving_on.get(action.node.as_str())
        {
            action.after = names
                .iter()
                .filter(|name| **name != action.vm)
                .map(|name| (*name).to_owned())
                .collect();
        }
    }

    let pool = profile
        .proxmox
        .pool
        .clone()
        .filter(|pool| !inventory.pools.contains(pool));
    // A download is needed only when a VM that is created or replaced imports from it.
    let creating: BTreeSet<&str> = actions
        .iter()
        .filter(|a| matches!(a.action, ActionKind::Create | ActionKind::Replace))
        .map(|a| a.vm.as_str())
        .collect();
    let needed: BTreeSet<&(String, String)> = vms
        .iter()
        .filter(|vm| creating.contains(vm.name.as_str()))
        .filter_map(|vm| vm.image_download.as_ref())
        .collect();
    let downloads = downloads
        .into_iter()
        .filter(|(key, _)| needed.contains(key))
        .map(|(_, download)| download)
        .collect();
    check_root_only_keys(&actions, &inventory.auth)?;
    Ok(Plan {
        intent: Intent::Converge,
        cluster: cluster.clone(),
        vms,
        actions,
        forget: Vec::new(),
        downloads,
        mappings: mappings_to_create,
        pool,
        adopt,
        warnings,
        shared_storages: inventory
            .nodes
            .iter()
            .flat_map(|node| &node.storages)
            .filter(|storage| storage.shared == Some(1))
            .map(|storage| storage.storage.clone())
            .collect(),
    })
}

/// An intent whose VM is locked by a create that no longer runs, or lacks its OS disk.
fn half_created(vm: &ExistingVm, state: &State) -> bool {
    let in_intent = state
        .vms
        .values()
        .any(|r| r.vmid == vm.vmid && r.phase == VmPhase::Intent);
    let locked = matches!(vm.lock.as_deref(), Some("create" | "clone" | "disk"));
    let no_disk = !vm.config.contains_key("scsi0");
    in_intent && (locked || no_disk)
}

fn charge_existing_hugepages(vm: &ExistingVm, ledger: &mut Ledger) {
    let (Some(size), Some(numa0), Some(memory)) = (
        vm.config.get("hugepages"),
        vm.config.get("numa0"),
        vm.config.get("memory"),
    ) else {
        return;
    };
    let size_mib: u32 = match size.as_str() {
        "1024" => 1024,
        "2" => 2,
        _ => return,
    };
    let Ok(memory) = memory.parse::<u64>() else {
        return;
    };
    let host_node = numa0
        .split(',')
        .find_map(|part| part.strip_prefix("hostnodes="))
        .and_then(|n| n.parse::<u32>().ok());
    if let (Some(host_node), Some(numa)) = (host_node, ledger.numa.get_mut(&vm.node))
        && let Some(capacity) = numa.iter_mut().find(|c| c.id == host_node)
    {
        let pages = memory.div_ceil(u64::from(size_mib));
        capacity.take_pages(size_mib, pages);
        ledger
            .hugepage_charges
            .insert(vm.vmid, (host_node, size_mib, pages));
    }
}

/// Give back the hugepages charged to an existing VM.
fn refund_hugepages(vm: &ExistingVm, ledger: &mut Ledger) {
    let Some(numa) = ledger.numa.get_mut(&vm.node) else {
        return;
    };
    if let Some((host_node, size_mib, pages)) = ledger.hugepage_charges.remove(&vm.vmid)
        && let Some(capacity) = numa.iter_mut().find(|c| c.id == host_node)
    {
        let slot = if size_mib == 1024 {
            &mut capacity.hugepages_1g
        } else {
            &mut capacity.hugepages_2m
        };
        if let Some(free) = slot {
            *free = free.saturating_add(pages);
        }
    }
}

/// Give back what an existing kept VM holds on its host NUMA nodes: it is re-pinned.
fn refund_existing(vm: &ExistingVm, inventory: &Inventory, ledger: &mut Ledger) {
    refund_hugepages(vm, ledger);
    let Some(cpus) = vm.config.get("affinity").and_then(|a| parse_cpulist(a)) else {
        return;
    };
    // Cores another VM on the node is also pinned to stay taken.
    let others: BTreeSet<u32> = inventory
        .vms
        .iter()
        .filter(|other| other.node == vm.node && other.vmid != vm.vmid)
        .filter_map(|other| other.config.get("affinity").and_then(|a| parse_cpulist(a)))
        .flatten()
        .collect();
    let Some(numa) = ledger.numa.get_mut(&vm.node) else {
        return;
    };
    for capacity in numa.iter_mut() {
        capacity.free_cpus.extend(
            cpus.iter()
                .filter(|cpu| capacity.all_cpus.contains(cpu) && !others.contains(cpu))
                .copied(),
        );
    }
}

/// A kept pinned VM whose hugepage-backed memory changes: charge its new size on its NUMA node.
fn regrow_hugepages(
    want: &Wanted<'_>,
    vm: &ExistingVm,
    numa_node: u32,
    ledger: &mut Ledger,
) -> Result<(), PlanError> {
    let group = want.group;
    let charged = ledger.hugepage_charges.get(&vm.vmid).copied();
    let Some(size) = group.hugepages else {
        refund_hugepages(vm, ledger);
        return Ok(());
    };
    let size_mib = size;
    let needed = group.memory_mib.div_ceil(u64::from(size_mib));
    if charged == Some((numa_node, size_mib, needed)) {
        return Ok(());
    }
    refund_hugepages(vm, ledger);
    let Some(capacity) = ledger
        .numa
        .get_mut(&vm.node)
        .and_then(|numa| numa.iter_mut().find(|c| c.id == numa_node))
    else {
        return Ok(());
    };
    let free = capacity.free_pages(size_mib);
    if free.is_some_and(|free| free < needed) {
        return Err(PlanError::HugepagesDoNotFit {
            vm: want.name.clone(),
            node: vm.node.clone(),
            numa: numa_node,
            needed,
            size_mib,
            free: free.unwrap_or(0),
        });
    }
    capacity.take_pages(size_mib, needed);
    ledger
        .hugepage_charges
        .insert(vm.vmid, (numa_node, size_mib, needed));
    Ok(())
}

/// A kept VM's vCPUs and (non-hugepage) memory against its node: growth in place must fit
/// before anything leaves, and everything planned must fit once the leaving VMs are gone.
fn fit_kept(
    want: &Wanted<'_>,
    vm: &ExistingVm,
    inventory: &Inventory,
    ledger: &mut Ledger,
) -> Result<(), PlanError> {
    let group = want.group;
    let Some(node) = inventory.node(&vm.node) else {
        return Ok(());
    };
    let vcpus = vcpu_count(group);
    if node.cpus > 0 && vcpus > node.cpus {
        return Err(PlanError::TooManyVcpus {
            vm: want.name.clone(),
            node: node.name.clone(),
            needed: vcpus,
            cpus: node.cpus,
        });
    }
    if group.hugepages.is_some() {
        return Ok(());
    }
    // A running VM without hugepages already counts in the node's used memory.
    let held = if vm.status == "running" && !vm.config.contains_key("hugepages") {
        config_memory_bytes(vm)
    } else {
        0
    };
    let needed = mib_to_bytes(group.memory_mib).saturating_sub(held);
    if needed == 0 {
        return Ok(());
    }
    let kept = ledger.kept_memory.get(&node.name).copied().unwrap_or(0);
    let promised = ledger.new_memory.get(&node.name).copied().unwrap_or(0);
    let released = ledger.released_memory.get(&node.name).copied().unwrap_or(0);
    if kept.saturating_add(needed) > node.memory_free
        || promised.saturating_add(needed) > node.memory_free.saturating_add(released)
    {
        return Err(PlanError::MemoryDoesNotFit {
            vm: want.name.clone(),
            node: node.name.clone(),
            needed_mib: needed / MIB,
            free_mib: node.memory_free / MIB,
            planned_mib: promised / MIB,
        });
    }
    let kept = ledger.kept_memory.entry(node.name.clone()).or_default();
    *kept = kept.saturating_add(needed);
    let promised = ledger.new_memory.entry(node.name.clone()).or_default();
    *promised = promised.saturating_add(needed);
    Ok(())
}

/// The VM's configured memory in bytes (`memory` is MiB; Proxmox's default is 512).
fn config_memory_bytes(vm: &ExistingVm) -> u64 {
    mib_to_bytes(
        vm.config
            .get("memory")
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(512),
    )
}

const MIB: u64 = 1024 * 1024;

/// MiB to bytes, saturating: a size beyond `u64` bytes (16 EiB) fails every capacity check
/// instead of wrapping around to a small number.
fn mib_to_bytes(mib: u64) -> u64 {
    mib.saturating_mul(MIB)
}

/// vCPUs of one VM of `group` (cores × sockets, without overflow).
fn vcpu_count(group: &NodeGroup) -> u64 {
    u64::from(group.cores) * u64::from(group.sockets)
}

fn existing_pinning(vm: &ExistingVm, group: &NodeGroup) -> Option<Pinning> {
    if !group.numa_pinning {
        return None;
    }
    let affinity = vm.config.get("affinity")?;
    let cpus = parse_cpulist(affinity)?;
    if cpus.len() as u64 != vcpu_count(group) {
        return None;
    }
    let numa_node = vm
        .config
        .get("numa0")?
        .split(',')
        .find_map(|part| part.strip_prefix("hostnodes="))?
        .parse()
        .ok()?;
    Some(Pinning {
        affinity: affinity.clone(),
        numa_node,
    })
}

/// `0000:41:00` → itself; `mapping=id` → the mapping's devices on `node`.
fn resolve_target(target: &str, node: &str, inventory: &Inventory) -> Vec<String> {
    match target.strip_prefix("mapping=") {
        Some(id) => inventory
            .mappings
            .iter()
            .filter(|m| m.id == id)
            .flat_map(mapping_paths)
            .filter(|(n, _)| n == node)
            .map(|(_, path)| path)
            .collect(),
        None => vec![target.to_owned()],
    }
}

fn allocate_vmid(profile: &Profile, vm: &str, ledger: &mut Ledger) -> Result<u32, PlanError> {
    let range = profile.proxmox.vmid_range;
    let vmid = (range.start..=range.end)
        .find(|id| !ledger.used_vmids.contains(id))
        .ok_or_else(|| PlanError::VmidRangeExhausted {
            start: range.start,
            end: range.end,
            vm: vm.to_owned(),
        })?;
    ledger.used_vmids.insert(vmid);
    Ok(vmid)
}

fn image_source(profile: &Profile, inventory: &Inventory) -> Result<ImageSource, PlanError> {
    if let Some(template) = profile.image.template_vmid {
        let vm = inventory
            .vm(template)
            .ok_or(PlanError::TemplateMissing { vmid: template })?;
        return Ok(ImageSource::Clone {
            template,
            template_node: vm.node.clone(),
        });
    }
    if let Some(volume) = &profile.image.volume {
        return Ok(ImageSource::Import {
            volid: volume.clone(),
        });
    }
    Ok(ImageSource::Import {
        volid: format!(
            "{}:import/{}",
            profile.proxmox.storage.images,
            image_file_name(profile)
        ),
    })
}

/// The file name a downloaded cloud image gets on the images storage.
pub fn image_file_name(profile: &Profile) -> String {
    profile.image.file_name.clone().unwrap_or_else(|| {
        profile
            .image
            .url
            .as_deref()
            .and_then(|url| url.rsplit('/').next())
            .filter(|name| !name.is_empty())
            .unwrap_or("cloud-image.qcow2")
            .to_owned()
    })
}

fn image_download(
    profile: &Profile,
    node: &str,
    volid: &str,
    inventory: &Inventory,
) -> Option<ImageDownload> {
    let url = profile.image.url.as_ref()?;
    let storage = profile.proxmox.storage.images.clone();
    let node_inventory = inventory.node(node)?;
    if node_inventory.has_volume(volid) {
        return None;
    }
    // A shared storage holding the volume on any node is enough.
    let shared = node_inventory
        .storage(&storage)
        .is_some_and(|s| s.shared == Some(1));
    let download_node = if shared {
        if inventory.nodes.iter().any(|n| n.has_volume(volid)) {
            return None;
        }
        profile
            .proxmox
            .nodes
            .first()
            .cloned()
            .unwrap_or_else(|| node.to_owned())
    } else {
        node.to_owned()
    };
    let mut params = Params::new();
    params.insert("content".into(), "import".into());
    params.insert("filename".into(), image_file_name(profile));
    params.insert("url".into(), url.clone());
    if let Some(sha256) = &profile.image.sha256 {
        params.insert("checksum".into(), sha256.to_ascii_lowercase());
        params.insert("checksum-algorithm".into(), "sha256".into());
    }
    Some(ImageDownload {
        node: download_node,
        storage,
        volid: volid.to_owned(),
        params,
    })
}

/// Choose node, GPUs and pinning for a new (or replaced) VM.
fn place(
    want: &Wanted<'_>,
    profile: &Profile,
    inventory: &Inventory,
    ledger: &mut Ledger,
) -> Result<(String, Vec<String>, Option<Pinning>), PlanError> {
    let group = want.group;
    let eligible: Vec<&String> = profile
        .proxmox
        .nodes
        .iter()
        .filter(|node| group.proxmox_nodes.is_empty() || group.proxmox_nodes.contains(node))
        .collect();
    let mut order: Vec<(usize, &String)> = eligible.iter().copied().enumerate().collect();
    match profile.proxmox.placement {
        Placement::Spread => order.sort_by_key(|(position, node)| {
            (
                ledger
                    .per_group_node
                    .get(&(group.name.clone(), (*node).clone()))
                    .copied()
                    .unwrap_or(0),
                ledger.per_node.get(*node).copied().unwrap_or(0),
                *position,
            )
        }),
        Placement::Pack => {}
    }
    let wants_gpus = group.gpus.as_ref().map_or(0, |g| g.count);
    let filter_text = group
        .gpus
        .as_ref()
        .and_then(|g| {
            g.filter
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| g.mapping.as_ref().map(|m| format!("mapping {m}")))
        })
        .unwrap_or_else(|| "10de:*".to_owned());
    let mut reasons = Vec::new();
    let mut first_gpu_error: Option<Box<PlanError>> = None;
    let mut first_capacity_error: Option<PlanError> = None;
    for (_, node) in order {
        let Some(node_inventory) = inventory.node(node).filter(|n| n.online) else {
            reasons.push(format!("{node}: offline"));
            continue;
        };
        let vcpus = vcpu_count(group);
        if node_inventory.cpus > 0 && vcpus > node_inventory.cpus {
            reasons.push(format!(
                "{node}: {} logical CPUs, {vcpus} vCPUs wanted",
                node_inventory.cpus
            ));
            continue;
        }
        // Memory (hugepage-backed memory is accounted in the NUMA ledger instead); what
        // leaving VMs release counts, creates there wait for them.
        let memory = mib_to_bytes(group.memory_mib);
        let promised = ledger.new_memory.get(node.as_str()).copied().unwrap_or(0);
        let released = ledger
            .released_memory
            .get(node.as_str())
            .copied()
            .unwrap_or(0);
        if group.hugepages.is_none()
            && promised.saturating_add(memory) > node_inventory.memory_free.saturating_add(released)
        {
            reasons.push(format!(
                "{node}: {} MiB memory free, {} MiB already planned",
                node_inventory.memory_free / 1024 / 1024,
                promised / 1024 / 1024
            ));
            continue;
        }
        let devices = if wants_gpus > 0 {
            match pick_gpus(want, node, inventory, ledger) {
                Ok(devices) => devices,
                Err((reason, error)) => {
                    reasons.push(format!("{node}: {reason}"));
                    if first_gpu_error.is_none() {
                        first_gpu_error = error;
                    }
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        let pinning = match pin_on_node(want, node, &devices, inventory, ledger) {
            Ok(pinning) => pinning,
            Err(error @ PlanError::MissingTopology { .. }) => return Err(error),
            Err(error) => {
                reasons.push(format!("{node}: {error}"));
                if first_capacity_error.is_none() {
                    first_capacity_error = Some(error);
                }
                continue;
            }
        };
        if group.hugepages.is_none() {
            let promised = ledger.new_memory.entry(node.clone()).or_default();
            *promised = promised.saturating_add(memory);
        }
        return Ok((node.clone(), devices, pinning));
    }
    // A node had the GPUs but not the cores/hugepages: that is the actionable error.
    if let Some(error) = first_capacity_error {
        return Err(error);
    }
    if wants_gpus > 0 {
        // Prefer the most actionable error: IOMMU off / shared group explain why GPUs are missing.
        if let Some(error) = first_gpu_error {
            return Err(*error);
        }
        return Err(PlanError::NotEnoughGpus {
            vm: want.name.clone(),
            group: group.name.clone(),
            needed: wants_gpus,
            filter: filter_text,
            details: reasons.join("; "),
        });
    }
    Err(PlanError::NoNodeFits {
        vm: want.name.clone(),
        group: group.name.clone(),
        details: reasons.join("; "),
    })
}

/// Free GPUs for `want` on `node`, or why not (and an error worth showing when nothing fits).
fn pick_gpus(
    want: &Wanted<'_>,
    node: &str,
    inventory: &Inventory,
    ledger: &Ledger,
) -> Result<Vec<String>, (String, Option<Box<PlanError>>)> {
    let Some(gpus) = &want.group.gpus else {
        return Ok(Vec::new());
    };
    let Some(node_inventory) = inventory.node(node) else {
        return Err(("not observed".to_owned(), None));
    };
    let (mut passable, rejected) = gpu::candidates(node_inventory, gpus.filter.as_ref());
    if let Some(mapping_id) = &gpus.mapping {
        let Some(mapping) = inventory.mappings.iter().find(|m| &m.id == mapping_id) else {
            return Err((
                format!("mapping {mapping_id} missing"),
                Some(Box::new(PlanError::UnknownMapping {
                    group: want.group.name.clone(),
                    mapping: mapping_id.clone(),
                })),
            ));
        };
        let paths: BTreeSet<String> = mapping_paths(mapping)
            .into_iter()
            .filter(|(n, _)| n == node)
            .map(|(_, path)| path)
            .collect();
        passable.retain(|candidate| paths.contains(&candidate.device));
    }
    let mut free: Vec<&gpu::GpuCandidate> = passable
        .iter()
        .filter(|c| {
            !ledger
                .used_devices
                .contains_key(&(node.to_owned(), c.device.clone()))
        })
        .collect();
    // The VM's own former devices first, then devices nobody held, then devices other leaving
    // VMs release (stable: device order within each).
    free.sort_by_key(|c| {
        match ledger
            .released_devices
            .get(&(node.to_owned(), c.device.clone()))
        {
            Some(owner) if *owner == want.name => 0,
            None => 1,
            Some(_) => 2,
        }
    });
    let needed = gpus.count as usize;
    // With NUMA pinning, prefer GPUs that share one NUMA node.
    let mut chosen: Vec<String> = Vec::new();
    if want.group.numa_pinning
        && let Some(numa) = ledger.numa.get(node)
    {
        for capacity in numa {
            let local: Vec<String> = free
                .iter()
                .filter(|c| capacity.has_device(&c.device))
                .map(|c| c.device.clone())
                .collect();
            if local.len() >= needed {
                chosen = local.into_iter().take(needed).collect();
                break;
            }
        }
    }
    if chosen.is_empty() && free.len() >= needed {
        chosen = free.iter().take(needed).map(|c| c.device.clone()).collect();
    }
    if chosen.len() == needed {
        return Ok(chosen);
    }
    let error = rejected.first().map(|(device, rejection)| match rejection {
        Rejection::IommuOff => PlanError::IommuOff {
            node: node.to_owned(),
            device: device.clone(),
        },
        Rejection::SharedGroup { group, others } => PlanError::SharedIommuGroup {
            node: node.to_owned(),
            device: device.clone(),
            group: *group,
            others: others.join(", "),
        },
    });
    let mut reason = format!("{} free of {} passable GPUs", free.len(), passable.len());
    if !rejected.is_empty() {
        reason.push_str(&format!(" ({} not passable)", rejected.len()));
    }
    // Only explain with IOMMU/group errors when those devices would have made the difference.
    let error = error
        .filter(|_| free.len().saturating_add(rejected.len()) >= needed)
        .map(Box::new);
    Err((reason, error))
}

/// Host cores and NUMA node for a VM on `node` (only with `numa_pinning`), charging hugepages.
fn pin_on_node(
    want: &Wanted<'_>,
    node: &str,
    devices: &[String],
    inventory: &Inventory,
    ledger: &mut Ledger,
) -> Result<Option<Pinning>, PlanError> {
    let group = want.group;
    if !group.numa_pinning && group.hugepages.is_none() {
        return Ok(None);
    }
    let Some(numa) = ledger.numa.get_mut(node) else {
        if group.numa_pinning {
            return Err(PlanError::MissingTopology {
                group: group.name.clone(),
                node: node.to_owned(),
            });
        }
        // Hugepages without topology cannot be checked; Proxmox refuses at start if short.
        let _ = inventory;
        return Ok(None);
    };
    let vcpus = usize::try_from(vcpu_count(group)).unwrap_or(usize::MAX);
    let pages = group
        .hugepages
        .map(|size| (u64::from(size), group.memory_mib.div_ceil(u64::from(size))));
    let fits = |capacity: &NumaCapacity| -> bool {
        let cpus_ok = !group.numa_pinning || capacity.free_cpus.len() >= vcpus;
        let pages_ok = match pages {
            Some((size, needed)) => capacity
                .free_pages(size as u32)
                .is_none_or(|free| free >= needed),
            None => true,
        };
        cpus_ok && pages_ok
    };
    // The NUMA node local to the GPUs first, then the first with capacity.
    let local = numa
        .iter()
        .position(|c| !devices.is_empty() && devices.iter().all(|d| c.has_device(d)) && fits(c));
    let chosen = local.or_else(|| numa.iter().position(fits));
    let Some(index) = chosen else {
        let best = numa
            .iter()
            .max_by_key(|c| c.free_cpus.len())
            .map(|c| (c.id, c.free_cpus.len()));
        if let Some((size, needed)) = pages {
            let short = numa
                .iter()
                .find(|c| c.free_pages(size as u32).is_some_and(|free| free < needed));
            if let Some(capacity) = short {
                return Err(PlanError::HugepagesDoNotFit {
                    vm: want.name.clone(),
                    node: node.to_owned(),
                    numa: capacity.id,
                    needed,
                    size_mib: size as u32,
                    free: capacity.free_pages(size as u32).unwrap_or(0),
                });
            }
        }
        return Err(PlanError::CoresDoNotFit {
            vm: want.name.clone(),
            node: node.to_owned(),
            needed: vcpus,
            free: best.map_or(0, |(_, free)| free),
        });
    };
    let capacity = &mut numa[index];
    if let Some((size, needed)) = pages {
        capacity.take_pages(size as u32, needed);
    }
    if !group.numa_pinning {
        return Ok(None);
    }
    let cpus: BTreeSet<u32> = capacity.free_cpus.iter().take(vcpus).copied().collect();
    capacity.free_cpus.retain(|cpu| !cpus.contains(cpu));
    Ok(Some(Pinning {
        affinity: format_cpulist(&cpus),
        numa_node: capacity.id,
    }))
}

/// `hostpciN` values for freshly allocated devices (raw ids or mappings), planning mapping
/// creation when the credentials need and may.
fn gpu_params(
    profile: &Profile,
    group: &NodeGroup,
    node: &str,
    devices: &[String],
    inventory: &Inventory,
    to_create: &mut Vec<PciMapping>,
) -> Result<Vec<String>, PlanError> {
    let Some(gpus) = &group.gpus else {
        return Ok(Vec::new());
    };
    if let Some(mapping) = &gpus.mapping {
        return Ok(devices
            .iter()
            .map(|_| format!("mapping={mapping},pcie=1"))
            .collect());
    }
    let mut values = Vec::new();
    for device in devices {
        if inventory.auth.may_use_raw_pci() {
            values.push(format!("{device},pcie=1"));
            continue;
        }
        // An existing mapping whose only path on this node is this device.
        let existing = inventory.mappings.iter().find(|m| {
            let paths: Vec<(String, String)> = mapping_paths(m)
                .into_iter()
                .filter(|(n, _)| n == node)
                .collect();
            paths.len() == 1 && paths[0].1 == *device
        });
        if let Some(mapping) = existing {
            values.push(format!("mapping={},pcie=1", mapping.id));
            continue;
        }
        if !inventory.auth.may_create_mappings() {
            return Err(PlanError::RawPciNotAllowed {
                auth: inventory.auth.describe(),
                node: node.to_owned(),
                device: device.clone(),
            });
        }
        let id = format!(
            "provision-{}-{node}-{}",
            profile.cluster.name,
            device.replace([':', '.'], "-")
        );
        let node_inventory = inventory.node(node);
        let pci = node_inventory.and_then(|n| {
            n.pci
                .iter()
                .find(|p| crate::inventory::whole_device(&p.id) == *device && is_nvidia_gpu(p))
        });
        let mut entry = format!("node={node},path={device}");
        if let Some(pci) = pci {
            entry.push_str(&format!(
                ",id={}:{}",
                pci.vendor.trim_start_matches("0x"),
                pci.device.trim_start_matches("0x")
            ));
            entry.push_str(&format!(",iommugroup={}", pci.iommugroup));
        }
        if !to_create.iter().any(|m| m.id == id) {
            to_create.push(PciMapping {
                id: id.clone(),
                description: Some(format!(
                    "provision: GPU {device} on {node} for cluster {}",
                    profile.cluster.name
                )),
                map: vec![entry],
            });
        }
        values.push(format!("mapping={id},pcie=1"));
    }
    Ok(values)
}

#[allow(clippy::too_many_arguments)]
fn vm_params(
    profile: &Profile,
    context: &PlanContext,
    want: &Wanted<'_>,
    mac: &str,
    vmid: u32,
    hostpci: &[String],
    pinning: Option<&Pinning>,
    image: &ImageSource,
    iso: Option<&IsoUpload>,
    prefix_len: u8,
) -> Params {
    let group = want.group;
    let storage = &profile.proxmox.storage;
    let mut p = Params::new();
    let mut set = |key: &str, value: String| {
        p.insert(key.to_owned(), value);
    };
    set("vmid", vmid.to_string());
    set("name", want.name.clone());
    set("ostype", "l26".into());
    set("machine", group.machine.clone());
    match group.bios {
        Bios::Ovmf => {
            set("bios", "ovmf".into());
            set(
                "efidisk0",
                format!(
                    "{}:1,efitype=4m,pre-enrolled-keys=0",
                    storage.efi.as_deref().unwrap_or(&storage.disks)
                ),
            );
        }
        Bios::Seabios => set("bios", "seabios".into()),
    }
    let mut cpu = group.cpu_type.clone();
    if !group.cpu_flags.is_empty() {
        cpu.push_str(&format!(",flags={}", group.cpu_flags.join(";")));
    }
    set("cpu", cpu);
    set("cores", group.cores.to_string());
    set("sockets", group.sockets.to_string());
    set("memory", group.memory_mib.to_string());
    set("balloon", "0".into());
    set("scsihw", "virtio-scsi-single".into());
    match image {
        ImageSource::Import { volid } => set(
            "scsi0",
            format!(
                "{}:0,import-from={volid},iothread=1,discard=on,ssd=1",
                storage.disks
            ),
        ),
        ImageSource::Clone { .. } => {}
    }
    if let Some(scratch) = group.disks.scratch_gb {
        set(
            "scsi1",
            format!(
                "{}:{scratch},iothread=1,discard=on,ssd=1",
                group
                    .disks
                    .scratch_storage
                    .as_deref()
                    .unwrap_or(&storage.disks)
            ),
        );
    }
    set("boot", "order=scsi0".into());
    // The MAC is the model key's value (`virtio=02:…`, qemu-server's `net[n]` format).
    let mut net = format!("virtio={mac},bridge={}", profile.network.bridge);
    if let Some(vlan) = profile.network.vlan {
        net.push_str(&format!(",tag={vlan}"));
    }
    if let Some(mtu) = profile.network.mtu {
        net.push_str(&format!(",mtu={mtu}"));
    }
    set("net0", net);
    set("agent", "enabled=1".into());
    set("serial0", "socket".into());
    set("vga", "serial0".into());
    set("onboot", "1".into());
    let mut tags = vec![
        "provision".to_owned(),
        cluster_tag(&profile.cluster.name),
        format!(
            "role-{}",
            match group.role {
                Role::Server => "server",
                Role::Agent => "agent",
            }
        ),
    ];
    if let Some(ttl) = &profile.cluster.ttl {
        tags.push(format!("ttl-{ttl}"));
    }
    tags.extend(profile.proxmox.tags.iter().cloned());
    set("tags", tags.join(";"));
    set(
        "description",
        format!(
            "Managed by provision: cluster {}, group {}, workspace {}. Do not edit by hand; run `provision up` instead.",
            profile.cluster.name, group.name, context.workspace
        ),
    );
    if let Some(pool) = &profile.proxmox.pool {
        set("pool", pool.clone());
    }
    for (index, value) in hostpci.iter().enumerate() {
        set(&format!("hostpci{index}"), value.clone());
    }
    if group.hugepages.is_some() || pinning.is_some() {
        set("numa", "1".into());
    }
    if let Some(size) = group.hugepages {
        set("hugepages", size.to_string());
        set("keephugepages", "1".into());
    }
    if let Some(pinning) = pinning {
        set("affinity", pinning.affinity.clone());
        set(
            "numa0",
            format!(
                "cpus=0-{},hostnodes={},memory={},policy=bind",
                vcpu_count(group).saturating_sub(1),
                pinning.numa_node,
                group.memory_mib
            ),
        );
    }
    match (profile.proxmox.cloud_init, iso) {
        (CloudInitMode::NocloudIso, Some(iso)) => {
            set("ide2", format!("{},media=cdrom", iso.volid));
        }
        (CloudInitMode::NocloudIso, None) | (CloudInitMode::Proxmox, _) => {
            set("ide2", format!("{}:cloudinit", storage.disks));
            set("ciuser", profile.ssh.user.clone());
            if let Some(key) = &context.ssh_public_key {
                set("sshkeys", params::encode_ssh_keys(key.trim_end()));
            }
            set(
                "ipconfig0",
                format!(
                    "ip={}/{prefix_len},gw={}",
                    want.address, profile.network.gateway
                ),
            );
            if !profile.network.dns.is_empty() {
                set(
                    "nameserver",
                    profile
                        .network
                        .dns
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            if let Some(domain) = &profile.network.search_domain {
                set("searchdomain", domain.clone());
            }
        }
    }
    p
}

/// Refuse, before anything changes, a plan whose requests carry keys only `root@pam` may set
/// (`hugepages`, `keephugepages`, `affinity` …) when the credentials cannot set them: Proxmox
/// would refuse each VM halfway through `up`. Names every VM and key.
fn check_root_only_keys(actions: &[Action], auth: &AuthKind) -> Result<(), PlanError> {
    if auth.may_set_root_only_keys() {
        return Ok(());
    }
    let offending: Vec<String> = actions
        .iter()
        .filter_map(|action| {
            let keys = crate::pve::privileges::root_only_keys(&action.params);
            (!keys.is_empty()).then(|| format!("{} ({})", action.vm, keys.join(", ")))
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
fn layout_change(
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
fn update_action(vm: &ExistingVm, planned: &PlannedVm, state: &State) -> Option<Action> {
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
    Some(Action {
        action: ActionKind::Update,
        vm: planned.name.clone(),
        node: planned.node.clone(),
        vmid: planned.vmid,
        params: changed,
        delete,
        resize,
        reason,
        restart,
        after: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
