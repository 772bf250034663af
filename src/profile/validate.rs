//! Semantic rules a profile must satisfy beyond its TOML shape; each finding names a key path.
//!
//! The rules are listed in `profiles/README.md` ("Validation rules"); keep the two in step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::diagnostic::{Finding, KeyPath, Severity, Target};
use super::model::{
    Bios, GitCredentialsKind, GitOpsEngine, HostTopology, NodeGroup, NvidiaMode, Profile, Role,
};
use super::nodes::{address_number, parse_address_range};

mod input;
pub use input::{MAX_NODE_GROUPS, MAX_PROFILE_BYTES, MAX_VMS, check_apt_source, has_control};

/// Components k3s can be told not to deploy (`--disable`).
pub const DISABLEABLE_COMPONENTS: &[&str] = &[
    "coredns",
    "servicelb",
    "traefik",
    "local-storage",
    "metrics-server",
    "runtimes",
];

/// Every finding for `profile`, errors and warnings, in document order of the rules.
pub fn validate(profile: &Profile) -> Vec<Finding> {
    let mut checker = Checker::default();
    // Bounds first: beyond them the per-VM rules are skipped, so the work stays bounded.
    let walkable = checker.bounds(profile);
    checker.allow_lists(profile);
    checker.cluster(profile);
    checker.network(profile);
    checker.proxmox(profile);
    checker.image(profile);
    checker.node_groups(profile, walkable);
    if walkable {
        checker.addresses(profile);
    }
    checker.nvidia(profile);
    checker.storage(profile);
    checker.gitops(profile);
    checker.ssh_and_rest(profile);
    checker.findings
}

#[derive(Default)]
struct Checker {
    findings: Vec<Finding>,
}

fn path(keys: &[&str]) -> KeyPath {
    keys.iter().fold(KeyPath::root(), |path, key| path.key(key))
}

impl Checker {
    fn push(
        &mut self,
        severity: Severity,
        path: KeyPath,
        target: Target,
        message: String,
        hint: Option<&str>,
    ) {
        self.findings.push(Finding {
            severity,
            path,
            target,
            message,
            hint: hint.map(str::to_owned),
        });
    }

    fn error(&mut self, path: KeyPath, message: impl Into<String>, hint: &str) {
        self.push(
            Severity::Error,
            path,
            Target::Value,
            message.into(),
            Some(hint),
        );
    }

    fn error_at_key(&mut self, path: KeyPath, message: impl Into<String>, hint: &str) {
        self.push(
            Severity::Error,
            path,
            Target::Key,
            message.into(),
            Some(hint),
        );
    }

    fn warning(&mut self, path: KeyPath, message: impl Into<String>, hint: &str) {
        self.push(
            Severity::Warning,
            path,
            Target::Value,
            message.into(),
            Some(hint),
        );
    }

    fn cluster(&mut self, profile: &Profile) {
        let cluster = &profile.cluster;
        if !is_dns_label(&cluster.name) {
            self.error(
                path(&["cluster", "name"]),
                format!("cluster name `{}` is not a DNS-1123 label", cluster.name),
                "use 1-63 lowercase letters, digits and `-`, starting and ending with a letter or digit",
            );
        }
        if !is_k3s_version(&cluster.k3s_version) {
            self.error(
                path(&["cluster", "k3s_version"]),
                format!("k3s version `{}` is not of the form vX.Y.Z+k3sN", cluster.k3s_version),
                "copy a release name from https://github.com/k3s-io/k3s/releases, e.g. v1.31.4+k3s1",
            );
        }
        if let Some(vip) = cluster.api_vip {
            let vip_path = path(&["cluster", "api_vip"]);
            if !profile.network.cidr.contains(vip) {
                self.error(
                    vip_path,
                    format!(
                        "API VIP {vip} is outside network.cidr {}",
                        profile.network.cidr
                    ),
                    "kube-vip announces the VIP with ARP: pick a free address inside network.cidr",
                );
            } else if let Some(what) = reserved_role(profile, vip).filter(|what| *what != "API VIP")
            {
                self.error(
                    vip_path,
                    format!("API VIP {vip} is the {what}"),
                    "pick a free address inside network.cidr that no host uses",
                );
            }
        } else if profile.server_count() > 1 {
            self.warning(
                path(&["cluster"]),
                "several servers but no cluster.api_vip: clients reach the API through the first server only",
                "set cluster.api_vip to a free address in network.cidr so the API survives a server failure",
            );
        }
        for (index, san) in cluster.tls_san.iter().enumerate() {
            if san.parse::<IpAddr>().is_err() && !is_dns_subdomain(san) {
                self.error(
                    path(&["cluster", "tls_san"]).index(index),
                    format!("tls_san entry `{san}` is neither an IP address nor a DNS name"),
                    "write an IP address or a lowercase DNS name such as k8s.example.com",
                );
            }
        }
        for (name, cidr) in [
            ("cluster_cidr", cluster.cluster_cidr),
            ("service_cidr", cluster.service_cidr),
        ] {
            if overlaps(cidr, profile.network.cidr) {
                self.error(
                    path(&["cluster", name]),
                    format!("{name} {cidr} overlaps network.cidr {}", profile.network.cidr),
                    "pod and service networks must not overlap the VM network; the k3s defaults are 10.42.0.0/16 and 10.43.0.0/16",
                );
            }
        }
        if overlaps(cluster.cluster_cidr, cluster.service_cidr) {
            self.error(
                path(&["cluster", "service_cidr"]),
                format!(
                    "service_cidr {} overlaps cluster_cidr {}",
                    cluster.service_cidr, cluster.cluster_cidr
                ),
                "use two disjoint ranges, e.g. 10.42.0.0/16 for pods and 10.43.0.0/16 for services",
            );
        }
        let mut seen = BTreeSet::new();
        for (index, component) in cluster.disable.iter().enumerate() {
            let component_path = path(&["cluster", "disable"]).index(index);
            if !DISABLEABLE_COMPONENTS.contains(&component.as_str()) {
                self.error(
                    component_path,
                    format!("k3s has no packaged component `{component}` to disable"),
                    "one of: coredns, servicelb, traefik, local-storage, metrics-server, runtimes",
                );
            } else if !seen.insert(component.as_str()) {
                self.error(
                    component_path,
                    format!("`{component}` is listed twice"),
                    "remove the duplicate",
                );
            }
        }
        if let Some(ttl) = &cluster.ttl
            && !is_ttl(ttl)
        {
            self.error(
                path(&["cluster", "ttl"]),
                format!("ttl `{ttl}` is not a duration"),
                "write a positive number followed by m, h or d, e.g. 30m, 4h or 2d",
            );
        }
    }

