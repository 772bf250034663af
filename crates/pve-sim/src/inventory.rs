//! What the simulated Proxmox cluster is made of: nodes (CPU, memory, NUMA nodes with hugepages,
//! PCI devices), storages, bridges, users and API tokens, read from a TOML fixture.
//!
//! The format is documented in the crate's README; the fixtures in `fixtures/` are embedded so
//! that `Inventory::builtin("pve-a100")` works from any directory.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors reading an inventory.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid inventory: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid inventory: {0}")]
    Invalid(String),
}

/// A whole simulated cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Cluster name (`GET /cluster/status`); empty for a standalone node.
    #[serde(default)]
    pub cluster_name: String,
    /// Proxmox VE version reported by `GET /version`.
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeSpec>,
    /// Storages present on every node (node-local unless `shared`).
    #[serde(default, rename = "storage")]
    pub storages: Vec<StorageSpec>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserSpec>,
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenSpec>,
    /// Pools that already exist.
    #[serde(default)]
    pub pools: Vec<String>,
    /// Images the simulator "can download": `query-url-metadata` reports their size and
    /// `download-url` checks a given checksum against theirs. Other URLs get a size derived
    /// from the URL and any checksum is taken as verified.
    #[serde(default, rename = "image")]
    pub images: Vec<ImageSpec>,
}

/// Content behind a URL that the simulator knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub url: String,
    pub size: u64,
    /// Digests by algorithm (`sha256`, `sha512`, …), lowercase hex.
    #[serde(default)]
    pub checksums: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub mimetype: Option<String>,
}

fn default_version() -> String {
    "9.1.1".to_owned()
}

/// One Proxmox node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    #[serde(default = "default_cpu_model")]
    pub cpu_model: String,
    pub sockets: u32,
    /// Cores per socket.
    pub cores: u32,
    /// Logical CPUs in total (cores × sockets × threads per core).
    pub cpus: u32,
    /// Total RAM in GiB.
    pub memory_gib: u64,
    /// Bridges (`vmbr0`).
    #[serde(default = "default_bridges")]
    pub bridges: Vec<String>,
    #[serde(default, rename = "numa")]
    pub numa_nodes: Vec<NumaSpec>,
    #[serde(default, rename = "pci")]
    pub pci_devices: Vec<PciSpec>,
    /// CPU flags beyond the x86-64-v3 baseline every node reports (`avx512f` …).
    #[serde(default)]
    pub cpu_flags: Vec<String>,
    /// Hardware virtualisation usable by KVM (`false`: a nested Proxmox whose outer host does
    /// not expose vmx/svm; `cpuinfo.hvm` is 0 and KVM guests do not start).
    #[serde(default = "default_hvm")]
    pub hvm: bool,
}

fn default_hvm() -> bool {
    true
}

fn default_cpu_model() -> String {
    "AMD EPYC 7763 64-Core Processor".to_owned()
}

fn default_bridges() -> Vec<String> {
    vec!["vmbr0".to_owned()]
}

/// One host NUMA node. Hugepages are reserved at boot (kernel command line), so they are taken
/// out of the memory available to ordinary guests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumaSpec {
    pub id: u32,
    /// Host CPUs of this node (`0-31,64-95`).
    pub cpus: String,
    pub memory_gib: u64,
    #[serde(default)]
    pub hugepages_1g: u32,
    #[serde(default)]
    pub hugepages_2m: u32,
}

/// One PCI function as `GET /nodes/{node}/hardware/pci` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciSpec {
    /// `0000:41:00.0`.
    pub id: String,
    pub vendor: String,
    pub device: String,
    pub class: String,
    /// -1 when the IOMMU is off.
    pub iommugroup: i64,
    #[serde(default)]
    pub numa_node: Option<u32>,
    #[serde(default)]
    pub vendor_name: Option<String>,
    #[serde(default)]
    pub device_name: Option<String>,
    #[serde(default)]
    pub subsystem_vendor: Option<String>,
    #[serde(default)]
    pub subsystem_device: Option<String>,
}

