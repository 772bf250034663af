//! What Proxmox stores for a requested config value: new disks allocated (`local-lvm:32` ->
//! `local-lvm:vm-101-disk-0,size=32G`), imports consumed, NICs given a MAC, tags normalized.

use std::collections::{BTreeMap, BTreeSet};

use crate::state::{
    ApiError, ApiResult, State, Volume, durations, find_volume, format_size, is_disk_key,
    is_file_storage, mac_address, now_ms, set_entry,
};
use crate::{propstring, schema};

use crate::router::Request;

impl Request<'_> {
    pub(super) fn materialize(
        &self,
        state: &mut State,
        vmid: u32,
        key: &str,
        value: &str,
        existing: &BTreeMap<String, String>,
        reserved: &mut BTreeSet<String>,
    ) -> ApiResult<(String, Vec<Volume>, bool)> {
        let node = self.node().to_owned();
        let value = &schema::normalize_booleans(key, value);
        if key == "tags" {
            return Ok((unique_tags(value), Vec::new(), false));
        }
        if key.starts_with("net") {
            return Ok((self.with_mac(key, value, existing)?, Vec::new(), false));
        }
        if !is_disk_key(key) {
            return Ok((value.to_owned(), Vec::new(), false));
        }
        let mut entries = propstring::parse(value)
            .map_err(|e| ApiError::param(key, format!("invalid format - {e}")))?;
        let Some(file) = propstring::get(&entries, "file", Some("file")).map(str::to_owned) else {
            return Ok((value.to_owned(), Vec::new(), false));
        };
        if file == "none" || file == "cdrom" {
            return Ok((value.to_owned(), Vec::new(), false));
        }
        let Some((storage_name, volume_name)) = file.split_once(':') else {
            return Err(ApiError::internal(format!(
                "unable to parse volume ID '{file}'"
            )));
        };
        let storage = state.storage(storage_name)?.clone();
        let import_from = propstring::get(&entries, "import-from", None).map(str::to_owned);
        let is_new_size = volume_name.parse::<f64>().is_ok();
        if volume_name == "cloudinit" {
            Self::check_content(&storage, "images")?;
            let volid = format!("{storage_name}:vm-{vmid}-cloudinit");
            let volume = self.new_volume(&storage, &volid, vmid, 4 << 20);
            return Ok((format!("{volid},media=cdrom"), vec![volume], false));
        }
        if !is_new_size {
            if find_volume(state, &node, &file).is_none() {
                return Err(ApiError::internal(format!(
                    "volume '{file}' does not exist"
                )));
            }
            return Ok((value.to_owned(), Vec::new(), false));
        }
        Self::check_content(&storage, "images")?;
        let requested_gib: f64 = volume_name.parse().unwrap_or(0.0);
        let mut bytes = (requested_gib * (1u64 << 30) as f64) as u64;
        let mut imported = false;
        if let Some(source) = &import_from {
            let Some(source_volume) = find_volume(state, &node, source) else {
                return Err(ApiError::internal(format!(
                    "{key}: import-from: volume '{source}' does not exist"
                )));
            };
            if source_volume.content != "import" && source_volume.content != "images" {
                return Err(ApiError::internal(format!(
                    "{key}: import-from: '{source}' has content type '{}', expected 'import' or 'images'",
                    source_volume.content
                )));
            }
            // qcow2 cloud images are ~2.2 GiB virtual; the import keeps the virtual size.
            bytes = bytes.max(durations::IMPORT_BYTES);
            imported = true;
        }
        if key.starts_with("efidisk") {
            let efitype = propstring::get(&entries, "efitype", None).unwrap_or("2m");
            bytes = if efitype == "4m" { 4 << 20 } else { 528 << 10 };
        } else if key.starts_with("tpmstate") {
            bytes = 4 << 20;
        }
        let format = propstring::get(&entries, "format", None).unwrap_or("raw");
        let volid = next_disk_name(state, &storage, &node, vmid, format, reserved);
        reserved.insert(volid.clone());
        let mut volume = self.new_volume(&storage, &volid, vmid, bytes);
        if is_file_storage(&storage.kind) {
            volume.format = format.to_owned();
        }
        // Block storages have no image format: qemu-server's print_drive of the allocated
        // volume carries no `format` (PVE::Storage volume_size_info reports raw).
        let block = matches!(
            storage.kind.as_str(),
            "lvmthin" | "lvm" | "zfspool" | "rbd" | "iscsidirect" | "zfs"
        );
        entries.retain(|(k, _)| {
            k.is_some()
                && k.as_deref() != Some("import-from")
                && !(block && k.as_deref() == Some("format"))
        });
        entries.insert(0, (None, volid));
        set_entry(&mut entries, "size", &format_size(bytes));
        Ok((propstring::serialize(&entries), vec![volume], imported))
    }

    /// Turns requested config values into what Proxmox stores: disks allocated, MACs set.
    /// `net0: virtio,bridge=…` gets a MAC (qemu-server `add_random_macs`), kept on an edit.
    fn with_mac(
        &self,
        key: &str,
        value: &str,
        existing: &BTreeMap<String, String>,
    ) -> ApiResult<String> {
        let mut entries = propstring::parse(value)
            .map_err(|e| ApiError::param(key, format!("invalid format - {e}")))?;
        if let Some(index) = entries.iter().position(|(k, _)| k.is_none()) {
            let model = entries[index].1.clone();
            let keep = existing.get(key).and_then(|old| {
                let old = propstring::parse(old).ok()?;
                old.iter()
                    .find(|(k, _)| k.as_deref() == Some(model.as_str()))
                    .map(|(_, v)| v.clone())
            });
            let mac = keep.unwrap_or_else(|| mac_address(self.shared.random_bytes()));
            entries[index] = (Some(model), mac);
        }
        Ok(propstring::serialize(&entries))
    }

    fn new_volume(
        &self,
        storage: &crate::inventory::StorageSpec,
        volid: &str,
        vmid: u32,
        size: u64,
    ) -> Volume {
        Volume {
            volid: volid.to_owned(),
            node: (!storage.shared).then(|| self.node().to_owned()),
            content: "images".to_owned(),
            format: "raw".to_owned(),
            size,
            vmid: Some(vmid),
            ctime: now_ms() / 1000,
            data: None,
        }
    }
}

