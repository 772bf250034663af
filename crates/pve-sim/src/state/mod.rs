//! The simulated cluster's state (VMs, volumes, tasks, mappings, pools) and every operation on
//! it, independent of HTTP. Mutating operations have a *begin* part (done when the request is
//! accepted: a VM's config appears with `lock: create`) and a *finish* part (done when its task
//! completes); a failed task rolls the begin part back, so a failed task changes nothing.

mod bandwidth;
mod shared;
mod start;
mod storage;
mod tasks;
mod vm;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::guest;
use crate::inventory::{Inventory, NodeSpec};
use crate::propstring;

pub(crate) use bandwidth::{TransferSpec, Transfers, is_thin};
pub(crate) use shared::{Event, Shared};
pub(crate) use start::reserve_for_start;
use storage::MIB;
pub(crate) use storage::{
    Volume, base_name, find_volume, find_volume_mut, format_size, is_base_volume, is_disk_key,
    is_file_storage, parse_size, volume_has_feature, volume_key,
};
pub(crate) use tasks::{Task, TaskAction, TaskSpec, WgetProgress, complete};
pub(crate) use vm::{
    PowerState, Vm, mac_address, referenced_volumes, stop_vm, uuid, vm_disk_bytes,
};

/// An API error, rendered by the router the way Proxmox renders it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: Option<BTreeMap<String, String>>,
}

