//! The VM routes (`/nodes/{node}/qemu/**`): this module lists VMs, answers the directory
//! indexes and the status, and starts, stops and destroys them; the submodules create and clone
//! ([`create`]), read and change the config ([`config`]), allocate what a config value refers
//! to ([`stored`]), resize and unlink disks ([`disks`]), and check the config permissions
//! ([`permissions`]).

mod clone;
mod config;
mod create;
mod disks;
mod permissions;
mod stored;

use serde_json::{Value, json};

use crate::state::{
    ApiError, ApiResult, PowerState, State, TaskAction, durations, referenced_volumes,
    reserve_for_start,
};

use super::{Reply, Request};

/// `GET /nodes/{node}/qemu/{vmid}` (qemu-server `vmdiridx`).
pub(super) const VM_SUBDIRS: [&str; 21] = [
    "config",
    "pending",
    "cloudinit",
    "status",
    "unlink",
    "vncproxy",
    "termproxy",
    "migrate",
    "resize",
    "move",
    "rrd",
    "rrddata",
    "monitor",
    "agent",
    "snapshot",
    "spiceproxy",
    "sendkey",
    "firewall",
    "mtunnel",
    "remote_migrate",
    "dbus-vmstate",
];

/// `GET …/status` (qemu-server `vmcmdidx`).
pub(super) const VM_STATUS_SUBDIRS: [&str; 8] = [
    "current", "start", "stop", "reset", "shutdown", "suspend", "reboot", "resume",
];

impl Request<'_> {
    pub(super) fn vm_list(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        state.node(self.node())?;
        let entries: Vec<Value> = state
            .vms
            .values()
            .filter(|vm| vm.node == self.node())
            .map(|vm| state.json_vm_status(vm))
            .collect();
        Reply::data(json!(entries))
    }

    pub(super) fn vm_index(&self, entries: &[&str], field: &str) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity.check(&format!("/vms/{vmid}"), "VM.Audit")?;
        let state = self.shared.state();
        state.vm(self.node(), vmid)?;
        let list: Vec<Value> = entries.iter().map(|e| json!({ field: e })).collect();
        Reply::data(json!(list))
    }

    pub(super) fn vm_status(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity.check(&format!("/vms/{vmid}"), "VM.Audit")?;
        let state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        Reply::data(state.json_vm_status(vm))
    }

    pub(super) fn start_locked(&self, state: &mut State, vmid: u32) -> ApiResult<String> {
        let vm = state.vm(self.node(), vmid)?.clone();
        let doomed = if vm.is_template() {
            Some("you can't start a vm if it's a template".to_owned())
        } else {
            None
        };
        if vm.power == PowerState::Running || vm.starting {
            return Err(ApiError::internal(format!("VM {vmid} already running")));
        }
        let (doomed, log) = match doomed {
            Some(message) => (Some(message), Vec::new()),
            None => match reserve_for_start(state, vmid) {
                Ok(()) => (None, Vec::new()),
                Err((message, log)) => (Some(message), log),
            },
        };
        Ok(self.spawn(
            state,
            "qmstart",
            &vmid.to_string(),
            durations::START,
            TaskAction::Start { vmid },
            doomed,
            log,
        ))
    }

    pub(super) fn vm_start(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.PowerMgmt")?;
        let mut state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        let upid = self.start_locked(&mut state, vmid)?;
        Reply::data(json!(upid))
    }

    pub(super) fn vm_stop(&self, kind: &str) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.PowerMgmt")?;
        let mut state = self.shared.state();
        // Stopping a stopped VM is a task that succeeds, as in Proxmox.
        state.vm(self.node(), vmid)?;
        let seconds = if kind == "qmshutdown" {
            durations::SHUTDOWN
        } else {
            durations::STOP
        };
        let upid = self.spawn(
            &mut state,
            kind,
            &vmid.to_string(),
            seconds,
            TaskAction::Stop { vmid },
            None,
            Vec::new(),
        );
        Reply::data(json!(upid))
    }

    pub(super) fn vm_delete(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.Allocate")?;
        let mut state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        if vm.running_or_starting() {
            return Err(ApiError::internal(format!(
                "VM {vmid} is running - destroy failed"
            )));
        }
        let doomed = base_volume_in_use(&state, vm);
        if let Ok(vm) = state.vm_mut(self.node(), vmid) {
            vm.config.insert("lock".to_owned(), "destroyed".to_owned());
        }
        let upid = self.spawn(
            &mut state,
            "qmdestroy",
            &vmid.to_string(),
            durations::DELETE,
            TaskAction::Delete { vmid },
            doomed,
            Vec::new(),
        );
        Reply::data(json!(upid))
    }
}

/// qemu-server `destroy_vm` (in its worker) refuses a template whose base volume a linked clone
/// still refers to, with its own wording ("linked cloned"). pve-storage finds the clones by
/// name (`volume_is_base_and_used`), so on lvmthin, whose thin snapshots are named
/// `vm-NEWID-disk-N`, the template goes and its clones keep working.
fn base_volume_in_use(state: &State, vm: &crate::state::Vm) -> Option<String> {
    if !vm.is_template() {
        return None;
    }
    referenced_volumes(&vm.config)
        .into_iter()
        .find(|volid| state.base_volume_used(volid))
        .map(|volid| format!("base volume '{volid}' is still in use by linked cloned"))
}
