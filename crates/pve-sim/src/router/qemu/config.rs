//! A VM's config: `GET …/config` and `…/pending`, synchronous and asynchronous changes
//! (`PUT`/`POST …/config`), the keys a request sets, and `…/cloudinit/dump`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::state::{
    ApiError, ApiResult, State, TaskAction, Vm, durations, is_disk_key, volume_key,
};
use crate::{guest, propstring, schema};

use crate::router::tasks::lock_timeout;
use crate::router::{Reply, Request};

impl Request<'_> {
    /// A requested config value; `cdrom` is an alias of `ide2` (qemu-server
    /// `$resolve_cdrom_alias`: `ide2: VALUE,media=cdrom`).
    pub(super) fn config_value(&self, key: &str) -> Option<(String, String)> {
        let value = self.text(key)?;
        if key == "cdrom" {
            return Some(("ide2".to_owned(), format!("{value},media=cdrom")));
        }
        Some((key.to_owned(), value.to_owned()))
    }

    pub(super) fn config_keys(&self) -> Vec<String> {
        const CONTROL: &[&str] = &[
            "node",
            "vmid",
            "start",
            "pool",
            "digest",
            "delete",
            "revert",
            "skiplock",
            "background_delay",
            "force",
            "unique",
            "archive",
            "storage",
            "live-restore",
            "bwlimit",
            "import-working-storage",
            "ha-managed",
        ];
        // Sorted like qemu-server's `$foreach_volume_with_alloc` (`sort keys`), which decides
        // the order disks are allocated in.
        let mut keys: Vec<String> = self
            .params
            .keys()
            .filter(|k| !CONTROL.contains(&k.as_str()))
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    pub(in crate::router) fn vm_config(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity.check(&format!("/vms/{vmid}"), "VM.Audit")?;
        let state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        let mut config: Map<String, Value> = vm
            .config
            .iter()
            .map(|(k, v)| {
                // Numbers only where the schema says integer/number/boolean: `memory` and
                // `hugepages` are strings in the schema and come back as strings.
                let numeric = schema::config_param(k).is_some_and(|spec| {
                    matches!(
                        spec.kind,
                        schema::Kind::Integer | schema::Kind::Number | schema::Kind::Boolean
                    )
                });
                let value = match (numeric, v.parse::<i64>(), v.parse::<f64>()) {
                    (true, Ok(n), _) => json!(n),
                    (true, Err(_), Ok(x)) => json!(x),
                    _ => json!(v),
                };
                (k.clone(), value)
            })
            .collect();
        config.insert("digest".to_owned(), json!(State::digest(&vm.config)));
        Reply::data(Value::Object(config))
    }

    pub(in crate::router) fn vm_pending(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity.check(&format!("/vms/{vmid}"), "VM.Audit")?;
        let state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        let entries: Vec<Value> = vm
            .config
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect();
        Reply::data(json!(entries))
    }

    /// The keys of a config change's `delete` list.
    fn deleted_keys(&self) -> Vec<String> {
        self.text("delete")
            .unwrap_or("")
            .split([',', ';', ' '])
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A config change is refused on a locked VM (unless `skiplock`), with a stale `digest`,
    /// or when it sets and deletes one key.
    fn check_config_update(&self, vm: &Vm, keys: &[String], deletes: &[String]) -> ApiResult<()> {
        if let Some(lock) = vm.lock()
            && !self.flag("skiplock")
        {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        if let Some(digest) = self.text("digest")
            && digest != State::digest(&vm.config)
        {
            return Err(ApiError::internal(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
        for key in deletes {
            if keys.contains(key) {
                return Err(ApiError::internal(format!(
                    "you can't modify '{key}' and delete it at the same time"
                )));
            }
        }
        Ok(())
    }

    pub(in crate::router) fn vm_config_update(&self, asynchronous: bool) -> ApiResult<Reply> {
        let vmid = self.vmid();
        let keys = self.config_keys();
        let deletes = self.deleted_keys();
        let mut all_keys = keys.clone();
        all_keys.extend(deletes.iter().cloned());
        let mut values: BTreeMap<String, String> = {
            let state = self.shared.state();
            let vm = state.vm(self.node(), vmid)?;
            deletes
                .iter()
                .filter_map(|k| Some((k.clone(), vm.config.get(k)?.clone())))
                .collect()
        };
        values.extend(
            keys.iter()
                .filter_map(|k| Some((k.clone(), self.text(k)?.to_owned()))),
        );
        self.check_config_permissions(vmid, &all_keys, &values, false)?;
        let mut state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?.clone();
        self.check_config_update(&vm, &keys, &deletes)?;
        let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut new_volumes = Vec::new();
        let mut reserved = BTreeSet::new();
        for key in &keys {
            let Some((key, value)) = self.config_value(key) else {
                continue;
            };
            let (stored, volumes, _) =
                self.materialize(&mut state, vmid, &key, &value, &vm.config, &mut reserved)?;
            changes.insert(key, Some(stored));
            new_volumes.extend(volumes);
        }
        let mut unused_index = (0..)
            .find(|n| !vm.config.contains_key(&format!("unused{n}")))
            .unwrap_or(0);
        for key in &deletes {
            if is_disk_key(key)
                && let Some(value) = vm.config.get(key)
                && let Ok(entries) = propstring::parse(value)
                && let Some(file) = propstring::get(&entries, "file", Some("file"))
                && file.contains(&format!("vm-{vmid}-disk"))
            {
                changes.insert(format!("unused{unused_index}"), Some(file.to_owned()));
                unused_index += 1;
            }
            changes.insert(key.clone(), None);
        }
        // A new disk is allocated (vdisk_alloc) under its storage's lock, in the task.
        let allocating = super::stored::allocations(&state, &new_volumes, None);
        for volume in new_volumes {
            let key = volume_key(volume.node.as_deref(), &volume.volid);
            state.volumes.insert(key, volume);
        }
        if asynchronous {
            let upid = self.spawn(
                &mut state,
                "qmconfig",
                &vmid.to_string(),
                durations::CONFIG,
                TaskAction::Config { vmid, changes },
                None,
                Vec::new(),
            );
            if let Some((storage, allocations)) = allocating {
                self.shared.start_transfer(
                    &mut state,
                    &upid,
                    self.node(),
                    &storage,
                    0,
                    allocations,
                    "",
                );
            }
            Reply::data(json!(upid))
        } else {
            // The synchronous PUT runs `lock_config` in the request; the handler already
            // waited the lock timeout for a holder (see `wait_for_config_lock`).
            if state.config_lock_holder(vmid).is_some() {
                return Err(lock_timeout(vmid));
            }
            if let Some(vm) = state.vms.get_mut(&vmid) {
                for (key, value) in changes {
                    match value {
                        Some(value) => vm.config.insert(key, value),
                        None => vm.config.remove(&key),
                    };
                }
            }
            Reply::data(Value::Null)
        }
    }

    /// qemu-server `cloudinit_generated_config_dump`: the generated NoCloud documents.
    pub(in crate::router) fn cloudinit_dump(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity.check(&format!("/vms/{vmid}"), "VM.Audit")?;
        let state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        let text = match self.text("type").unwrap_or("user") {
            "network" => guest::cloudinit_network_dump(vm),
            "meta" => guest::cloudinit_meta_dump(vm),
            _ => guest::cloudinit_user_dump(vm),
        };
        Reply::data(json!(text))
    }
}