/// A storage definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    pub name: String,
    /// `lvmthin` | `dir` | `zfspool` | `nfs` ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Content types: `images`, `rootdir`, `iso`, `import`, `vztmpl`, `snippets`, `backup`.
    pub content: Vec<String>,
    pub size_gib: u64,
    #[serde(default)]
    pub shared: bool,
    /// Sustained write bandwidth in MiB/s shared by the operations that move bytes through the
    /// storage; the type's default when absent (crates/pve-sim/README.md, "Storage model").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mib_s: Option<f64>,
    /// Fixed cost of each operation (volume allocation, process start) in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_ms: Option<u64>,
    /// How long one volume allocation or linked clone holds the storage's lock
    /// (pve-storage's `cluster_lock_storage`), in milliseconds; the type's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_ms: Option<u64>,
}

/// A user with a password (ticket login).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// `root@pam`.
    pub userid: String,
    pub password: String,
    /// Privileges granted on `/` (`root@pam` has all of them regardless). `"*"` means all.
    #[serde(default)]
    pub privileges: Vec<String>,
}

/// An API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// `provision@pve!ci`.
    pub tokenid: String,
    pub secret: String,
    /// Privileges of the token on `/` (with privilege separation: already the intersection with
    /// its user's). `"*"` means all.
    #[serde(default)]
    pub privileges: Vec<String>,
}

impl TokenSpec {
    /// The user part of the token id (`provision@pve`).
    pub fn user(&self) -> &str {
        self.tokenid.split('!').next().unwrap_or(&self.tokenid)
    }
}

const BUILTIN: &[(&str, &str)] = &[
    ("pve-a100", include_str!("../fixtures/pve-a100.toml")),
    (
        "pve-a100-pcie",
        include_str!("../fixtures/pve-a100-pcie.toml"),
    ),
    (
        "pve-sentinel",
        include_str!("../fixtures/pve-sentinel.toml"),
    ),
    (
        "pve-sentinel-acs",
        include_str!("../fixtures/pve-sentinel-acs.toml"),
    ),
    (
        "pve-iommu-off",
        include_str!("../fixtures/pve-iommu-off.toml"),
    ),
    (
        "pve-cluster-4",
        include_str!("../fixtures/pve-cluster-4.toml"),
    ),
    ("pve-ci", include_str!("../fixtures/pve-ci.toml")),
    ("pve-homelab", include_str!("../fixtures/pve-homelab.toml")),
    ("pve-gpu", include_str!("../fixtures/pve-gpu.toml")),
];

const BUILTIN_NAMES: &[&str] = &[
    "pve-a100",
    "pve-a100-pcie",
    "pve-sentinel",
    "pve-sentinel-acs",
    "pve-iommu-off",
    "pve-cluster-4",
    "pve-ci",
    "pve-homelab",
    "pve-gpu",
];

impl Inventory {
    /// Parses and checks an inventory.
    pub fn from_toml_str(text: &str) -> Result<Inventory, InventoryError> {
        let inventory: Inventory = toml::from_str(text)?;
        inventory.check()?;
        Ok(inventory)
    }

