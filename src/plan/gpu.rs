//! GPU discovery on a node: which whole devices are passable NVIDIA GPUs, and why others are not.

use std::collections::BTreeMap;

use crate::inventory::{NodeInventory, whole_device};
use crate::profile::model::GpuFilter;
use crate::pve::types::PciDevice;

/// A whole device (all functions) that may be passed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuCandidate {
    /// `0000:41:00`.
    pub device: String,
    /// `10de:20b0`.
    pub id: String,
    pub iommu_group: i64,
}

/// Why a matching GPU cannot be passed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    IommuOff,
    SharedGroup { group: i64, others: Vec<String> },
}

fn hex(value: &str) -> String {
    value.trim_start_matches("0x").to_ascii_lowercase()
}

/// `10de:20b0` / `10de:*` against a device; `None` filter = any NVIDIA GPU.
pub fn matches_filter(device: &PciDevice, filter: Option<&GpuFilter>) -> bool {
    let vendor = hex(&device.vendor);
    let id = hex(&device.device);
    let Some(filter) = filter else {
        return vendor == "10de";
    };
    filter.ids().iter().any(
        |wanted| match wanted.trim().to_ascii_lowercase().split_once(':') {
            Some((want_vendor, want_device)) => {
                want_vendor == vendor && (want_device == "*" || want_device == id)
            }
            None => false,
        },
    )
}

/// An NVIDIA display controller (VGA 0x0300xx or 3D 0x0302xx).
pub fn is_nvidia_gpu(device: &PciDevice) -> bool {
    let class = hex(&device.class);
    hex(&device.vendor) == "10de" && (class.starts_with("0300") || class.starts_with("0302"))
}

/// Split the node's GPUs matching `filter` into passable candidates and rejected ones.
pub fn candidates(
    node: &NodeInventory,
    filter: Option<&GpuFilter>,
) -> (Vec<GpuCandidate>, Vec<(String, Rejection)>) {
    let mut by_device: BTreeMap<String, &PciDevice> = BTreeMap::new();
    for device in &node.pci {
        if is_nvidia_gpu(device) && matches_filter(device, filter) {
            by_device.entry(whole_device(&device.id)).or_insert(device);
        }
    }
    let mut passable = Vec::new();
    let mut rejected = Vec::new();
    for (whole, device) in by_device {
        if device.iommugroup < 0 {
            rejected.push((whole, Rejection::IommuOff));
            continue;
        }
        let others: Vec<String> = node
            .pci
            .iter()
            .filter(|other| other.iommugroup == device.iommugroup)
            .filter(|other| whole_device(&other.id) != whole)
            .map(|other| other.id.clone())
            .collect();
        if others.is_empty() {
            passable.push(GpuCandidate {
                device: whole,
                id: format!("{}:{}", hex(&device.vendor), hex(&device.device)),
                iommu_group: device.iommugroup,
            });
        } else {
            rejected.push((
                whole,
                Rejection::SharedGroup {
                    group: device.iommugroup,
                    others,
                },
            ));
        }
    }
    (passable, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pci(id: &str, class: &str, vendor: &str, device: &str, group: i64) -> PciDevice {
        PciDevice {
            id: id.into(),
            class: class.into(),
            vendor: vendor.into(),
            device: device.into(),
            iommugroup: group,
            vendor_name: None,
            device_name: None,
            subsystem_vendor: None,
            subsystem_device: None,
            mdev: None,
        }
    }

    fn node(pci: Vec<PciDevice>) -> NodeInventory {
        NodeInventory {
            name: "pve1".into(),
            online: true,
            cpus: 64,
            memory_total: 1 << 40,
            memory_free: 1 << 40,
            pci,
            storages: vec![],
            volumes: vec![],
        }
    }

    #[test]
    fn audio_function_does_not_make_a_group_shared() {
        let node = node(vec![
            pci("0000:41:00.0", "0x030200", "0x10de", "0x20b0", 40),
            pci("0000:41:00.1", "0x040300", "0x10de", "0x1aef", 40),
            pci("0000:81:00.0", "0x030000", "0x10de", "0x2204", 50),
            pci("0000:82:00.0", "0x020000", "0x8086", "0x1572", 50),
            pci("0000:01:00.0", "0x030000", "0x102b", "0x0536", 3),
        ]);
        let (passable, rejected) = candidates(&node, Some(&GpuFilter::One("10de:*".into())));
        assert_eq!(passable.len(), 1);
        assert_eq!(passable[0].device, "0000:41:00");
        assert_eq!(rejected.len(), 1);
        assert!(matches!(
            rejected[0].1,
            Rejection::SharedGroup { group: 50, .. }
        ));
        let (only_a100, _) = candidates(&node, Some(&GpuFilter::One("10de:20b0".into())));
        assert_eq!(only_a100.len(), 1);
        let either = GpuFilter::AnyOf(vec!["10de:20f1".into(), "10de:20b0".into()]);
        assert_eq!(candidates(&node, Some(&either)).0.len(), 1);
        let neither = GpuFilter::AnyOf(vec!["10de:20f1".into(), "10de:20b5".into()]);
        assert!(candidates(&node, Some(&neither)).0.is_empty());
    }

    #[test]
    fn iommu_off_is_rejected() {
        let node = node(vec![pci(
            "0000:41:00.0",
            "0x030200",
            "0x10de",
            "0x20b0",
            -1,
        )]);
        let (passable, rejected) = candidates(&node, None);
        assert!(passable.is_empty());
        assert_eq!(rejected[0].1, Rejection::IommuOff);
    }
}