    fn network(&mut self, profile: &Profile) {
        let network = &profile.network;
        let cidr = network.cidr;
        let usable = match cidr {
            IpNetwork::V4(v4) => v4.prefix() <= 30,
            IpNetwork::V6(v6) => v6.prefix() <= 126,
        };
        if !usable {
            self.error(
                path(&["network", "cidr"]),
                format!("network {cidr} is too small for a gateway and nodes"),
                "use a prefix of /30 or shorter, e.g. 10.0.0.0/24",
            );
        }
        if cidr.ip() != cidr.network() {
            self.warning(
                path(&["network", "cidr"]),
                format!(
                    "network.cidr {cidr} has host bits set; the network is {}/{}",
                    cidr.network(),
                    cidr.prefix()
                ),
                "write the network address, e.g. 10.0.0.0/24",
            );
        }
        let gateway = network.gateway;
        if !cidr.contains(gateway) {
            self.error(
                path(&["network", "gateway"]),
                format!("gateway {gateway} is outside network.cidr {cidr}"),
                "the gateway must be reachable on the VM network; use an address inside network.cidr",
            );
        } else if gateway == cidr.network() || is_broadcast(cidr, gateway) {
            self.error(
                path(&["network", "gateway"]),
                format!("gateway {gateway} is the network or broadcast address of {cidr}"),
                "use the router's address, usually .1",
            );
        }
        if let Some(domain) = &network.search_domain
            && !is_dns_subdomain(domain)
        {
            self.error(
                path(&["network", "search_domain"]),
                format!("search domain `{domain}` is not a DNS name"),
                "write a lowercase DNS name such as lab.example.com",
            );
        }
        if !is_interface_name(&network.bridge) {
            self.error(
                path(&["network", "bridge"]),
                format!("bridge `{}` is not a Linux interface name", network.bridge),
                "use the Proxmox bridge name, e.g. vmbr0 (at most 15 characters)",
            );
        }
        if let Some(vlan) = network.vlan
            && !(1..=4094).contains(&vlan)
        {
            self.error(
                path(&["network", "vlan"]),
                format!("VLAN tag {vlan} is outside 1..4094"),
                "use a VLAN id between 1 and 4094, or remove `vlan` for an untagged network",
            );
        }
        if let Some(mtu) = network.mtu
            && !(576..=9216).contains(&mtu)
        {
            self.error(
                path(&["network", "mtu"]),
                format!("MTU {mtu} is outside 576..9216"),
                "use 1500 for ordinary Ethernet or up to 9000 for jumbo frames",
            );
        }
    }