    /// Reads an inventory file.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Inventory::from_toml_str(&text)
    }

    /// A fixture shipped with the simulator (see [`Inventory::builtin_names`]).
    pub fn builtin(name: &str) -> Option<Inventory> {
        BUILTIN
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .and_then(|(_, text)| Inventory::from_toml_str(text).ok())
    }

    /// Names accepted by [`Inventory::builtin`].
    pub fn builtin_names() -> &'static [&'static str] {
        BUILTIN_NAMES
    }

    /// A builtin name or a file path.
    pub fn builtin_or_load(name_or_path: &str) -> Result<Inventory, InventoryError> {
        match Inventory::builtin(name_or_path) {
            Some(inventory) => Ok(inventory),
            None => Inventory::load(Path::new(name_or_path)),
        }
    }

    /// Combines the hosts of two fixtures into one cluster: nodes of `b` whose names clash with
    /// nodes of `a` are renamed `pveN` with the next free number; storages, users, tokens and
    /// pools are united (those of `a` win on a name clash).
    pub fn merge(a: Inventory, b: Inventory) -> Inventory {
        let mut merged = a;
        if merged.cluster_name.is_empty() {
            merged.cluster_name = if b.cluster_name.is_empty() {
                "sim".to_owned()
            } else {
                b.cluster_name.clone()
            };
        }
        let mut taken: BTreeSet<String> = merged.nodes.iter().map(|n| n.name.clone()).collect();
        for mut node in b.nodes {
            if taken.contains(&node.name) {
                let mut number = 1;
                while taken.contains(&format!("pve{number}")) {
                    number += 1;
                }
                node.name = format!("pve{number}");
            }
            taken.insert(node.name.clone());
            merged.nodes.push(node);
        }
        for storage in b.storages {
            if !merged.storages.iter().any(|s| s.name == storage.name) {
                merged.storages.push(storage);
            }
        }
        for image in b.images {
            if !merged.images.iter().any(|i| i.url == image.url) {
                merged.images.push(image);
            }
        }
        for user in b.users {
            if !merged.users.iter().any(|u| u.userid == user.userid) {
                merged.users.push(user);
            }
        }
        for token in b.tokens {
            if !merged.tokens.iter().any(|t| t.tokenid == token.tokenid) {
                merged.tokens.push(token);
            }
        }
        for pool in b.pools {
            if !merged.pools.contains(&pool) {
                merged.pools.push(pool);
            }
        }
        merged
    }

    fn check(&self) -> Result<(), InventoryError> {
        if self.nodes.is_empty() {
            return Err(InventoryError::Invalid("no [[node]]".to_owned()));
        }
        let mut names = BTreeSet::new();
        for node in &self.nodes {
            if !names.insert(node.name.as_str()) {
                return Err(InventoryError::Invalid(format!(
                    "node {} is listed twice",
                    node.name
                )));
            }
            let numa_memory: u64 = node.numa_nodes.iter().map(|n| n.memory_gib).sum();
            if !node.numa_nodes.is_empty() && numa_memory != node.memory_gib {
                return Err(InventoryError::Invalid(format!(
                    "node {}: NUMA memory ({numa_memory} GiB) differs from memory_gib ({})",
                    node.name, node.memory_gib
                )));
            }
            for numa in &node.numa_nodes {
                let hugepage_gib =
                    u64::from(numa.hugepages_1g) + u64::from(numa.hugepages_2m) / 512;
                if hugepage_gib > numa.memory_gib {
                    return Err(InventoryError::Invalid(format!(
                        "node {} NUMA {}: more hugepages than memory",
                        node.name, numa.id
                    )));
                }
            }
            for pci in &node.pci_devices {
                if !is_pci_function_id(&pci.id) {
                    return Err(InventoryError::Invalid(format!(
                        "node {}: PCI id {} is not like 0000:41:00.0",
                        node.name, pci.id
                    )));
                }
            }
        }
        for token in &self.tokens {
            if !token.tokenid.contains('@') || !token.tokenid.contains('!') {
                return Err(InventoryError::Invalid(format!(
                    "token {} is not USER@REALM!TOKENID",
                    token.tokenid
                )));
            }
        }
        for user in &self.users {
            if !user.userid.contains('@') {
                return Err(InventoryError::Invalid(format!(
                    "user {} is not USER@REALM",
                    user.userid
                )));
            }
        }
        Ok(())
    }
}

fn is_pci_function_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 12
        && bytes[4] == b':'
        && bytes[7] == b':'
        && bytes[10] == b'.'
        && id
            .chars()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_builtin_parses() {
        for name in Inventory::builtin_names() {
            let text = BUILTIN.iter().find(|(n, _)| n == name).unwrap().1;
            Inventory::from_toml_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(BUILTIN.len(), BUILTIN_NAMES.len());
    }

    #[test]
    fn a100_has_eight_gpus_in_own_groups() {
        let inventory = Inventory::builtin("pve-a100").unwrap();
        let node = &inventory.nodes[0];
        let gpus: Vec<_> = node
            .pci_devices
            .iter()
            .filter(|p| p.vendor == "0x10de" && p.class == "0x030200")
            .collect();
        assert_eq!(gpus.len(), 8);
        let groups: BTreeSet<_> = gpus.iter().map(|g| g.iommugroup).collect();
        assert_eq!(groups.len(), 8);
        assert_eq!(node.numa_nodes.len(), 2);
    }

    #[test]
    fn merge_renames_clashing_nodes() {
        let a = Inventory::builtin("pve-ci").unwrap();
        let b = Inventory::builtin("pve-gpu").unwrap();
        let merged = Inventory::merge(a, b);
        let names: Vec<_> = merged.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["pve1", "pve2"]);
    }
}
