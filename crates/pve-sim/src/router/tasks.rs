//! Tasks: how a handler starts one (waiting for a VM's config lock as qemu-server's workers
//! do), and the `/nodes/{node}/tasks` routes that list tasks and show their status and log.

use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};

use super::{Reply, Request, matches};
use crate::Shared;
use crate::state::{ApiError, ApiResult, State, TaskAction, TaskSpec, now_ms};

impl Request<'_> {
    // Every argument is a distinct part of the task (identity, timing, effect, outcome, log);
    // a struct for them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn(
        &self,
        state: &mut State,
        kind: &str,
        id: &str,
        seconds: f64,
        action: TaskAction,
        doomed: Option<String>,
        log: Vec<String>,
    ) -> String {
        let (seconds, doomed) = match self.lock_wait(state, kind, id) {
            LockWait::Free => (seconds, doomed),
            LockWait::After(wait) => (seconds + wait, doomed),
            LockWait::Timeout(vmid, timeout) => {
                (timeout, doomed.or_else(|| Some(lock_timeout(vmid).message)))
            }
        };
        self.shared.spawn_task(
            state,
            TaskSpec {
                node: self.node().to_owned(),
                kind: kind.to_owned(),
                id: id.to_owned(),
                user: self.identity.user.clone(),
                seconds,
                log,
            },
            action,
            doomed,
        )
    }

    /// A worker that runs inside `lock_config` (qemu-server: config, resize, start, stop,
    /// shutdown, destroy, template) waits for a task holding the VM's lock (a config change, a
    /// template conversion, a clone of it), at most PVE::AbstractConfig's 10 s, then dies with
    /// "can't lock file … got timeout". A clone locks its source with a 1 s timeout
    /// (`lock_config_shared($vmid, 1, …)` for a stopped source, `lock_config_full($vmid, 1, …)`
    /// for a running one), so it waits for an exclusive holder, and for any holder when the
    /// source runs.
    fn lock_wait(&self, state: &State, kind: &str, id: &str) -> LockWait {
        let Ok(vmid) = id.parse::<u32>() else {
            return LockWait::Free;
        };
        let (holder, timeout) = match kind {
            "qmconfig" | "qmresize" | "qmstart" | "qmstop" | "qmshutdown" | "qmdestroy"
            | "qmtemplate" => (state.config_lock_holder(vmid), CONFIG_LOCK_TIMEOUT_S),
            "qmclone" => {
                let running = state
                    .vms
                    .get(&vmid)
                    .is_some_and(|vm| vm.running_or_starting());
                (
                    state.clone_lock_holder(vmid, running),
                    CLONE_SOURCE_LOCK_TIMEOUT_S,
                )
            }
            _ => (None, 0.0),
        };
        let Some(holder) = holder else {
            return LockWait::Free;
        };
        let scale = self.shared.config.time_scale.max(f64::MIN_POSITIVE);
        let remaining_ms = holder.due_ms.saturating_sub(now_ms());
        let remaining_s = remaining_ms as f64 / 1000.0 / scale;
        if holder.held || holder.due_ms == u64::MAX || remaining_s > timeout {
            LockWait::Timeout(vmid, timeout)
        } else {
            LockWait::After(remaining_s)
        }
    }
}

/// PVE::AbstractConfig `lock_config`: `lock_config_full($vmid, 10, …)`.
const CONFIG_LOCK_TIMEOUT_S: f64 = 10.0;

/// qemu-server `clone_vm`: the source's lock is taken with a 1 s timeout.
const CLONE_SOURCE_LOCK_TIMEOUT_S: f64 = 1.0;

enum LockWait {
    Free,
    /// Simulated seconds until the holder releases the lock.
    After(f64),
    /// The VM whose lock was not obtained, and the simulated seconds the worker waited.
    Timeout(u32, f64),
}

/// PVE::Tools `lock_file_full`'s message for a lock not obtained in time.
pub(super) fn lock_timeout(vmid: u32) -> ApiError {
    ApiError::internal(format!(
        "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"
    ))
}