    fn proxmox(&mut self, profile: &Profile) {
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
        let range = proxmox.vmid_range;
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

    fn image(&mut self, profile: &Profile) {
        let image = &profile.image;
        let sources = [
            image.url.is_some(),
            image.volume.is_some(),
            image.template_vmid.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        let hint = "set exactly one of url (+ sha256), volume or template_vmid";
        if sources == 0 {
            self.error(path(&["image"]), "the image has no source", hint);
        } else if sources > 1 {
            self.error(path(&["image"]), "the image has more than one source", hint);
        }
        if let Some(url) = &image.url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                self.error(
                    path(&["image", "url"]),
                    format!("image url `{url}` is not an http(s) URL"),
                    "Proxmox's download-url accepts only http:// and https:// URLs",
                );
            }
            if image.sha256.is_none() {
                self.error(
                    path(&["image"]),
                    "image.url without image.sha256",
                    "add sha256 = \"<64 hex>\" (run `sha256sum` on the downloaded image); Proxmox verifies it",
                );
            }
            let file_name = image
                .file_name
                .clone()
                .unwrap_or_else(|| url.rsplit('/').next().unwrap_or_default().to_owned());
            let key = if image.file_name.is_some() {
                "file_name"
            } else {
                "url"
            };
            if !has_import_extension(&file_name) {
                self.error(
                    path(&["image", key]),
                    format!(
                        "image file name `{file_name}` does not end in .qcow2, .img, .raw or .vmdk"
                    ),
                    "Proxmox stores imports only with a disk image extension; set image.file_name",
                );
            }
        } else if image.file_name.is_some() {
            self.error(
                path(&["image", "file_name"]),
                "image.file_name is only used with image.url",
                "remove file_name or add url",
            );
        }
        if let Some(sha) = &image.sha256 {
            if !is_sha256(sha) {
                self.error(
                    path(&["image", "sha256"]),
                    format!("sha256 `{sha}` is not 64 hexadecimal characters"),
                    "run `sha256sum` on the image and paste the 64-character digest",
                );
            }
            if image.url.is_none() {
                self.error(
                    path(&["image", "sha256"]),
                    "image.sha256 without image.url",
                    "the checksum verifies a download; remove it or add url",
                );
            }
        }
        if let Some(volume) = &image.volume
            && !is_volume_id(volume)
        {
            self.error(
                path(&["image", "volume"]),
                format!("`{volume}` is not a Proxmox volume id"),
                "write STORAGE:PATH, e.g. local:import/debian-12-genericcloud-amd64.qcow2",
            );
        }
        if let (Some(written), Some(inferred)) = (image.os, image.inferred_os())
            && written != inferred
        {
            self.warning(
                path(&["image", "os"]),
                format!("image.os is {written} but the image's name says {inferred}"),
                "node preparation follows image.os: check which image this really is",
            );
        }
        if let Some(template) = image.template_vmid {
            let range = profile.proxmox.vmid_range;
            if template < 100 {
                self.error(
                    path(&["image", "template_vmid"]),
                    format!("template VMID {template} is below 100"),
                    "Proxmox VMIDs start at 100",
                );
            } else if (range.start..=range.end).contains(&template) {
                self.error(
                    path(&["image", "template_vmid"]),
                    format!("template VMID {template} lies inside proxmox.vmid_range"),
                    "the range is allocated to cluster VMs; keep the template outside it",
                );
            }
        }
    }

    fn node_groups(&mut self, profile: &Profile, walkable: bool) {
        let groups_path = path(&["node_groups"]);
        if profile.node_groups.is_empty() {
            self.error(
                groups_path.clone(),
                "the profile has no node groups",
                "add a [[node_groups]] table with role = \"server\"",
            );
            return;
        }
        let mut names = BTreeSet::new();
        for (index, group) in profile.node_groups.iter().enumerate() {
            let group_path = groups_path.index(index);
            if !is_dns_label(&group.name) {
                self.error(
                    group_path.key("name"),
                    format!("group name `{}` is not a DNS-1123 label", group.name),
                    "group names end up in VM names: lowercase letters, digits and `-`",
                );
            } else if !names.insert(group.name.as_str()) {
                self.error(
                    group_path.key("name"),
                    format!("group name `{}` is used twice", group.name),
                    "give every node group its own name",
                );
            }
            self.group(profile, &group_path, group);
        }
        let servers = profile.server_count();
        let first_server = profile
            .node_groups
            .iter()
            .position(|group| group.role == Role::Server);
        match first_server {
            None => self.error(
                groups_path.clone(),
                "the profile has no server group",
                "add a [[node_groups]] table with role = \"server\" (1 or 3 servers)",
            ),
            Some(index) if servers.is_multiple_of(2) => {
                let message = if servers == 0 {
                    "the server groups have no VMs: k3s needs at least one server".to_owned()
                } else if servers == 2 {
                    "2 servers cannot tolerate any failure: etcd needs a majority (2 of 2), so losing either server stops the cluster".to_owned()
                } else {
                    format!(
                        "{servers} servers is an even number: etcd tolerates no more failures than with {}",
                        servers - 1
                    )
                };
                self.error(
                    groups_path.index(index).key("count"),
                    message,
                    "use an odd number of servers: 1, or 3 for high availability",
                );
            }
            Some(_) => {}
        }
        // VM names must be unique valid DNS labels.
        let mut vm_names: BTreeMap<String, usize> = BTreeMap::new();
        let names_checkable = walkable && is_dns_label(&profile.cluster.name);
        for (index, group) in profile.node_groups.iter().enumerate() {
            if !names_checkable || !is_dns_label(&group.name) {
                // Already reported on the name itself.
                continue;
            }
            for member in 1..=group.count.min(1000) {
                let name = group.vm_name(&profile.cluster.name, member);
                if name.len() > 63 || !is_dns_label(&name) {
                    let (key_path, hint) = if group.name_pattern.contains("{cluster}")
                        && profile.cluster.name.len() > 20
                    {
                        (
                            path(&["cluster", "name"]),
                            "shorten cluster.name: VM names are `{cluster}-{group}-{index}` and must stay DNS labels of at most 63 characters",
                        )
                    } else {
                        (
                            groups_path.index(index).key("name_pattern"),
                            "VM names must be lowercase DNS labels of at most 63 characters; shorten the pattern or the names it uses",
                        )
                    };
                    self.error(
                        key_path,
                        format!("generated VM name `{name}` is not a valid DNS label"),
                        hint,
                    );
                    break;
                }
                if let Some(other) = vm_names.insert(name.clone(), index)
                    && other != index
                {
                    self.error(
                        groups_path.index(index).key("name_pattern"),
                        format!("VM name `{name}` is generated by two node groups"),
                        "include {group} in name_pattern",
                    );
                    break;
                }
            }
        }
    }

