//! Volumes: how they are keyed, found, sized (`32G`, `512M`) and counted against a storage.

use serde::{Deserialize, Serialize};

use super::{ApiError, ApiResult, State};

const GIB: u64 = 1 << 30;

pub(super) const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Volume {
    pub volid: String,
    /// `None` on a shared storage.
    pub node: Option<String>,
    pub content: String,
    pub format: String,
    pub size: u64,
    #[serde(default)]
    pub vmid: Option<u32>,
    pub ctime: u64,
    /// Kept for ISO images (NoCloud seeds) so the guest can read them; persisted as the seed's
    /// files without private keys ([`crate::persist::volume_data`]).
    #[serde(default, with = "crate::persist::volume_data")]
    pub data: Option<Vec<u8>>,
}

/// `node/volid` for node-local storages, `volid` for shared ones.
pub(crate) fn volume_key(node: Option<&str>, volid: &str) -> String {
    match node {
        Some(node) => format!("{node}/{volid}"),
        None => volid.to_owned(),
    }
}

/// Formats a size like Proxmox writes `size=` in a disk's config.
pub(crate) fn format_size(bytes: u64) -> String {
    if bytes.is_multiple_of(GIB) {
        format!("{}G", bytes / GIB)
    } else if bytes.is_multiple_of(MIB) {
        format!("{}M", bytes / MIB)
    } else if bytes.is_multiple_of(1024) {
        format!("{}K", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// Parses `32G`, `+10G`, `512M`, `1T`, `1024` (bytes) into bytes.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((index, _)) => text.split_at(index),
        None => (text, ""),
    };
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "" => 1.0,
        "K" => 1024.0,
        "M" => MIB as f64,
        "G" => GIB as f64,
        "T" => (GIB * 1024) as f64,
        _ => return None,
    };
    Some((number * factor) as u64)
}

pub(crate) const DISK_PREFIXES: &[&str] = &["scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"];

pub(crate) fn is_disk_key(key: &str) -> bool {
    DISK_PREFIXES.iter().any(|prefix| {
        key.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    })
}

pub(crate) fn find_volume<'a>(state: &'a State, node: &str, volid: &str) -> Option<&'a Volume> {
    state
        .volumes
        .get(&volume_key(Some(node), volid))
        .or_else(|| state.volumes.get(volid))
}

pub(crate) fn find_volume_mut<'a>(
    state: &'a mut State,
    node: &str,
    volid: &str,
) -> Option<&'a mut Volume> {
    let local = volume_key(Some(node), volid);
    if state.volumes.contains_key(&local) {
        state.volumes.get_mut(&local)
    } else {
        state.volumes.get_mut(volid)
    }
}

/// pve-storage's file-based plugins (`Plugin.pm` and its path-based subclasses): a volume name is
/// `VMID/NAME.FORMAT`, a linked clone's `BASEVMID/BASENAME/VMID/NAME.qcow2`.
pub(crate) fn is_file_storage(kind: &str) -> bool {
    matches!(
        kind,
        "dir" | "nfs" | "cifs" | "glusterfs" | "btrfs" | "cephfs"
    )
}

/// A storage feature of a volume, as `volume_has_feature` answers it per plugin (pve-storage
/// `src/PVE/Storage/{Plugin,LvmThinPlugin,LVMPlugin,ZFSPoolPlugin,RBDPlugin}.pm`): `clone` (a
/// linked clone) only from a base volume (`base-…`, a template's disk) on lvmthin, zfspool,
/// rbd and file storages; `template` (convert to base) on those for a current volume; `copy`
/// (a full clone) everywhere the simulator allocates images. LVM (thick) has neither `clone`
/// nor `template`.
pub(crate) fn volume_has_feature(kind: &str, feature: &str, volname: &str) -> bool {
    let base = is_base_volume(volname);
    match (kind, feature) {
        ("lvmthin" | "zfspool" | "zfs" | "rbd", "clone") => base,
        ("lvmthin" | "zfspool" | "zfs" | "rbd", "template") => !base,
        (kind, "clone") if is_file_storage(kind) => base,
        (kind, "template") if is_file_storage(kind) => !base,
        (_, "copy") => true,
        _ => false,
    }
}