impl ApiError {
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            message: message.into(),
            errors: None,
        }
    }

    pub fn params(errors: BTreeMap<String, String>) -> ApiError {
        ApiError {
            status: 400,
            message: "Parameter verification failed.".to_owned(),
            errors: Some(errors),
        }
    }

    pub fn param(name: &str, message: impl Into<String>) -> ApiError {
        ApiError::params(BTreeMap::from([(name.to_owned(), message.into())]))
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 401,
            message: message.into(),
            errors: None,
        }
    }

    pub fn forbidden(path: &str, privilege: &str) -> ApiError {
        ApiError {
            status: 403,
            message: format!("Permission check failed ({path}, {privilege})"),
            errors: None,
        }
    }

    /// `raise_perm_exc(WHAT)` with a detail that is not a path and privilege.
    pub fn forbidden_detail(what: &str) -> ApiError {
        ApiError {
            status: 403,
            message: format!("Permission check failed ({what})"),
            errors: None,
        }
    }

    pub fn not_implemented(method: &str, path: &str) -> ApiError {
        ApiError {
            status: 501,
            message: format!(
                "Method '{method} /{}' not implemented",
                path.trim_start_matches('/')
            ),
            errors: None,
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Simulated durations in seconds at `time_scale` 1.
pub(crate) mod durations {
    /// `qm create`'s own work; an import adds its transfer ([`super::bandwidth`]).
    pub const CREATE: f64 = 3.0;
    /// A clone's own work (config, locks); a full clone's bytes then flow through the target
    /// storage, a linked clone (a thin snapshot: `lvcreate -s`, `zfs clone`, `qemu-img create
    /// -b`) pays only the storage's overhead ([`super::bandwidth`]).
    pub const CLONE: f64 = 2.0;
    /// Converting to a template renames its disks to `base-…` (`vdisk_create_base`).
    pub const TEMPLATE: f64 = 1.0;
    /// `download-url`: the bytes cross the internet at [`WAN_MIB_S`], then reach the storage.
    pub const WAN_MIB_S: f64 = 25.0;
    /// A seed ISO upload's own work (the HTTP body is already read); then its bytes.
    pub const UPLOAD: f64 = 0.0;
    pub const START: f64 = 4.0;
    pub const STOP: f64 = 2.0;
    pub const SHUTDOWN: f64 = 5.0;
    pub const DELETE: f64 = 3.0;
    /// A resize's own work; the storage's overhead (and, when thick, the new bytes) follow.
    pub const RESIZE: f64 = 0.0;
    pub const CONFIG: f64 = 1.0;
    pub const VOLUME_DELETE: f64 = 1.0;
    /// From a finished start task until the guest agent answers.
    pub const BOOT: f64 = 15.0;
    /// Bytes an `import-from` of a cloud image writes: its virtual size (Debian 12 genericcloud
    /// is 2 GiB + 204 MiB virtual, ~0.45 GiB on the wire).
    pub const IMPORT_BYTES: u64 = 2252 << 20;
}

/// Memory the host itself keeps (kernel, pve services, ZFS ARC is not modelled).
const HOST_RESERVED_MIB: u64 = 4096;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Mapping {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    pub map: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pool {
    pub poolid: String,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Everything persisted in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub inventory: Inventory,
    pub vms: BTreeMap<u32, Vm>,
    /// Keyed by [`volume_key`].
    pub volumes: BTreeMap<String, Volume>,
    pub tasks: Vec<Task>,
    pub mappings: BTreeMap<String, Mapping>,
    pub pools: BTreeMap<String, Pool>,
    /// Signs tickets and CSRF tokens.
    pub secret: String,
    pub next_pid: u32,
    /// Wall-clock start of the simulated cluster (node uptime).
    pub boot_ms: u64,
    /// Bytes in flight per storage ([`bandwidth`]): not persisted, a reload completes the
    /// running tasks.
    #[serde(skip)]
    pub transfers: Transfers,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn set_entry(entries: &mut Vec<propstring::Entry>, key: &str, value: &str) {
    match entries.iter_mut().find(|(k, _)| k.as_deref() == Some(key)) {
        Some(entry) => entry.1 = value.to_owned(),
        None => entries.push((Some(key.to_owned()), value.to_owned())),
    }
}

impl State {
    pub fn node(&self, name: &str) -> ApiResult<&NodeSpec> {
        self.inventory
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| ApiError::internal(format!("no such cluster node '{name}'")))
    }

    /// The VM `vmid` on `node`. A VM missing there answers as `PVE::AbstractConfig::load_config`
    /// dies (pve-guest-common `src/PVE/AbstractConfig.pm`), which every qemu route but clone's
    /// source check reaches first: `Configuration file 'nodes/N/qemu-server/ID.conf' does not
    /// exist`. Clients match on that text (proxmoxer scripts, provision's own client).
    pub fn vm(&self, node: &str, vmid: u32) -> ApiResult<&Vm> {
        self.node(node)?;
        match self.vms.get(&vmid) {
            Some(vm) if vm.node == node => Ok(vm),
            Some(_) | None => Err(ApiError::internal(format!(
                "Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
            ))),
        }
    }

    pub fn vm_mut(&mut self, node: &str, vmid: u32) -> ApiResult<&mut Vm> {
        self.vm(node, vmid)?;
        self.vms
            .get_mut(&vmid)
            .ok_or_else(|| ApiError::internal(format!("VM {vmid} vanished")))
    }

    /// The running task that holds `vmid`'s config file lock (flock on
    /// `/var/lock/qemu-server/lock-N.conf`, not a `lock:` value in the config): an asynchronous
    /// config change and a template conversion run inside PVE::AbstractConfig `lock_config`
    /// (exclusive); a clone holds its source's lock for its whole task, shared when the source
    /// is stopped, exclusive when it runs (qemu-server `clone_vm`, `$lock_source_vm`). Either
    /// kind keeps an exclusive locker out.
    pub fn config_lock_holder(&self, vmid: u32) -> Option<&Task> {
        self.tasks.iter().find(|t| {
            t.running
                && match t.action {
                    TaskAction::Config { vmid: held, .. }
                    | TaskAction::Template { vmid: held, .. } => held == vmid,
                    TaskAction::Clone { source, .. } => source == vmid,
                    TaskAction::Create { .. }
                    | TaskAction::Start { .. }
                    | TaskAction::Stop { .. }
                    | TaskAction::Delete { .. }
                    | TaskAction::Resize { .. }
                    | TaskAction::AddVolume { .. }
                    | TaskAction::DeleteVolume { .. } => false,
                }
        })
    }

    /// The running task a new clone of `source` waits for: with the source stopped, the clone
    /// takes a shared lock, so only an exclusive holder (a config change, a template
    /// conversion, a clone of the running source) is in its way; with the source running it
    /// takes an exclusive lock, and any holder is.
    pub fn clone_lock_holder(&self, source: u32, source_running: bool) -> Option<&Task> {
        self.tasks.iter().find(|t| {
            t.running
                && match t.action {
                    TaskAction::Config { vmid, .. } | TaskAction::Template { vmid, .. } => {
                        vmid == source
                    }
                    TaskAction::Clone {
                        source: held,
                        exclusive,
                        ..
                    } => held == source && (exclusive || source_running),
                    TaskAction::Create { .. }
                    | TaskAction::Start { .. }
                    | TaskAction::Stop { .. }
                    | TaskAction::Delete { .. }
                    | TaskAction::Resize { .. }
                    | TaskAction::AddVolume { .. }
                    | TaskAction::DeleteVolume { .. } => false,
                }
        })
    }

    /// The config digest `GET …/config` reports and `digest=` checks.
    pub fn digest(config: &BTreeMap<String, String>) -> String {
        let mut hasher = Sha256::new();
        for (key, value) in config {
            hasher.update(key.as_bytes());
            hasher.update(b": ");
            hasher.update(value.as_bytes());
            hasher.update(b"\n");
        }
        hex::encode(&hasher.finalize()[..20])
    }

    /// Host memory (MiB) in use on `node`: host reserve, hugepage pools, non-hugepage guests.
    pub fn memory_used_mib(&self, node: &NodeSpec) -> u64 {
        let hugepage_mib: u64 = node
            .numa_nodes
            .iter()
            .map(|n| u64::from(n.hugepages_1g) * 1024 + u64::from(n.hugepages_2m) * 2)
            .sum();
        let guests: u64 = self
            .vms
            .values()
            .filter(|vm| {
                vm.node == node.name && vm.running_or_starting() && vm.hugepages.is_empty()
            })
            .map(Vm::memory_mib)
            .sum();
        HOST_RESERVED_MIB + hugepage_mib + guests
    }

    /// Free hugepages per (numa id, page size KiB).
    pub fn free_hugepages(&self, node: &NodeSpec) -> BTreeMap<(u32, u64), u64> {
        let mut free = BTreeMap::new();
        for numa in &node.numa_nodes {
            free.insert((numa.id, 1_048_576), u64::from(numa.hugepages_1g));
            free.insert((numa.id, 2048), u64::from(numa.hugepages_2m));
        }
        for vm in self.vms.values().filter(|vm| vm.node == node.name) {
            for (key, pages) in &vm.hugepages {
                if let Some((numa, size)) = key.split_once('/')
                    && let (Ok(numa), Ok(size)) = (numa.parse::<u32>(), size.parse::<u64>())
                    && let Some(entry) = free.get_mut(&(numa, size))
                {
                    *entry = entry.saturating_sub(*pages);
                }
            }
        }
        free
    }

    pub fn json_vm_status(&self, vm: &Vm) -> Value {
        let now = now_ms();
        let uptime = vm
            .started_at_ms
            .filter(|_| vm.power == PowerState::Running)
            .map_or(0, |started| now.saturating_sub(started) / 1000);
        let running = vm.power == PowerState::Running;
        let mut status = json!({
            "vmid": vm.vmid,
            "name": vm.name(),
            "status": if running { "running" } else { "stopped" },
            "qmpstatus": if running { "running" } else { "stopped" },
            "cpus": vm.cpus(),
            "maxmem": vm.memory_mib() * MIB,
            "mem": if running { vm.memory_mib() * MIB / 2 } else { 0 },
            "maxdisk": vm_disk_bytes(vm),
            "disk": 0,
            "uptime": uptime,
            "cpu": 0,
            "netin": 0,
            "netout": 0,
            "diskread": 0,
            "diskwrite": 0,
            "ha": { "managed": 0 },
        });
        if running {
            status["pid"] = json!(10_000 + vm.vmid % 50_000);
        }
        if let Some(lock) = vm.lock() {
            status["lock"] = json!(lock);
        }
        if let Some(tags) = vm.config.get("tags") {
            status["tags"] = json!(tags);
        }
        if vm.is_template() {
            status["template"] = json!(1);
        }
        if guest::agent_enabled(&vm.config) {
            status["agent"] = json!(1);
        }
        status
    }
}
