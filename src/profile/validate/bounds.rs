//! Count and size bounds on every list and number, checked before any other rule walks a list,
//! so a profile asking for 4 billion VMs or 100 000 tags is refused after a bounded amount of work.
//! The bounds are listed in `profiles/README.md` ("Validation rules"); keep the two in step.

use super::input::is_pci_prefix;
use super::{Checker, path};
use crate::profile::diagnostic::KeyPath;
use crate::profile::model::{NodeGroup, Profile};

/// A profile file larger than this is refused before it is parsed.
pub const MAX_PROFILE_BYTES: usize = 1024 * 1024;
/// `[[node_groups]]` tables per profile.
pub const MAX_NODE_GROUPS: usize = 100;
/// VMs per group and in the whole profile.
pub const MAX_VMS: u64 = 1000;
/// Entries of short lists: tags, labels, taints, cpu_flags, tls_san, dns, disable, proxmox
/// nodes, topology entries, NUMA nodes and a group's proxmox_nodes.
pub const MAX_LIST: usize = 64;
/// PCI devices listed per NUMA node.
pub const MAX_PCI_DEVICES: usize = 256;
/// Memory per VM: qemu-server's maximum (4 TiB).
pub const MAX_MEMORY_MIB: u64 = 4 * 1024 * 1024;
/// OS and scratch disk size (1 PiB): far above any real disk, low enough that byte sizes fit in `u64`.
pub const MAX_DISK_GB: u32 = 1024 * 1024;
/// Any free-form string (paths, URLs, descriptions).
pub const MAX_STRING: usize = 4096;
/// A Linux cpulist (`0-31,64-95`).
pub const MAX_CPULIST: usize = 1024;

impl Checker {
    /// Count and size bounds. Returns false when the profile is too large for the other rules to
    /// walk (more groups or VMs than the bounds): those rules are then skipped.
    pub(super) fn bounds(&mut self, profile: &Profile) -> bool {
        let mut walkable = true;
        let groups = profile.node_groups.len();
        if groups > MAX_NODE_GROUPS {
            self.error(
                path(&["node_groups"]),
                format!("{groups} node groups; at most {MAX_NODE_GROUPS} are supported"),
                "merge groups that share a shape: a group's count says how many VMs it has",
            );
            walkable = false;
        }
        for (index, group) in profile.node_groups.iter().take(MAX_NODE_GROUPS).enumerate() {
            if !self.group_bounds(&path(&["node_groups"]).index(index), group) {
                walkable = false;
            }
        }
        let total = profile.vm_count();
        if total > MAX_VMS && walkable {
            self.error(
                path(&["node_groups"]),
                format!("the profile asks for {total} VMs; at most {MAX_VMS} are supported"),
                "split the cluster into several profiles or lower the groups' counts",
            );
            walkable = false;
        }
        let cluster = &profile.cluster;
        self.list_bound(
            path(&["cluster", "tls_san"]),
            cluster.tls_san.len(),
            MAX_LIST,
        );
        self.list_bound(
            path(&["cluster", "disable"]),
            cluster.disable.len(),
            MAX_LIST,
        );
        self.list_bound(
            path(&["network", "dns"]),
            profile.network.dns.len(),
            MAX_LIST,
        );
        let proxmox = &profile.proxmox;
        self.list_bound(path(&["proxmox", "nodes"]), proxmox.nodes.len(), MAX_LIST);
        self.list_bound(path(&["proxmox", "tags"]), proxmox.tags.len(), MAX_LIST);
        self.list_bound(
            path(&["proxmox", "topology"]),
            proxmox.topology.len(),
            MAX_LIST,
        );
        for (index, host) in proxmox.topology.iter().take(MAX_LIST).enumerate() {
            let host_path = path(&["proxmox", "topology"]).index(index);
            self.list_bound(host_path.key("numa_nodes"), host.numa_nodes.len(), MAX_LIST);
            for (numa_index, numa) in host.numa_nodes.iter().take(MAX_LIST).enumerate() {
                let numa_path = host_path.key("numa_nodes").index(numa_index);
                self.list_bound(
                    numa_path.key("pci_devices"),
                    numa.pci_devices.len(),
                    MAX_PCI_DEVICES,
                );
                if numa.cpus.len() > MAX_CPULIST {
                    self.error(
                        numa_path.key("cpus"),
                        format!(
                            "CPU list of {} characters; at most {MAX_CPULIST}",
                            numa.cpus.len()
                        ),
                        "write ranges such as 0-31,64-95 instead of single CPUs",
                    );
                }
                for (pci_index, device) in numa.pci_devices.iter().take(MAX_PCI_DEVICES).enumerate()
                {
                    if !is_pci_prefix(device) {
                        self.error(
                            numa_path.key("pci_devices").index(pci_index),
                            format!("`{device}` is not a PCI address or bus prefix"),
                            "write DDDD:BB, DDDD:BB:SS or DDDD:BB:SS.F in hex, e.g. 0000:41:00",
                        );
                    }
                }
            }
        }
        walkable
    }

    /// Bounds of one group; false when its count is beyond [`MAX_VMS`].
    fn group_bounds(&mut self, group_path: &KeyPath, group: &NodeGroup) -> bool {
        let mut walkable = true;
        if u64::from(group.count) > MAX_VMS {
            self.error(
                group_path.key("count"),
                format!(
                    "count {} is above the limit of {MAX_VMS} VMs per group",
                    group.count
                ),
                "lower count; a profile holds at most 1000 VMs",
            );
            walkable = false;
        }
        if group.addresses.len() as u64 > MAX_VMS {
            self.error(
                group_path.key("addresses"),
                format!(
                    "{} addresses; a group holds at most {MAX_VMS} VMs",
                    group.addresses.len()
                ),
                "give exactly one address per VM, or use address_range",
            );
            walkable = false;
        }
        if group.memory_mib > MAX_MEMORY_MIB {
            self.error(
                group_path.key("memory_mib"),
                format!(
                    "{} MiB is above Proxmox's maximum of {MAX_MEMORY_MIB} MiB (4 TiB) per VM",
                    group.memory_mib
                ),
                "give the VM at most 4194304 MiB",
            );
        }
        let disks = group_path.key("disks");
        for (key, size) in [
            ("os_gb", Some(group.disks.os_gb)),
            ("scratch_gb", group.disks.scratch_gb),
        ] {
            if let Some(size) = size
                && size > MAX_DISK_GB
            {
                self.error(
                    disks.key(key),
                    format!("{size} GB is above the limit of {MAX_DISK_GB} GB per disk"),
                    "size disks in GB: 1000 is one terabyte",
                );
            }
        }
        for (key, len) in [
            ("labels", group.labels.len()),
            ("taints", group.taints.len()),
            ("cpu_flags", group.cpu_flags.len()),
            ("proxmox_nodes", group.proxmox_nodes.len()),
        ] {
            self.list_bound(group_path.key(key), len, MAX_LIST);
        }
        walkable
    }

    fn list_bound(&mut self, list_path: KeyPath, len: usize, max: usize) {
        if len > max {
            self.error(
                list_path,
                format!("{len} entries; at most {max} are supported"),
                "shorten the list",
            );
        }
    }
}