    fn group(&mut self, profile: &Profile, group_path: &KeyPath, group: &NodeGroup) {
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
        // Addresses: exactly one way.
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
        // Disks.
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
        // GPUs.
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
        // Hugepages and NUMA.
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
        // Labels and taints.
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

    fn addresses(&mut self, profile: &Profile) {
        let cidr = profile.network.cidr;
        let mut owner: BTreeMap<IpAddr, (String, u32)> = BTreeMap::new();
        for (group_index, group) in profile.node_groups.iter().enumerate() {
            let group_path = path(&["node_groups"]).index(group_index);
            let Ok(addresses) = group.address_iter() else {
                continue;
            };
            let explicit = group.address_range.is_none();
            for (position, address) in addresses.enumerate() {
                let member = u32::try_from(position)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1);
                let address_path = if explicit {
                    group_path.key("addresses").index(position)
                } else {
                    group_path.key("address_range")
                };
                if explicit && !cidr.contains(address) {
                    self.error(
                        address_path,
                        format!("address {address} is outside network.cidr {cidr}"),
                        "node addresses must be inside network.cidr",
                    );
                    continue;
                }
                if let Some(what) = reserved_role(profile, address) {
                    self.error(
                        address_path,
                        format!("address {address} is the {what}"),
                        "pick addresses no other host or role uses",
                    );
                    continue;
                }
                if let Some((other_group, other_member)) = owner.get(&address) {
                    self.error(
                        address_path,
                        format!("address {address} is also given to {other_group} #{other_member}"),
                        "every VM needs its own address",
                    );
                    continue;
                }
                owner.insert(address, (group.name.clone(), member));
            }
        }
    }

    fn nvidia(&mut self, profile: &Profile) {
        let nvidia = &profile.nvidia;
        let gpus = profile.gpu_count();
        match nvidia.mode {
            NvidiaMode::Operator | NvidiaMode::Host => {
                if gpus == 0 {
                    self.error(
                        path(&["nvidia", "mode"]),
                        "nvidia.mode installs NVIDIA software but no node group has GPUs",
                        "add [node_groups.gpus] to a group, or set nvidia.mode = \"none\"",
                    );
                }
            }
            NvidiaMode::None => {
                let first_gpu_group = profile
                    .node_groups
                    .iter()
                    .position(|group| group.gpus.is_some());
                if let Some(index) = first_gpu_group
                    && gpus > 0
                {
                    self.warning(
                        path(&["node_groups"]).index(index).key("gpus"),
                        format!("{gpus} GPUs are passed through but nvidia.mode is none: no driver or container runtime will be installed"),
                        "set nvidia.mode = \"operator\" or \"host\" unless you install the driver yourself",
                    );
                }
                if nvidia.time_slicing_replicas.is_some() {
                    self.error(
                        path(&["nvidia", "time_slicing_replicas"]),
                        "time slicing needs nvidia.mode operator or host",
                        "set nvidia.mode or remove time_slicing_replicas",
                    );
                }
            }
        }
        self.nvidia_guest(profile);
        if let Some(replicas) = nvidia.time_slicing_replicas
            && !(2..=64).contains(&replicas)
        {
            self.error(
                path(&["nvidia", "time_slicing_replicas"]),
                format!("{replicas} time-slicing replicas: each GPU must be shared by 2..64 pods"),
                "use 2 or more (e.g. 4), or remove time_slicing_replicas to give whole GPUs",
            );
        }
        if nvidia.default_runtime && nvidia.mode != NvidiaMode::Operator {
            self.error(
                path(&["nvidia", "default_runtime"]),
                "default_runtime is set but nvidia.mode is not operator",
                "set nvidia.mode = \"operator\" (its toolkit makes nvidia containerd's default runtime) or remove default_runtime",
            );
        }
        if let Some(version) = &nvidia.operator_version {
            if nvidia.mode != NvidiaMode::Operator {
                self.error(
                    path(&["nvidia", "operator_version"]),
                    "operator_version is set but nvidia.mode is not operator",
                    "set nvidia.mode = \"operator\" or remove operator_version",
                );
            }
            if !is_semver_v(version) {
                self.error(
                    path(&["nvidia", "operator_version"]),
                    format!("operator version `{version}` is not vX.Y.Z"),
                    "use a GPU Operator chart version such as v24.9.2",
                );
            }
        }
    }

