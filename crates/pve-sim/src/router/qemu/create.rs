//! Creating a VM (`POST /nodes/{node}/qemu`) and cloning one (`POST …/clone`): the new VM
//! appears at once with `lock: create|clone`, its task removes the lock.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::propstring;
use crate::state::{
    ApiError, ApiResult, PowerState, State, TaskAction, Vm, Volume, durations, find_volume,
    is_disk_key, mac_address, now_ms, uuid, volume_key,
};

use crate::router::{Reply, Request};

impl Request<'_> {
    pub(in crate::router) fn vm_create(&self) -> ApiResult<Reply> {
        let vmid: u32 = self.text("vmid").and_then(|v| v.parse().ok()).unwrap_or(0);
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.Allocate")?;
        let keys = self.config_keys();
        let values: BTreeMap<String, String> = keys
            .iter()
            .filter_map(|k| Some((k.clone(), self.text(k)?.to_owned())))
            .collect();
        self.check_config_permissions(vmid, &keys, &values, true)?;
        if let Some(pool) = self.text("pool") {
            self.identity
                .check(&format!("/pool/{pool}"), "Pool.Allocate")?;
        }
        let mut state = self.shared.state();
        state.node(self.node())?;
        if let Some(existing) = state.vms.get(&vmid) {
            return Err(ApiError::internal(format!(
                "unable to create VM {vmid} - VM {vmid} already exists on node '{}'",
                existing.node
            )));
        }
        if let Some(pool) = self.text("pool")
            && !state.pools.contains_key(pool)
        {
            return Err(ApiError::internal(format!("pool '{pool}' does not exist")));
        }
        let mut config = BTreeMap::new();
        let mut volumes = Vec::new();
        let mut imports: Option<String> = None;
        let mut reserved = BTreeSet::new();
        for key in &keys {
            let Some((key, value)) = self.config_value(key) else {
                continue;
            };
            let (stored, new_volumes, imported) = self.materialize(
                &mut state,
                vmid,
                &key,
                &value,
                &BTreeMap::new(),
                &mut reserved,
            )?;
            if imported {
                imports = stored.split(':').next().map(str::to_owned);
            }
            config.insert(key, stored);
            volumes.extend(new_volumes);
        }
        self.add_generated_keys(&mut config);
        for volume in volumes {
            let key = volume_key(volume.node.as_deref(), &volume.volid);
            state.volumes.insert(key, volume);
        }
        let vm = self.new_vm(vmid, self.node(), config);
        state.vms.insert(vmid, vm);
        let upid = self.spawn(
            &mut state,
            "qmcreate",
            &vmid.to_string(),
            durations::CREATE,
            TaskAction::Create { vmid },
            None,
            Vec::new(),
        );
        // The import writes the image's virtual size through the disk's storage.
        if let Some(storage) = imports.and_then(|name| state.storage(&name).ok().cloned()) {
            self.shared.start_transfer(
                &mut state,
                &upid,
                self.node(),
                &storage,
                durations::IMPORT_BYTES,
            );
        }
        if self.flag("start") {
            self.start_locked(&mut state, vmid)?;
        }
        Reply::data(json!(upid))
    }

    /// qemu-server create_vm: a smbios1 uuid and a vmgenid unless given (`vmgenid: 1` asks for
    /// a generated one), `meta`, and the `create` lock its task removes.
    fn add_generated_keys(&self, config: &mut BTreeMap<String, String>) {
        if !config.contains_key("smbios1") {
            config.insert(
                "smbios1".to_owned(),
                format!("uuid={}", uuid(self.shared.random_bytes())),
            );
        }
        if config.get("vmgenid").is_none_or(|v| v == "1") {
            config.insert("vmgenid".to_owned(), uuid(self.shared.random_bytes()));
        }
        config.insert(
            "meta".to_owned(),
            format!("creation-qemu=9.2.0,ctime={}", now_ms() / 1000),
        );
        config.insert("lock".to_owned(), "create".to_owned());
    }

    /// A new, stopped VM in the request's pool.
    fn new_vm(&self, vmid: u32, node: &str, config: BTreeMap<String, String>) -> Vm {
        Vm {
            vmid,
            node: node.to_owned(),
            config,
            power: PowerState::Stopped,
            starting: false,
            started_at_ms: None,
            booted_at_ms: None,
            hugepages: BTreeMap::new(),
            pci_in_use: Vec::new(),
            pool: self.text("pool").map(str::to_owned),
            guest_network_config: None,
        }
    }

    pub(in crate::router) fn vm_clone(&self) -> ApiResult<Reply> {
        let source = self.vmid();
        let newid: u32 = self.text("newid").and_then(|v| v.parse().ok()).unwrap_or(0);
        self.identity.check(&format!("/vms/{source}"), "VM.Clone")?;
        self.identity
            .check(&format!("/vms/{newid}"), "VM.Allocate")?;
        let mut state = self.shared.state();
        let vm = self.clone_source(&state, source, newid)?;
        let target_node = self.text("target").unwrap_or(self.node()).to_owned();
        state.node(&target_node)?;
        let full = self.flag("full") || !vm.is_template();
        let mut config = self.clone_config(&vm);
        let target = CloneTarget {
            source,
            newid,
            node: &target_node,
            full,
        };
        let volumes = self.clone_devices(&state, &mut config, &target)?;
        for volume in volumes {
            let key = volume_key(volume.node.as_deref(), &volume.volid);
            state.volumes.insert(key, volume);
        }
        let vm = self.new_vm(newid, &target_node, config);
        state.vms.insert(newid, vm);
        let upid = self.spawn(
            &mut state,
            "qmclone",
            &source.to_string(),
            durations::CLONE,
            TaskAction::Clone {
                source,
                target: newid,
            },
            None,
            vec![format!(
                "create {} clone of drive(s) of VM {source} to VM {newid}",
                if full { "full" } else { "linked" }
            )],
        );
        Reply::data(json!(upid))
    }

    /// The VM to clone, refused while it is locked (a clone of it holds its config lock) or
    /// when the new id is taken.
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
        if state.clone_holding(source).is_some() {
            return Err(ApiError::internal(format!(
                "can't lock file '/var/lock/qemu-server/lock-{source}.conf' - got timeout"
            )));
        }
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        if let Some(existing) = state.vms.get(&newid) {
            return Err(ApiError::internal(format!(
                "unable to create VM {newid}: config file already exists (VM {newid} already exists on node '{}')",
                existing.node
            )));
        }
        Ok(vm)
    }

    /// The source's config as the clone starts it: not a template, locked `clone`, the
    /// request's name and description, new smbios1 uuid and vmgenid.
    fn clone_config(&self, vm: &Vm) -> BTreeMap<String, String> {
        let mut config = vm.config.clone();
        config.remove("template");
        config.insert("lock".to_owned(), "clone".to_owned());
        if let Some(name) = self.text("name") {
            config.insert("name".to_owned(), name.to_owned());
        }
        if let Some(description) = self.text("description") {
            config.insert("description".to_owned(), description.to_owned());
        }
        config.insert(
            "smbios1".to_owned(),
            format!("uuid={}", uuid(self.shared.random_bytes())),
        );
        config.insert("vmgenid".to_owned(), uuid(self.shared.random_bytes()));
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
        let taken: BTreeSet<String> = state.volumes.values().map(|v| v.volid.clone()).collect();
        let mut disk_number = 0;
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
            if !is_disk_key(&key) {
                continue;
            }
            let Ok(mut entries) = propstring::parse(&value) else {
                continue;
            };
            let Some(file) = propstring::get(&entries, "file", Some("file")).map(str::to_owned)
            else {
                continue;
            };
            let source = target.source;
            if !file.contains(&format!("vm-{source}-"))
                && !file.contains(&format!("base-{source}-"))
            {
                continue;
            }
            let volume = self.clone_disk(state, &file, target, &taken, &mut disk_number)?;
            if let Some(first) = entries.first_mut() {
                *first = (None, volume.volid.clone());
            }
            config.insert(key.clone(), propstring::serialize(&entries));
            volumes.push(volume);
        }
        Ok(volumes)
    }

    /// The new volume of one cloned disk: `vm-NEWID-disk-N` (the lowest N not `taken`, counting
    /// on from `disk_number`), a linked clone's named after its base, `vm-NEWID-cloudinit`.
    fn clone_disk(
        &self,
        state: &State,
        file: &str,
        target: &CloneTarget<'_>,
        taken: &BTreeSet<String>,
        disk_number: &mut u32,
    ) -> ApiResult<Volume> {
        let newid = target.newid;
        let storage_name = self
            .text("storage")
            .map(str::to_owned)
            .unwrap_or_else(|| file.split(':').next().unwrap_or("").to_owned());
        let storage = state.storage(&storage_name)?.clone();
        let size = find_volume(state, self.node(), file).map_or(0, |v| v.size);
        let new_volid = if file.ends_with("-cloudinit") {
            format!("{storage_name}:vm-{newid}-cloudinit")
        } else {
            let mut candidate;
            loop {
                candidate = format!("{storage_name}:vm-{newid}-disk-{disk_number}");
                *disk_number += 1;
                if !taken.contains(&candidate) {
                    break;
                }
            }
            if target.full {
                candidate
            } else {
                format!(
                    "{storage_name}:{}/{}",
                    file.split(':').nth(1).unwrap_or(""),
                    candidate.split(':').nth(1).unwrap_or("")
                )
            }
        };
        Ok(Volume {
            volid: new_volid,
            node: (!storage.shared).then(|| target.node.to_owned()),
            content: "images".to_owned(),
            format: "raw".to_owned(),
            size,
            vmid: Some(newid),
            ctime: now_ms() / 1000,
            data: None,
        })
    }
}

/// Where a clone goes: its id and node, and whether its disks are full copies.
struct CloneTarget<'a> {
    source: u32,
    newid: u32,
    node: &'a str,
    full: bool,
}