/// Whether a volume name is a base volume (`parse_volname`'s `$isBase`): its own last name part
/// starts with `base-` (`base-100-disk-0`, `100/base-100-disk-0.raw`).
pub(crate) fn is_base_volume(volname: &str) -> bool {
    own_name(volname).starts_with("base-")
}

/// The volume's own name: the last part of a linked clone's `BASE/NAME` or a file storage's
/// `VMID/NAME.FORMAT`.
fn own_name(volname: &str) -> &str {
    volname.rsplit('/').next().unwrap_or(volname)
}

/// The base volume a linked clone's name refers to (`parse_volname`'s `$basename`), for the
/// plugins whose clone names carry it: zfspool and rbd `base-100-disk-0/vm-101-disk-0`, file
/// storages `100/base-100-disk-0.raw/101/vm-101-disk-0.qcow2`. An lvmthin clone is a thin
/// snapshot named `vm-101-disk-0`: its name says nothing of its base.
pub(crate) fn linked_base_of(volname: &str) -> Option<String> {
    let parts: Vec<&str> = volname.split('/').collect();
    match parts.as_slice() {
        [base, _] if base.starts_with("base-") => Some((*base).to_owned()),
        [basevmid, base, _, _] if base.starts_with("base-") => Some(format!("{basevmid}/{base}")),
        _ => None,
    }
}

/// `vdisk_create_base`: `vm-100-disk-0` becomes `base-100-disk-0` (the last name part).
pub(crate) fn base_name(volname: &str) -> String {
    let own = own_name(volname);
    let prefix = &volname[..volname.len() - own.len()];
    format!("{prefix}{}", own.replacen("vm-", "base-", 1))
}

impl State {
    /// pve-storage `volume_is_base_and_used`: a base volume some linked clone's name refers to.
    pub fn base_volume_used(&self, volid: &str) -> bool {
        let Some((storage, volname)) = volid.split_once(':') else {
            return false;
        };
        self.volumes.values().any(|volume| {
            volume.volid.split_once(':').is_some_and(|(s, name)| {
                s == storage && linked_base_of(name).as_deref() == Some(volname)
            })
        })
    }

    pub fn storage(&self, name: &str) -> ApiResult<&crate::inventory::StorageSpec> {
        self.inventory
            .storages
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ApiError::internal(format!("storage '{name}' does not exist")))
    }

    /// Bytes used on a storage instance.
    pub fn storage_used(&self, node: &str, storage: &str) -> u64 {
        let shared = self.storage(storage).is_ok_and(|s| s.shared);
        self.volumes
            .values()
            .filter(|v| v.volid.split(':').next() == Some(storage))
            .filter(|v| shared || v.node.as_deref() == Some(node))
            .map(|v| v.size)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        assert_eq!(parse_size("32G"), Some(32 * GIB));
        assert_eq!(format_size(32 * GIB), "32G");
        assert_eq!(format_size(4 * MIB), "4M");
        assert_eq!(format_size(528 * 1024), "528K");
        assert_eq!(parse_size("1.5G"), Some(GIB + GIB / 2));
    }

    #[test]
    fn base_volumes_and_linked_clone_names() {
        assert_eq!(base_name("vm-100-disk-0"), "base-100-disk-0");
        assert_eq!(
            base_name("100/vm-100-disk-0.raw"),
            "100/base-100-disk-0.raw"
        );
        assert!(is_base_volume("100/base-100-disk-0.raw"));
        assert!(!is_base_volume("base-100-disk-0/vm-101-disk-0"));
        assert_eq!(
            linked_base_of("base-100-disk-0/vm-101-disk-0").as_deref(),
            Some("base-100-disk-0")
        );
        assert_eq!(
            linked_base_of("100/base-100-disk-0.raw/101/vm-101-disk-0.qcow2").as_deref(),
            Some("100/base-100-disk-0.raw")
        );
        assert_eq!(linked_base_of("vm-101-disk-0"), None);
        assert!(volume_has_feature("lvmthin", "clone", "base-100-disk-0"));
        assert!(!volume_has_feature("lvmthin", "clone", "vm-100-disk-0"));
        assert!(!volume_has_feature("lvm", "clone", "base-100-disk-0"));
        assert!(!volume_has_feature("lvm", "template", "vm-100-disk-0"));
    }
}
