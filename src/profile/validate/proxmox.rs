//! The Proxmox side of a profile: node names, storage and pool ids, the VMID range, tags and the
//! hosts' NUMA topology.

use std::collections::BTreeSet;

use super::cpus::parse_cpulist;
use super::formats::{is_dns_label, is_proxmox_tag, is_storage_id};
use super::{Checker, path};
use crate::profile::model::{HostTopology, Profile};

impl Checker {
    pub(super) fn proxmox(&mut self, profile: &Profile) {
        let proxmox = &profile.proxmox;
        if proxmox.nodes.is_empty() {
            self.error(
                path(&["proxmox", "nodes"]),
                "proxmox.nodes is empty",
                "list the Proxmox node names VMs may be placed on, e.g. [\"pve1\"]",
            );
        }
        let mut seen = BTreeSet::new();
        for (index, node) in proxmox.nodes.iter().enumerate() {
            let node_path = path(&["proxmox", "nodes"]).index(index);
            if !is_dns_label(&node.to_ascii_lowercase()) {
                self.error(
                    node_path,
                    format!("`{node}` is not a Proxmox node name"),
                    "node names are host names: letters, digits and `-`, as shown by `pvecm nodes`",
                );
            } else if !seen.insert(node.as_str()) {
                self.error(
                    node_path,
                    format!("node `{node}` is listed twice"),
                    "remove the duplicate",
                );
            }
        }
        let storage = &proxmox.storage;
        let storages = [
            ("disks", Some(&storage.disks)),
            ("efi", storage.efi.as_ref()),
            ("iso", Some(&storage.iso)),
            ("images", Some(&storage.images)),
        ];
        for (key, value) in storages {
            if let Some(value) = value
                && !is_storage_id(value)
            {
                self.error(
                    path(&["proxmox", "storage", key]),
                    format!("`{value}` is not a Proxmox storage id"),
                    "storage ids start with a letter and hold letters, digits, `-`, `_` and `.`, e.g. local-lvm",
                );
            }
        }
        if let Some(pool) = &proxmox.pool
            && !is_storage_id(pool)
        {
            self.error(
                path(&["proxmox", "pool"]),
                format!("`{pool}` is not a Proxmox pool id"),
                "pool ids hold letters, digits, `-` and `_`",
            );
        }
        self.vmid_range(profile);
        for (index, tag) in proxmox.tags.iter().enumerate() {
            if !is_proxmox_tag(tag) {
                self.error(
                    path(&["proxmox", "tags"]).index(index),
                    format!("`{tag}` is not a valid Proxmox tag"),
                    "tags start with a letter, digit or `_` and hold letters, digits, `_`, `-`, `+` and `.`",
                );
            }
        }
        let mut topology_nodes = BTreeSet::new();
        for (index, host) in proxmox.topology.iter().enumerate() {
            self.topology(profile, index, host, &mut topology_nodes);
        }
    }

    /// The VMID range: Proxmox's limits, and room for every VM.
    fn vmid_range(&mut self, profile: &Profile) {
        let range = profile.proxmox.vmid_range;
        let vms = profile.vm_count();
        if range.start < 100 {
            self.error(
                path(&["proxmox", "vmid_range", "start"]),
                format!(
                    "VMID {} is reserved; Proxmox VMIDs start at 100",
                    range.start
                ),
                "pick a range such as { start = 7100, end = 7199 }",
            );
        }
        if range.end > 999_999_999 {
            self.error(
                path(&["proxmox", "vmid_range", "end"]),
                format!("VMID {} is above Proxmox's limit 999999999", range.end),
                "pick a range such as { start = 7100, end = 7199 }",
            );
        }
        if range.end < range.start {
            self.error(
                path(&["proxmox", "vmid_range", "end"]),
                format!(
                    "vmid_range ends ({}) before it starts ({})",
                    range.end, range.start
                ),
                "write { start = LOW, end = HIGH } with HIGH >= LOW",
            );
        } else if u64::from(range.end - range.start) + 1 < vms {
            self.error(
                path(&["proxmox", "vmid_range"]),
                format!(
                    "vmid_range {}..={} holds {} VMIDs but the profile asks for {vms} VMs",
                    range.start,
                    range.end,
                    range.end - range.start + 1
                ),
                "widen the range so every VM gets its own VMID",
            );
        }
    }

    fn topology<'p>(
        &mut self,
        profile: &'p Profile,
        index: usize,
        host: &'p HostTopology,
        seen: &mut BTreeSet<&'p str>,
    ) {
        let host_path = path(&["proxmox", "topology"]).index(index);
        if !profile.proxmox.nodes.contains(&host.node) {
            self.error(
                host_path.key("node"),
                format!(
                    "topology for `{}`, which is not in proxmox.nodes",
                    host.node
                ),
                "describe only nodes listed in proxmox.nodes",
            );
        } else if !seen.insert(host.node.as_str()) {
            self.error(
                host_path.key("node"),
                format!("topology for `{}` is given twice", host.node),
                "merge the two entries",
            );
        }
        if host.numa_nodes.is_empty() {
            self.error(
                host_path.key("numa_nodes"),
                "a topology entry needs at least one NUMA node",
                "add numa_nodes = [{ id = 0, cpus = \"0-15\" }]",
            );
        }
        let mut ids = BTreeSet::new();
        let mut cpus_seen: BTreeSet<u32> = BTreeSet::new();
        for (numa_index, numa) in host.numa_nodes.iter().enumerate() {
            let numa_path = host_path.key("numa_nodes").index(numa_index);
            if !ids.insert(numa.id) {
                self.error(
                    numa_path.key("id"),
                    format!("NUMA node id {} appears twice on `{}`", numa.id, host.node),
                    "give each NUMA node its own id (as in `lscpu`)",
                );
            }
            match parse_cpulist(&numa.cpus) {
                Ok(cpus) => {
                    if let Some(cpu) = cpus.iter().find(|cpu| cpus_seen.contains(cpu)) {
                        self.error(
                            numa_path.key("cpus"),
                            format!("CPU {cpu} belongs to two NUMA nodes"),
                            "copy the lists from `lscpu -p=CPU,NODE` or /sys/devices/system/node/nodeN/cpulist",
                        );
                    }
                    cpus_seen.extend(cpus);
                }
                Err(message) => self.error(
                    numa_path.key("cpus"),
                    message,
                    "write a Linux cpulist such as 0-31,64-95",
                ),
            }
        }
    }
}
