//! The rules for one node group: name pattern, VM shape, addresses, disks, GPUs, hugepages,
//! labels, taints and placement.

use std::collections::BTreeSet;

use super::Checker;
use super::formats::{
    is_absolute_path, is_cpu_type, is_machine_type, is_pci_filter, is_storage_id,
};
use super::labels::{check_label_key, check_label_value, parse_taint};
use crate::profile::diagnostic::KeyPath;
use crate::profile::model::{Bios, NodeGroup, Profile, Role};
use crate::profile::nodes::{address_number, parse_address_range};

impl Checker {
    /// Every rule for one group, in the order its findings are reported.
    pub(super) fn group(&mut self, profile: &Profile, group_path: &KeyPath, group: &NodeGroup) {
        self.group_count_and_names(group_path, group);
        self.group_shape(group_path, group);
        self.group_addresses(profile, group_path, group);
        self.group_disks(group_path, group);
        self.group_gpus(group_path, group);
        self.group_hugepages(group_path, group);
        self.group_labels_and_taints(group_path, group);
        self.group_placement(profile, group_path, group);
    }

    /// At least one VM, and a name pattern that gives each its own name.
    fn group_count_and_names(&mut self, group_path: &KeyPath, group: &NodeGroup) {
        if group.count == 0 {
            self.error(
                group_path.key("count"),
                "count is 0",
                "remove the group or give it at least one VM",
            );
        }
        if group.count > 1 && !group.name_pattern.contains("{index}") {
            self.error(
                group_path.key("name_pattern"),
                format!(
                    "name_pattern `{}` has no {{index}} but count is {}",
                    group.name_pattern, group.count
                ),
                "add {index} so each VM gets its own name, e.g. {cluster}-{group}-{index}",
            );
        }
        let mut rest = group.name_pattern.as_str();
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let placeholder = &after[..close];
            if !matches!(placeholder, "cluster" | "group" | "index") {
                self.error(
                    group_path.key("name_pattern"),
                    format!("unknown placeholder `{{{placeholder}}}` in name_pattern"),
                    "only {cluster}, {group} and {index} are replaced",
                );
                break;
            }
            rest = &after[close + 1..];
        }
    }

    /// Cores, sockets, memory, CPU type and flags, machine type.
    fn group_shape(&mut self, group_path: &KeyPath, group: &NodeGroup) {
        if group.cores == 0 || group.cores > 512 {
            self.error(
                group_path.key("cores"),
                format!("{} cores per socket is outside 1..512", group.cores),
                "give each VM at least one core",
            );
        }
        if group.sockets == 0 || group.sockets > 8 {
            self.error(
                group_path.key("sockets"),
                format!("{} sockets is outside 1..8", group.sockets),
                "most VMs want sockets = 1",
            );
        }
        let minimum = match group.role {
            Role::Server => 2048,
            Role::Agent => 1024,
        };
        if group.memory_mib < minimum {
            self.error(
                group_path.key("memory_mib"),
                format!(
                    "{} MiB is too little memory for a k3s {}",
                    group.memory_mib,
                    group.role.as_str()
                ),
                "k3s servers need at least 2048 MiB and agents 1024 MiB",
            );
        }
        if !is_cpu_type(&group.cpu_type) {
            self.error(
                group_path.key("cpu_type"),
                format!("`{}` is not a Proxmox CPU type", group.cpu_type),
                "use host, or a model such as x86-64-v2-AES",
            );
        }
        for (index, flag) in group.cpu_flags.iter().enumerate() {
            let valid = flag.len() > 1
                && (flag.starts_with('+') || flag.starts_with('-'))
                && flag[1..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !valid {
                self.error(
                    group_path.key("cpu_flags").index(index),
                    format!("CPU flag `{flag}` is not +FLAG or -FLAG"),
                    "write e.g. \"+aes\" or \"-pcid\"",
                );
            }
        }
        if !is_machine_type(&group.machine) {
            self.error(
                group_path.key("machine"),
                format!(
                    "`{}` is not a QEMU machine type Proxmox knows",
                    group.machine
                ),
                "use q35 (needed for PCIe passthrough) or pc",
            );
        }
    }

    /// Addresses: exactly one way, one per VM, inside network.cidr.
    fn group_addresses(&mut self, profile: &Profile, group_path: &KeyPath, group: &NodeGroup) {
        match (&group.address_range, group.addresses.is_empty()) {
            (Some(_), false) => self.error(
                group_path.key("address_range"),
                "both `addresses` and `address_range` are set",
                "keep one: explicit addresses or a range to allocate from",
            ),
            (None, true) => self.error(
                group_path.clone(),
                format!("node group `{}` has neither `addresses` nor `address_range`", group.name),
                "add addresses = [\"10.0.0.21\", …] (one per VM) or address_range = \"10.0.0.21-10.0.0.29\"",
            ),
            (None, false) => {
                if group.addresses.len() != group.count as usize {
                    self.error(
                        group_path.key("addresses"),
                        format!("{} addresses for count = {}", group.addresses.len(), group.count),
                        "give exactly one address per VM",
                    );
                }
            }
            (Some(range), true) => match parse_address_range(range) {
                Err(message) => self.error(group_path.key("address_range"), message, "write FIRST-LAST inside network.cidr, e.g. 10.0.0.21-10.0.0.29"),
                Ok((first, last)) => {
                    let cidr = profile.network.cidr;
                    if !cidr.contains(first) || !cidr.contains(last) {
                        self.error(
                            group_path.key("address_range"),
                            format!("address_range `{range}` is not inside network.cidr {cidr}"),
                            "both ends of the range must be inside network.cidr",
                        );
                    } else if address_number(last) - address_number(first) + 1 < u128::from(group.count) {
                        self.error(
                            group_path.key("address_range"),
                            format!(
                                "address_range `{range}` holds {} addresses but count is {}",
                                address_number(last) - address_number(first) + 1,
                                group.count
                            ),
                            "widen the range or lower count",
                        );
                    }
                }
            },
        }
    }

    /// OS and scratch disks.
    fn group_disks(&mut self, group_path: &KeyPath, group: &NodeGroup) {
        let disks_path = group_path.key("disks");
        if group.disks.os_gb < 4 {
            self.error(
                disks_path.key("os_gb"),
                format!("OS disk of {} GB is too small", group.disks.os_gb),
                "the cloud image needs 3 GB and k3s images need more: use at least 20",
            );
        }
        if group.disks.scratch_gb == Some(0) {
            self.error(
                disks_path.key("scratch_gb"),
                "scratch_gb is 0",
                "remove scratch_gb or give the disk a size",
            );
        }
        if let Some(mount) = &group.disks.scratch_mount {
            if !is_absolute_path(mount) {
                self.error(
                    disks_path.key("scratch_mount"),
                    format!("scratch_mount `{mount}` is not an absolute path"),
                    "write an absolute path such as /mnt/scratch",
                );
            }
            if group.disks.scratch_gb.is_none() {
                self.error(
                    disks_path.key("scratch_mount"),
                    "scratch_mount without scratch_gb",
                    "add scratch_gb = <size in GB> for the scratch disk",
                );
            }
        }
        if let Some(storage) = &group.disks.scratch_storage {
            if !is_storage_id(storage) {
                self.error(
                    disks_path.key("scratch_storage"),
                    format!("`{storage}` is not a Proxmox storage id"),
                    "e.g. local-lvm or nvme-thin",
                );
            }
            if group.disks.scratch_gb.is_none() {
                self.error(
                    disks_path.key("scratch_storage"),
                    "scratch_storage without scratch_gb",
                    "add scratch_gb = <size in GB>",
                );
            }
        }
    }

    /// Passed-through GPUs: how many, which, and the machine and firmware they need.
    fn group_gpus(&mut self, group_path: &KeyPath, group: &NodeGroup) {
        if let Some(gpus) = &group.gpus {
            let gpus_path = group_path.key("gpus");
            if gpus.count == 0 {
                self.error(
                    gpus_path.key("count"),
                    "gpus.count is 0",
                    "remove the [gpus] table or pass at least one GPU",
                );
            } else if gpus.count > 16 {
                self.error(
                    gpus_path.key("count"),
                    format!(
                        "{} GPUs per VM is more than Proxmox's 16 hostpci slots",
                        gpus.count
                    ),
                    "use at most 16",
                );
            }
            match (&gpus.filter, &gpus.mapping) {
                (Some(_), Some(_)) => self.error(gpus_path.key("mapping"), "gpus has both `filter` and `mapping`", "keep one: a vendor:device filter or a resource mapping name"),
                (None, None) => self.error(gpus_path.clone(), "gpus needs `filter` or `mapping`", "add filter = \"10de:20b5\" (vendor:device from `lspci -nn`) or mapping = \"<name>\""),
                (Some(filter), None) => {
                    if filter.ids().is_empty() {
                        self.error(gpus_path.key("filter"), "the GPU filter list is empty", "list at least one vendor:device, e.g. [\"10de:20f1\", \"10de:20b5\"]");
                    }
                    for id in filter.ids().iter().filter(|id| !is_pci_filter(id)) {
                        self.error(gpus_path.key("filter"), format!("GPU filter `{id}` is not vendor:device"), "write four hex digits each, e.g. 10de:20b5, or 10de:* for any NVIDIA GPU");
                    }
                }
                (None, Some(mapping)) => {
                    if !is_storage_id(mapping) {
                        self.error(gpus_path.key("mapping"), format!("`{mapping}` is not a Proxmox mapping id"), "use the id shown under Datacenter → Resource Mappings");
                    }
                }
            }
            if !group.machine.contains("q35") {
                self.error(
                    group_path.key("machine"),
                    format!(
                        "GPU passthrough needs a q35 machine, not `{}`",
                        group.machine
                    ),
                    "set machine = \"q35\" (PCIe passthrough exists only on q35)",
                );
            }
            if group.bios != Bios::Ovmf {
                self.error(
                    group_path.key("bios"),
                    "GPU passthrough needs UEFI firmware (bios = \"ovmf\")",
                    "set bios = \"ovmf\"; GPUs' option ROMs and large BARs need UEFI",
                );
            }
            if group.cpu_type != "host" {
                self.warning(
                    group_path.key("cpu_type"),
                    format!(
                        "GPU VMs usually want cpu_type = \"host\", not `{}`",
                        group.cpu_type
                    ),
                    "NVIDIA drivers and CUDA libraries use host CPU features",
                );
            }
        }
    }

    /// Hugepages: a supported size that divides the memory, backed by NUMA.
    fn group_hugepages(&mut self, group_path: &KeyPath, group: &NodeGroup) {
        if let Some(size) = group.hugepages {
            if size != 2 && size != 1024 {
                self.error(
                    group_path.key("hugepages"),
                    format!("hugepage size {size} MiB is not supported"),
                    "use 2 (2 MiB pages) or 1024 (1 GiB pages)",
                );
            } else {
                if !group.memory_mib.is_multiple_of(u64::from(size)) {
                    self.error(
                        group_path.key("memory_mib"),
                        format!(
                            "memory_mib {} is not a multiple of the {size} MiB hugepage size",
                            group.memory_mib
                        ),
                        "round memory_mib to a whole number of hugepages",
                    );
                }
                if !group.numa_pinning {
                    self.error(
                        group_path.key("hugepages"),
                        "hugepages need NUMA (numa_pinning = true)",
                        "Proxmox backs hugepages only with numa: 1; set numa_pinning = true",
                    );
                }
            }
        }
    }

    /// Kubernetes labels and taints of the group's nodes.
    fn group_labels_and_taints(&mut self, group_path: &KeyPath, group: &NodeGroup) {
        for (key, value) in &group.labels {
            let label_path = group_path.key("labels").key(key);
            if let Err((message, hint)) = check_label_key(key) {
                self.error_at_key(label_path.clone(), message, hint);
            }
            if let Err(message) = check_label_value(value) {
                self.error(label_path, message, "label values are at most 63 characters of letters, digits, `-`, `_` and `.`, starting and ending alphanumeric (or empty)");
            }
        }
        let mut taint_keys = BTreeSet::new();
        for (index, taint) in group.taints.iter().enumerate() {
            let taint_path = group_path.key("taints").index(index);
            match parse_taint(taint) {
                Err((message, hint)) => self.error(taint_path, message, hint),
                Ok((key, effect)) => {
                    if !taint_keys.insert((key.to_owned(), effect.to_owned())) {
                        self.error(
                            taint_path,
                            format!("taint `{key}:{effect}` appears twice"),
                            "remove the duplicate",
                        );
                    }
                }
            }
        }
    }

    /// The Proxmox nodes the group is restricted to.
    fn group_placement(&mut self, profile: &Profile, group_path: &KeyPath, group: &NodeGroup) {
        for (index, node) in group.proxmox_nodes.iter().enumerate() {
            if !profile.proxmox.nodes.contains(node) {
                self.error(
                    group_path.key("proxmox_nodes").index(index),
                    format!("`{node}` is not in proxmox.nodes"),
                    "a group can only be restricted to nodes listed in proxmox.nodes",
                );
            }
        }
    }
}
