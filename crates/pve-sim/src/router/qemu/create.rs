//! Creating a VM (`POST /nodes/{node}/qemu`): the new VM appears at once with `lock: create`,
//! its task removes the lock. Cloning is in [`super::clone`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::state::{
    ApiError, ApiResult, PowerState, TaskAction, Vm, durations, now_ms, uuid, volume_key,
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
        Self::new_disks_as_base(&state, &mut config, &mut volumes);
        // Each new volume is allocated under its storage's lock; the import's storage (else
        // the first new volume's) carries the task's work.
        let allocating = super::stored::allocations(&state, &volumes, imports.as_deref());
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
        if let Some((storage, allocations)) = allocating {
            let bytes = if imports.is_some() {
                durations::IMPORT_BYTES
            } else {
                0
            };
            self.shared.start_transfer(
                &mut state,
                &upid,
                self.node(),
                &storage,
                bytes,
                allocations,
                &format!("unable to create VM {vmid} - "),
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
    pub(super) fn new_vm(&self, vmid: u32, node: &str, config: BTreeMap<String, String>) -> Vm {
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
}