    /// Whether the NVIDIA driver and toolkit can really reach the guest OS the image boots.
    fn nvidia_guest(&mut self, profile: &Profile) {
        let nvidia = &profile.nvidia;
        let os = profile.image.guest_os();
        let set_os_hint = "set image.os = \"debian-12\" or \"ubuntu-24.04\"";
        match nvidia.mode {
            NvidiaMode::Operator if !nvidia.driver_preinstalled() => match os {
                Some(os) if !os.has_operator_driver_images() => self.error(
                    path(&["nvidia", "mode"]),
                    format!("the GPU Operator has no driver container for {os} (NVIDIA publishes them for Ubuntu and RHEL only): the GPU nodes would never get a driver"),
                    "use an Ubuntu 24.04 cloud image, or nvidia.mode = \"host\" (provision installs the driver with apt), or nvidia.driver = \"preinstalled\" when the image already has it",
                ),
                Some(_) => {}
                // An image without any source is an error of its own already.
                None if profile.image == Default::default() => {}
                None => self.warning(
                    path(&["image"]),
                    "the guest OS is unknown, and the GPU Operator's driver container exists only for Ubuntu and RHEL",
                    set_os_hint,
                ),
            },
            NvidiaMode::Host => {
                if os.is_none() {
                    self.error(
                        path(&["image"]),
                        "nvidia.mode = \"host\" installs the driver with the guest's packages, but the guest OS is unknown",
                        set_os_hint,
                    );
                }
                match (&nvidia.repo_key, &profile.airgap.apt_source) {
                    (None, None) => self.error(
                        path(&["nvidia", "mode"]),
                        "nvidia-container-toolkit comes only from NVIDIA's apt repository, and no signing key for it is given",
                        "download https://nvidia.github.io/libnvidia-container/gpgkey once, check its fingerprint, and set nvidia.repo_key to that file; or set airgap.apt_source to a mirror that carries the driver and the toolkit",
                    ),
                    (Some(_), Some(_)) => self.warning(
                        path(&["nvidia", "repo_key"]),
                        "nvidia.repo_key is not used: airgap.apt_source replaces every package source",
                        "remove repo_key, or make sure the offline mirror carries nvidia-container-toolkit",
                    ),
                    (Some(_), None) | (None, Some(_)) => {}
                }
            }
            NvidiaMode::Operator | NvidiaMode::None => {}
        }
        if nvidia.mode == NvidiaMode::None && nvidia.driver.is_some() {
            self.error(
                path(&["nvidia", "driver"]),
                "nvidia.driver is set but nvidia.mode is none",
                "set nvidia.mode = \"operator\" or \"host\", or remove driver",
            );
        }
        if nvidia.mode != NvidiaMode::Host && nvidia.repo_key.is_some() {
            self.error(
                path(&["nvidia", "repo_key"]),
                "nvidia.repo_key is only used with nvidia.mode = \"host\"",
                "set nvidia.mode = \"host\" or remove repo_key",
            );
        }
    }

    fn storage(&mut self, profile: &Profile) {
        if let Some(nfs) = &profile.storage.nfs {
            if !is_absolute_path(&nfs.path) {
                self.error(
                    path(&["storage", "nfs", "path"]),
                    format!("NFS export path `{}` is not absolute", nfs.path),
                    "write the export as the server lists it (`showmount -e`), e.g. /export/k3s",
                );
            }
            if !is_dns_subdomain(&nfs.class_name) {
                self.error(
                    path(&["storage", "nfs", "class_name"]),
                    format!("`{}` is not a valid StorageClass name", nfs.class_name),
                    "lowercase DNS name, e.g. nfs-client",
                );
            }
        }
        if let Some(scratch) = &profile.storage.fast_scratch {
            let scratch_path = path(&["storage", "fast_scratch"]);
            if !is_absolute_path(&scratch.path) {
                self.error(
                    scratch_path.key("path"),
                    format!("fast_scratch path `{}` is not absolute", scratch.path),
                    "write an absolute path, normally a scratch_mount such as /mnt/scratch",
                );
            } else {
                let on_scratch_disk = profile.node_groups.iter().any(|group| {
                    group.disks.scratch_mount.as_deref().is_some_and(|mount| {
                        scratch.path == mount
                            || scratch
                                .path
                                .starts_with(&format!("{}/", mount.trim_end_matches('/')))
                    })
                });
                if !on_scratch_disk {
                    self.warning(
                        scratch_path.key("path"),
                        format!("fast_scratch path `{}` is not on any group's scratch_mount: it will live on the OS disk", scratch.path),
                        "set disks.scratch_gb and disks.scratch_mount on the groups that need fast scratch",
                    );
                }
            }
            if !is_dns_subdomain(&scratch.class_name) {
                self.error(
                    scratch_path.key("class_name"),
                    format!("`{}` is not a valid StorageClass name", scratch.class_name),
                    "lowercase DNS name, e.g. fast-scratch",
                );
            }
            if let Some(nfs) = &profile.storage.nfs
                && nfs.class_name == scratch.class_name
            {
                self.error(
                    scratch_path.key("class_name"),
                    format!(
                        "StorageClass `{}` is also the NFS class",
                        scratch.class_name
                    ),
                    "give the two classes different names",
                );
            }
        }
    }