/// A synchronous `PUT …/config` blocks on the VM's config lock up to 10 s (scaled) before it
/// answers, like qemu-server's `lock_config` in the API process.
pub(super) async fn wait_for_config_lock(shared: &Shared, method: &Method, path: &str) {
    if *method != Method::PUT {
        return;
    }
    let Some(vars) = matches("/nodes/{node}/qemu/{vmid}/config", path) else {
        return;
    };
    let Some(vmid) = vars.get("vmid").and_then(|v| v.parse::<u32>().ok()) else {
        return;
    };
    let timeout = Duration::from_secs_f64(CONFIG_LOCK_TIMEOUT_S * shared.config.time_scale);
    let deadline = tokio::time::Instant::now() + timeout;
    while shared.state().config_lock_holder(vmid).is_some()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
        shared.advance();
    }
}

impl Request<'_> {
    fn find_task(&self) -> ApiResult<crate::state::Task> {
        let upid = self.vars.get("upid").cloned().unwrap_or_default();
        let state = self.shared.state();
        state
            .tasks
            .iter()
            .find(|t| t.upid == upid)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("no such task '{upid}'")))
    }

    pub(super) fn task_status(&self) -> ApiResult<Reply> {
        let task = self.find_task()?;
        let mut status = json!({
            "upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
            "starttime": task.starttime, "type": task.kind, "id": task.id, "user": task.user,
            "status": if task.running { "running" } else { "stopped" },
        });
        if let Some(exit) = &task.exitstatus {
            status["exitstatus"] = json!(exit);
        }
        Reply::data(status)
    }

    pub(super) fn task_log(&self) -> ApiResult<Reply> {
        let task = self.find_task()?;
        let start: usize = self.text("start").and_then(|v| v.parse().ok()).unwrap_or(0);
        let limit: usize = self
            .text("limit")
            .and_then(|v| v.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(50);
        let lines: Vec<Value> = task
            .log
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(index, line)| json!({ "n": index + 1, "t": line }))
            .collect();
        Reply::data(json!(lines))
    }

    /// pve-manager PVE::API2::Tasks `node_tasks`: newest first; `source` active / archive
    /// (default) / all, `vmid`, `typefilter`, `userfilter`, `since`, `until`, `errors`,
    /// `start`, `limit` (default 50).
    pub(super) fn task_list(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        state.node(self.node())?;
        let source = self.text("source").unwrap_or("archive");
        let number = |key: &str| self.text(key).and_then(|v| v.parse::<u64>().ok());
        let vmid = self.text("vmid");
        let typefilter = self.text("typefilter");
        let userfilter = self.text("userfilter");
        let errors = self.flag("errors");
        let start = number("start").unwrap_or(0) as usize;
        let limit = number("limit").unwrap_or(50) as usize;
        let mut tasks: Vec<&crate::state::Task> = state
            .tasks
            .iter()
            .filter(|t| t.node == self.node())
            .filter(|t| match source {
                "active" => t.running,
                "all" => true,
                _ => !t.running,
            })
            .filter(|t| vmid.is_none_or(|id| t.id == id))
            .filter(|t| typefilter.is_none_or(|k| t.kind.contains(k)))
            .filter(|t| userfilter.is_none_or(|u| t.user.contains(u)))
            .filter(|t| number("since").is_none_or(|since| t.starttime >= since))
            .filter(|t| number("until").is_none_or(|until| t.starttime <= until))
            .filter(|t| !errors || t.exitstatus.as_deref().is_some_and(|e| e != "OK"))
            .collect();
        tasks.sort_by(|a, b| b.starttime.cmp(&a.starttime).then(b.pid.cmp(&a.pid)));
        let entries: Vec<Value> = tasks
            .into_iter()
            .skip(start)
            .take(if limit == 0 { usize::MAX } else { limit })
            .map(|t| {
                let mut entry = json!({
                    "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
                    "starttime": t.starttime, "type": t.kind, "id": t.id, "user": t.user,
                });
                if let Some(status) = &t.exitstatus {
                    entry["status"] = json!(status);
                }
                if let Some(endtime) = t.endtime {
                    entry["endtime"] = json!(endtime);
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }
}
