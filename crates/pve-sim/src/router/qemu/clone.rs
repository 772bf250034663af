//! Templates and clones: `POST …/template` converts a stopped VM (its disks become base
//! volumes), `POST …/clone` copies a VM or links to a template's base volumes. Both follow
//! qemu-server `src/PVE/API2/Qemu.pm` (`template`, `clone_vm`) and pve-storage's per-plugin
//! `volume_has_feature`, `create_base` and `clone_image`; the crate README's "Templates and
//! clones" section lists the rules with their sources.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::propstring;
use crate::state::{
    ApiError, ApiResult, State, TaskAction, Vm, Volume, base_name, durations, find_volume,
    is_base_volume, is_disk_key, is_file_storage, mac_address, now_ms, uuid, volume_has_feature,
    volume_key,
};

use crate::router::{Reply, Request};

/// `raise_perm_exc()` without detail: what an `or` permission check that fails answers.
fn permission_check_failed() -> ApiError {
    ApiError {
        status: 403,
        message: "Permission check failed".to_owned(),
        errors: None,
    }
}

impl Request<'_> {
    /// `POST /nodes/{node}/qemu/{vmid}/template`: `VM.Allocate` on the VM; refused while it is
    /// locked, running or already a template; the task holds the config lock.
    pub(in crate::router) fn vm_template(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.Allocate")?;
        let mut state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        if vm.is_template() && self.text("disk").is_none() {
            return Err(ApiError::internal(
                "you can't convert a template to a template",
            ));
        }
        if vm.running_or_starting() {
            return Err(ApiError::internal(
                "you can't convert a VM to template if VM is running",
            ));
        }
        let upid = self.spawn(
            &mut state,
            "qmtemplate",
            &vmid.to_string(),
            durations::TEMPLATE,
            TaskAction::Template {
                vmid,
                disk: self.text("disk").map(str::to_owned),
            },
            None,
            Vec::new(),
        );
        Reply::data(json!(upid))
    }

    pub(in crate::router) fn vm_clone(&self) -> ApiResult<Reply> {
        let source = self.vmid();
        let newid: u32 = self.text("newid").and_then(|v| v.parse().ok()).unwrap_or(0);
        self.identity.check(&format!("/vms/{source}"), "VM.Clone")?;
        // ['or', perm /vms/{newid} VM.Allocate, perm /pool/{pool} VM.Allocate]
        if self
            .identity
            .check(&format!("/vms/{newid}"), "VM.Allocate")
            .is_err()
        {
            return Err(permission_check_failed());
        }
        let mut state = self.shared.state();
        let vm = self.clone_source(&state, source, newid)?;
        let target_node = self.clone_target_node(&state, &vm)?;
        let full = self.text("full").map_or(!vm.is_template(), |v| v == "1");
        for parameter in ["storage", "format"] {
            if self.text(parameter).is_some() && !full {
                return Err(ApiError::internal(format!(
                    "parameter '{parameter}' not allowed for linked clones"
                )));
            }
        }
        self.check_clone_storage(&state, &vm, full)?;
        let mut config = self.clone_config(&vm);
        let target = CloneTarget {
            newid,
            node: &target_node,
            full,
        };
        let volumes = self.clone_devices(&state, &mut config, &target)?;
        // A full clone copies every byte through the target storage; a linked one writes none.
        let bytes: u64 = if full {
            volumes.iter().map(|v| v.size).sum()
        } else {
            0
        };
        // Each disk is cloned (linked: vdisk_clone) or allocated (full: vdisk_alloc) under its
        // storage's lock.
        let allocating = super::stored::allocations(&state, &volumes, None);
        for volume in volumes {
            let key = volume_key(volume.node.as_deref(), &volume.volid);
            state.volumes.insert(key, volume);
        }
        let new_vm = self.new_vm(newid, &target_node, config);
        state.vms.insert(newid, new_vm);
        let upid = self.spawn(
            &mut state,
            "qmclone",
            &source.to_string(),
            durations::CLONE,
            TaskAction::Clone {
                source,
                target: newid,
                exclusive: vm.running_or_starting(),
            },
            None,
            vec![format!("creating a clone of VM {source} with ID {newid}")],
        );
        if let Some((storage, allocations)) = allocating {
            self.shared.start_transfer(
                &mut state,
                &upid,
                &target_node,
                &storage,
                bytes,
                allocations,
                "clone failed: ",
            );
        }
        Reply::data(json!(upid))
    }

    /// The VM to clone, refused while it is locked (`check_lock`: `VM is locked (clone)` while
    /// it is itself being cloned or created) or when the new id is taken.
    fn clone_source(&self, state: &State, source: u32, newid: u32) -> ApiResult<Vm> {
        // qemu-server's clone_vm asks `PVE::QemuServer::check_running($vmid)` before it loads the
        // config (src/PVE/API2/Qemu.pm), so a missing source dies with check_running's words.
        let vm = state
            .vm(self.node(), source)
            .map_err(|_| {
                ApiError::internal(format!(
                    "unable to find configuration file for VM {source} - no such machine"
                ))
            })?
            .clone();
        if let Some(pool) = self.text("pool")
            && !state.pools.contains_key(pool)
        {
            return Err(ApiError::forbidden_detail(&format!(
                "pool '{pool}' does not exist"
            )));
        }
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        if let Some(snapname) = self.text("snapname") {
            return Err(ApiError::internal(format!(
                "snapshot '{snapname}' does not exist"
            )));
        }
        if let Some(existing) = state.vms.get(&newid) {
            return Err(ApiError::internal(format!(
                "unable to create VM {newid}: config file already exists (VM {newid} already exists on node '{}')",
                existing.node
            )));
        }
        Ok(vm)
    }

    /// `target`: the node must exist, a `storage` given must hold images (and be shared for
    /// another node), and a VM on local storage cannot be cloned to another node.
    fn clone_target_node(&self, state: &State, vm: &Vm) -> ApiResult<String> {
        let target = self
            .text("target")
            .filter(|t| *t != self.node() && *t != "localhost");
        if let Some(target) = target {
            state.node(target)?;
        }
        if let Some(storage) = self.text("storage") {
            let spec = state.storage(storage)?;
            if !spec.content.iter().any(|c| c == "images") {
                return Err(ApiError::param(
                    "storage",
                    format!("storage '{storage}' does not support vm images"),
                ));
            }
            if target.is_some() && !spec.shared {
                return Err(ApiError::internal(format!(
                    "can't clone to non-shared storage '{storage}'"
                )));
            }
        }
        if let Some(target) = target {
            let local = disk_volumes(vm).iter().any(|(_, volid)| {
                let storage = volid.split(':').next().unwrap_or("");
                state.storage(storage).is_ok_and(|s| !s.shared)
            });
            if local {
                return Err(ApiError::internal(format!(
                    "can't clone VM to node '{target}' (VM uses local storage)"
                )));
            }
            return Ok(target.to_owned());
        }
        Ok(self.node().to_owned())
    }

    /// `$check_storage_access_clone` and the feature checks of `clone_vm`'s load_and_check:
    /// `Datastore.AllocateSpace` on every disk's storage (or the target storage); a linked
    /// disk needs the `clone` feature (a base volume on a storage that links), a copied one
    /// (full clone, cloud-init drive, `tpmstate0`) the `copy` feature.
    fn check_clone_storage(&self, state: &State, vm: &Vm, full: bool) -> ApiResult<()> {
        for (key, volid) in disk_volumes(vm) {
            let (storage, volname) = volid.split_once(':').unwrap_or(("", &volid));
            let allocate_on = self.text("storage").unwrap_or(storage);
            self.identity.check(
                &format!("/storage/{allocate_on}"),
                "Datastore.AllocateSpace",
            )?;
            let kind = state.storage(storage)?.kind.clone();
            let copied = full || volname.ends_with("-cloudinit") || key == "tpmstate0";
            let feature = if copied { "copy" } else { "clone" };
            if !volume_has_feature(&kind, feature, volname) {
                return Err(ApiError::internal(format!(
                    "{} clone feature is not supported for '{volid}' ({key})",
                    if copied { "Full" } else { "Linked" }
                )));
            }
        }
        Ok(())
    }

    /// The source's config as the clone starts it (`clone_vm`'s `$newconf`): locked `clone`,
    /// not a template, no `unusedN`, the request's name (else `Copy-of-VM-NAME`) and
    /// description, a new smbios1 uuid, a new vmgenid only when the source has one.
    fn clone_config(&self, vm: &Vm) -> BTreeMap<String, String> {
        let mut config = vm.config.clone();
        config.remove("template");
        config.retain(|key, _| !key.starts_with("unused"));
        config.insert("lock".to_owned(), "clone".to_owned());
        let name = match self.text("name") {
            Some(name) => name.to_owned(),
            None => format!(
                "Copy-of-VM-{}",
                vm.config
                    .get("name")
                    .cloned()
                    .unwrap_or_else(|| vm.vmid.to_string())
            ),
        };
        config.insert("name".to_owned(), name);
        if let Some(description) = self.text("description") {
            config.insert("description".to_owned(), description.to_owned());
        }
        config.insert(
            "smbios1".to_owned(),
            format!("uuid={}", uuid(self.shared.random_bytes())),
        );
        if config.contains_key("vmgenid") {
            config.insert("vmgenid".to_owned(), uuid(self.shared.random_bytes()));
        }
        config
    }

    /// Gives every NIC a new MAC and every disk of the source a new volume (full or linked),
    /// in key order; returns the new volumes.
    fn clone_devices(
        &self,
        state: &State,
        config: &mut BTreeMap<String, String>,
        target: &CloneTarget<'_>,
    ) -> ApiResult<Vec<Volume>> {
        let mut volumes = Vec::new();
        let keys: Vec<String> = config.keys().cloned().collect();
        let mut taken: BTreeSet<String> = state.volumes.values().map(|v| v.volid.clone()).collect();
        for key in keys {
            let value = config.get(&key).cloned().unwrap_or_default();
            if key.starts_with("net") {
                if let Ok(mut entries) = propstring::parse(&value)
                    && let Some(entry) = entries
                        .iter_mut()
                        .find(|(k, v)| k.is_some() && v.len() == 17 && v.matches(':').count() == 5)
                {
                    entry.1 = mac_address(self.shared.random_bytes());
                    config.insert(key.clone(), propstring::serialize(&entries));
                }
                continue;
            }
            let Some(file) = disk_file(&key, &value) else {
                continue;
            };
            let volume = self.clone_disk(state, &key, &file, target, &taken)?;
            taken.insert(volume.volid.clone());
            if let Ok(mut entries) = propstring::parse(&value)
                && let Some(first) = entries.first_mut()
            {
                *first = (None, volume.volid.clone());
                config.insert(key.clone(), propstring::serialize(&entries));
            }
            volumes.push(volume);
        }
        Ok(volumes)
    }

    /// The new volume of one cloned disk, named as the storage plugin's `clone_image` (linked)
    /// or `vdisk_alloc` (copied) names it: lvmthin `vm-NEWID-disk-N`, zfspool and rbd
    /// `BASE/vm-NEWID-disk-N`, file storages `BASEVMID/BASE.FMT/NEWID/vm-NEWID-disk-N.qcow2`;
    /// the cloud-init drive `vm-NEWID-cloudinit`.
    fn clone_disk(
        &self,
        state: &State,
        key: &str,
        file: &str,
        target: &CloneTarget<'_>,
        taken: &BTreeSet<String>,
    ) -> ApiResult<Volume> {
        let newid = target.newid;
        let (source_storage, source_name) = file.split_once(':').unwrap_or(("", file));
        let linked = !target.full && !source_name.ends_with("-cloudinit") && key != "tpmstate0";
        let storage_name = match self.text("storage") {
            Some(storage) if !linked => storage,
            Some(_) | None => source_storage,
        };
        let storage = state.storage(storage_name)?.clone();
        let source_volume = find_volume(state, self.node(), file);
        let size = source_volume.map_or(0, |v| v.size);
        let format = self
            .text("format")
            .or(source_volume.map(|v| v.format.as_str()))
            .unwrap_or("raw")
            .to_owned();
        let new_volid = if source_name.ends_with("-cloudinit") {
            format!("{storage_name}:vm-{newid}-cloudinit")
        } else if linked {
            let name = free_disk_name(taken, storage_name, newid);
            if is_file_storage(&storage.kind) {
                format!("{storage_name}:{source_name}/{newid}/{name}.qcow2")
            } else if storage.kind == "lvmthin" {
                format!("{storage_name}:{name}")
            } else {
                format!("{storage_name}:{source_name}/{name}")
            }
        } else {
            let name = free_disk_name(taken, storage_name, newid);
            if is_file_storage(&storage.kind) {
                format!("{storage_name}:{newid}/{name}.{format}")
            } else {
                format!("{storage_name}:{name}")
            }
        };
        let file_format = is_file_storage(&storage.kind);
        Ok(Volume {
            volid: new_volid,
            node: (!storage.shared).then(|| target.node.to_owned()),
            content: "images".to_owned(),
            format: match (file_format, linked) {
                (true, true) => "qcow2".to_owned(),
                (true, false) => format,
                (false, _) => "raw".to_owned(),
            },
            size,
            vmid: Some(newid),
            ctime: now_ms() / 1000,
            data: None,
        })
    }

    /// `POST /nodes/{node}/qemu` with `template: 1`: qemu-server `create_disks` turns each
    /// new disk into a base volume at once (`vdisk_create_base` when `is_template`).
    pub(super) fn new_disks_as_base(
        state: &State,
        config: &mut BTreeMap<String, String>,
        volumes: &mut [Volume],
    ) {
        if config.get("template").map(String::as_str) != Some("1") {
            return;
        }
        for volume in volumes.iter_mut() {
            let Some((storage, volname)) = volume.volid.split_once(':') else {
                continue;
            };
            let Ok(spec) = state.storage(storage) else {
                continue;
            };
            if volname.ends_with("-cloudinit")
                || is_base_volume(volname)
                || !volume_has_feature(&spec.kind, "template", volname)
            {
                continue;
            }
            let new = format!("{storage}:{}", base_name(volname));
            for value in config.values_mut() {
                if let Ok(mut entries) = propstring::parse(value)
                    && entries
                        .first()
                        .is_some_and(|(k, v)| k.is_none() && *v == volume.volid)
                {
                    entries[0].1.clone_from(&new);
                    *value = propstring::serialize(&entries);
                }
            }
            volume.volid = new;
        }
    }
}