/// pve-storage PVE/Storage/Plugin.pm `get_next_vm_diskname`: `vm-VMID-disk-N` with the lowest
/// N unused for this VMID on this storage, counting the volumes this request allocated before
/// (qemu-server allocates drives in sorted key order, `$foreach_volume_with_alloc`). File
/// storages name it `VMID/vm-VMID-disk-N.FORMAT`.
pub(super) fn next_disk_name(
    state: &State,
    storage: &crate::inventory::StorageSpec,
    node: &str,
    vmid: u32,
    format: &str,
    reserved: &BTreeSet<String>,
) -> String {
    let taken: BTreeSet<&str> = state
        .volumes
        .values()
        .filter(|v| storage.shared || v.node.as_deref() == Some(node))
        .map(|v| v.volid.as_str())
        .chain(reserved.iter().map(String::as_str))
        .collect();
    let file = is_file_storage(&storage.kind);
    // A disk number is taken whatever the name's directory or format (`find_free_diskname`
    // compares the `vm-VMID-disk-N` part).
    let numbers_taken: BTreeSet<String> = taken
        .iter()
        .filter_map(|volid| volid.strip_prefix(&format!("{}:", storage.name)))
        .map(|name| {
            let own = name.rsplit('/').next().unwrap_or(name);
            own.split('.')
                .next()
                .unwrap_or(own)
                .replacen("base-", "vm-", 1)
        })
        .collect();
    (0..)
        .map(|n| format!("vm-{vmid}-disk-{n}"))
        .find(|name| !numbers_taken.contains(name))
        .map(|name| {
            if file {
                format!("{}:{vmid}/{name}.{format}", storage.name)
            } else {
                format!("{}:{name}", storage.name)
            }
        })
        .unwrap_or_default()
}

/// Tags as qemu-server stores them on create and on config changes:
/// `PVE::GuestHelpers::get_unique_tags` (pve-guest-common `src/PVE/GuestHelpers.pm`) splits the
/// list like `split_list` (`;`, `,`, white space), and with datacenter.cfg's default `tag-style`
/// (not case-sensitive, ordering not `config`) lowercases, sorts, drops duplicates and joins
/// with `;`. Ansible's proxmox_kvm sends `gpu,ansible` and reads back `ansible;gpu`.
fn unique_tags(value: &str) -> String {
    let mut tags: Vec<String> = value
        .split(|c: char| c == ';' || c == ',' || c == '\0' || c.is_whitespace())
        .filter(|tag| !tag.is_empty())
        .map(str::to_lowercase)
        .collect();
    tags.sort();
    tags.dedup();
    tags.join(";")
}

/// The storage whose lock a task's new `volumes` take (`preferred`, else the first volume's)
/// and how many of them it allocates there: pve-storage allocates (`vdisk_alloc`) or clones
/// (`vdisk_clone`) each one inside that storage's `cluster_lock_storage`.
pub(super) fn allocations(
    state: &State,
    volumes: &[Volume],
    preferred: Option<&str>,
) -> Option<(crate::inventory::StorageSpec, u32)> {
    let storage_of = |volume: &Volume| volume.volid.split(':').next().map(str::to_owned);
    let name = preferred
        .map(str::to_owned)
        .or_else(|| volumes.first().and_then(storage_of))?;
    let count = volumes
        .iter()
        .filter(|volume| storage_of(volume).as_deref() == Some(name.as_str()))
        .count();
    let storage = state.storage(&name).ok().cloned()?;
    Some((storage, u32::try_from(count).unwrap_or(u32::MAX)))
}
