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

impl State {
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
}