/// Where a clone goes: its id and node, and whether its disks are full copies.
struct CloneTarget<'a> {
    newid: u32,
    node: &'a str,
    full: bool,
}

/// The lowest `vm-NEWID-disk-N` not taken on `storage` (pve-storage `find_free_diskname`
/// compares the name part, whatever the directory or format).
fn free_disk_name(taken: &BTreeSet<String>, storage: &str, newid: u32) -> String {
    let names: BTreeSet<String> = taken
        .iter()
        .filter_map(|volid| volid.strip_prefix(&format!("{storage}:")))
        .map(|name| {
            let own = name.rsplit('/').next().unwrap_or(name);
            own.split('.').next().unwrap_or(own).to_owned()
        })
        .collect();
    (0..)
        .map(|n| format!("vm-{newid}-disk-{n}"))
        .find(|name| !names.contains(name))
        .unwrap_or_default()
}

/// A disk key's volume when it is a disk with a volume (not a CD-ROM, `none` or a host path);
/// the cloud-init drive counts (`drive_is_cdrom($drive, 1)` excludes it from CD-ROMs).
fn disk_file(key: &str, value: &str) -> Option<String> {
    if !is_disk_key(key) {
        return None;
    }
    let entries = propstring::parse(value).ok()?;
    let file = propstring::get(&entries, "file", Some("file"))?.to_owned();
    let cdrom = propstring::get(&entries, "media", None) == Some("cdrom");
    if (cdrom && !file.ends_with("-cloudinit")) || !file.contains(':') {
        return None;
    }
    Some(file)
}

/// Every disk of a VM with its volume, in key order.
fn disk_volumes(vm: &Vm) -> Vec<(String, String)> {
    vm.config
        .iter()
        .filter_map(|(key, value)| Some((key.clone(), disk_file(key, value)?)))
        .collect()
}
