//! Typed identifiers and response shapes of the Proxmox VE API that provision relies on.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A guest id (`vmid`), 100..=999_999_999 in Proxmox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VmId(pub u32);

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Proxmox cluster node name (`pve1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeName(pub String);

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task id: `UPID:node:pid:pstart:starttime:type:id:user:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Upid(pub String);

impl Upid {
    /// The node the task runs on (second field), where its status must be polled.
    pub fn node(&self) -> Option<&str> {
        self.0.split(':').nth(1).filter(|n| !n.is_empty())
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A PCI address without function (`0000:41:00`, the whole device) or with one (`0000:41:00.0`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PciAddress(pub String);

impl PciAddress {
    /// The device part without the function: `0000:41:00.1` → `0000:41:00`.
    pub fn device(&self) -> &str {
        match self.0.rsplit_once('.') {
            Some((device, _function)) => device,
            None => &self.0,
        }
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A storage volume id, `storage:content/name` (e.g. `local:iso/provision-a100-w1.iso`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VolumeId(pub String);

impl VolumeId {
    pub fn storage(&self) -> &str {
        self.0.split_once(':').map_or("", |(storage, _)| storage)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Exact Proxmox parameters of a request, in a stable order (what `plan --output json` prints).
pub type Params = BTreeMap<String, String>;

/// `GET /access/permissions`: ACL path → privilege → propagate flag (`1`/`0`), as Proxmox
/// answers it for the caller (a token's answer is already the intersection with its user's).
pub type Permissions = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
    pub release: String,
    #[serde(default)]
    pub repoid: String,
}

/// One entry of `GET /nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub node: String,
    pub status: String,
    #[serde(default)]
    pub maxcpu: Option<u64>,
    #[serde(default)]
    pub maxmem: Option<u64>,
    #[serde(default)]
    pub mem: Option<u64>,
}

/// `GET /nodes/{node}/status` (the parts provision reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub cpuinfo: CpuInfo,
    pub memory: MemoryInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuInfo {
    pub cpus: u64,
    pub cores: u64,
    pub sockets: u64,
    #[serde(default)]
    pub model: String,
    /// `/proc/cpuinfo` flags of the node (`vmx`/`svm`: hardware virtualisation for KVM).
    #[serde(default)]
    pub flags: String,
    /// `"1"` when KVM can run (hardware virtualisation present and enabled).
    #[serde(default)]
    pub hvm: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryInfo {
    pub total: u64,
    pub used: u64,
    pub free: u64,
}

/// One entry of `GET /nodes/{node}/network` (bridges, bonds, NICs, VLANs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub iface: String,
    /// `bridge`, `OVSBridge`, `eth`, `bond`, `vlan` …
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub active: Option<u8>,
    /// `1` when a Linux bridge passes VLAN tags (`bridge-vlan-aware yes`).
    #[serde(default)]
    pub bridge_vlan_aware: Option<u8>,
}

/// One entry of `GET /nodes/{node}/hardware/pci`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PciDevice {
    /// `0000:41:00.0`.
    pub id: String,
    /// `0x030200`.
    pub class: String,
    /// `0x10de`.
    pub vendor: String,
    /// `0x20b0`.
    pub device: String,
    /// -1 when the IOMMU is off.
    pub iommugroup: i64,
    #[serde(default)]
    pub vendor_name: Option<String>,
    #[serde(default)]
    pub device_name: Option<String>,
    #[serde(default)]
    pub subsystem_vendor: Option<String>,
    #[serde(default)]
    pub subsystem_device: Option<String>,
    #[serde(default)]
    pub mdev: Option<bool>,
}

/// One entry of `GET /nodes/{node}/storage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageStatus {
    pub storage: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Comma-separated content types (`images,rootdir` / `iso,import,vztmpl`).
    pub content: String,
    #[serde(default)]
    pub active: Option<u8>,
    #[serde(default)]
    pub enabled: Option<u8>,
    #[serde(default)]
    pub avail: Option<u64>,
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub shared: Option<u8>,
}

/// One entry of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageVolume {
    pub volid: String,
    pub content: String,
    pub format: String,
    pub size: u64,
    #[serde(default)]
    pub vmid: Option<u32>,
}

/// One entry of `GET /cluster/resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterResource {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub vmid: Option<u32>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// `;`-separated tags.
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub template: Option<u8>,
    #[serde(default)]
    pub maxmem: Option<u64>,
    #[serde(default)]
    pub maxcpu: Option<f64>,
    #[serde(default)]
    pub lock: Option<String>,
}

impl ClusterResource {
    pub fn tag_list(&self) -> Vec<&str> {
        self.tags
            .as_deref()
            .unwrap_or("")
            .split([';', ',', ' '])
            .filter(|tag| !tag.is_empty())
            .collect()
    }
}

/// `GET /nodes/{node}/qemu/{vmid}/status/current` (the parts provision reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmStatus {
    pub vmid: u32,
    /// `running` | `stopped`.
    pub status: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub qmpstatus: Option<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub agent: Option<u8>,
    #[serde(default)]
    pub uptime: Option<u64>,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub upid: String,
    /// `running` | `stopped`.
    pub status: String,
    #[serde(default)]
    pub exitstatus: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub node: String,
    #[serde(default)]
    pub id: Option<String>,
    pub starttime: u64,
}

/// One entry of `GET /nodes/{node}/tasks`: a running task has status `RUNNING` (in the active
/// list), a finished one its exit status and `endtime`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskListEntry {
    pub upid: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub node: String,
    #[serde(default)]
    pub id: Option<String>,
    pub starttime: u64,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub endtime: Option<u64>,
}

/// What `GET /nodes/{node}/tasks` is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskListQuery {
    /// `active` (running tasks), `archive` (finished ones) or `all`.
    pub source: &'static str,
    /// Only tasks started at or after this UNIX time.
    pub since: Option<u64>,
    /// At most this many entries (Proxmox lists none for 0).
    pub limit: u32,
}

/// One entry of `GET /cluster/mapping/pci`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PciMapping {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Entries `node=pve1,path=0000:41:00,id=10de:20b0[,iommugroup=…][,subsystem-id=…]`.
    #[serde(default)]
    pub map: Vec<String>,
}

/// One network interface reported by the guest agent (`network-get-interfaces`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestInterface {
    pub name: String,
    #[serde(rename = "hardware-address", default)]
    pub hardware_address: Option<String>,
    #[serde(rename = "ip-addresses", default)]
    pub ip_addresses: Vec<GuestIpAddress>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestIpAddress {
    #[serde(rename = "ip-address")]
    pub ip_address: String,
    #[serde(rename = "ip-address-type")]
    pub ip_address_type: String,
    pub prefix: u32,
}

/// One entry of `GET /pools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSummary {
    pub poolid: String,
    #[serde(default)]
    pub comment: Option<String>,
}

/// The content type of an upload (`POST /nodes/{node}/storage/{storage}/upload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadContent {
    Iso,
    Import,
}