    fn gitops(&mut self, profile: &Profile) {
        let gitops = &profile.gitops;
        if gitops.engine == GitOpsEngine::None {
            for (key, set) in [
                ("repo", gitops.repo.is_some()),
                ("branch", gitops.branch.is_some()),
                ("path", gitops.path.is_some()),
                ("credentials", gitops.credentials.is_some()),
            ] {
                if set {
                    self.warning(
                        path(&["gitops", key]),
                        format!("gitops.{key} is ignored because gitops.engine is none"),
                        "set gitops.engine to flux, argocd or fleet, or remove the key",
                    );
                }
            }
            return;
        }
        // The URL itself is checked by the allow-lists (validate/input.rs).
        if gitops.repo.is_none() {
            self.error(
                path(&["gitops"]),
                "gitops.engine needs gitops.repo",
                "add repo = \"https://git.example.com/org/fleet.git\"",
            );
        }
        if let Some(repo_path) = &gitops.path
            && repo_path.starts_with('/')
        {
            self.error(
                path(&["gitops", "path"]),
                format!("gitops.path `{repo_path}` is absolute"),
                "paths are relative to the repository root, e.g. clusters/a100-8x",
            );
        }
        self.gitops_credentials(profile);
    }

    /// The credentials fit the URL: ssh:// needs an SSH key and a pinned host key, HTTPS takes a
    /// username and password (or none for a public repository). The files are read when the profile is
    /// loaded (`profile::credentials`), not here: these rules see only the profile.
    fn gitops_credentials(&mut self, profile: &Profile) {
        let gitops = &profile.gitops;
        let scheme = gitops
            .repo
            .as_deref()
            .and_then(|repo| repo.split_once("://"))
            .map(|(scheme, _)| scheme);
        let kind = gitops.credentials.as_ref().map(|c| c.kind);
        match (scheme, kind) {
            (Some("ssh"), None) => self.error(
                path(&["gitops", "repo"]),
                "an ssh:// repository needs SSH credentials and a pinned host key",
                "add [gitops.credentials] with kind = \"ssh\", file = \"secrets/gitops-deploy-key\" and known_hosts_file = \"secrets/gitops-known-hosts\", or use a public https:// URL",
            ),
            (Some("ssh"), Some(GitCredentialsKind::Https)) => self.error(
                path(&["gitops", "credentials", "kind"]),
                "kind = \"https\" cannot authenticate to an ssh:// repository",
                "use kind = \"ssh\" with a deploy key, or the repository's https:// URL",
            ),
            (Some("https"), Some(GitCredentialsKind::Ssh)) => self.error(
                path(&["gitops", "credentials", "kind"]),
                "kind = \"ssh\" cannot authenticate to an https:// repository",
                "use the repository's ssh://git@HOST/ORG/REPO URL, or kind = \"https\" with a username and token",
            ),
            _ => {}
        }
        let Some(credentials) = &gitops.credentials else {
            return;
        };
        match credentials.kind {
            GitCredentialsKind::Ssh => {
                match (&credentials.known_hosts, &credentials.known_hosts_file) {
                    (None, None) => self.error(
                        path(&["gitops", "credentials"]),
                        "kind = \"ssh\" needs known_hosts or known_hosts_file to pin the Git host's key",
                        super::credentials::KNOWN_HOSTS_HINT,
                    ),
                    (Some(_), Some(_)) => self.error(
                        path(&["gitops", "credentials", "known_hosts"]),
                        "give known_hosts or known_hosts_file, not both",
                        "keep the one that holds the host key",
                    ),
                    (Some(known_hosts), None) => {
                        if let Err(reason) = super::credentials::check_known_hosts(known_hosts) {
                            self.error(
                                path(&["gitops", "credentials", "known_hosts"]),
                                format!("gitops.credentials.known_hosts {reason}"),
                                super::credentials::KNOWN_HOSTS_HINT,
                            );
                        }
                    }
                    (None, Some(_)) => {}
                }
            }
            GitCredentialsKind::Https => {
                for (key, set) in [
                    ("known_hosts", credentials.known_hosts.is_some()),
                    ("known_hosts_file", credentials.known_hosts_file.is_some()),
                ] {
                    if set {
                        self.error(
                            path(&["gitops", "credentials", key]),
                            format!("gitops.credentials.{key} is only for kind = \"ssh\""),
                            "remove it: HTTPS repositories are authenticated by their TLS certificate",
                        );
                    }
                }
            }
        }
    }

