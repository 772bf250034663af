//! Waiting for Proxmox tasks (UPIDs): adaptive polling, a bounded wait, and the task log's
//! tail on failure.

use std::time::Duration;

use super::api::PveApi;
use super::error::PveError;
use super::types::{NodeName, TaskStatus, Upid};

/// How [`wait_for_task`] polls.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitOptions {
    /// Give up (with [`PveError::Timeout`]) after this long.
    pub timeout: Duration,
    /// First poll interval; doubles after each poll up to `max_interval`.
    pub initial_interval: Duration,
    pub max_interval: Duration,
    /// Multiplies the intervals (and the timeout): below 1 for a time-scaled simulator.
    pub poll_scale: f64,
    /// Lines of the task log kept on failure.
    pub log_lines: u32,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            timeout: Duration::from_secs(15 * 60),
            initial_interval: Duration::from_millis(50),
            max_interval: Duration::from_secs(2),
            poll_scale: 1.0,
            log_lines: 20,
        }
    }
}

impl WaitOptions {
    /// Options with another timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        WaitOptions {
            timeout,
            ..WaitOptions::default()
        }
    }

    fn scaled(&self, duration: Duration) -> Duration {
        if self.poll_scale.is_finite() && self.poll_scale > 0.0 {
            duration.mul_f64(self.poll_scale)
        } else {
            duration
        }
    }
}

/// Polls `GET /nodes/{node}/tasks/{upid}/status` until the task stops.
///
/// Ok when its exit status is `OK`; [`PveError::TaskFailed`] with the exit status and the
/// last lines of the task log otherwise ([`PveError::LockTimeout`] when the task could not
/// take its lock); [`PveError::Timeout`] naming the task when it runs too long.
pub async fn wait_for_task(
    api: &dyn PveApi,
    upid: &Upid,
    opts: &WaitOptions,
) -> Result<TaskStatus, PveError> {
    let node = NodeName(
        upid.node()
            .ok_or_else(|| PveError::Decode {
                method: "GET".to_owned(),
                path: format!("/nodes/?/tasks/{upid}/status"),
                message: format!("task id {upid:?} names no node"),
            })?
            .to_owned(),
    );
    let timeout = opts.scaled(opts.timeout);
    let started = tokio::time::Instant::now();
    let mut interval = opts.scaled(opts.initial_interval);
    let max_interval = opts.scaled(opts.max_interval);
    loop {
        let status = api.task_status(&node, upid).await?;
        if status.status == "stopped" {
            return finished(api, &node, upid, status, opts.log_lines).await;
        }
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            return Err(PveError::Timeout {
                what: describe(upid, &status),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(interval.min(timeout - elapsed)).await;
        interval = (interval * 2).min(max_interval);
    }
}

async fn finished(
    api: &dyn PveApi,
    node: &NodeName,
    upid: &Upid,
    status: TaskStatus,
    log_lines: u32,
) -> Result<TaskStatus, PveError> {
    let exitstatus = status.exitstatus.clone().unwrap_or_default();
    if exitstatus == "OK" {
        return Ok(status);
    }
    let log_tail = match api.task_log(node, upid, log_lines).await {
        Ok(lines) => lines,
        Err(error) => vec![format!("(task log unavailable: {error})")],
    };
    let lock_message = std::iter::once(exitstatus.as_str())
        .chain(log_tail.iter().map(String::as_str))
        .find(|line| line.contains("can't lock file") && line.contains("got timeout"));
    if let Some(message) = lock_message {
        return Err(PveError::LockTimeout {
            path: lock_file(message).unwrap_or(&upid.0).to_owned(),
            message: format!("{} ({})", message.trim(), describe(upid, &status)),
        });
    }
    Err(PveError::TaskFailed {
        upid: upid.0.clone(),
        exitstatus: if exitstatus.is_empty() {
            "(no exit status)".to_owned()
        } else {
            exitstatus
        },
        log_tail,
    })
}

fn lock_file(message: &str) -> Option<&str> {
    let start = message.find("can't lock file '")? + "can't lock file '".len();
    let rest = &message[start..];
    Some(&rest[..rest.find('\'')?])
}

/// `task qmclone 9000 (UPID:…)` for messages.
fn describe(upid: &Upid, status: &TaskStatus) -> String {
    match &status.id {
        Some(id) if !id.is_empty() => format!("task {} {id} ({upid})", status.kind),
        _ => format!("task {} ({upid})", status.kind),
    }
}
