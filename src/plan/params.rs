//! The exact Proxmox parameters of a VM, and how a live config is compared with them.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::pve::Params;

/// Keys changed in place by `PUT …/config` (a restart applies the ones that are not hotplugged).
pub const UPDATABLE: &[&str] = &[
    "name",
    "cores",
    "sockets",
    "memory",
    "balloon",
    "cpu",
    "affinity",
    "numa",
    "numa0",
    "hugepages",
    "keephugepages",
    "tags",
    "description",
    "onboot",
    "agent",
    "net0",
    "serial0",
    "vga",
    "ostype",
];

/// Keys whose change does not need a restart (pure metadata).
pub const METADATA: &[&str] = &["name", "tags", "description", "onboot"];

/// Keys whose change means destroying and re-creating the VM.
pub const LAYOUT: &[&str] = &["machine", "bios", "scsihw"];

/// SHA-256 (hex) of a parameter set (BTreeMap order is stable).
pub fn params_hash(params: &Params) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in params {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// Property-string parts as a sorted set, so `a=1,b=2` equals `b=2,a=1`.
fn parts(value: &str) -> BTreeSet<String> {
    value
        .split(',')
        .map(|part| part.trim().to_owned())
        .filter(|part| !part.is_empty())
        .collect()
}

/// Tags as a set, lowercased: Proxmox stores them lowercased and sorted (pve-guest-common
/// `get_unique_tags` with datacenter.cfg's default tag-style), so `GPU;provision` comes back as
/// `gpu;provision` and is no change.
fn tag_set(value: &str) -> BTreeSet<String> {
    value
        .split([';', ',', ' '])
        .filter(|tag| !tag.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The parts of `net0` provision sets (model and MAC, bridge, tag, mtu); Proxmox may add `firewall`.
/// MACs compare case-insensitively (`model=virtio,macaddr=…` is the long form of `virtio=…`).
fn net_parts(value: &str) -> BTreeSet<String> {
    value
        .split(',')
        .flat_map(|part| {
            let (key, val) = part.split_once('=').unwrap_or((part, ""));
            let mac = |mac: &str| format!("mac={}", mac.to_ascii_uppercase());
            match key {
                "virtio" | "e1000" | "vmxnet3" | "rtl8139" if !val.is_empty() => {
                    vec![key.to_owned(), mac(val)]
                }
                "virtio" | "e1000" | "vmxnet3" | "rtl8139" => vec![key.to_owned()],
                "model" => vec![val.to_owned()],
                "macaddr" => vec![mac(val)],
                "bridge" | "tag" | "mtu" => vec![part.to_owned()],
                _ => Vec::new(),
            }
        })
        .collect()
}

/// `cpu: host,flags=+a;-b` normalized (`cputype=` prefix dropped, flags sorted).
fn cpu_parts(value: &str) -> BTreeSet<String> {
    value
        .split(',')
        .map(|part| {
            let part = part.strip_prefix("cputype=").unwrap_or(part);
            match part.strip_prefix("flags=") {
                Some(flags) => {
                    let mut flags: Vec<&str> = flags.split(';').collect();
                    flags.sort_unstable();
                    format!("flags={}", flags.join(";"))
                }
                None => part.to_owned(),
            }
        })
        .collect()
}

/// Whether the live value of `key` already says what `desired` says.
pub fn same_value(key: &str, live: Option<&str>, desired: &str) -> bool {
    let Some(live) = live else {
        return false;
    };
    match key {
        "tags" => tag_set(live) == tag_set(desired),
        "net0" => net_parts(live) == net_parts(desired),
        "cpu" => cpu_parts(live) == cpu_parts(desired),
        "agent" | "numa0" => parts(live) == parts(desired),
        "description" => live.trim_end() == desired.trim_end(),
        _ => live == desired,
    }
}

/// Storage id of a disk value (`local-lvm:vm-100-disk-0,…` → `local-lvm`).
pub fn disk_storage(value: &str) -> &str {
    value
        .split(',')
        .next()
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("")
}

/// Size in GiB of a live disk (`…,size=64G`), rounded up; `None` when absent.
pub fn disk_size_gib(value: &str) -> Option<u64> {
    use crate::pve::propstr::{Disk, PropertyFormat as _};
    let size = Disk::parse(value).ok()?.size?;
    let (number, unit) = size.split_at(size.find(|c: char| c.is_ascii_alphabetic())?);
    let number: f64 = number.parse().ok()?;
    let gib = match unit {
        "T" => number * 1024.0,
        "G" => number,
        "M" => number / 1024.0,
        "K" => number / (1024.0 * 1024.0),
        _ => return None,
    };
    Some(gib.ceil() as u64)
}

/// The hostpci values a VM has, normalized to `<device-or-mapping>` (options dropped), sorted.
pub fn hostpci_targets(params: &Params) -> Vec<String> {
    let mut targets: Vec<String> = params
        .iter()
        .filter(|(key, _)| key.starts_with("hostpci"))
        .filter_map(|(_, value)| super::propstrings::hostpci_target(value))
        .collect();
    targets.sort();
    targets
}

/// URL-encode an `sshkeys` value the way Proxmox expects (encodeURIComponent).
pub fn encode_ssh_keys(keys: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    percent_encoding::utf8_percent_encode(keys, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_values_compare_semantically() {
        assert!(same_value(
            "tags",
            Some("cluster-a;provision;role-agent"),
            "provision;cluster-a;role-agent"
        ));
        assert!(same_value("tags", Some("gpu;provision"), "provision;GPU"));
        assert!(!same_value("tags", Some("gpu;provision"), "provision"));
        assert!(same_value(
            "net0",
            Some("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=0,tag=20"),
            "virtio=bc:24:11:00:00:01,bridge=vmbr0,tag=20"
        ));
        assert!(same_value(
            "net0",
            Some("model=virtio,macaddr=02:AA:00:00:00:01,bridge=vmbr0"),
            "virtio=02:AA:00:00:00:01,bridge=vmbr0"
        ));
        // The MAC is part of what provision sets: another one is a change.
        assert!(!same_value(
            "net0",
            Some("virtio=BC:24:11:00:00:01,bridge=vmbr0"),
            "virtio=02:AA:00:00:00:01,bridge=vmbr0"
        ));
        assert!(!same_value(
            "net0",
            Some("virtio=BC:24,bridge=vmbr1"),
            "virtio,bridge=vmbr0"
        ));
        assert!(same_value(
            "cpu",
            Some("cputype=host,flags=-b;+a"),
            "host,flags=+a;-b"
        ));
        assert!(!same_value("memory", Some("4096"), "8192"));
        assert!(!same_value("memory", None, "8192"));
    }

    #[test]
    fn disk_sizes_parse() {
        assert_eq!(disk_size_gib("local-lvm:vm-1-disk-0,size=64G"), Some(64));
        assert_eq!(disk_size_gib("local-lvm:vm-1-disk-0,size=2252M"), Some(3));
        assert_eq!(disk_size_gib("local-lvm:vm-1-disk-0,size=1T"), Some(1024));
        assert_eq!(disk_size_gib("local-lvm:vm-1-disk-0"), None);
        assert_eq!(disk_storage("local-lvm:vm-1-disk-0,size=1T"), "local-lvm");
    }

    #[test]
    fn ssh_keys_are_encoded_like_encode_uri_component() {
        assert_eq!(
            encode_ssh_keys("ssh-ed25519 AAAA+/= me@host\n"),
            "ssh-ed25519%20AAAA%2B%2F%3D%20me%40host%0A"
        );
    }
}