    fn ssh_and_rest(&mut self, profile: &Profile) {
        let ssh = &profile.ssh;
        let user_valid = !ssh.user.is_empty()
            && ssh.user.len() <= 32
            && ssh
                .user
                .starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && ssh
                .user
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !user_valid {
            self.error(
                path(&["ssh", "user"]),
                format!("`{}` is not a Linux user name", ssh.user),
                "lowercase letters, digits, `_` and `-`, at most 32 characters, e.g. provision",
            );
        }
        if ssh.private_key.trim().is_empty() {
            self.error(
                path(&["ssh", "private_key"]),
                "ssh.private_key is empty",
                "point at a private key file, e.g. ~/.ssh/id_ed25519",
            );
        }
        if let Some(jump) = &ssh.jump_host {
            let valid = jump.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && !host.is_empty() && !host.contains('@')
            });
            if !valid {
                self.error(
                    path(&["ssh", "jump_host"]),
                    format!("jump host `{jump}` is not user@host[:port]"),
                    "e.g. root@pve1 or admin@bastion.example.com:2222",
                );
            }
        }
        for (key, value) in [
            ("gpu_label", &profile.detect.gpu_label),
            ("cpu_label", &profile.detect.cpu_label),
        ] {
            if let Err((message, hint)) = check_label_key(value) {
                self.error(path(&["detect", key]), message, hint);
            }
        }
        let airgap = &profile.airgap;
        for (file_key, sha_key, file, sha) in [
            (
                "k3s_binary",
                "k3s_sha256",
                &airgap.k3s_binary,
                &airgap.k3s_sha256,
            ),
            (
                "images",
                "images_sha256",
                &airgap.images,
                &airgap.images_sha256,
            ),
        ] {
            match (file, sha) {
                (Some(_), None) => self.error(
                    path(&["airgap", file_key]),
                    format!("airgap.{file_key} without airgap.{sha_key}"),
                    "every file that reaches a node is checked against a SHA-256: add it",
                ),
                (None, Some(_)) => self.error(
                    path(&["airgap", sha_key]),
                    format!("airgap.{sha_key} without airgap.{file_key}"),
                    "remove the checksum or add the file",
                ),
                (Some(_), Some(sha)) if !is_sha256(sha) => self.error(
                    path(&["airgap", sha_key]),
                    format!("sha256 `{sha}` is not 64 hexadecimal characters"),
                    "run `sha256sum` on the file",
                ),
                _ => {}
            }
        }
    }
}

/// What an address is already used for (gateway, VIP, NFS server, network or broadcast address).
fn reserved_role(profile: &Profile, address: IpAddr) -> Option<&'static str> {
    let cidr = profile.network.cidr;
    if address == profile.network.gateway {
        Some("gateway")
    } else if profile.cluster.api_vip == Some(address) {
        Some("API VIP")
    } else if profile
        .storage
        .nfs
        .as_ref()
        .is_some_and(|nfs| nfs.server == address)
    {
        Some("NFS server")
    } else if cidr.is_ipv4() && address == cidr.network() {
        Some("network address")
    } else if is_broadcast(cidr, address) {
        Some("broadcast address")
    } else {
        None
    }
}

fn is_broadcast(cidr: IpNetwork, address: IpAddr) -> bool {
    match cidr {
        IpNetwork::V4(v4) => IpAddr::V4(v4.broadcast()) == address,
        IpNetwork::V6(_) => false,
    }
}

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

/// DNS-1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns_label)
}

fn is_k3s_version(version: &str) -> bool {
    let Some(rest) = version.strip_prefix('v') else {
        return false;
    };
    let Some((semver, build)) = rest.split_once("+k3s") else {
        return false;
    };
    let numbers: Vec<&str> = semver.split('.').collect();
    numbers.len() == 3 && numbers.iter().all(|n| is_number(n)) && is_number(build)
}

fn is_semver_v(version: &str) -> bool {
    version.strip_prefix('v').is_some_and(|rest| {
        let numbers: Vec<&str> = rest.split('.').collect();
        numbers.len() == 3 && numbers.iter().all(|n| is_number(n))
    })
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_digit())
}

fn is_ttl(ttl: &str) -> bool {
    let Some(unit) = ttl.chars().last() else {
        return false;
    };
    let number = &ttl[..ttl.len() - unit.len_utf8()];
    matches!(unit, 'm' | 'h' | 'd')
        && is_number(number)
        && number.parse::<u64>().is_ok_and(|n| n > 0)
}

/// 64 hexadecimal characters.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit())
}

fn is_absolute_path(path: &str) -> bool {
    path.starts_with('/') && !path.split('/').any(|part| part == "..")
}

fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Proxmox storage / pool / mapping id: `[A-Za-z][A-Za-z0-9\-_.]*`.
fn is_storage_id(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_volume_id(volume: &str) -> bool {
    volume
        .split_once(':')
        .is_some_and(|(storage, rest)| is_storage_id(storage) && !rest.is_empty())
}

/// Proxmox tag: `[a-z0-9_][a-z0-9_\-+.]*` (case-insensitive).
fn is_proxmox_tag(tag: &str) -> bool {
    tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
}

fn is_cpu_type(cpu: &str) -> bool {
    let model = cpu.strip_prefix("custom-").unwrap_or(cpu);
    !model.is_empty()
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The machine types Proxmox's schema accepts (`pc`, `q35`, versioned `pc-i440fx-…`/`pc-q35-…`).
fn is_machine_type(machine: &str) -> bool {
    if machine == "pc" || machine == "q35" {
        return true;
    }
    let rest = machine
        .strip_prefix("pc-q35-")
        .or_else(|| machine.strip_prefix("pc-i440fx-"))
        .or_else(|| machine.strip_prefix("pc-"));
    let Some(rest) = rest else {
        return false;
    };
    let rest = rest.strip_suffix(".pxe").unwrap_or(rest);
    let (version, pve) = match rest.split_once("+pve") {
        Some((version, pve)) => (version, Some(pve)),
        None => (rest, None),
    };
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() >= 2 && parts.iter().all(|p| is_number(p)) && pve.is_none_or(is_number)
}

fn has_import_extension(file_name: &str) -> bool {
    [".qcow2", ".img", ".raw", ".vmdk"]
        .iter()
        .any(|extension| file_name.len() > extension.len() && file_name.ends_with(extension))
}

/// `vvvv:dddd` or `vvvv:*` in hex.
fn is_pci_filter(filter: &str) -> bool {
    let hex4 = |text: &str| text.len() == 4 && text.chars().all(|c| c.is_ascii_hexdigit());
    filter
        .split_once(':')
        .is_some_and(|(vendor, device)| hex4(vendor) && (device == "*" || hex4(device)))
}

/// Parses a Linux cpulist (`0-31,64-95`) into the CPUs it names, ascending.
pub fn parse_cpulist(list: &str) -> Result<Vec<u32>, String> {
    crate::pve::cpulist::CpuList::parse(list)
        .map(|cpus| cpus.iter().collect())
        .map_err(|error| error.to_string())
}

fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Kubernetes label key rules plus k3s's refusal of `kubernetes.io` / `k8s.io` prefixes.
pub fn check_label_key(key: &str) -> Result<(), (String, &'static str)> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_dns_subdomain(prefix) {
            return Err((
                format!("label key prefix `{prefix}` is not a DNS subdomain"),
                "a prefix is a lowercase DNS name of at most 253 characters, e.g. node-role.example",
            ));
        }
        let reserved = ["kubernetes.io", "k8s.io"]
            .iter()
            .any(|domain| prefix == *domain || prefix.ends_with(&format!(".{domain}")));
        if reserved {
            return Err((
                format!(
                    "label key `{key}` uses the reserved prefix `{prefix}`: k3s refuses to start with it"
                ),
                "use your own prefix, e.g. node-role.example/gpu",
            ));
        }
    }
    if !is_label_name(name) {
        return Err((
            format!("label key `{key}` is not a valid Kubernetes label name"),
            "names are at most 63 characters of letters, digits, `-`, `_` and `.`, starting and ending alphanumeric",
        ));
    }
    Ok(())
}

fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "label value `{value}` is not a valid Kubernetes label value"
        ))
    }
}

/// Splits a taint `key[=value]:Effect` into key and effect, checking every part.
pub fn parse_taint(taint: &str) -> Result<(&str, &str), (String, &'static str)> {
    let hint = "write key[=value]:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute, e.g. nvidia.com/gpu=present:NoSchedule";
    let Some((key_value, effect)) = taint.rsplit_once(':') else {
        return Err((format!("taint `{taint}` has no effect"), hint));
    };
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err((
            format!("taint effect `{effect}` is not NoSchedule, PreferNoSchedule or NoExecute"),
            hint,
        ));
    }
    let (key, value) = match key_value.split_once('=') {
        Some((key, value)) => (key, value),
        None => (key_value, ""),
    };
    if let Err((message, hint)) = check_label_key(key) {
        return Err((format!("taint `{taint}`: {message}"), hint));
    }
    if let Err(message) = check_label_value(value) {
        return Err((format!("taint `{taint}`: {message}"), hint));
    }
    Ok((key, effect))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_follow_kubernetes_rules() {
        assert!(check_label_key("special.gpu").is_ok());
        assert!(check_label_key("node-role.example/gpu").is_ok());
        assert!(check_label_key("node-role.kubernetes.io/gpu").is_err());
        assert!(check_label_key("k8s.io/x").is_err());
        assert!(check_label_key("-bad").is_err());
        assert!(check_label_key(&"a".repeat(64)).is_err());
        assert!(check_label_key("Upper/x").is_err());
    }

    #[test]
    fn taints_need_a_known_effect() {
        assert_eq!(
            parse_taint("nvidia.com/gpu=present:NoSchedule"),
            Ok(("nvidia.com/gpu", "NoSchedule"))
        );
        assert!(parse_taint("dedicated:NoExecute").is_ok());
        assert!(parse_taint("dedicated=gpu").is_err());
        assert!(parse_taint("dedicated=gpu:Never").is_err());
    }

    #[test]
    fn k3s_versions_and_ttls() {
        assert!(is_k3s_version("v1.31.4+k3s1"));
        assert!(!is_k3s_version("1.31.4+k3s1"));
        assert!(!is_k3s_version("v1.31+k3s1"));
        assert!(!is_k3s_version("v1.31.4-rc1+k3s1"));
        assert!(is_ttl("4h"));
        assert!(!is_ttl("0h"));
        assert!(!is_ttl("4 hours"));
    }

    #[test]
    fn cpulists_and_machines() {
        assert_eq!(parse_cpulist("0-2,8").ok(), Some(vec![0, 1, 2, 8]));
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("0,,1").is_err());
        assert!(is_machine_type("pc-q35-9.2+pve1"));
        assert!(is_machine_type("q35"));
        assert!(!is_machine_type("q35-fast"));
    }
}
