//! Disk changes of an existing VM: `PUT …/resize` and `PUT …/unlink`.

use serde_json::{Value, json};

use crate::propstring;
use crate::state::{
    ApiError, ApiResult, TaskAction, durations, find_volume, is_thin, parse_size, volume_key,
};

use crate::router::tasks::lock_timeout;
use crate::router::{Reply, Request};

impl Request<'_> {
    pub(in crate::router) fn vm_resize(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.Config.Disk")?;
        let disk = self.text("disk").unwrap_or("").to_owned();
        let size = self.text("size").unwrap_or("").to_owned();
        let mut state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?.clone();
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        let Some(value) = vm.config.get(&disk) else {
            return Err(ApiError::internal(format!("disk '{disk}' does not exist")));
        };
        let entries = propstring::parse(value).unwrap_or_default();
        let current = propstring::get(&entries, "size", None)
            .and_then(parse_size)
            .unwrap_or(0);
        let (relative, amount) = match size.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, size.as_str()),
        };
        let Some(amount) = parse_size(amount) else {
            return Err(ApiError::param(
                "size",
                "value does not match the regex pattern",
            ));
        };
        let target = if relative { current + amount } else { amount };
        if target < current {
            return Err(ApiError::internal(format!(
                "shrinking disks is not supported (request {target} bytes, current size {current} bytes)"
            )));
        }
        let upid = self.spawn(
            &mut state,
            "qmresize",
            &vmid.to_string(),
            durations::RESIZE,
            TaskAction::Resize {
                vmid,
                disk,
                bytes: target,
            },
            None,
            Vec::new(),
        );
        // A thin volume grows without writing; a thick one writes its new bytes.
        let file = propstring::get(&entries, "file", Some("file")).unwrap_or("");
        if let Some(storage) = file
            .split_once(':')
            .and_then(|(name, _)| state.storage(name).ok().cloned())
        {
            let written = if is_thin(&storage.kind) {
                0
            } else {
                target - current
            };
            self.shared
                .start_transfer(&mut state, &upid, self.node(), &storage, written, 0, "");
        }
        Reply::data(json!(upid))
    }

    /// qemu-server `unlink`: removes disks from the config; with `force` the volumes are
    /// deleted, else they stay as `unusedN`.
    pub(in crate::router) fn vm_unlink(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.Config.Disk")?;
        let force = self.flag("force");
        let ids: Vec<String> = self
            .text("idlist")
            .unwrap_or("")
            .split([',', ';', ' '])
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        let mut state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?.clone();
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        if state.config_lock_holder(vmid).is_some() {
            return Err(lock_timeout(vmid));
        }
        let mut config = vm.config.clone();
        let mut unused = (0..)
            .find(|n| !config.contains_key(&format!("unused{n}")))
            .unwrap_or(0);
        let mut freed = Vec::new();
        for key in &ids {
            let Some(value) = config.remove(key) else {
                continue;
            };
            let file = propstring::parse(&value)
                .ok()
                .and_then(|e| propstring::get(&e, "file", Some("file")).map(str::to_owned));
            let Some(file) = file.filter(|f| f.contains(&format!("vm-{vmid}-"))) else {
                continue;
            };
            if force || key.starts_with("unused") || file.ends_with("-cloudinit") {
                freed.push(file);
            } else {
                config.insert(format!("unused{unused}"), file);
                unused += 1;
            }
        }
        for file in freed {
            if let Some(volume) = find_volume(&state, self.node(), &file) {
                let key = volume_key(volume.node.as_deref(), &file);
                state.volumes.remove(&key);
            }
        }
        if let Some(vm) = state.vms.get_mut(&vmid) {
            vm.config = config;
        }
        Reply::data(Value::Null)
    }
}
