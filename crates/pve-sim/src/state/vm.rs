//! A VM as the state keeps it (its stored config, power state and start reservations), and
//! the values Proxmox generates for one (MACs, UUIDs).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::propstring;

use super::{is_disk_key, parse_size};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PowerState {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Vm {
    pub vmid: u32,
    pub node: String,
    pub config: BTreeMap<String, String>,
    pub power: PowerState,
    /// A start task is running.
    #[serde(default)]
    pub starting: bool,
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    /// When the guest agent starts answering.
    #[serde(default)]
    pub booted_at_ms: Option<u64>,
    /// 1 GiB / 2 MiB hugepages taken per host NUMA node while running: (numa, size_kib) → pages.
    #[serde(default)]
    pub hugepages: BTreeMap<String, u64>,
    /// PCI devices (`0000:41:00`) reserved while running.
    #[serde(default)]
    pub pci_in_use: Vec<String>,
    #[serde(default)]
    pub pool: Option<String>,
    /// The network-config cloud-init applied at the first boot with a NoCloud seed: the guest
    /// keeps it on its disk, so later boots without the seed keep the same addresses.
    #[serde(default)]
    pub guest_network_config: Option<String>,
}

impl Vm {
    pub fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }

    pub fn name(&self) -> String {
        self.config
            .get("name")
            .cloned()
            .unwrap_or_else(|| format!("VM{}", self.vmid))
    }

    pub fn memory_mib(&self) -> u64 {
        memory_mib(&self.config)
    }

    pub fn cpus(&self) -> u64 {
        let number = |key: &str| {
            self.config
                .get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
        };
        number("cores") * number("sockets")
    }

    pub fn is_template(&self) -> bool {
        self.config.get("template").map(String::as_str) == Some("1")
    }

    pub fn running_or_starting(&self) -> bool {
        self.power == PowerState::Running || self.starting
    }
}

pub(crate) fn memory_mib(config: &BTreeMap<String, String>) -> u64 {
    config
        .get("memory")
        .and_then(|value| {
            let entries = propstring::parse(value).ok()?;
            propstring::get(&entries, "current", Some("current"))?
                .parse()
                .ok()
        })
        .unwrap_or(512)
}

pub(crate) fn vm_disk_bytes(vm: &Vm) -> u64 {
    vm.config
        .iter()
        .filter(|(key, _)| key.starts_with("scsi") || key.starts_with("virtio"))
        .filter_map(|(_, value)| {
            let entries = propstring::parse(value).ok()?;
            parse_size(propstring::get(&entries, "size", None)?)
        })
        .max()
        .unwrap_or(0)
}

pub(crate) fn stop_vm(vm: &mut Vm) {
    vm.power = PowerState::Stopped;
    vm.starting = false;
    vm.started_at_ms = None;
    vm.booted_at_ms = None;
    vm.hugepages.clear();
    vm.pci_in_use.clear();
}

/// Generates a MAC in Proxmox's default OUI (`BC:24:11`).
pub(crate) fn mac_address(bytes: [u8; 3]) -> String {
    format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        bytes[0], bytes[1], bytes[2]
    )
}

/// A random UUID (v4) string.
pub(crate) fn uuid(bytes: [u8; 16]) -> String {
    let mut b = bytes;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Set of device-ish keys whose value refers to volumes.
pub(crate) fn referenced_volumes(config: &BTreeMap<String, String>) -> BTreeSet<String> {
    config
        .iter()
        .filter(|(key, _)| is_disk_key(key) || key.starts_with("unused"))
        .filter_map(|(_, value)| {
            let entries = propstring::parse(value).ok()?;
            propstring::get(&entries, "file", Some("file")).map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_version_4() {
        let id = uuid([0xff; 16]);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
