//! The QEMU guest agent routes (`/nodes/{node}/qemu/{vmid}/agent/*`): answered only once the
//! VM runs, has `agent: 1` and has booted.

use serde_json::{Value, json};

use crate::guest;
use crate::state::{ApiError, ApiResult, PowerState, State, Vm, now_ms};

use super::{Reply, Request};

/// `GET …/agent` (qemu-server PVE::API2::Qemu::Agent: the commands it registers).
pub(super) const AGENT_COMMANDS: [&str; 8] = [
    "ping",
    "network-get-interfaces",
    "file-read",
    "file-write",
    "exec",
    "exec-status",
    "get-osinfo",
    "info",
];

impl Request<'_> {
    pub(super) fn agent(
        &self,
        answer: impl Fn(&State, &Vm) -> ApiResult<Value>,
    ) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.GuestAgent.Audit")
            .or_else(|_| {
                self.identity
                    .check(&format!("/vms/{vmid}"), "VM.GuestAgent.Unrestricted")
            })?;
        let state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        if vm.power != PowerState::Running {
            return Err(ApiError::internal(format!("VM {vmid} is not running")));
        }
        if !guest::agent_enabled(&vm.config) {
            return Err(ApiError::internal("No QEMU guest agent configured"));
        }
        if vm.booted_at_ms.is_none_or(|booted| booted > now_ms()) {
            return Err(ApiError::internal("QEMU guest agent is not running"));
        }
        Reply::data(answer(&state, vm)?)
    }

    pub(super) fn agent_file_read(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        let file = self.text("file").unwrap_or("").to_owned();
        let backend_answer = {
            let state = self.shared.state();
            let vm = state.vm(self.node(), vmid)?;
            let node = vm.node.clone();
            drop(state);
            self.shared.backend_read_file(&node, vmid, &file)
        };
        self.agent(|state, vm| {
            let content = backend_answer
                .clone()
                .or_else(|| guest::derived_file(state, vm, &file))
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "Agent error: Failed to open file '{file}': No such file or directory"
                    ))
                })?;
            Ok(json!({
                "content": String::from_utf8_lossy(&content),
                "bytes-read": content.len(),
            }))
        })
    }
}
