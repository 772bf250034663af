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
        let log = task.log_lines(now_ms());
        let total = log.len();
        let lines: Vec<Value> = log
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(index, line)| json!({ "n": index + 1, "t": line }))
            .collect();
        Ok(Reply {
            data: json!(lines),
            cookie: None,
            total: Some(total),
        })
    }

    /// pve-manager PVE::API2::Tasks `node_tasks`: the active list first (running tasks with
    /// status `RUNNING`; a finished task leaves it at once), then the archive newest first with
    /// each task's exit status. Without Sys.Audit on /nodes/{node} a caller sees only its own
    /// tasks (a token only its token's, a user its own and its tokens'); token tasks carry
    /// `user` and `tokenid` apart. `vmid` and `typefilter` match exactly, `userfilter` as a
    /// substring; `statusfilter` (ok, warning, error, unknown) and `errors` filter by status;
    /// `start` skips, `limit` (default 50; 0 lists nothing) cuts.
    pub(super) fn task_list(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        let node = self.node();
        state.node(node)?;
        let source = self.text("source").unwrap_or("archive");
        let auditor = self
            .identity
            .check(&format!("/nodes/{node}"), "Sys.Audit")
            .is_ok();
        let filter = TaskFilter {
            caller: &self.identity.user,
            auditor,
            vmid: self.text("vmid"),
            typefilter: self.text("typefilter"),
            userfilter: self.text("userfilter").map(str::to_lowercase),
            since: self.text("since").and_then(|v| v.parse().ok()),
            until: self.text("until").and_then(|v| v.parse().ok()),
            statuses: status_types(self.text("statusfilter"), self.flag("errors")),
        };
        let start = self.number("start").unwrap_or(0);
        let mut limit = self.number("limit").unwrap_or(50);
        let mut count = 0usize;
        let mut entries = Vec::new();
        let mut take = |task: &crate::state::Task, entries: &mut Vec<Value>| {
            if !filter.keeps(task) {
                return;
            }
            count += 1;
            if count <= start || limit == 0 {
                return;
            }
            limit -= 1;
            entries.push(task_entry(task));
        };
        let newest_first = |a: &&crate::state::Task, b: &&crate::state::Task| {
            b.starttime.cmp(&a.starttime).then(b.pid.cmp(&a.pid))
        };
        let on_node = || state.tasks.iter().filter(|t| t.node == node);
        if source == "active" || source == "all" {
            let mut active: Vec<_> = on_node().filter(|t| t.running).collect();
            active.sort_by(newest_first);
            active.into_iter().for_each(|t| take(t, &mut entries));
        }
        if source != "active" {
            let mut archive: Vec<_> = on_node().filter(|t| !t.running).collect();
            archive.sort_by(|a, b| b.endtime.cmp(&a.endtime).then(newest_first(a, b)));
            archive.into_iter().for_each(|t| take(t, &mut entries));
        }
        Reply::data(json!(entries))
    }

    fn number(&self, key: &str) -> Option<usize> {
        self.text(key).and_then(|v| v.parse().ok())
    }
}

/// What `node_tasks` keeps of a node's tasks.
struct TaskFilter<'a> {
    caller: &'a str,
    auditor: bool,
    vmid: Option<&'a str>,
    typefilter: Option<&'a str>,
    userfilter: Option<String>,
    since: Option<u64>,
    until: Option<u64>,
    statuses: [bool; 4],
}

impl TaskFilter<'_> {
    fn keeps(&self, task: &crate::state::Task) -> bool {
        let (user, tokenid) = split_token(&task.user);
        if self
            .userfilter
            .as_ref()
            .is_some_and(|f| !user.to_lowercase().contains(f.as_str()))
        {
            return false;
        }
        // pve-manager `$check_task_user`: a token sees its token's tasks, a user its own and
        // its tokens'.
        let own = self.caller == task.user || (tokenid.is_some() && self.caller == user);
        if !(self.auditor || own) {
            return false;
        }
        self.typefilter.is_none_or(|k| task.kind == k)
            && self.vmid.is_none_or(|id| task.id == id)
            && self.since.is_none_or(|since| task.starttime >= since)
            && self.until.is_none_or(|until| task.starttime <= until)
            && self.statuses[status_type(task)]
    }
}

/// `user@realm!name` → (`user@realm`, Some(`name`)).
fn split_token(user: &str) -> (&str, Option<&str>) {
    match user.split_once('!') {
        Some((user, token)) => (user, Some(token)),
        None => (user, None),
    }
}

/// PVE::UPID `normalize_status_type` as an index: ok, warning, error, unknown (running).
fn status_type(task: &crate::state::Task) -> usize {
    match task.exitstatus.as_deref() {
        None | Some("" | "unexpected status") => 3,
        Some("OK") => 0,
        Some(status)
            if status
                .strip_prefix("WARNINGS: ")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            1
        }
        Some(_) => 2,
    }
}

/// The status types `statusfilter` (a list) or `errors` keep.
fn status_types(statusfilter: Option<&str>, errors: bool) -> [bool; 4] {
    match statusfilter {
        _ if errors => [false, true, true, true],
        Some(list) => {
            let mut keep = [false; 4];
            for item in list.split([',', ';', ' ', '\0']).filter(|i| !i.is_empty()) {
                match item.to_lowercase().as_str() {
                    "ok" => keep[0] = true,
                    "warning" => keep[1] = true,
                    "error" => keep[2] = true,
                    "unknown" => keep[3] = true,
                    _ => {}
                }
            }
            keep
        }
        None => [true; 4],
    }
}

/// One task as `node_tasks` lists it.
fn task_entry(task: &crate::state::Task) -> Value {
    let (user, tokenid) = split_token(&task.user);
    let mut entry = json!({
        "upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
        "starttime": task.starttime, "type": task.kind, "id": task.id, "user": user,
        "status": task.exitstatus.as_deref().unwrap_or("RUNNING"),
    });
    if let Some(tokenid) = tokenid {
        entry["tokenid"] = json!(tokenid);
    }
    if let Some(endtime) = task.endtime {
        entry["endtime"] = json!(endtime);
    }
    entry
}
